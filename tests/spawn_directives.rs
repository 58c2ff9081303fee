//! The directives of spawning, environment, identity and error pages, in the nginx module:
//! `nginx -t` refuses each one's bad values (naming the directive, the value, the file and the
//! line) and accepts them all with good values; and the `PASSENGER_*` keys the module sends for
//! them, inherited http → server → location → if, as a stand-in core receives them. Against
//! Debian's nginx 1.22 and the bundled nginx. Needs `scripts/build` to have run.

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

/// A bad use of a directive: where it goes, the configuration text, the line that is wrong,
/// and what the error must say.
struct Bad {
    http: &'static str,
    server: &'static str,
    /// Text of the offending line.
    at: &'static str,
    says: &'static [&'static str],
}

const fn in_http(text: &'static str, says: &'static [&'static str]) -> Bad {
    Bad {
        http: text,
        server: "",
        at: text,
        says,
    }
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
        "passenger_spawn_method fast;",
        &["passenger_spawn_method", "\"fast\"", "smart", "direct"],
    ),
    in_server(
        "rails_spawn_method forking;",
        &["rails_spawn_method", "\"forking\""],
    ),
    in_server(
        "passenger_start_timeout 0;",
        &["passenger_start_timeout", "\"0\"", "whole number"],
    ),
    in_server(
        "passenger_start_timeout 90s;",
        &["passenger_start_timeout", "\"90s\""],
    ),
    in_server(
        "passenger_max_preloader_idle_time forever;",
        &["passenger_max_preloader_idle_time", "\"forever\""],
    ),
    in_http(
        "passenger_max_preloader_idle_time -1;",
        &["passenger_max_preloader_idle_time", "\"-1\""],
    ),
    in_server(
        "rails_app_spawner_idle_time soon;",
        &["rails_app_spawner_idle_time", "\"soon\""],
    ),
    in_server(
        "passenger_env_var \"\" value;",
        &["passenger_env_var", "invalid variable \"\"", "empty"],
    ),
    in_server(
        "location /sub { passenger_env_var A=B value; }",
        &["passenger_env_var", "\"A=B\"", "NAME=VALUE"],
    ),
    in_server(
        "passenger_env_var ONLY_A_NAME;",
        &["passenger_env_var", "invalid number of arguments"],
    ),
    in_server(
        "passenger_load_shell_envvars maybe;",
        &["passenger_load_shell_envvars", "\"maybe\""],
    ),
    in_server(
        "passenger_app_file_descriptor_ulimit 0;",
        &["passenger_app_file_descriptor_ulimit", "\"0\""],
    ),
    in_server(
        "passenger_app_file_descriptor_ulimit lots;",
        &["passenger_app_file_descriptor_ulimit", "\"lots\""],
    ),
    in_server(
        "passenger_user root;",
        &["passenger_user", "\"root\"", "never run as root"],
    ),
    in_server(
        "passenger_user 0;",
        &["passenger_user", "\"0\"", "never run as root"],
    ),
    in_server(
        "passenger_user \"\";",
        &["passenger_user", "invalid user name \"\""],
    ),
    in_server(
        "passenger_group root;",
        &["passenger_group", "\"root\"", "never run as root"],
    ),
    in_http(
        "passenger_user_switching sometimes;",
        &["passenger_user_switching", "\"sometimes\""],
    ),
    in_server(
        "passenger_user_switching off;",
        &["passenger_user_switching", "not allowed here"],
    ),
    in_http(
        "passenger_default_user root;",
        &["passenger_default_user", "\"root\"", "never run as root"],
    ),
    in_server(
        "passenger_default_user www-data;",
        &["passenger_default_user", "not allowed here"],
    ),
    in_http(
        "passenger_default_group root;",
        &["passenger_default_group", "\"root\"", "never run as root"],
    ),
    in_http(
        "passenger_disable_log_prefix 1;",
        &["passenger_disable_log_prefix", "\"1\""],
    ),
    in_server(
        "passenger_friendly_error_pages yes;",
        &["passenger_friendly_error_pages", "\"yes\""],
    ),
    in_server(
        "passenger_custom_error_page missing/spawn-error.html;",
        &[
            "passenger_custom_error_page",
            "missing/spawn-error.html\"",
            "No such file",
        ],
    ),
    in_server(
        "passenger_spawn_exception_status_code 600;",
        &["passenger_spawn_exception_status_code", "\"600\""],
    ),
    in_server(
        "passenger_spawn_exception_status_code 99;",
        &["passenger_spawn_exception_status_code", "\"99\""],
    ),
    in_server(
        "passenger_python \"\";",
        &["passenger_python", "invalid interpreter \"\""],
    ),
    in_server(
        "passenger_nodejs \"\";",
        &["passenger_nodejs", "invalid interpreter \"\""],
    ),
    // In an if block, and twice in one block.
    in_server(
        "location /sub { if ($arg_x) { passenger_spawn_method fast; } }",
        &["passenger_spawn_method", "\"fast\""],
    ),
    Bad {
        http: "",
        server: "passenger_start_timeout 10;\n        passenger_start_timeout 20;",
        at: "passenger_start_timeout 20;",
        says: &["passenger_start_timeout", "is duplicate"],
    },
];

