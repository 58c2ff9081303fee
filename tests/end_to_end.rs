//! nginx serves a Rack app end to end: module → watchdog → core → rack loader, against
//! Debian's nginx 1.22 and the bundled nginx. Needs `scripts/build` to have run.

#[macro_use]
mod common;

use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

fn serves_get_query_status_and_headers(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[Site::app("echo")]);
    let r = nginx.get("/");
    assert_eq!(r.status, 200, "GET / : {r:?}\n{}", nginx.passenger_log());
    assert_eq!(r.text(), "hello from rack\n");
    assert!(
        r.header("x-powered-by")
            .unwrap_or("")
            .starts_with("Passenger-rs"),
        "{r:?}"
    );

    let r = nginx.get("/query?a=1&b=two%20words");
    assert_eq!(r.text(), "a=1&b=two%20words");

    let r = nginx.get("/missing");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "no such thing\n");

    let r = nginx.get("/redirect");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://example.org/target"));

    let r = http(
        nginx.port(),
        "GET",
        "/headers",
        &[("X-Test-Request", "from the client")],
        b"",
    );
    assert_eq!(r.header("x-custom"), Some("custom value"));
    assert_eq!(r.text(), "header echo: from the client");
}

fn post_body_reaches_the_app_intact(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[Site::app("echo")]);
    // 1 MB of every byte value, in an order that would show truncation or reordering.
    let body: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = http(
        nginx.port(),
        "POST",
        "/echo",
        &[("Content-Type", "application/octet-stream")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", nginx.passenger_log());
    assert_eq!(r.header("x-received-length"), Some("1000000"));
    assert!(
        r.body == body,
        "echoed body differs from the one sent ({} bytes back)",
        r.body.len()
    );
}

fn two_apps_side_by_side(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[Site::app("echo"), Site::app("second")]);
    let one = http(nginx.ports[0], "GET", "/", &[], b"");
    let two = http(nginx.ports[1], "GET", "/", &[], b"");
    assert_eq!(one.text(), "hello from rack\n");
    assert_eq!(two.text(), "hello from the second app\n");
    assert_ne!(
        one.header("x-pid"),
        two.header("x-pid"),
        "two apps must be two processes"
    );
}

fn stop_removes_every_process_and_the_instance_dir(flavour: Flavour) {
    let mut nginx = Nginx::start(flavour, &[Site::app("echo")]);
    let app_pid: i32 = nginx.get("/").header("x-pid").unwrap().parse().unwrap();
    let pids = nginx.agent_pids();
    assert!(
        pids.contains(&app_pid),
        "the app process {app_pid} should be below the core: {pids:?}"
    );
    let inst = nginx.instance_dir();
    nginx.stop();
    wait_all_gone(&pids, "after nginx -s stop");
    wait_until("instance directory removed after nginx -s stop", || {
        !inst.exists()
    });
}

/// nginx's default `daemon on`: the process that loads the module is not the master that
/// stays, and the agents must live exactly as long as that master.
fn daemonized_nginx_serves_and_stops_cleanly(flavour: Flavour) {
    let mut nginx = Nginx::start_daemonized(flavour, &[Site::app("echo")]);
    let r = nginx.get("/");
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.error_log());
    let pids = nginx.agent_pids();
    let inst = nginx.instance_dir();
    // The agents outlive nginx's short-lived first process.
    assert!(
        pids.iter().all(|&p| alive(p)),
        "agents died with nginx's first process: {pids:?}"
    );
    nginx.stop();
    wait_all_gone(&pids, "after nginx -s stop (daemonized)");
    wait_until("instance directory removed (daemonized)", || !inst.exists());
}

fn killing_the_master_removes_every_process(flavour: Flavour) {
    let mut nginx = Nginx::start(flavour, &[Site::app("echo")]);
    assert_eq!(nginx.get("/").status, 200);
    let pids = nginx.agent_pids();
    let inst = nginx.instance_dir();
    nginx.kill_master();
    wait_all_gone(&pids, "after kill -9 of the nginx master");
    wait_until(
        "instance directory removed after kill -9 of the master",
        || !inst.exists(),
    );
}

fn app_that_fails_to_load_gives_500_and_logs_why(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[Site::app("broken")]);
    // The client waits at most PATIENCE (60 s), less than the 90 s spawn timeout: a 500 here
    // means the core noticed the loader's failure instead of waiting it out.
    let r = nginx.get("/");
    assert_eq!(r.status, 500, "{r:?}");
    let log = nginx.passenger_log();
    assert!(
        log.contains("boom: this app is broken on purpose"),
        "error text missing from the log:\n{log}"
    );
}

fn app_output_goes_to_the_log(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[Site::app("echo")]);
    let pid = nginx.get("/").header("x-pid").unwrap().to_string();
    assert_eq!(nginx.get("/log").text(), "logged");
    for line in ["app says hello on stdout", "app says hello on stderr"] {
        let expected = format!("App {pid} output: {line}");
        wait_until(&format!("log line {expected:?}"), || {
            nginx.passenger_log().contains(&expected)
        });
    }
}

fn core_rejects_malformed_scgi_and_wrong_password(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[Site::app("echo")]);
    assert_eq!(nginx.get("/").status, 200);
    let socket = nginx.instance_dir().join("agents.s/core");
    let ask = |bytes: &[u8]| -> String {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let garbage = ask(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        garbage.starts_with("HTTP/1.1 400"),
        "malformed SCGI got: {garbage:?}"
    );
    let app_root = test_app("echo").display().to_string();
    let wrong = passenger_protocol::scgi::encode([
        (&b"CONTENT_LENGTH"[..], &b"0"[..]),
        (b"SCGI", b"1"),
        (b"REQUEST_METHOD", b"GET"),
        (b"PATH_INFO", b"/"),
        (b"PASSENGER_APP_ROOT", app_root.as_bytes()),
        (b"PASSENGER_CONNECT_PASSWORD", b"not the password"),
    ]);
    let denied = ask(&wrong);
    assert!(
        denied.starts_with("HTTP/1.1 403"),
        "wrong password got: {denied:?}"
    );
    // Neither disturbed the instance.
    let r = nginx.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello from rack\n");
}

fn config_test_starts_nothing(flavour: Flavour) {
    let dir = Scratch::new("conftest");
    std::fs::create_dir_all(dir.0.join("registry")).unwrap();
    let site = Site::app("echo");
    std::fs::write(
        dir.0.join("nginx.conf"),
        Nginx::config(flavour, &dir.0, &[(free_port(), &site)]),
    )
    .unwrap();
    let out = nginx_command(flavour, &dir.0).arg("-t").output().unwrap();
    assert!(
        out.status.success(),
        "nginx -t failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        instance_dirs(&dir.0.join("registry")).is_empty(),
        "nginx -t must not start the agents"
    );
}

for_both_nginx! {
    serves_get_query_status_and_headers,
    post_body_reaches_the_app_intact,
    two_apps_side_by_side,
    stop_removes_every_process_and_the_instance_dir,
    killing_the_master_removes_every_process,
    daemonized_nginx_serves_and_stops_cleanly,
    app_that_fails_to_load_gives_500_and_logs_why,
    app_output_goes_to_the_log,
    core_rejects_malformed_scgi_and_wrong_password,
    config_test_starts_nothing,
}
