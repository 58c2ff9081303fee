//! HTTP/1.1 Upgrade through the nginx module, against a stand-in core (so that it tests the
//! module alone, not the core's tunnel): the client's `Upgrade` and `Connection` headers reach
//! the core; the core's `101 Switching Protocols` reaches the client with `Upgrade` and
//! `Connection: upgrade`; then raw bytes flow both ways until either side closes; plain
//! requests still work meanwhile; and a 101 the client did not ask for is a 502, not a tunnel
//! nor a hang. Against Debian's nginx 1.22 and the bundled nginx. Needs `scripts/build`.

#[macro_use]
mod common;

use common::fake_core::*;
use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The stand-in core (the watchdog script after [`WATCHDOG_PREAMBLE`]): it serves each
/// connection on its own thread, by the request's `PATH_INFO`:
///
/// - `/ws`: checks that `HTTP_UPGRADE` is `websocket` and `HTTP_CONNECTION` mentions upgrade
///   (else a 400 saying what it got), answers 101 with `welcome\n` in the same write, then
///   echoes every byte until the client side ends, or answers `bye\n` and closes on `QUIT`;
/// - `/rogue`: answers 101 whatever the request, then waits for nginx to close;
/// - anything else: 200 with the SCGI header it received, one `KEY\tVALUE` line per pair.
///
/// It writes what it saw and did to `events.log` beside itself, and exits when nginx's master
/// is gone (EOF on the lifeline, fd 4).
const UPGRADE_CORE: &str = r#"
import threading

lock = threading.Lock()

def event(line):
    with lock:
        with open(os.path.join(agents, "events.log"), "a") as f:
            f.write(line + "\n")

def echo(conn, name, pending):
    if pending:
        conn.sendall(pending)
    while True:
        data = conn.recv(65536)
        if not data:
            event(name + ": the client side ended")
            return
        if b"QUIT" in data:
            conn.sendall(b"bye\n")
            event(name + ": closing")
            return
        conn.sendall(data)

def handle(conn):
    try:
        pairs, rest = read_request(conn)
        if pairs is None:
            return
        h = dict(pairs)
        uri = h.get("PATH_INFO", "")
        seen = "%s %s: HTTP_UPGRADE=%s HTTP_CONNECTION=%s" % (
            h.get("SERVER_PROTOCOL", "?"), uri,
            h.get("HTTP_UPGRADE", "(absent)"), h.get("HTTP_CONNECTION", "(absent)"))
        event(seen)
        if uri == "/ws":
            if h.get("HTTP_UPGRADE") != "websocket" or \
                    "upgrade" not in h.get("HTTP_CONNECTION", "").lower():
                respond(conn, b"400 Bad Request", seen.encode("latin-1"))
                return
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\nwelcome\n")
            echo(conn, uri, rest)
        elif uri == "/rogue":
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\n")
            while conn.recv(65536):
                pass
            event("/rogue: nginx closed the connection")
        else:
            body = "".join("%s\t%s\n" % kv for kv in pairs).encode("latin-1")
            respond(conn, b"200 OK", body)
    except OSError as e:
        event("error: %r" % e)
    finally:
        conn.close()

accept_until_stopped(
    lambda conn: threading.Thread(target=handle, args=(conn,), daemon=True).start())
os._exit(0)
"#;

/// nginx with [`UPGRADE_CORE`] as its stand-in core.
fn fake_core(flavour: Flavour) -> FakeCoreNginx {
    FakeCoreNginx::start(
        flavour,
        &FakeCore {
            label: "upgrade",
            core: UPGRADE_CORE,
            ..FakeCore::default()
        },
    )
}

impl FakeCoreNginx {
    fn events_path(&self) -> PathBuf {
        self.dir.0.join("fakeroot/agents/events.log")
    }

    /// What the stand-in core saw and did, one line per event.
    fn events(&self) -> String {
        std::fs::read_to_string(self.events_path()).unwrap_or_default()
    }

