//! `passenger start` (the README's first command) serves an app on the bundled nginx, and
//! Ctrl-C stops everything. Needs `scripts/build` to have run.

mod common;

use common::*;
use std::process::{Command, Stdio};

#[test]
fn passenger_start_serves_the_example_and_stops_on_sigint() {
    let registry = Scratch::new("standalone");
    let port = free_port();
    let mut child = Command::new(buildout().join("bin/passenger"))
        .arg("start")
        .arg(repo().join("examples/hello-rack"))
        .args(["--port", &port.to_string(), "--address", "127.0.0.1"])
        .arg("--log-file")
        .arg(registry.0.join("passenger.log"))
        .env("PASSENGER_INSTANCE_REGISTRY_DIR", &registry.0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("passenger start runs");
    wait_until(&format!("passenger start listening on port {port}"), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let r = http(port, "GET", "/hello", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "Hello from passenger-rs! You asked for /hello\n");

    let inst = instance_dirs(&registry.0)
        .pop()
        .expect("an instance directory in the registry");
    let read = |f: &str| {
        std::fs::read_to_string(inst.join(f))
            .unwrap()
            .trim()
            .parse::<i32>()
            .unwrap()
    };
    let core = read("core.pid");
    let mut pids = vec![read("watchdog.pid"), core];
    pids.extend(descendants(core));
    pids.extend(descendants(child.id() as i32));

    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "passenger start exited with {status} after SIGINT"
    );
    wait_all_gone(&pids, "after Ctrl-C of passenger start");
    wait_until("instance directory removed", || !inst.exists());
}

#[test]
fn passenger_start_refuses_a_port_in_use_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(buildout().join("bin/passenger"))
        .arg("start")
        .arg(repo().join("examples/hello-rack"))
        .args(["--port", &port.to_string(), "--address", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!("passenger: cannot listen on 127.0.0.1:{port}: the port is already in use")
    );
}

#[test]
fn passenger_start_names_the_files_it_looked_for() {
    let empty = Scratch::new("noapp");
    let out = Command::new(buildout().join("bin/passenger"))
        .arg("start")
        .arg(&empty.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("looked for config.ru, passenger_wsgi.py, app.js"),
        "{err}"
    );
}
