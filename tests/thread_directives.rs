//! `passenger_thread_count` and `passenger_concurrency_model` in the nginx module: `nginx -t`
//! refuses bad values naming the directive, the value, the file and the line; and the module
//! sends `PASSENGER_THREAD_COUNT` as a stand-in core receives it: when the count is above 1
//! whatever the model, with the `thread` model even at 1, and never otherwise; inherited
//! http → server → location → if. Against Debian's nginx 1.22 and the bundled nginx. Needs
//! `scripts/build` to have run.

#[macro_use]
mod common;

use common::*;
use passenger_protocol::options;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Writes the test configuration (one server for the echo app) with `http_extra` in the http
/// block and `server_extra` in the server block, and runs `nginx -t` on it.
fn nginx_t(flavour: Flavour, dir: &Path, http_extra: &str, server_extra: &str) -> (bool, String) {
    std::fs::create_dir_all(dir.join("registry")).unwrap();
    let site = Site {
        extra: server_extra.to_string(),
        ..Site::app("echo")
    };
    let conf = Nginx::config_with(flavour, dir, &[(free_port(), &site)], http_extra);
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let out = nginx_command(flavour, dir).arg("-t").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The 1-based line of the configuration that contains `text`.
fn line_of(dir: &Path, text: &str) -> usize {
    let conf = std::fs::read_to_string(dir.join("nginx.conf")).unwrap();
    conf.lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text:?} is not in the configuration:\n{conf}"))
        + 1
}

/// A bad use of a directive: the http and server block text, the offending line's text, and
/// what the error must say.
struct Bad {
    http: &'static str,
    server: &'static str,
    at: &'static str,
    says: &'static [&'static str],
}