    /// Both logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "core events:\n{}\nnginx error log:\n{}",
            self.events(),
            self.error_log()
        )
    }

    /// Waits (bounded) until the core has logged `line`.
    fn wait_event(&self, line: &str) {
        self.wait_events(line, 1)
    }

    /// Waits (bounded) until the core has logged `line` `times` times.
    fn wait_events(&self, line: &str, times: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.events().lines().filter(|l| *l == line).count() < times {
            assert!(
                Instant::now() < deadline,
                "the core did not log {line:?} {times} times within {PATIENCE:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client connection to nginx whose reads and writes give up after [`PATIENCE`].
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to nginx");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.set_write_timeout(Some(PATIENCE)).unwrap();
        s
    }

    /// Sends `request` (a complete request head, and maybe bytes after it) on a new
    /// connection and reads the response head; returns the connection, positioned after it.
    fn open(&self, request: &[u8]) -> (TcpStream, String) {
        let mut s = self.connect();
        s.write_all(request).unwrap();
        let head = read_head(&mut s).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        (s, head)
    }

    /// A WebSocket-style upgrade request for `/ws`, followed by `early` bytes in the same
    /// write; checks the 101 and the core's greeting.
    fn tunnel(&self, early: &[u8]) -> TcpStream {
        let mut request = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .to_vec();
        request.extend_from_slice(early);
        let (mut s, head) = self.open(&request);
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{head}\n{}",
            self.logs()
        );
        assert_eq!(header(&head, "upgrade"), Some("websocket"), "{head}");
        assert_eq!(
            header(&head, "connection").map(str::to_ascii_lowercase),
            Some("upgrade".to_string()),
            "{head}"
        );
        assert_eq!(header(&head, "transfer-encoding"), None, "{head}");
        assert_eq!(header(&head, "content-length"), None, "{head}");
        // Sent by the core in the same write as its 101: the tunnel starts with it.
        assert_eq!(read_exact(&mut s, 8), b"welcome\n", "{}", self.logs());
        s
    }
}

/// Reads a response head up to and including the empty line, byte by byte (so nothing after
/// it is consumed).
fn read_head(s: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => {
                return Err(format!(
                    "reading a response head: {other:?} after {:?}",
                    String::from_utf8_lossy(&head)
                ));
            }
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The value of header `name` (case-insensitive) in a response head; at most one allowed.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    let found: Vec<&str> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect();
    assert!(found.len() <= 1, "{name} {} times in {head}", found.len());
    found.first().copied()
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("reading {n} bytes from the tunnel: {e}"));
    buf
}

/// Sends `payload` into the tunnel (from another thread, so that a payload larger than all the
/// buffers on the way cannot deadlock) and reads it back from the core's echo.
fn round_trip(s: &mut TcpStream, payload: &[u8]) {
    let mut writer = s.try_clone().unwrap();
    std::thread::scope(|scope| {
        let sent = scope.spawn(move || writer.write_all(payload));
        let echoed = read_exact(s, payload.len());
        sent.join().unwrap().expect("writing into the tunnel");
        assert!(
            echoed == payload,
            "the echo of {} bytes differs from what was sent",
            payload.len()
        );
    });
}

/// Bytes of every value, `\0`, `\r` and `\n` included, in a pattern that never spells `QUIT`.
fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn an_upgraded_connection_carries_raw_bytes_both_ways(flavour: Flavour) {
    let nginx = fake_core(flavour);
    // Bytes the client sends right behind its request head travel once the tunnel is open.
    let mut s = nginx.tunnel(b"early bytes\n");
    nginx.wait_event("HTTP/1.1 /ws: HTTP_UPGRADE=websocket HTTP_CONNECTION=Upgrade");
    assert_eq!(read_exact(&mut s, 12), b"early bytes\n", "{}", nginx.logs());

    round_trip(&mut s, b"hello\n");
    round_trip(&mut s, &binary(256));
    // Far more than nginx's buffers and the sockets' in both directions.
    round_trip(&mut s, &binary(4 << 20));

    // A plain request on the same server while the tunnel is open.
    let r = http(nginx.port, "GET", "/plain?x=1", &[], b"");
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.logs());
    let plain = scgi_pairs(&r.text());
    assert_eq!(value(&plain, "PATH_INFO"), Some("/plain"), "{plain:?}");
    assert_eq!(value(&plain, "HTTP_UPGRADE"), None, "{plain:?}");

    round_trip(&mut s, b"still here\n");
    for i in 0..20 {
        round_trip(&mut s, format!("message {i}\n").as_bytes());
    }

    // The client ends its side: nginx ends the tunnel, the core sees the end, the client EOF.
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("waiting for nginx to close: {e}\n{}", nginx.logs()));
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    nginx.wait_event("/ws: the client side ended");
}