fn bad_values_fail_nginx_t_naming_value_file_and_line(flavour: Flavour) {
    let mut failures = Vec::new();
    for bad in BAD {
        let dir = Scratch::new("spawn-bad");
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

/// Every directive with good values, at every level it is allowed at.
const GOOD_HTTP: &str = "\
    passenger_user_switching off;
    passenger_default_user nobody;
    passenger_default_group nogroup;
    passenger_disable_log_prefix on;
    passenger_spawn_method direct;
    passenger_max_preloader_idle_time 0;
    passenger_start_timeout 120;
    passenger_env_var FROM_HTTP http;
    passenger_load_shell_envvars off;
    passenger_app_file_descriptor_ulimit 1024;
    passenger_friendly_error_pages off;
    passenger_spawn_exception_status_code 503;
    passenger_python /usr/bin/python3;
    passenger_nodejs /usr/bin/node;
";

const GOOD_SERVER: &str = "
        passenger_spawn_method smart-lv2;
        passenger_start_timeout 30;
        passenger_max_preloader_idle_time 600;
        passenger_env_var GREETING \"hello world\";
        passenger_env_var EMPTY \"\";
        passenger_env_var WITH_EQUALS a=b;
        passenger_load_shell_envvars on;
        passenger_app_file_descriptor_ulimit 4096;
        passenger_user nobody;
        passenger_group nogroup;
        passenger_friendly_error_pages on;
        passenger_custom_error_page errors/spawn.html;
        passenger_spawn_exception_status_code 502;
        passenger_python python3;
        passenger_nodejs node;
        location /direct {
            passenger_spawn_method conservative;
            passenger_env_var ONLY_HERE 1;
            if ($arg_smart) {
                passenger_spawn_method smart;
                passenger_env_var IN_IF 1;
                passenger_user daemon;
                passenger_start_timeout 5;
            }
        }
        location /aliases {
            rails_spawn_method direct;
            rails_app_spawner_idle_time 60;
        }
";

fn good_values_pass_nginx_t(flavour: Flavour) {
    let dir = Scratch::new("spawn-good");
    std::fs::create_dir_all(dir.0.join("errors")).unwrap();
    std::fs::write(dir.0.join("errors/spawn.html"), "<h1>sorry</h1>").unwrap();
    let (ok, err) = nginx_t(flavour, &dir.0, GOOD_HTTP, GOOD_SERVER);
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
        let dir = Scratch::new("spawn-keys");
        let agents = dir.0.join("fakeroot/agents");
        std::fs::create_dir_all(&agents).unwrap();
        std::fs::create_dir_all(dir.0.join("registry")).unwrap();
        // For `passenger_custom_error_page errors/spawn.html` (relative to nginx's prefix).
        std::fs::create_dir_all(dir.0.join("errors")).unwrap();
        std::fs::write(dir.0.join("errors/spawn.html"), "<h1>sorry</h1>").unwrap();
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

    /// The `PASSENGER_*` pairs the module sent for a GET of `path`.
    fn keys(&self, path: &str) -> Vec<(String, String)> {
        let r = http(self.port, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "GET {path}: {r:?}\n{}", self.error_log());
        r.text()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(k, _)| k.starts_with("PASSENGER_"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl Drop for FakeCoreNginx {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The value of `key` among `pairs`, checking it is there at most once.
fn value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    let found: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        found.len() <= 1,
        "{key} sent {} times: {pairs:?}",
        found.len()
    );
    found.first().copied()
}

fn env_vars(pairs: &[(String, String)]) -> Option<Vec<(String, String)>> {
    value(pairs, options::ENV_VARS)
        .map(|v| options::decode_env_vars(v).unwrap_or_else(|| panic!("undecodable {v:?}")))
}

fn env(list: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
    Some(
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn defaults_send_the_documented_keys_and_leave_out_the_unset_ones(flavour: Flavour) {
    let nginx = FakeCoreNginx::start(flavour, "", "");
    let keys = nginx.keys("/");
    let expect: &[(&str, Option<&str>)] = &[
        (options::PYTHON, Some("python3")),
        (options::NODEJS, Some("node")),
        (options::SPAWN_METHOD, None),
        (options::MAX_PRELOADER_IDLE_TIME, Some("300")),
        (options::START_TIMEOUT, Some("90")),
        (options::ENV_VARS, None),
        (options::LOAD_SHELL_ENVVARS, Some("1")),
        (options::APP_FILE_DESCRIPTOR_ULIMIT, None),
        (options::USER, None),
        (options::GROUP, None),
        (options::FRIENDLY_ERROR_PAGES, None),
        (options::CUSTOM_ERROR_PAGE, None),
        (options::SPAWN_EXCEPTION_STATUS_CODE, Some("500")),
        (options::USER_SWITCHING, Some("1")),
        (options::DEFAULT_USER, Some("nobody")),
        (options::DEFAULT_GROUP, None),
        (options::DISABLE_LOG_PREFIX, Some("0")),
    ];
    for (key, want) in expect {
        assert_eq!(value(&keys, key), *want, "{key} in {keys:?}");
    }
}

fn keys_follow_inheritance_http_server_location_if(flavour: Flavour) {
    let http_extra = "\
    passenger_user_switching off;
    passenger_default_user nobody;
    passenger_default_group nogroup;
    passenger_disable_log_prefix on;
    passenger_env_var FROM_HTTP http;
    passenger_start_timeout 30;
    passenger_friendly_error_pages off;
";
    let server_extra = "
        location /all {
            passenger_spawn_method smart-lv2;
            passenger_max_preloader_idle_time 0;
            passenger_start_timeout 5;
            passenger_env_var A 1;
            passenger_env_var B \"two words\";
            passenger_env_var A 3;
            passenger_load_shell_envvars off;
            passenger_app_file_descriptor_ulimit 4096;
            passenger_user nobody;
            passenger_group nogroup;
            passenger_friendly_error_pages on;
            passenger_custom_error_page errors/spawn.html;
            passenger_spawn_exception_status_code 503;
            passenger_python /usr/bin/python3;
            passenger_nodejs /usr/bin/node;
        }
        location /direct {
            passenger_spawn_method conservative;
            if ($arg_smart) {
                passenger_spawn_method smart;
                passenger_env_var IN_IF yes;
            }
        }
";
    let nginx = FakeCoreNginx::start(flavour, http_extra, server_extra);

    // Inherited from http; the rest at their defaults.
    let root = nginx.keys("/");
    assert_eq!(env_vars(&root), env(&[("FROM_HTTP", "http")]));
    assert_eq!(value(&root, options::START_TIMEOUT), Some("30"));
    assert_eq!(value(&root, options::FRIENDLY_ERROR_PAGES), Some("0"));
    assert_eq!(value(&root, options::SPAWN_METHOD), None);
    assert_eq!(value(&root, options::USER_SWITCHING), Some("0"));
    assert_eq!(value(&root, options::DEFAULT_USER), Some("nobody"));
    assert_eq!(value(&root, options::DEFAULT_GROUP), Some("nogroup"));
    assert_eq!(value(&root, options::DISABLE_LOG_PREFIX), Some("1"));

    // Everything set in the location; its own env var list replaces http's, the last value of
    // a name wins.
    let all = nginx.keys("/all");
    let page = nginx.dir.0.join("errors/spawn.html").display().to_string();
    for (key, want) in [
        (options::SPAWN_METHOD, "smart"),
        (options::MAX_PRELOADER_IDLE_TIME, "0"),
        (options::START_TIMEOUT, "5"),
        (options::LOAD_SHELL_ENVVARS, "0"),
        (options::APP_FILE_DESCRIPTOR_ULIMIT, "4096"),
        (options::USER, "nobody"),
        (options::GROUP, "nogroup"),
        (options::FRIENDLY_ERROR_PAGES, "1"),
        (options::CUSTOM_ERROR_PAGE, page.as_str()),
        (options::SPAWN_EXCEPTION_STATUS_CODE, "503"),
        (options::PYTHON, "/usr/bin/python3"),
        (options::NODEJS, "/usr/bin/node"),
        // The http-level settings travel with every location.
        (options::USER_SWITCHING, "0"),
        (options::DISABLE_LOG_PREFIX, "1"),
    ] {
        assert_eq!(value(&all, key), Some(want), "{key} in {all:?}");
    }
    assert_eq!(env_vars(&all), env(&[("A", "3"), ("B", "two words")]));

    // An alias in a location, and an if block inside it overriding it again.
    let direct = nginx.keys("/direct");
    assert_eq!(value(&direct, options::SPAWN_METHOD), Some("direct"));
    assert_eq!(env_vars(&direct), env(&[("FROM_HTTP", "http")]));
    let in_if = nginx.keys("/direct?smart=1");
    assert_eq!(value(&in_if, options::SPAWN_METHOD), Some("smart"));
    assert_eq!(env_vars(&in_if), env(&[("IN_IF", "yes")]));
    assert_eq!(value(&in_if, options::START_TIMEOUT), Some("30"));
}

for_both_nginx! {
    bad_values_fail_nginx_t_naming_value_file_and_line,
    good_values_pass_nginx_t,
    defaults_send_the_documented_keys_and_leave_out_the_unset_ones,
    keys_follow_inheritance_http_server_location_if,
}
