//! nginx with the module in front of a stand-in core: a Python script installed as the
//! watchdog of a scratch `passenger_root`, so that a test sees exactly what the module sends
//! and can make the "core" answer anything. (Test files declare `mod common;` and
//! `use common::fake_core::*;`.)

use super::*;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The start of every stand-in watchdog script: it binds a "core" on the unix socket
/// `core.sock` beside itself, reports it to the module (fd 3), and leaves the foreground. It
/// defines `agents` (its directory), `path` (the socket's) and `server` (the listening
/// socket), and the helpers `read_request(conn)` and `respond(conn, status, body)`; the script
/// it is put in front of serves `server`, and exits when nginx's master is gone (EOF on the
/// lifeline, fd 4).
pub const WATCHDOG_PREAMBLE: &str = r#"#!/usr/bin/env python3
import os, select, socket

agents = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(agents, "core.sock")
if os.path.exists(path):
    os.unlink(path)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(64)
os.chmod(path, 0o777)  # nginx's workers may run as another user

report = b"".join(item + b"\0" for item in [b"ok", agents.encode(), path.encode(), b"password"])
os.write(3, len(report).to_bytes(2, "big") + report)
os.close(3)
if os.fork() > 0:
    os._exit(0)
os.setsid()

def read_request(conn, data=b""):
    """The SCGI header's pairs (latin-1 strings) and the bytes after it; (None, b"") if the
    connection ends before the header does. `data`: bytes of it read already."""
    while b":" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    length, rest = data.split(b":", 1)
    length = int(length)
    while len(rest) < length + 1:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    items = rest[:length].split(b"\0")[:-1]
    pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in zip(items[0::2], items[1::2])]
    return pairs, rest[length + 1:]

def respond(conn, status, body):
    conn.sendall(b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n" % (status, len(body)) + body)

def accept_until_stopped(on_connection):
    """Hands each connection to the core socket to `on_connection`, until the stand-in
    watchdog's stdin (fd 4) closes: nginx stopped."""
    while True:
        readable, _, _ = select.select([server, 4], [], [])
        if 4 in readable and not os.read(4, 1):
            return
        if server in readable:
            conn, _ = server.accept()
            on_connection(conn)
"#;

/// A stand-in core (after [`WATCHDOG_PREAMBLE`]) that answers each request, one at a time,
/// with the SCGI header it received, one `KEY\tVALUE` line per pair (see [`scgi_pairs`]).
pub const ECHO_HEADER_CORE: &str = r#"
def answer(conn):
    pairs, _ = read_request(conn)
    if pairs is None:
        return
    respond(conn, b"200 OK", "".join("%s\t%s\n" % kv for kv in pairs).encode("latin-1"))

def answer_and_close(conn):
    try:
        answer(conn)
    finally:
        conn.close()

accept_until_stopped(answer_and_close)
"#;

/// The `KEY\tVALUE` lines of a body from [`ECHO_HEADER_CORE`] (or a core answering likewise),
/// as pairs, in order.
pub fn scgi_pairs(body: &str) -> Vec<(String, String)> {
    body.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What a [`FakeCoreNginx`] runs.
#[derive(Clone, Copy, Default)]
pub struct FakeCore<'a> {
    /// Names the scratch directory.
    pub label: &'a str,
    /// The Python the stand-in watchdog runs after [`WATCHDOG_PREAMBLE`].
    pub core: &'a str,
    /// Directives in the http block.
    pub http_extra: &'a str,
    /// Directives in the server block (of the one server, for the echo app).
    pub server_extra: &'a str,
    /// Files written under nginx's prefix (the scratch dir) before nginx starts: path relative
    /// to it, content.
    pub files: &'a [(&'a str, &'a str)],
}

/// nginx in the foreground with the stand-in core; stopped on drop.
pub struct FakeCoreNginx {
    /// nginx's prefix; the stand-in watchdog and its files are in `fakeroot/agents/`.
    pub dir: Scratch,
    pub port: u16,
    child: Child,
}

impl FakeCoreNginx {
    /// Installs `setup.core` as the watchdog of a scratch `passenger_root`, starts nginx (of
    /// `flavour`) on the test configuration with that root, and waits until it listens.
    pub fn start(flavour: Flavour, setup: &FakeCore) -> FakeCoreNginx {
        let dir = Scratch::new(setup.label);
        let agents = dir.0.join("fakeroot/agents");
        std::fs::create_dir_all(&agents).unwrap();
        std::fs::create_dir_all(dir.0.join("registry")).unwrap();
        for (name, content) in setup.files {
            let file = dir.0.join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, content).unwrap();
        }
        let watchdog = agents.join("passenger-watchdog");
        std::fs::write(&watchdog, format!("{WATCHDOG_PREAMBLE}{}", setup.core)).unwrap();
        std::fs::set_permissions(
            &watchdog,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();

        let port = free_port();
        let site = Site {
            extra: setup.server_extra.to_string(),
            ..Site::app("echo")
        };
        let conf = Nginx::config_with(flavour, &dir.0, &[(port, &site)], setup.http_extra);
        let real_root = format!("passenger_root {};", buildout().display());
        assert!(conf.contains(&real_root), "{conf}");
        let conf = conf.replace(
            &real_root,
            &format!("passenger_root {};", dir.0.join("fakeroot").display()),
        );
        std::fs::write(dir.0.join("nginx.conf"), conf).unwrap();
        let child = nginx_command(flavour, &dir.0)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx runs");
        let mut nginx = FakeCoreNginx { dir, port, child };
        let deadline = Instant::now() + PATIENCE;
        while !listening(port) {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                panic!(
                    "nginx ({flavour:?}) exited with {status} at start:\n{}",
                    nginx.error_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nginx does not listen on {port}:\n{}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
    }

    /// A GET of `path`, which must answer 200.
    pub fn get_ok(&self, path: &str) -> Response {
        let r = http(self.port, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "GET {path}: {r:?}\n{}", self.error_log());
        r
    }
}

impl Drop for FakeCoreNginx {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
