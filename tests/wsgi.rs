//! A WSGI app through nginx, the core and `wsgi-loader.py`, against Debian's nginx 1.22 and the
//! bundled nginx. (The loader's PEP 3333 conformance is tested directly, in
//! tests/loaders/test_wsgi_loader.py.)

#[macro_use]
mod common;

use common::*;

for_both_nginx! {
    a_wsgi_app_is_detected_and_served,
    a_wsgi_app_gets_its_environment_and_its_output_is_logged,
    a_wsgi_app_that_fails_to_load_shows_the_error,
    an_explicit_type_and_startup_file_are_honoured,
}

fn a_wsgi_app_is_detected_and_served(flavour: Flavour) {
    // No passenger_app_type: passenger_wsgi.py in the app root says WSGI.
    let nginx = Nginx::start(flavour, &[Site::app("wsgi")]);
    let r = nginx.get("/");
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.passenger_log());
    assert_eq!(r.text(), "hello from wsgi\n");
    assert!(
        r.header("x-powered-by")
            .unwrap_or("")
            .starts_with("Passenger-rs")
    );
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = http(nginx.port(), "POST", "/echo", &[], &body);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-received-length"), Some("3000000"));
    assert!(r.body == body, "the echoed body differs");
    assert_eq!(nginx.get("/nope").status, 404);
}

fn a_wsgi_app_gets_its_environment_and_its_output_is_logged(flavour: Flavour) {
    check_env_and_output(flavour, "wsgi", "wsgi", "WSGI_ENV");
    let nginx = Nginx::start(flavour, &[Site::app("wsgi")]);
    assert_eq!(nginx.get("/env?PYTHONUNBUFFERED").text(), "1");
}

fn a_wsgi_app_that_fails_to_load_shows_the_error(flavour: Flavour) {
    let r = broken_app_response(
        flavour,
        &[("passenger_wsgi.py", "import no_such_module_here\n")],
    );
    assert_eq!(r.status, 500, "{r:?}");
    let page = r.text();
    assert!(
        page.contains("ModuleNotFoundError: No module named &#39;no_such_module_here&#39;"),
        "{page}"
    );
    assert!(
        page.contains("Python module the app needs"),
        "the hint: {page}"
    );
}

fn an_explicit_type_and_startup_file_are_honoured(flavour: Flavour) {
    // app.py, not passenger_wsgi.py: passenger_app_type and passenger_startup_file say what
    // to run.
    let app = Scratch::new("wsgi-app-py");
    std::fs::copy(
        test_app("wsgi").join("passenger_wsgi.py"),
        app.0.join("app.py"),
    )
    .unwrap();
    let nginx = Nginx::start(
        flavour,
        &[Site {
            app: app.0.clone(),
            extra: "passenger_app_type wsgi; passenger_startup_file app.py;".into(),
        }],
    );
    let r = nginx.get("/");
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.passenger_log());
    assert_eq!(r.text(), "hello from wsgi\n");
}