const fn in_server(text: &'static str, says: &'static [&'static str]) -> Bad {
    Bad {
        http: "",
        server: text,
        at: text,
        says,
    }
}

const BAD: &[Bad] = &[
    in_server(
        "passenger_thread_count 0;",
        &["passenger_thread_count", "\"0\"", "from 1 to 1024"],
    ),
    in_server(
        "passenger_thread_count -4;",
        &["passenger_thread_count", "\"-4\""],
    ),
    in_server(
        "passenger_thread_count many;",
        &["passenger_thread_count", "\"many\""],
    ),
    in_server(
        "passenger_thread_count 4x;",
        &["passenger_thread_count", "\"4x\""],
    ),
    // More than the core accepts: refused here rather than on every request.
    in_server(
        "passenger_thread_count 1025;",
        &["passenger_thread_count", "\"1025\"", "1024"],
    ),
    in_server(
        "passenger_thread_count 4 8;",
        &["passenger_thread_count", "invalid number of arguments"],
    ),
    in_server(
        "passenger_concurrency_model fiber;",
        &[
            "passenger_concurrency_model",
            "\"fiber\"",
            "process",
            "thread",
        ],
    ),
    in_server(
        "passenger_concurrency_model Thread;",
        &["passenger_concurrency_model", "\"Thread\""],
    ),
    in_server(
        "passenger_concurrency_model;",
        &["passenger_concurrency_model", "invalid number of arguments"],
    ),
    Bad {
        http: "passenger_thread_count none;",
        server: "",
        at: "passenger_thread_count none;",
        says: &["passenger_thread_count", "\"none\""],
    },
    in_server(
        "location /sub { if ($arg_x) { passenger_concurrency_model green; } }",
        &["passenger_concurrency_model", "\"green\""],
    ),
    Bad {
        http: "",
        server: "passenger_thread_count 2;\n        passenger_thread_count 3;",
        at: "passenger_thread_count 3;",
        says: &["passenger_thread_count", "is duplicate"],
    },
    Bad {
        http: "",
        server: "passenger_concurrency_model thread;\n        passenger_concurrency_model process;",
        at: "passenger_concurrency_model process;",
        says: &["passenger_concurrency_model", "is duplicate"],
    },
];

fn bad_values_fail_nginx_t_naming_value_file_and_line(flavour: Flavour) {
    let mut failures = Vec::new();
    for bad in BAD {
        let dir = Scratch::new("threads-bad");
        let (ok, err) = nginx_t(flavour, &dir.0, bad.http, bad.server);
        let place = format!(
            "{}:{}",
            dir.0.join("nginx.conf").display(),
            line_of(&dir.0, bad.at)
        );
        let missing: Vec<&str> = bad
            .says
            .iter()
            .copied()
            .chain([place.as_str()])
            .filter(|s| !err.contains(s))
            .collect();
        if ok || !missing.is_empty() {
            failures.push(format!(
                "{:?}: nginx -t {}; missing from its error {missing:?}:\n{err}",
                bad.at,
                if ok { "passed" } else { "failed" }
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn good_values_pass_nginx_t_at_every_level(flavour: Flavour) {
    let dir = Scratch::new("threads-good");
    let (ok, err) = nginx_t(
        flavour,
        &dir.0,
        "passenger_thread_count 1;\n    passenger_concurrency_model process;",
        "
        passenger_thread_count 1024;
        passenger_concurrency_model thread;
        location /a {
            passenger_thread_count 16;
            if ($arg_x) {
                passenger_thread_count 2;
                passenger_concurrency_model process;
            }
        }
",
    );
    assert!(ok, "nginx -t refused good values:\n{err}");
    assert!(
        !err.contains("[emerg]") && !err.contains("[warn]"),
        "nginx -t complained:\n{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// What the module sends

/// A stand-in for the watchdog at `<root>/agents/passenger-watchdog`: it reports a "core" on a
/// unix socket that answers each request with the SCGI header it received, one `KEY\tVALUE`
/// line per pair, and exits when nginx's master is gone (EOF on the lifeline, fd 4).
const FAKE_WATCHDOG: &str = r#"#!/usr/bin/env python3
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

def answer(conn):
    data = b""
    while b":" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    length, rest = data.split(b":", 1)
    length = int(length)
    while len(rest) < length + 1:
        chunk = conn.recv(65536)
        if not chunk:
            return
        rest += chunk
    items = rest[:length].split(b"\0")[:-1]
    body = b"".join(k + b"\t" + v + b"\n" for k, v in zip(items[0::2], items[1::2]))
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n" % len(body) + body)

while True:
    readable, _, _ = select.select([server, 4], [], [])
    if 4 in readable and not os.read(4, 1):
        break
    if server in readable:
        conn, _ = server.accept()
        try:
            answer(conn)
        finally:
            conn.close()
"#;

/// nginx in the foreground with the stand-in core; stopped on drop.
struct FakeCoreNginx {
    dir: Scratch,
    port: u16,
    child: Child,
}

impl FakeCoreNginx {
    fn start(flavour: Flavour, http_extra: &str, server_extra: &str) -> FakeCoreNginx {
        let dir = Scratch::new("threads-keys");
        let agents = dir.0.join("fakeroot/agents");
        std::fs::create_dir_all(&agents).unwrap();
        std::fs::create_dir_all(dir.0.join("registry")).unwrap();
        let watchdog = agents.join("passenger-watchdog");
        std::fs::write(&watchdog, FAKE_WATCHDOG).unwrap();
        std::fs::set_permissions(
            &watchdog,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();

        let port = free_port();
        let site = Site {
            extra: server_extra.to_string(),
            ..Site::app("echo")
        };
        let conf = Nginx::config_with(flavour, &dir.0, &[(port, &site)], http_extra);
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
        while let Err(e) = TcpStream::connect(("127.0.0.1", port)) {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                panic!(
                    "nginx ({flavour:?}) exited with {status} at start:\n{}",
                    nginx.error_log()
                );
            }
            assert!(
                e.kind() == ErrorKind::ConnectionRefused && Instant::now() < deadline,
                "nginx does not listen on {port} ({e}):\n{}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
    }

    /// The `PASSENGER_THREAD_COUNT` the module sent for a GET of `path` (checking it was sent
    /// at most once).
    fn thread_count(&self, path: &str) -> Option<String> {
        let r = http(self.port, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "GET {path}: {r:?}\n{}", self.error_log());
        let found: Vec<String> = r
            .text()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(k, _)| *k == options::THREAD_COUNT)
            .map(|(_, v)| v.to_string())
            .collect();
        assert!(found.len() <= 1, "sent {} times: {r:?}", found.len());
        found.into_iter().next()
    }
}

impl Drop for FakeCoreNginx {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn by_default_no_thread_count_is_sent(flavour: Flavour) {
    let nginx = FakeCoreNginx::start(flavour, "", "");
    assert_eq!(nginx.thread_count("/"), None);
}

fn thread_count_follows_the_count_and_the_model(flavour: Flavour) {
    let server_extra = "
        location /count4 { passenger_thread_count 4; }
        location /count4-process {
            passenger_thread_count 4;
            passenger_concurrency_model process;
        }
        location /count1 { passenger_thread_count 1; }
        location /model-thread { passenger_concurrency_model thread; }
        location /model-thread-count1 {
            passenger_concurrency_model thread;
            passenger_thread_count 1;
        }
        location /model-thread-count8 {
            passenger_concurrency_model thread;
            passenger_thread_count 8;
        }
        location /model-process { passenger_concurrency_model process; }
";
    let nginx = FakeCoreNginx::start(flavour, "", server_extra);
    for (path, want) in [
        ("/", None),
        // A count above 1 means threads, whatever the model says.
        ("/count4", Some("4")),
        ("/count4-process", Some("4")),
        ("/count1", None),
        // The thread model with no count: Passenger's default of one thread.
        ("/model-thread", Some("1")),
        ("/model-thread-count1", Some("1")),
        ("/model-thread-count8", Some("8")),
        ("/model-process", None),
    ] {
        assert_eq!(
            nginx.thread_count(path).as_deref(),
            want,
            "GET {path}\n{}",
            nginx.error_log()
        );
    }
}

fn thread_count_is_inherited_http_server_location_if(flavour: Flavour) {
    let http_extra = "    passenger_thread_count 6;";
    let server_extra = "
        location /own { passenger_thread_count 3; }
        location /single { passenger_thread_count 1; }
        location /threaded {
            passenger_concurrency_model thread;
            passenger_thread_count 1;
            if ($arg_more) {
                passenger_thread_count 12;
            }
            if ($arg_inherit) {
                passenger_concurrency_model process;
            }
        }
";
    let nginx = FakeCoreNginx::start(flavour, http_extra, server_extra);
    for (path, want) in [
        ("/", Some("6")),
        ("/own", Some("3")),
        ("/single", None),
        ("/threaded", Some("1")),
        ("/threaded?more=1", Some("12")),
        // The if block keeps the location's count (1) and sets the process model.
        ("/threaded?inherit=1", None),
    ] {
        assert_eq!(
            nginx.thread_count(path).as_deref(),
            want,
            "GET {path}\n{}",
            nginx.error_log()
        );
    }
}

for_both_nginx! {
    bad_values_fail_nginx_t_naming_value_file_and_line,
    good_values_pass_nginx_t_at_every_level,
    by_default_no_thread_count_is_sent,
    thread_count_follows_the_count_and_the_model,
    thread_count_is_inherited_http_server_location_if,
}
