//! The loaders against their interfaces' own conformance checkers, through nginx (Debian's 1.22
//! and the bundled one): a Rack app wrapped in `Rack::Lint` (tests/apps/rack-lint) and a WSGI
//! app wrapped in `wsgiref.validate.validator` (tests/apps/wsgi-validate) each go through the
//! same request matrix. A violation the checker sees raises in the app, which fails the
//! request with a 500 and logs the error; so beyond its own assertions every cell also checks
//! that the log has no violation in it, and `a_violation_fails_the_request` checks that the
//! checker is in force at all.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Which of the two wrapped apps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum App {
    RackLint,
    WsgiValidate,
}

impl App {
    fn dir(self) -> &'static str {
        match self {
            App::RackLint => "rack-lint",
            App::WsgiValidate => "wsgi-validate",
        }
    }

    /// Marks of a conformance violation (or an app error) in the passenger log.
    fn violation_marks(self) -> &'static [&'static str] {
        match self {
            App::RackLint => &["LintError", "Error in the Rack app"],
            App::WsgiValidate => &[
                "AssertionError",
                "WSGIWarning",
                "garbage collected without being closed",
                "Error in the WSGI app",
            ],
        }
    }
}

/// One cell of the matrix as one test per app and nginx build, so that a failure names all
/// three: `rack_lint::system::<cell>`, `wsgi_validate::bundled::<cell>`, ... Attributes before a
/// cell (`#[ignore = "why"]`) go on its four tests.
macro_rules! matrix {
    ($($(#[$attr:meta])* $cell:ident,)*) => {
        matrix!(@app rack_lint, RackLint, $($(#[$attr])* $cell,)*);
        matrix!(@app wsgi_validate, WsgiValidate, $($(#[$attr])* $cell,)*);
    };
    (@app $module:ident, $app:ident, $($(#[$attr:meta])* $cell:ident,)*) => {
        mod $module {
            mod system {
                $( #[test] $(#[$attr])* fn $cell() {
                    crate::$cell(crate::App::$app, crate::Flavour::System)
                } )*
            }
            mod bundled {
                $( #[test] $(#[$attr])* fn $cell() {
                    crate::$cell(crate::App::$app, crate::Flavour::Bundled)
                } )*
            }
        }
    };
}

matrix! {
    get_with_a_query_string,
    post_form,
    multipart_upload_of_5_mb,
    chunked_request_body,
    head_has_the_headers_of_get_and_no_body,
    status_204_and_304_have_no_body,
    streaming_response,
    large_response_of_50_mb,
    multi_value_headers,
    non_ascii_path,
    a_violation_fails_the_request,
}

/// nginx serving one of the two apps.
struct Served {
    app: App,
    nginx: Nginx,
}

impl Served {
    fn start(app: App, flavour: Flavour) -> Served {
        Served {
            app,
            nginx: Nginx::start(flavour, &[Site::app(app.dir())]),
        }
    }

    fn port(&self) -> u16 {
        self.nginx.port()
    }

    fn logs(&self) -> String {
        format!(
            "passenger log:\n{}\nnginx error log:\n{}",
            self.nginx.passenger_log(),
            self.nginx.error_log()
        )
    }

    /// The checker found nothing wrong: no violation in the log. (The app's output reaches the
    /// log on its own time: a mark the app writes to rack.errors / wsgi.errors, once in the log,
    /// says that everything it wrote before is there too.)
    fn assert_no_violation(&self) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static MARKS: AtomicU32 = AtomicU32::new(0);
        let token = format!(
            "m{}-{}",
            std::process::id(),
            MARKS.fetch_add(1, Ordering::SeqCst)
        );
        let r = http(self.port(), "GET", &format!("/mark?{token}"), &[], b"");
        self.ok(&r);
        let mark = format!("conformance mark {token}");
        wait_until(&format!("`{mark}` in the log"), || {
            self.nginx.passenger_log().contains(&mark)
        });
        let log = self.nginx.passenger_log();
        for mark in self.app.violation_marks() {
            assert!(
                !log.contains(mark),
                "{:?}: `{mark}` in the log, a conformance violation:\n{}",
                self.app,
                self.logs()
            );
        }
    }

    /// A 200 response, else a failure with the logs.
    fn ok(&self, r: &Response) {
        assert_eq!(r.status, 200, "{:?}: {r:?}\n{}", self.app, self.logs());
    }
}

/// Sends `request` as it is and reads the whole response (the request says `Connection: close`).
fn raw_exchange(port: u16, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading the response");
    raw
}

/// What follows the response head, as it came on the wire.
fn after_head(raw: &[u8]) -> &[u8] {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    &raw[end + 4..]
}

/// CRC-32 (IEEE 802.3), as Ruby's and Python's zlib.crc32 compute it.
fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

/// Deterministic bytes of every value, CR and LF included.
fn pattern(len: usize, mul: usize) -> Vec<u8> {
    (0..len).map(|i| (i * mul % 256) as u8).collect()
}

fn get_with_a_query_string(app: App, flavour: Flavour) {
    let s = Served::start(app, flavour);
    let r = http(
        s.port(),
        "GET",
        "/query?a=1&b=two%20words&c=%C3%A9",
        &[],
        b"",
    );
    s.ok(&r);
    assert_eq!(
        r.text(),
        "QUERY_STRING=a=1&b=two%20words&c=%C3%A9\na=1\nb=two words\nc=\u{e9}\n",
        "{app:?}: the query string as the client sent it, and as the app parsed it"
    );
    s.assert_no_violation();
}

fn post_form(app: App, flavour: Flavour) {
    let s = Served::start(app, flavour);
    let r = http(
        s.port(),
        "POST",
        "/form",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"greeting=good+day&name=J%C3%BCrgen",
    );
    s.ok(&r);
    assert_eq!(
        r.text(),
        "CONTENT_TYPE=application/x-www-form-urlencoded\ngreeting=good day\nname=J\u{fc}rgen\n",
        "{app:?}"
    );
    s.assert_no_violation();
}

fn multipart_upload_of_5_mb(app: App, flavour: Flavour) {
    let s = Served::start(app, flavour);
    let file = pattern(5 * 1024 * 1024, 13);
    let boundary = "----passenger-rs-conformance-7d3f0a";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n\
             a 5 MB file\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let r = http(
        s.port(),
        "POST",
        "/upload",
        &[("Content-Type", &content_type)],
        &body,
    );
    s.ok(&r);
    assert_eq!(
        r.text(),
        format!(
            "description=a 5 MB file\nfilename=data.bin\ntype=application/octet-stream\n\
             size={}\ncrc32={:08x}\n",
            file.len(),
            crc32(&file)
        ),
        "{app:?}: the file part as the app parsed it"
    );
    s.assert_no_violation();
}

fn chunked_request_body(app: App, flavour: Flavour) {
    let s = Served::start(app, flavour);
    let body = pattern(70_015, 7);
    let mut request = b"POST /body HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
        Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for piece in [&body[..10], &body[10..70_010], &body[70_010..]] {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let r = parse_response(&raw_exchange(s.port(), &request));
    s.ok(&r);
    assert_eq!(
        r.header("x-content-length"),
        Some("70015"),
        "{app:?}: the app must see the length of the de-chunked body as CONTENT_LENGTH; {r:?}"
    );
    assert_eq!(r.header("x-received-length"), Some("70015"), "{app:?}");
    assert!(r.body == body, "{app:?}: the echoed body differs");
    s.assert_no_violation();
}

fn head_has_the_headers_of_get_and_no_body(app: App, flavour: Flavour) {
    let s = Served::start(app, flavour);
    let get = http(s.port(), "GET", "/head", &[], b"");
    s.ok(&get);
    assert_eq!(get.text(), "the body of GET /head\n");
    let raw = raw_exchange(
        s.port(),
        b"HEAD /head HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let head = parse_response(&raw);
    s.ok(&head);
    assert!(
        after_head(&raw).is_empty(),
        "{app:?}: a response to HEAD with a body: {:?}",
        String::from_utf8_lossy(&raw)
    );
    let comparable = |r: &Response| -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("date"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        h.sort();
        h
    };
    assert_eq!(
        comparable(&head),
        comparable(&get),
        "{app:?}: HEAD and GET headers differ"
    );
    assert_eq!(head.header("content-length"), Some("22"));
    assert_eq!(head.header("x-custom"), Some("same for HEAD"));
    s.assert_no_violation();
}

fn status_204_and_304_have_no_body(app: App, flavour: Flavour) {
    let s = Served::start(app, flavour);
    for (status, extra) in [(204, ("x-note", "no content")), (304, ("etag", "\"v1\""))] {
        let request = format!(
            "GET /status/{status} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             If-None-Match: \"v1\"\r\n\r\n"
        );
        let raw = raw_exchange(s.port(), request.as_bytes());
        let r = parse_response(&raw);
        assert_eq!(r.status, status, "{app:?}: {r:?}\n{}", s.logs());
        assert!(
            after_head(&raw).is_empty(),
            "{app:?}: a {status} with a body on the wire: {:?}",
            String::from_utf8_lossy(&raw)
        );
        assert_eq!(r.header(extra.0), Some(extra.1), "{app:?}: {r:?}");
        if status == 204 {
            // RFC 9110: never in a 204 (a 304 may tell those of the representation).
            for forbidden in ["transfer-encoding", "content-length"] {
                assert_eq!(
                    r.header(forbidden),
                    None,
                    "{app:?}: {forbidden} in a 204: {r:?}"
                );
            }
        }
    }
    s.assert_no_violation();
}

fn streaming_response(app: App, flavour: Flavour) {
    let s = Served::start(app, flavour);
    // The app sends its first chunk, then waits for this file before it sends the rest.
    let gate_dir = Scratch::new("gate");
    let gate = gate_dir.0.join("open");
    let mut conn = TcpStream::connect(("127.0.0.1", s.port())).unwrap();
    conn.write_all(
        format!(
            "GET /stream?gate={} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            gate.display()
        )
        .as_bytes(),
    )
    .unwrap();
    // Less than the app's own wait (a minute), so that a buffered response fails here.
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    while !raw.windows(12).any(|w| w == b"first chunk\n") {
        match conn.read(&mut buf) {
            Ok(0) => panic!(
                "{app:?}: the response ended before the gate was opened: {:?}\n{}",
                String::from_utf8_lossy(&raw),
                s.logs()
            ),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "{app:?}: the first chunk did not reach the client while the app held back the \
                 rest ({e}): the response is buffered on the way; got so far {:?}\n{}",
                String::from_utf8_lossy(&raw),
                s.logs()
            ),
        }
    }
    assert!(
        !raw.windows(6).any(|w| w == b"chunk "),
        "{app:?}: chunks after the gate arrived before it opened"
    );
    std::fs::write(&gate, b"").unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.read_to_end(&mut raw).unwrap();
    let r = parse_response(&raw);
    s.ok(&r);
    let expected: String = std::iter::once("first chunk\n".to_string())
        .chain((1..10).map(|i| format!("chunk {i}\n")))
        .chain(std::iter::once("last chunk\n".to_string()))
        .collect();
    assert_eq!(r.text(), expected, "{app:?}");
    s.assert_no_violation();
}

fn large_response_of_50_mb(app: App, flavour: Flavour) {
    let s = Served::start(app, flavour);
    let r = http(s.port(), "GET", "/large", &[], b"");
    assert_eq!(r.status, 200, "{app:?}: status {}\n{}", r.status, s.logs());
    // What the app sends: 50 blocks of 1 MiB, each a pattern starting with its number.
    let block: Vec<u8> = (0..1usize << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut expected = Vec::with_capacity(50 << 20);
    for k in 0..50 {
        expected.extend_from_slice(format!("{k:08}").as_bytes());
        expected.extend_from_slice(&block[8..]);
    }
    assert_eq!(
        r.body.len(),
        expected.len(),
        "{app:?}: body length; headers {:?}",
        r.headers
    );
    if let Some(at) = r.body.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!("{app:?}: the body differs from byte {at} on");
    }
    assert_eq!(
        r.header("x-crc32"),
        Some(format!("{:08x}", crc32(&r.body)).as_str()),
        "{app:?}: the app's checksum of what it sent"
    );
    s.assert_no_violation();
}

fn multi_value_headers(app: App, flavour: Flavour) {
    let s = Served::start(app, flavour);
    let r = http(s.port(), "GET", "/cookies", &[], b"");
    s.ok(&r);
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        cookies,
        ["a=1; path=/", "b=2; path=/"],
        "{app:?}: two Set-Cookie headers; {r:?}"
    );
    s.assert_no_violation();
}

fn non_ascii_path(app: App, flavour: Flavour) {
    let s = Served::start(app, flavour);
    let r = http(s.port(), "GET", "/caf%C3%A9", &[], b"");
    s.ok(&r);
    let expected = match app {
        // Rack: PATH_INFO is the path as sent, percent-encoded.
        App::RackLint => "PATH_INFO=/caf%C3%A9\n",
        // WSGI (PEP 3333): the decoded bytes, each one a latin-1 character, so "é" (C3 A9)
        // is "Ã©" (shown by the app as UTF-8).
        App::WsgiValidate => "PATH_INFO=/caf\u{c3}\u{a9}\n",
    };
    assert_eq!(r.text(), expected, "{app:?}");
    s.assert_no_violation();
}

fn a_violation_fails_the_request(app: App, flavour: Flavour) {
    let s = Served::start(app, flavour);
    // A page the checker lets through, then one it refuses: a `Status` response header.
    s.ok(&http(s.port(), "GET", "/query?x=1", &[], b""));
    s.assert_no_violation();
    let r = http(s.port(), "GET", "/violation", &[], b"");
    assert_eq!(r.status, 500, "{app:?}: {r:?}\n{}", s.logs());
    let mark = match app {
        App::RackLint => "Rack::Lint::LintError: header must not contain Status",
        App::WsgiValidate => "AssertionError: The Status header cannot be used",
    };
    wait_until(&format!("`{mark}` in the log"), || {
        s.nginx.passenger_log().contains(mark)
    });
}