fn the_core_closing_ends_the_tunnel(flavour: Flavour) {
    let nginx = fake_core(flavour);
    let mut s = nginx.tunnel(b"");
    round_trip(&mut s, b"one\n");
    s.write_all(b"QUIT\n").unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("waiting for nginx to close: {e}\n{}", nginx.logs()));
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "bye\n",
        "the core's last bytes, then the end\n{}",
        nginx.logs()
    );
    nginx.wait_event("/ws: closing");
    // nginx is fine afterwards.
    let r = http(nginx.port, "GET", "/plain", &[], b"");
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.logs());
}

fn tunnels_are_independent(flavour: Flavour) {
    let nginx = fake_core(flavour);
    let mut tunnels: Vec<TcpStream> = (0..4).map(|_| nginx.tunnel(b"")).collect();
    for round in 0..3 {
        for (i, s) in tunnels.iter_mut().enumerate() {
            round_trip(s, format!("tunnel {i} round {round}\n").as_bytes());
        }
    }
    for s in &tunnels {
        s.shutdown(Shutdown::Write).unwrap();
    }
    for s in &mut tunnels {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}

fn upgrade_is_not_offered_to_the_core_when_nginx_could_not_honour_it(flavour: Flavour) {
    let nginx = fake_core(flavour);
    // HTTP/1.0 has no Upgrade (a server must ignore it): the core does not see it, while
    // Connection travels as any header does.
    let (mut s, head) = nginx.open(
        b"GET /plain HTTP/1.0\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    assert!(
        head.starts_with("HTTP/1.1 200 "),
        "{head}\n{}",
        nginx.logs()
    );
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    let pairs = scgi_pairs(&String::from_utf8_lossy(&body));
    assert_eq!(
        value(&pairs, "SERVER_PROTOCOL"),
        Some("HTTP/1.0"),
        "{pairs:?}"
    );
    assert_eq!(value(&pairs, "HTTP_UPGRADE"), None, "{pairs:?}");
    assert_eq!(
        value(&pairs, "HTTP_CONNECTION"),
        Some("Upgrade"),
        "{pairs:?}"
    );
    // The same request over HTTP/1.1 does carry both.
    let r = http(
        nginx.port,
        "GET",
        "/plain",
        &[("Upgrade", "h2c, websocket")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let pairs = scgi_pairs(&r.text());
    assert_eq!(
        value(&pairs, "HTTP_UPGRADE"),
        Some("h2c, websocket"),
        "{pairs:?}"
    );
    assert_eq!(value(&pairs, "HTTP_CONNECTION"), Some("close"), "{pairs:?}");
}

/// A 101 to a request that did not ask to upgrade would otherwise be sent on as a response
/// whose body never ends (the core keeps the connection open): the module turns it into a 502
/// with a line in the error log, and nginx drops the core's connection.
fn a_101_the_client_did_not_ask_for_is_a_502(flavour: Flavour) {
    let nginx = fake_core(flavour);
    let started = Instant::now();
    let r = http(nginx.port, "GET", "/rogue", &[], b"");
    assert_eq!(r.status, 502, "{r:?}\n{}", nginx.logs());
    nginx.wait_event("HTTP/1.1 /rogue: HTTP_UPGRADE=(absent) HTTP_CONNECTION=close");
    nginx.wait_event("/rogue: nginx closed the connection");
    assert!(
        nginx.error_log().contains("did not ask to upgrade"),
        "{}",
        nginx.logs()
    );

    // An HTTP/1.0 client's Upgrade header is no request to upgrade either.
    let (mut s, head) = nginx.open(
        b"GET /rogue HTTP/1.0\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    assert!(
        head.starts_with("HTTP/1.1 502 "),
        "{head}\n{}",
        nginx.logs()
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    nginx.wait_event("HTTP/1.0 /rogue: HTTP_UPGRADE=(absent) HTTP_CONNECTION=Upgrade");
    nginx.wait_events("/rogue: nginx closed the connection", 2);
    // Far below nginx's read timeout (10 minutes): nothing waited for the core's "body".
    assert!(
        started.elapsed() < PATIENCE,
        "{:?}\n{}",
        started.elapsed(),
        nginx.logs()
    );
}

for_both_nginx! {
    an_upgraded_connection_carries_raw_bytes_both_ways,
    the_core_closing_ends_the_tunnel,
    tunnels_are_independent,
    upgrade_is_not_offered_to_the_core_when_nginx_could_not_honour_it,
    a_101_the_client_did_not_ask_for_is_a_502,
}
