//! The Rack loader's features through nginx and the core, on Debian's nginx 1.22 and the
//! bundled nginx: threads, out-of-band work, and full hijack over an upgraded connection. (The
//! loader's Rack conformance is tested directly in tests/loaders/rack_loaders_test.rb and
//! through nginx in tests/conformance.rs.)

#[macro_use]
mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

for_both_nginx! {
    four_threads_serve_four_slow_requests_at_once_in_one_process,
    out_of_band_work_runs_after_the_request_that_asked,
    a_full_hijack_takes_over_an_upgraded_connection,
    a_slow_client_does_not_hold_the_app_process,
}

fn site(extra: &str) -> Site {
    Site {
        app: test_app("rack-features"),
        extra: extra.to_string(),
    }
}

fn four_threads_serve_four_slow_requests_at_once_in_one_process(flavour: Flavour) {
    let nginx = Nginx::start_with(
        flavour,
        &[site("passenger_thread_count 4;")],
        "passenger_max_pool_size 1;",
    );
    assert_eq!(
        nginx.get("/oob-count").status,
        200,
        "{}",
        nginx.passenger_log()
    );
    let port = nginx.port();
    let answers: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(move || http(port, "GET", "/slow", &[], b"").text()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let parsed: Vec<(String, f64, f64, String)> = answers
        .iter()
        .map(|a| {
            let f: Vec<&str> = a.split(' ').collect();
            assert_eq!(f.len(), 4, "{a}");
            (
                f[0].into(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].into(),
            )
        })
        .collect();
    assert!(
        parsed.iter().all(|p| p.0 == parsed[0].0),
        "one process serves them all: {answers:?}"
    );
    assert!(
        parsed.iter().all(|p| p.3 == "true"),
        "rack.multithread: {answers:?}"
    );
    // All four were in the app at the same moment: the last start precedes the first end.
    let last_start = parsed.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let first_end = parsed.iter().map(|p| p.2).fold(f64::MAX, f64::min);
    assert!(
        last_start < first_end,
        "the requests did not overlap: {answers:?}"
    );
}

fn out_of_band_work_runs_after_the_request_that_asked(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("")]);
    assert_eq!(nginx.get("/oob-count").text(), "0");
    let r = nginx.get("/oob");
    assert_eq!(r.text(), "oob requested");
    assert!(
        r.headers.iter().all(|(k, _)| !k.contains("OOB")),
        "the header stays between the app and the core: {r:?}"
    );
    wait_until("the out-of-band work is logged", || {
        nginx.passenger_log().contains("did its out-of-band work")
    });
    assert_eq!(
        nginx.get("/oob-count").text(),
        "1",
        "{}",
        nginx.passenger_log()
    );
}

fn a_full_hijack_takes_over_an_upgraded_connection(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("")]);
    let mut s = TcpStream::connect(("127.0.0.1", nginx.port())).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(
        b"GET /hijack HTTP/1.1\r\nHost: localhost\r\nUpgrade: line-echo\r\nConnection: Upgrade\r\n\r\n",
    )
    .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(
        status.starts_with("HTTP/1.1 101 "),
        "{status:?}\n{}",
        nginx.passenger_log()
    );
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    for text in ["ping", "and again"] {
        s.write_all(format!("{text}\n").as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!("echo: {text}\n"));
    }
}

fn a_slow_client_does_not_hold_the_app_process(flavour: Flavour) {
    // One process that takes one request at a time.
    let nginx = Nginx::start_with(flavour, &[site("")], "passenger_max_pool_size 1;");
    assert_eq!(nginx.get("/oob-count").status, 200);
    // A client asks for 32 MB and reads only the start of it.
    let mut slow = TcpStream::connect(("127.0.0.1", nginx.port())).unwrap();
    slow.set_read_timeout(Some(PATIENCE)).unwrap();
    slow.write_all(b"GET /big?32 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut start = [0u8; 12];
    std::io::Read::read_exact(&mut slow, &mut start).unwrap();
    assert_eq!(&start, b"HTTP/1.1 200");
    // The app has handed its whole response to the core, so its process serves the next
    // request while the slow client still has most of the 32 MB to read.
    let r = nginx.get("/oob-count");
    assert_eq!(
        r.status,
        200,
        "{r:?}\n{}\n{}",
        nginx.passenger_log(),
        nginx.error_log()
    );
    // And the slow client still gets all of it.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut slow, &mut rest).unwrap();
    let body_start = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(rest.len() - body_start, 32 << 20);
}
