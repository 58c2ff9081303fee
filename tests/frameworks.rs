//! Real frameworks through nginx, the core and the loaders, against Debian's nginx 1.22 and the
//! bundled nginx: Sinatra (Debian's ruby-sinatra), Flask (Debian's python3-flask, so the site
//! runs /usr/bin/python3, which the harness sets with passenger_python) and Express (express 4
//! from the npm registry, installed into tests/apps/express/node_modules by scripts/setup).
//! Each app has the same four routes: a GET with a path parameter, a POST form, a JSON
//! response, and its own 404.

#[macro_use]
mod common;

use common::*;

for_both_nginx! {
    a_sinatra_app_serves_its_routes,
    a_flask_app_serves_its_routes,
    an_express_app_serves_its_routes,
}

fn a_sinatra_app_serves_its_routes(flavour: Flavour) {
    serves_its_routes(flavour, "sinatra");
}

fn a_flask_app_serves_its_routes(flavour: Flavour) {
    serves_its_routes(flavour, "flask");
}

fn an_express_app_serves_its_routes(flavour: Flavour) {
    assert!(
        test_app("express/node_modules/express/package.json").is_file(),
        "express is not installed in tests/apps/express/node_modules: run scripts/setup"
    );
    serves_its_routes(flavour, "express");
}

/// The four routes of tests/apps/{sinatra,flask,express}, which answer alike but for the name.
fn serves_its_routes(flavour: Flavour, framework: &str) {
    let nginx = Nginx::start(flavour, &[Site::app(framework)]);
    let logs = || {
        format!(
            "passenger log:\n{}\nnginx error log:\n{}",
            nginx.passenger_log(),
            nginx.error_log()
        )
    };

    // GET with a path parameter, percent-decoded by the framework.
    let r = nginx.get("/hello/ada%20lovelace");
    assert_eq!(r.status, 200, "{r:?}\n{}", logs());
    assert_eq!(r.text(), format!("hello ada lovelace from {framework}\n"));
    let content_type = r.header("content-type").unwrap_or("");
    assert!(content_type.starts_with("text/plain"), "{r:?}");
    // (Express adds an `X-Powered-By: Express` of its own.)
    assert!(
        r.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("x-powered-by") && v.starts_with("Passenger-rs")),
        "{r:?}"
    );

    // A POST form, with a space and a non-ASCII character (UTF-8) in its values.
    let r = http(
        nginx.port(),
        "POST",
        "/form",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"greeting=good+day&name=J%C3%BCrgen",
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", logs());
    assert_eq!(
        r.text(),
        format!("{framework} got greeting=good day name=J\u{fc}rgen\n")
    );

    // A JSON response.
    let r = nginx.get("/json?q=find%20me");
    assert_eq!(r.status, 200, "{r:?}\n{}", logs());
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{r:?}"
    );
    let json: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("the /json body is not JSON ({e}): {r:?}"));
    assert_eq!(
        json,
        serde_json::json!({"framework": framework, "items": [1, 2, 3], "query": "find me"}),
        "{r:?}"
    );

    // The framework's own 404, for a path no route matches.
    let r = nginx.get("/no/such/route");
    assert_eq!(r.status, 404, "{r:?}\n{}", logs());
    assert_eq!(
        r.text(),
        format!("{framework}: no route for /no/such/route\n")
    );
}
