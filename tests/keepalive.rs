//! Connections between nginx and the core kept open between requests (ngx-module/src/keepalive.rs
//! and the core's request loop): one connection serves many requests, responses of every shape
//! stay in step on it, and no request is lost when the core closes a kept connection under it.
//!
//! A client keeps one HTTP/1.1 connection to nginx, so that all its requests go through the
//! same nginx worker, and so through that worker's cache of core connections.

#[macro_use]
mod common;
use common::fake_core::*;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;

for_both_nginx! {
    sequential_requests_reuse_one_core_connection,
    responses_of_every_shape_stay_in_step,
    a_killed_core_loses_no_request,
    a_kept_connection_closed_under_a_request_is_retried,
}

/// An HTTP/1.1 client on one kept-alive connection to nginx.
struct Client {
    reader: BufReader<TcpStream>,
    /// nginx's error log, shown when nginx breaks off a response.
    error_log: std::path::PathBuf,
}

impl Client {
    fn connect(port: u16, nginx_dir: &std::path::Path) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            reader: BufReader::new(s),
            error_log: nginx_dir.join("error.log"),
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }

    /// Sends one request and reads exactly its response, as framed by nginx.
    fn send(&mut self, method: &str, path: &str, body: &[u8]) -> Response {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let s = self.reader.get_mut();
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();

        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let n = self
                .reader
                .read_until(b'\n', &mut head)
                .unwrap_or_else(|e| panic!("reading the response to {method} {path}: {e}"));
            assert!(
                n > 0,
                "nginx closed the connection during {method} {path}; its error log:\n{}",
                self.error_log()
            );
        }
        let (status, headers) = parse_head(&String::from_utf8_lossy(&head));
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let no_body = method == "HEAD" || matches!(response.status, 204 | 304);
        response.body = if no_body {
            Vec::new()
        } else if let Some(length) = response.header("content-length") {
            let mut body = vec![0; length.parse().unwrap()];
            self.reader.read_exact(&mut body).unwrap();
            body
        } else {
            assert_eq!(
                response.header("transfer-encoding"),
                Some("chunked"),
                "{method} {path}: a response on a kept-alive connection needs framing: {response:?}"
            );
            self.read_chunked()
        };
        response
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                return body;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }

    fn get(&mut self, path: &str) -> Response {
        self.send("GET", path, b"")
    }
}

/// The core's side of each connection nginx holds to it (the socket inodes `ss` lists).
fn core_connections(nginx: &Nginx) -> Vec<String> {
    let socket = nginx.instance_dir().join("agents.s/core");
    let socket = socket.to_string_lossy();
    let ss = Command::new("ss").args(["-xnH"]).output().expect("ss runs");
    String::from_utf8_lossy(&ss.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(4) == Some(&&*socket)).then(|| fields[5].to_string())
        })
        .collect()
}

fn module_app(flavour: Flavour) -> Nginx {
    Nginx::start(
        flavour,
        &[Site {
            extra: "location /unbuffered/ { passenger_enabled on; passenger_buffer_response off; \
                    rewrite ^/unbuffered(.*)$ $1 break; }"
                .to_string(),
            ..Site::app("module")
        }],
    )
}

