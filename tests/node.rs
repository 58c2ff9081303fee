//! A Node.js app through nginx, the core (http_session, over keep-alive HTTP/1.1) and
//! `node-loader.js`, against Debian's nginx 1.22 and the bundled nginx. (The loader itself is
//! tested directly in tests/loaders/node_loader_test.js.)

#[macro_use]
mod common;

use common::*;

for_both_nginx! {
    a_node_app_is_detected_and_served,
    a_node_app_sees_the_request_as_the_client_sent_it,
    a_node_app_gets_its_environment_and_its_output_is_logged,
    a_node_app_that_throws_at_load_shows_the_error,
    an_explicit_type_and_startup_file_are_honoured,
    a_body_in_pieces_or_cut_short_reaches_the_client_as_the_app_sent_it,
}

fn a_node_app_is_detected_and_served(flavour: Flavour) {
    // No passenger_app_type: app.js in the app root says Node.js.
    let nginx = Nginx::start(flavour, &[Site::app("node")]);
    let r = nginx.get("/");
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.passenger_log());
    assert_eq!(r.text(), "hello from node\n");
    assert!(
        r.header("x-powered-by")
            .unwrap_or("")
            .starts_with("Passenger-rs")
    );
    let pid = r.header("x-pid").unwrap().to_string();
    // Many requests, one process (unlimited concurrency), over reused connections.
    for _ in 0..20 {
        assert_eq!(nginx.get("/").header("x-pid"), Some(pid.as_str()));
    }
    let connections: u32 = nginx.get("/connections").text().parse().unwrap();
    assert!(
        connections <= 2,
        "22 sequential requests opened {connections} connections to the app: keep-alive \
         connections are not reused"
    );
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = http(nginx.port(), "POST", "/echo", &[], &body);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-received-length"), Some("3000000"));
    assert!(r.body == body, "the echoed body differs");
    let r = nginx.get("/stream");
    let expected: String = (0..100).map(|i| format!("line {i}\n")).collect::<String>() + "done\n";
    assert_eq!(r.text(), expected);
    assert_eq!(nginx.get("/nope").status, 404);
}

fn a_node_app_sees_the_request_as_the_client_sent_it(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[Site::app("node")]);
    let r = http(
        nginx.port(),
        "GET",
        "/request?a=1&b=%20x",
        &[
            ("X-Custom", "custom value"),
            // A client may not claim to be someone else.
            ("X-Forwarded-For", "10.9.8.7"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = r.text();
    for needle in [
        "\"method\":\"GET\"",
        "\"url\":\"/request?a=1&b=%20x\"",
        "\"x-custom\":\"custom value\"",
        "\"x-forwarded-for\":\"127.0.0.1\"",
        "\"x-forwarded-proto\":\"http\"",
        "\"host\":\"localhost\"",
        "\"httpVersion\":\"1.1\"",
    ] {
        assert!(seen.contains(needle), "{needle} not in {seen}");
    }
    assert!(!seen.contains("10.9.8.7"), "{seen}");
}

fn a_node_app_gets_its_environment_and_its_output_is_logged(flavour: Flavour) {
    check_env_and_output(flavour, "node", "node", "NODE_ENV");
}

fn a_node_app_that_throws_at_load_shows_the_error(flavour: Flavour) {
    let r = broken_app_response(
        flavour,
        &[(
            "app.js",
            "throw new Error('boom: this node app is broken on purpose');\n",
        )],
    );
    assert_eq!(r.status, 500, "{r:?}");
    assert!(
        r.text()
            .contains("boom: this node app is broken on purpose"),
        "{r:?}"
    );
}

fn an_explicit_type_and_startup_file_are_honoured(flavour: Flavour) {
    // server.js, not app.js: nothing to detect; passenger_app_type and passenger_startup_file
    // say what to run.
    let app = Scratch::new("node-server-js");
    std::fs::copy(test_app("node").join("app.js"), app.0.join("server.js")).unwrap();
    let nginx = Nginx::start(
        flavour,
        &[Site {
            app: app.0.clone(),
            extra: "passenger_app_type node; passenger_startup_file server.js;".into(),
        }],
    );
    let r = nginx.get("/");
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.passenger_log());
    assert_eq!(r.text(), "hello from node\n");
}

fn a_body_in_pieces_or_cut_short_reaches_the_client_as_the_app_sent_it(flavour: Flavour) {
    // The core sends the first bytes of a body of known length in one write with its head
    // (it waits for them); the rest follow as they come.
    let nginx = Nginx::start(flavour, &[Site::app("node")]);
    for n in [30, 20_000, 300_000] {
        let r = nginx.get(&format!("/pieces?n={n}"));
        assert_eq!(r.status, 200, "{r:?}");
        let expected: Vec<u8> = b"abcdefghij".iter().copied().cycle().take(n).collect();
        assert!(
            r.body == expected,
            "/pieces?n={n} gave {} bytes, not the {n} the app sent\n{}",
            r.body.len(),
            nginx.passenger_log()
        );
    }
    let r = nginx.get("/short");
    assert!(
        r.body.len() < 100 && r.body.starts_with(b"0123456789"),
        "a body the app cut short after 10 of 100 bytes reached the client as {:?}",
        String::from_utf8_lossy(&r.body)
    );
    wait_until("the core logs the cut-short response", || {
        nginx.passenger_log().contains("the response is cut short")
    });
    // The next response is whole: the cut connection was not reused.
    assert_eq!(nginx.get("/").text(), "hello from node\n");
}