/// Twenty requests one after the other all go over the same connection to the core.
fn sequential_requests_reuse_one_core_connection(flavour: Flavour) {
    let nginx = module_app(flavour);
    let mut client = Client::connect(nginx.port(), &nginx.dir.0);
    assert_eq!(client.get("/status?200").status, 200);
    let first = core_connections(&nginx);
    assert_eq!(
        first.len(),
        1,
        "one kept connection after a request: {first:?}"
    );
    for i in 0..20 {
        let path = if i % 2 == 0 {
            "/env"
        } else {
            "/unbuffered/env"
        };
        let r = client.get(path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(
            core_connections(&nginx),
            first,
            "request {i} ({path}) went over the connection the first one opened"
        );
    }
}

/// On one kept connection: responses with and without Content-Length, bodiless statuses,
/// HEAD, uploads, large bodies, buffered and streamed, in a mixed order, each complete and
/// none bleeding into the next.
fn responses_of_every_shape_stay_in_step(flavour: Flavour) {
    let nginx = module_app(flavour);
    let mut client = Client::connect(nginx.port(), &nginx.dir.0);
    let upload: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let expected = |n: usize| -> Vec<u8> { (0..n).map(|i| i as u8).collect() };
    for round in 0..3 {
        for prefix in ["", "/unbuffered"] {
            let at = |path: &str| format!("{prefix}{path}");
            let what = |path: &str| format!("round {round}, {prefix}{path}");
            let bytes_arrive = |r: &Response, n: usize, path: &str| {
                assert_eq!(
                    (r.status, r.body == expected(n)),
                    (200, true),
                    "{}",
                    what(path)
                )
            };

            bytes_arrive(&client.get(&at("/bytes?n=70000&cl=1")), 70000, "cl=1");
            bytes_arrive(&client.get(&at("/bytes?n=5000&cl=0")), 5000, "cl=0");
            // Unknown length, through nginx's streaming buffer several times over.
            bytes_arrive(
                &client.get(&at("/bytes?n=300000&cl=0")),
                300_000,
                "cl=0, 300 KB",
            );
            let r = client.get(&at("/status?204"));
            assert_eq!(r.status, 204, "{}: {r:?}", what("204"));
            let r = client.get(&at("/status?304"));
            assert_eq!(r.status, 304, "{}: {r:?}", what("304"));
            let r = client.send("HEAD", &at("/env"), b"");
            assert_eq!(r.status, 200, "{}: {r:?}", what("HEAD"));
            let r = client.send("POST", &at("/sha"), &upload);
            assert_eq!(r.status, 200, "{}: {r:?}", what("POST"));
            assert!(r.text().starts_with(&format!("{} ", upload.len())), "{r:?}");
            // The app answers without reading the body.
            let r = client.send("POST", &at("/status?201"), &upload);
            assert_eq!(
                (r.status, r.text()),
                (201, "app status 201".into()),
                "{}",
                what("201")
            );
            let r = client.get(&at("/no-such-page"));
            assert_eq!(r.status, 404, "{}: {r:?}", what("404"));
            bytes_arrive(&client.get(&at("/bytes?n=3000000&cl=1")), 3_000_000, "3 MB");
            let r = client.get(&at("/env?x=1"));
            assert!(
                r.text().contains("QUERY_STRING=x=1"),
                "{}: {r:?}",
                what("env")
            );
        }
    }
}

/// The core killed: its kept connections end with it; the next requests (a GET and a POST)
/// reach the core the watchdog started in its place.
fn a_killed_core_loses_no_request(flavour: Flavour) {
    let nginx = module_app(flavour);
    let mut client = Client::connect(nginx.port(), &nginx.dir.0);
    assert_eq!(client.get("/env").status, 200);
    let old = nginx.core_pid();
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_until("the watchdog starts a new core", || {
        nginx.core_pid() != old
            && std::os::unix::net::UnixStream::connect(nginx.instance_dir().join("agents.s/core"))
                .is_ok()
    });
    let r = client.get("/env");
    assert_eq!(
        r.status,
        200,
        "GET after the core was killed: {r:?}\n{}",
        nginx.error_log()
    );
    let r = client.send("POST", "/sha", b"abc");
    assert_eq!(
        r.status,
        200,
        "POST after the core was killed: {r:?}\n{}",
        nginx.error_log()
    );
    // The GET's connection, and the POST's (a POST always opens one), are both kept.
    let kept = core_connections(&nginx);
    assert!(
        (1..=2).contains(&kept.len()),
        "kept connections to the new core: {kept:?}"
    );
}

/// A stand-in core that serves each connection's first request (with Content-Length, so the
/// connection stays open) and closes the connection when a second request arrives on it: the
/// race of a core closing a kept connection just as nginx reuses it. It logs what it did, one
/// line per request, to `events.log`.
const CLOSES_KEPT_CONNECTIONS: &str = r#"
import threading
events = open(os.path.join(agents, "events.log"), "a", buffering=1)
counter = [0]

def serve(conn, number):
    served = 0
    pending = b""
    while True:
        pairs, pending = read_request_from(conn, pending)
        if pairs is None:
            break
        method = dict(pairs).get("REQUEST_METHOD")
        if served == 1:
            events.write("dropped %s on connection %d\n" % (method, number))
            break
        served += 1
        events.write("served %s on connection %d\n" % (method, number))
        body = ("%s on connection %d" % (method, number)).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                     % len(body) + body)
    conn.close()

def read_request_from(conn, data):
    """The next request's pairs, and the bytes after its body."""
    pairs, rest = read_request(conn, data)
    if pairs is None:
        return None, b""
    body_length = int(dict(pairs).get("CONTENT_LENGTH") or 0)
    while len(rest) < body_length:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return pairs, rest[body_length:]

def serve_in_thread(conn):
    counter[0] += 1
    threading.Thread(target=serve, args=(conn, counter[0]), daemon=True).start()

accept_until_stopped(serve_in_thread)
"#;

/// nginx retries a GET that met a kept connection closing under it on a fresh connection,
/// and never sends a POST over a kept connection (it could not retry that one).
fn a_kept_connection_closed_under_a_request_is_retried(flavour: Flavour) {
    let nginx = FakeCoreNginx::start(
        flavour,
        &FakeCore {
            label: "keepalive-race",
            core: CLOSES_KEPT_CONNECTIONS,
            ..FakeCore::default()
        },
    );
    let events = || {
        std::fs::read_to_string(nginx.dir.0.join("fakeroot/agents/events.log")).unwrap_or_default()
    };
    let mut client = Client::connect(nginx.port, &nginx.dir.0);
    let mut bodies = Vec::new();
    for method in ["GET", "GET", "POST", "GET", "POST", "POST", "GET"] {
        let r = client.send(method, "/", b"");
        assert_eq!(
            r.status,
            200,
            "{method}: {r:?}\ncore events:\n{}\nnginx error log:\n{}",
            events(),
            nginx.error_log()
        );
        assert!(r.text().starts_with(method), "{r:?}");
        bodies.push(r.text());
    }
    let log = events();
    assert!(
        log.contains("dropped GET"),
        "some GET met a kept connection closing under it:\n{log}"
    );
    assert!(
        !log.contains("dropped POST"),
        "a POST never goes over a kept connection:\n{log}"
    );
    // Every answer came from a different connection: each one's second request was dropped.
    let unique: std::collections::HashSet<_> = bodies.iter().collect();
    assert_eq!(unique.len(), bodies.len(), "{bodies:?}\n{log}");
}
