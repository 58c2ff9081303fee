//! The nginx module's own directives and request handling, end to end with real nginx (both
//! builds) and the `module` Rack app (tests/apps/module): sub-URIs, request headers, bodies,
//! responses, upstream settings, the global agent settings and resilience. The core's side of
//! the pool directives is in core_directives.rs.

#[macro_use]
mod common;

use common::config_check::*;
use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

fn site(extra: &str) -> Site {
    Site {
        extra: extra.to_string(),
        ..Site::app("module")
    }
}

/// The `K=V` lines of the app's `/env` answer.
fn env_of(r: &Response) -> HashMap<String, String> {
    assert_eq!(r.status, 200, "{r:?}");
    r.text()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let owned = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&owned).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The app's byte pattern (see `/bytes`).
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 256) as u8).collect()
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

fn read_response(mut s: TcpStream) -> Response {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

// ---------------------------------------------------------------------------------------------
// Phusion Passenger's configurations

/// The directives of Passenger's own integration-test nginx.conf (written afresh here, not
/// copied): a root app and a sub-URI app, obsolete directives included.
fn passengers_integration_config_passes_nginx_t_and_serves(flavour: Flavour) {
    let root_app = copy_app("module");
    let sub_app = copy_app("echo");
    let sub_public = sub_app.0.join("public");
    std::os::unix::fs::symlink(&sub_public, root_app.0.join("public/subapp")).unwrap();
    // The alias location serves the same app under a second base URI: one group, whose
    // processes take each request's SCRIPT_NAME from nginx.
    let http = "passenger_default_user nobody;\n\
                passenger_default_group nogroup;\n\
                passenger_max_pool_size 3;\n\
                passenger_log_level 3;\n\
                passenger_turbocaching off;\n\
                passenger_disable_security_update_check on;\n\
                passenger_disable_anonymous_telemetry on;\n";
    let server = format!(
        "passenger_friendly_error_pages on;\n\
         passenger_env_var INTEGRATION yes;\n\
         passenger_app_env staging;\n\
         passenger_base_uri /subapp;\n\
         location /explicit {{\n\
         \x20   alias {sub}/public;\n\
         \x20   passenger_base_uri /explicit;\n\
         \x20   passenger_app_root {sub};\n\
         \x20   passenger_document_root {sub}/public;\n\
         \x20   passenger_enabled on;\n\
         }}\n",
        sub = sub_app.0.display()
    );
    let site = Site {
        app: root_app.0.clone(),
        extra: server.clone(),
    };
    // nginx -t: passes, with one warning per obsolete directive.
    let dir = Scratch::new("integration-t");
    std::fs::create_dir_all(dir.0.join("registry")).unwrap();
    std::fs::write(
        dir.0.join("nginx.conf"),
        Nginx::config_with(flavour, &dir.0, &[(free_port(), &site)], http),
    )
    .unwrap();
    let out = nginx_command(flavour, &dir.0).arg("-t").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx -t failed:\n{err}");
    for obsolete in [
        "passenger_turbocaching",
        "passenger_disable_security_update_check",
        "passenger_disable_anonymous_telemetry",
    ] {
        assert!(
            err.contains(&format!("{obsolete} is obsolete and has no effect")),
            "no warning for {obsolete}:\n{err}"
        );
    }

    let nginx = Nginx::start_with(flavour, &[site], http);
    let root = env_of(&nginx.get("/env"));
    assert_eq!(root["SCRIPT_NAME"], "", "{root:?}");
    assert_eq!(root["PATH_INFO"], "/env");
    let sub = nginx.get("/subapp/query?x=1");
    assert_eq!(
        (sub.status, sub.text().as_str()),
        (200, "x=1"),
        "{sub:?}\n{}",
        nginx.passenger_log()
    );
    let explicit = nginx.get("/explicit/query?y=2");
    assert_eq!(
        (explicit.status, explicit.text().as_str()),
        (200, "y=2"),
        "{explicit:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Sub-URIs and static files

fn sub_uri_apps_get_script_name_and_path_info(flavour: Flavour) {
    let root_app = copy_app("module");
    let sub_app = copy_app("module");
    std::os::unix::fs::symlink(sub_app.0.join("public"), root_app.0.join("public/blog")).unwrap();
    let nginx = Nginx::start(
        flavour,
        &[Site {
            app: root_app.0.clone(),
            extra: "passenger_base_uri /blog;".into(),
        }],
    );
    let sub = env_of(&nginx.get("/blog/env?q=1"));
    assert_eq!(sub["SCRIPT_NAME"], "/blog", "{sub:?}");
    assert_eq!(sub["PATH_INFO"], "/env");
    assert_eq!(sub["REQUEST_URI"], "/blog/env?q=1");
    assert_eq!(
        Path::new(&sub["DOCUMENT_ROOT"]),
        root_app.0.join("public/blog")
    );
    // The root site is unaffected, and /blogs is not under /blog.
    let root = env_of(&nginx.get("/env"));
    assert_eq!(
        (root["SCRIPT_NAME"].as_str(), root["PATH_INFO"].as_str()),
        ("", "/env")
    );
    let blogs = nginx.get("/blogs");
    assert_eq!(blogs.text(), "module app: /blogs", "{blogs:?}");
    // Two apps: the sub-URI one runs from the symlink's target.
    let pids = nginx.app_pids();
    assert_eq!(pids.len(), 2, "one process per app: {pids:?}");
    // A static file under the sub-URI is nginx's.
    let file = nginx.get("/blog/static.txt");
    assert_eq!(file.text(), "static file of the module app\n");
    assert!(file.header("x-pid").is_none(), "{file:?}");
}

fn static_files_and_page_cache_are_served_by_nginx(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("")]);
    let file = nginx.get("/static.txt");
    assert_eq!(file.text(), "static file of the module app\n");
    assert!(file.header("x-powered-by").is_none(), "{file:?}");
    let cached = nginx.get("/cached");
    assert_eq!(cached.text(), "page-cached\n", "{cached:?}");
    // A URI ending in `/`: its directory's index.html if there is one, else the app.
    let index = nginx.get("/docs/");
    assert_eq!(index.text(), "docs index of the module app\n", "{index:?}");
    let no_index = nginx.get("/empty/");
    assert_eq!(no_index.text(), "module app: /empty/", "{no_index:?}");
    let root = nginx.get("/");
    assert_eq!(root.text(), "module app: /", "{root:?}");
    // POST to a static path goes to the app.
    let post = http(nginx.port(), "POST", "/static.txt", &[], b"x");
    assert_eq!(post.text(), "module app: /static.txt", "{post:?}");
}

fn autodetection_follows_stat_throttle_rate(flavour: Flavour) {
    let app = copy_app("module");
    let config_ru = std::fs::read(app.0.join("config.ru")).unwrap();
    std::fs::remove_file(app.0.join("config.ru")).unwrap();
    let nginx = Nginx::start_with(
        flavour,
        &[Site {
            app: app.0.clone(),
            extra: String::new(),
        }],
        "passenger_stat_throttle_rate 0;",
    );
    // No app: the location is static; /env does not exist.
    assert_eq!(nginx.get("/env").status, 404);
    std::fs::write(app.0.join("config.ru"), config_ru).unwrap();
    let env = nginx.get("/env");
    assert_eq!(
        env.status, 200,
        "the new config.ru was not noticed: {env:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Request headers

fn set_header_and_forwarding_headers(flavour: Flavour) {
    let nginx = Nginx::start(
        flavour,
        &[site(
            "passenger_set_header X-Set \"via $request_method\";\n\
             passenger_set_header X-Replaced replaced;\n\
             passenger_set_header X-Removed \"\";\n\
             location /trusted {\n\
             \x20   set_real_ip_from 127.0.0.1;\n\
             \x20   real_ip_header X-Real-IP;\n\
             \x20   passenger_enabled on;\n\
             \x20   rewrite ^/trusted(.*)$ $1 break;\n\
             }",
        )],
    );
    let headers = [
        ("X-Replaced", "from client"),
        ("X-Removed", "from client"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6"),
        ("X-Real-IP", "10.1.2.3"),
    ];
    let env = env_of(&http(nginx.port(), "GET", "/env", &headers, b""));
    assert_eq!(env["HTTP_X_SET"], "via GET", "{env:?}");
    assert_eq!(env["HTTP_X_REPLACED"], "replaced");
    assert!(!env.contains_key("HTTP_X_REMOVED"), "{env:?}");
    for spoofed in [
        "HTTP_X_FORWARDED_PROTO",
        "HTTP_X_FORWARDED_FOR",
        "HTTP_FORWARDED",
    ] {
        assert!(!env.contains_key(spoofed), "{spoofed} passed: {env:?}");
    }
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    // A header sent twice reaches the app once, its values joined in order.
    let repeated = [
        ("Cookie", "a=1"),
        ("X-Multi", "1"),
        ("cookie", "b=2"),
        ("x-multi", "2"),
    ];
    let joined = env_of(&http(nginx.port(), "GET", "/env", &repeated, b""));
    assert_eq!(joined["HTTP_COOKIE"], "a=1; b=2", "{joined:?}");
    assert_eq!(joined["HTTP_X_MULTI"], "1, 2", "{joined:?}");
    // Behind a proxy that realip trusts, the forwarding headers are the proxy's word. (The
    // location's own set_header list is inherited: it has none.)
    let trusted = env_of(&http(nginx.port(), "GET", "/trusted/env", &headers, b""));
    assert_eq!(trusted["REMOTE_ADDR"], "10.1.2.3", "{trusted:?}");
    assert_eq!(trusted["HTTP_X_FORWARDED_PROTO"], "https");
}

// ---------------------------------------------------------------------------------------------
// Request bodies

fn large_and_chunked_uploads_arrive_intact(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("client_max_body_size 200m;")]);
    let body: Vec<u8> = (0..100 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let expected = format!("{} {}", body.len(), sha256_hex(&body));
    let r = http(nginx.port(), "POST", "/sha", &[], &body);
    assert_eq!(r.text(), expected, "100 MB upload");

    // Chunked: nginx de-chunks it and the app gets CONTENT_LENGTH.
    let small = &body[..3 * 1024 * 1024 + 17];
    let mut s = connect(nginx.port());
    s.write_all(
        b"POST /sha HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    for piece in small.chunks(100_000) {
        s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .unwrap();
        s.write_all(piece).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let r = read_response(s);
    assert_eq!(
        r.text(),
        format!("{} {}", small.len(), sha256_hex(small)),
        "chunked upload"
    );
}

fn client_max_body_size_is_honoured(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("client_max_body_size 1k;")]);
    let r = http(nginx.port(), "POST", "/sha", &[], &[b'x'; 4096]);
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(nginx.app_pids().len(), 0, "the app was not needed");
}

/// With `passenger_request_buffering off` the app reads the first bytes while the client is
/// still sending; with buffering on, the app is not even asked until the body is complete.
fn request_buffering_off_streams_the_body(flavour: Flavour) {
    let marks = Scratch::writable_by_apps("first-bytes");
    let nginx = Nginx::start(
        flavour,
        &[site(
            "location /stream { passenger_request_buffering off; passenger_enabled on; \
             rewrite ^/stream(.*)$ $1 break; }",
        )],
    );
    let mark = marks.0.join("streamed");
    let mut s = connect(nginx.port());
    s.write_all(
        format!(
            "POST /stream/first-bytes?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Length: 10\r\n\r\nhello",
            mark.display()
        )
        .as_bytes(),
    )
    .unwrap();
    wait_until(
        "the app saw the first bytes before the body was complete",
        || mark.exists(),
    );
    s.write_all(b"world").unwrap();
    let r = read_response(s);
    assert_eq!(r.text(), "10", "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Responses

fn large_responses_arrive_intact_with_and_without_length(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("")]);
    let n = 8 * 1024 * 1024;
    for cl in ["1", "0"] {
        let r = nginx.get(&format!("/bytes?n={n}&cl={cl}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), n, "cl={cl}: {:?}", r.headers);
        assert!(r.body == pattern(n), "cl={cl}: the body differs");
    }
}

fn show_version_in_header(flavour: Flavour) {
    let version = env!("CARGO_PKG_VERSION");
    let on = Nginx::start(flavour, &[site("")]);
    let r = on.get("/env");
    let powered = r.header("x-powered-by").unwrap_or("");
    assert!(powered.contains(version), "{powered:?}");
    let server = r.header("server").unwrap_or("");
    assert!(
        server.starts_with("nginx/") && server.ends_with(&format!("+ passenger-rs {version}")),
        "{server:?}"
    );
    // Static files are nginx's alone.
    let file = on.get("/static.txt");
    assert!(
        !file.header("server").unwrap_or("").contains("passenger"),
        "{file:?}"
    );
    drop(on);
    let off = Nginx::start_with(
        flavour,
        &[site("")],
        "passenger_show_version_in_header off;",
    );
    let r = off.get("/env");
    let powered = r.header("x-powered-by").unwrap_or("");
    assert!(
        !powered.is_empty() && !powered.contains(version),
        "{powered:?}"
    );
    let server = r.header("server").unwrap_or("");
    assert!(
        server.starts_with("nginx") && !server.contains("passenger"),
        "{server:?}"
    );
}

fn intercept_errors_hands_app_errors_to_error_page(flavour: Flavour) {
    let nginx = Nginx::start(
        flavour,
        &[site(
            "error_page 404 /static.txt;\n\
             location /intercepted { passenger_intercept_errors on; passenger_enabled on; \
             rewrite ^/intercepted(.*)$ $1 break; }",
        )],
    );
    let plain = nginx.get("/status?404");
    assert_eq!(
        (plain.status, plain.text().as_str()),
        (404, "app status 404")
    );
    let intercepted = nginx.get("/intercepted/status?404");
    assert_eq!(intercepted.status, 404);
    assert_eq!(
        intercepted.text(),
        "static file of the module app\n",
        "{intercepted:?}"
    );
}

fn buffer_size_bounds_the_response_header(flavour: Flavour) {
    let nginx = Nginx::start(
        flavour,
        &[site(
            "location /roomy { passenger_buffer_size 32k; passenger_buffers 4 32k; \
             passenger_enabled on; \
             rewrite ^/roomy(.*)$ $1 break; }",
        )],
    );
    let tight = nginx.get("/header?20000");
    assert_eq!(
        tight.status, 502,
        "a 20 KB header overflows the default buffer"
    );
    assert!(
        nginx.error_log().contains("too big header"),
        "{}",
        nginx.error_log()
    );
    let roomy = nginx.get("/roomy/header?20000");
    assert_eq!(roomy.status, 200, "{roomy:?}");
    assert_eq!(roomy.header("x-big").map(str::len), Some(20000));
}

/// With `passenger_buffer_response on`, a response larger than `passenger_buffers` that the
/// client does not read yet goes to temp files under `passenger_temp_path` (nginx creates the
/// level directories when it writes the first one), and still arrives intact.
fn buffered_responses_spill_to_passenger_temp_path(flavour: Flavour) {
    let temp = Scratch::new("passenger-temp");
    let nginx = Nginx::start(
        flavour,
        &[site(&format!(
            "passenger_buffer_response on;\npassenger_buffers 4 4k;\n\
             passenger_busy_buffers_size 8k;\npassenger_temp_path {}/t 1 2;",
            temp.0.display()
        ))],
    );
    let n = 8 * 1024 * 1024;
    let mut s = connect(nginx.port());
    s.write_all(
        format!("GET /bytes?n={n}&cl=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let levels = temp.0.join("t");
    wait_until("nginx wrote the response to a temp file", || {
        std::fs::read_dir(&levels).is_ok_and(|mut d| d.next().is_some())
    });
    let r = read_response(s);
    assert_eq!(r.body.len(), n);
    assert!(r.body == pattern(n), "the body differs");
}

fn pass_header_and_ignore_headers(flavour: Flavour) {
    let nginx = Nginx::start(
        flavour,
        &[site(
            "location /pass { passenger_pass_header X-Accel-Charset; passenger_enabled on; \
             rewrite ^/pass(.*)$ $1 break; }\n\
             location /ignore { passenger_ignore_headers X-Accel-Redirect; passenger_enabled on; \
             rewrite ^/ignore(.*)$ $1 break; }",
        )],
    );
    let hidden = nginx.get("/accel?X-Accel-Charset=utf-8");
    assert!(hidden.header("x-accel-charset").is_none(), "{hidden:?}");
    let passed = nginx.get("/pass/accel?X-Accel-Charset=utf-8");
    assert_eq!(
        passed.header("x-accel-charset"),
        Some("utf-8"),
        "{passed:?}"
    );
    // X-Accel-Redirect makes nginx serve the named URI, unless ignored.
    let redirected = nginx.get("/accel?X-Accel-Redirect=/static.txt");
    assert_eq!(
        redirected.text(),
        "static file of the module app\n",
        "{redirected:?}"
    );
    let ignored = nginx.get("/ignore/accel?X-Accel-Redirect=/static.txt");
    assert_eq!(ignored.text(), "from the app", "{ignored:?}");
}

fn read_timeout_gives_504(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("passenger_read_timeout 1s;")]);
    let r = nginx.get("/sleep?5");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        nginx.error_log().contains("timed out"),
        "{}",
        nginx.error_log()
    );
    assert_eq!(nginx.get("/sleep?0").status, 200);
}

/// A client that leaves mid-request: nginx logs 499 and drops the request, or with
/// `passenger_ignore_client_abort on` waits for the app's answer (logged 200).
fn ignore_client_abort(flavour: Flavour) {
    let nginx = Nginx::start_with(
        flavour,
        &[site(
            "access_log status.log st;\n\
             location /ignoring { passenger_ignore_client_abort on; passenger_enabled on; \
             rewrite ^/ignoring(.*)$ $1 break; }",
        )],
        "log_format st \"$uri $status\";",
    );
    assert_eq!(nginx.get("/sleep?0").status, 200, "the app is up");
    let marks = Scratch::writable_by_apps("abort");
    for (i, path) in ["/hold", "/ignoring/hold"].iter().enumerate() {
        let mark = marks.0.join(i.to_string());
        let mut s = connect(nginx.port());
        s.write_all(
            format!("GET {path}?{} HTTP/1.1\r\nHost: x\r\n\r\n", mark.display()).as_bytes(),
        )
        .unwrap();
        // The app has the request: leave.
        wait_until("the app started the request", || mark.exists());
        drop(s);
    }
    let log = nginx.dir.0.join("status.log");
    wait_until("both requests are logged", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.lines().count() >= 3)
    });
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("\n/hold 499"), "{log}");
    assert!(log.contains("\n/hold 200"), "{log}");
}

fn http2_clients_are_served(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("")]);
    // A second listener speaking cleartext HTTP/2 (prior knowledge) on the same server.
    let port = free_port();
    let conf_path = nginx.dir.0.join("nginx.conf");
    let conf = std::fs::read_to_string(&conf_path).unwrap().replacen(
        &format!("listen 127.0.0.1:{};", nginx.port()),
        &format!(
            "listen 127.0.0.1:{}; listen 127.0.0.1:{port} http2;",
            nginx.port()
        ),
        1,
    );
    std::fs::write(&conf_path, conf).unwrap();
    // (The master writes its pid file just after it starts listening.)
    let pid_file = nginx.dir.0.join("nginx.pid");
    wait_until("nginx.pid written", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    });
    let reload = nginx_command(flavour, &nginx.dir.0)
        .args(["-s", "reload"])
        .output()
        .unwrap();
    assert!(reload.status.success(), "{reload:?}");
    let url = format!("http://127.0.0.1:{port}/env");
    let mut out = None;
    wait_until("nginx serves HTTP/2 on the new port", || {
        let o = Command::new("curl")
            .args(["-sS", "--http2-prior-knowledge", "--max-time", "60", &url])
            .output()
            .unwrap();
        let ok = o.status.success();
        out = Some(o);
        ok
    });
    let body = String::from_utf8_lossy(&out.unwrap().stdout).into_owned();
    assert!(body.contains("SERVER_PROTOCOL=HTTP/2.0"), "{body}");
}

// ---------------------------------------------------------------------------------------------
// Global settings and resilience

/// Writes the harness's configuration for the module app on `port` into `dir`, passed through
/// `edit` (for what the harness fixes itself, like `passenger_root` or the registry dir).
fn write_own_config(flavour: Flavour, dir: &Path, port: u16, edit: impl FnOnce(String) -> String) {
    std::fs::create_dir_all(dir.join("registry")).unwrap();
    let conf = Nginx::config_with(flavour, dir, &[(port, &site(""))], "");
    std::fs::write(dir.join("nginx.conf"), edit(conf)).unwrap();
}

/// nginx in the foreground on a configuration of [`write_own_config`], listening; stopped
/// (SIGTERM, and waited for) when dropped.
struct OwnNginx {
    dir: Scratch,
    port: u16,
    child: std::process::Child,
}

impl OwnNginx {
    fn start(flavour: Flavour, label: &str, edit: impl FnOnce(String, u16) -> String) -> OwnNginx {
        let dir = Scratch::new(label);
        let port = free_port();
        write_own_config(flavour, &dir.0, port, |conf| edit(conf, port));
        let mut child = nginx_command(flavour, &dir.0)
            .args(["-g", "daemon off;"])
            .spawn()
            .unwrap();
        wait_until("nginx listens", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nginx exited with {status}:\n{}",
                    std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default()
                );
            }
            listening(port)
        });
        OwnNginx { dir, port, child }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.0.join(name)).unwrap_or_default()
    }

    fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for OwnNginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pre_start_spawns_the_app_before_any_request(flavour: Flavour) {
    // The pre-start URL names the port nginx listens on, so the config is written here.
    let nginx = OwnNginx::start(flavour, "pre-start", |conf, port| {
        conf.replacen(
            "http {\n",
            &format!("http {{\npassenger_pre_start http://127.0.0.1:{port}/env;\n"),
            1,
        )
    });
    let line = format!("pre-start http://127.0.0.1:{}/env: ", nginx.port);
    wait_until("the watchdog logged the pre-start request", || {
        nginx.log("passenger.log").contains(&line)
    });
    let log = nginx.log("passenger.log");
    assert!(log.contains(&format!("{line}HTTP/1.1 200")), "{log}");
    assert!(log.contains("Started app"), "{log}");
}

/// Under a registry path too long for unix socket addresses, app sockets go to a short
/// directory under /tmp, which goes away with the instance.
fn a_long_instance_registry_path_still_spawns_apps(flavour: Flavour) {
    let parent = Scratch::new("long-registry");
    // 70 bytes: short enough for the core's own socket (instance dir + agents.s/core), too
    // long for the apps' (instance dir + apps.s/<process dir>/<socket name>).
    let name_len = 70 - parent.0.as_os_str().len() - 1;
    let registry = parent.0.join("r".repeat(name_len));
    std::fs::create_dir_all(&registry).unwrap();
    let mut nginx = OwnNginx::start(flavour, "long-registry-nginx", |conf, _| {
        let line = conf
            .lines()
            .find(|l| l.contains("passenger_instance_registry_dir"))
            .unwrap()
            .to_string();
        conf.replace(
            &line,
            &format!("passenger_instance_registry_dir {};", registry.display()),
        )
    });
    let r = http(nginx.port, "GET", "/env", &[], b"");
    let instance = instance_dirs(&registry).into_iter().next().unwrap();
    let note = std::fs::read_to_string(instance.join("apps.s.elsewhere")).unwrap_or_default();
    nginx.stop();
    let log = nginx.log("passenger.log");
    assert_eq!(r.status, 200, "{r:?}\n{log}");
    assert!(
        note.starts_with("/tmp/prs."),
        "no short socket dir noted: {note:?}\n{log}"
    );
    wait_until("the short socket dir is removed with the instance", || {
        !Path::new(&note).exists()
    });
}

fn core_socket_backlog_and_fd_limit(flavour: Flavour) {
    let nginx = Nginx::start_with(
        flavour,
        &[site("")],
        "passenger_socket_backlog 77;\npassenger_core_file_descriptor_ulimit 4321;",
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", nginx.core_pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>()[3..5],
        ["4321", "4321"],
        "{line}"
    );
    let socket = nginx.instance_dir().join("agents.s/core");
    let ss = Command::new("ss").args(["-xlnH"]).output().unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout);
    let row = ss
        .lines()
        .find(|l| l.contains(&*socket.to_string_lossy()))
        .unwrap_or_else(|| panic!("{} not listed by ss:\n{ss}", socket.display()));
    // For a listening socket, ss shows the backlog as Send-Q.
    assert_eq!(row.split_whitespace().nth(3), Some("77"), "{row}");
}

fn agents_failing_to_start(flavour: Flavour) {
    let broken_root = Scratch::new("no-agents");
    let root_line = format!("passenger_root {};", broken_root.0.display());
    let with_broken_root = |conf: String, extra: &str| {
        conf.replace(
            &format!("passenger_root {};", buildout().display()),
            &format!("{root_line}\n{extra}"),
        )
    };
    // Off (the default): nginx runs, static files are served, apps answer 503.
    let nginx = OwnNginx::start(flavour, "startup-error", |conf, _| {
        with_broken_root(conf, "")
    });
    let file = http(nginx.port, "GET", "/static.txt", &[], b"");
    let app = http(nginx.port, "GET", "/env", &[], b"");
    let log = nginx.log("error.log");
    assert_eq!(file.status, 200, "{log}");
    assert_eq!(app.status, 503, "{app:?}\n{log}");
    assert!(log.contains("could not start the watchdog"), "{log}");
    assert!(log.contains("no core agent is running"), "{log}");
    drop(nginx);
    // On: nginx refuses to start.
    let dir = Scratch::new("startup-error-abort");
    write_own_config(flavour, &dir.0, free_port(), |conf| {
        with_broken_root(conf, "passenger_abort_on_startup_error on;")
    });
    let out = nginx_command(flavour, &dir.0)
        .args(["-g", "daemon off;"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "nginx started without agents");
}

fn a_restarted_core_is_used_without_reloading_nginx(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("")]);
    assert_eq!(nginx.get("/env").status, 200);
    let core = nginx.core_pid();
    unsafe { libc::kill(core, libc::SIGKILL) };
    wait_until("the watchdog restarted the core", || {
        std::fs::read_to_string(nginx.instance_dir().join("core.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .is_some_and(|p| p != core && alive(p))
    });
    let mut last = None;
    wait_until("a request is served by the new core", || {
        let r = nginx.get("/env");
        let ok = r.status == 200;
        last = Some(r);
        ok
    });
    let _ = last;
}

fn app_group_name_separates_groups(flavour: Flavour) {
    let nginx = Nginx::start(
        flavour,
        &[site(
            "location /other { passenger_app_group_name other; passenger_enabled on; \
             rewrite ^/other(.*)$ $1 break; }",
        )],
    );
    let a = nginx.get("/env");
    let b = nginx.get("/other/env");
    assert_ne!(
        a.header("x-pid"),
        b.header("x-pid"),
        "one group: {a:?} {b:?}"
    );
}

/// When the core's socket cannot be reached, nginx answers 502 and says why in one line.
fn an_unreachable_core_gives_502_and_one_log_line(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("")]);
    // No request before: it would leave a kept connection to the core, which still reaches it.
    let socket = nginx.instance_dir().join("agents.s/core");
    wait_until("the core listens", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    std::fs::remove_file(&socket).unwrap();
    let r = nginx.get("/env");
    assert_eq!(r.status, 502, "{r:?}");
    let log = nginx.error_log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("agents.s/core") && l.contains("connect()"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("No such file"), "{}", lines[0]);
    // Static files are still served.
    assert_eq!(nginx.get("/static.txt").status, 200);
}

/// A directive set in http reaches server and location; a location and an `if` inside it
/// override it.
fn settings_inherit_from_http_to_location_and_if(flavour: Flavour) {
    let nginx = Nginx::start_with(
        flavour,
        &[site(
            "location /loc {\n\
             \x20   passenger_set_header X-Level location;\n\
             \x20   if ($arg_inner) { passenger_set_header X-Level if; }\n\
             \x20   rewrite ^/loc(.*)$ $1 break;\n\
             }",
        )],
        "passenger_set_header X-Level http;",
    );
    let level = |path: &str| env_of(&nginx.get(path))["HTTP_X_LEVEL"].clone();
    assert_eq!(level("/env"), "http");
    assert_eq!(level("/loc/env"), "location");
    assert_eq!(level("/loc/env?inner=1"), "if");
}

/// nginx's header limits apply before the app is asked; within them, a large header reaches
/// the app whole.
fn large_request_headers_within_nginx_limits_reach_the_app(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("large_client_header_buffers 4 64k;")]);
    let big = "b".repeat(40_000);
    let env = env_of(&http(nginx.port(), "GET", "/env", &[("X-Big", &big)], b""));
    assert_eq!(env["HTTP_X_BIG"].len(), big.len());
    let too_big = "b".repeat(70_000);
    let r = http(nginx.port(), "GET", "/env", &[("X-Big", &too_big)], b"");
    assert_eq!(r.status, 400, "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Configuration checks

fn aliases_and_obsolete_directives_are_accepted(flavour: Flavour) {
    let dir = Scratch::new("obsolete");
    let (ok, err) = nginx_t(
        flavour,
        &dir.0,
        "union_station_support off;\n\
         passenger_use_global_queue on;\npassenger_analytics_log_user nobody;",
        "rails_env production;\npassenger_app_log_file /tmp/y;",
    );
    assert!(ok, "{err}");
    for name in [
        "union_station_support",
        "passenger_use_global_queue",
        "passenger_analytics_log_user",
        "passenger_app_log_file",
    ] {
        assert!(
            err.contains(&format!("{name} is obsolete")),
            "{name}:\n{err}"
        );
    }
    // passenger_debug_log_file is passenger_log_file by another name: the test configuration
    // already sets that one, so it is a duplicate.
    let (ok, err) = nginx_t(flavour, &dir.0, "passenger_debug_log_file /tmp/x.log;", "");
    assert!(
        !ok && err.contains("\"passenger_debug_log_file\" directive is duplicate"),
        "{err}"
    );
}

fn new_directives_accept_good_values(flavour: Flavour) {
    let dir = Scratch::new("good-values");
    assert_nginx_t_passes(
        flavour,
        &dir.0,
        "passenger_spawn_dir /tmp;\npassenger_data_buffer_dir /tmp;\n\
         passenger_response_buffer_high_watermark 1m;\npassenger_show_version_in_header off;\n\
         passenger_socket_backlog 100;\npassenger_core_file_descriptor_ulimit 4096;\n\
         passenger_abort_on_startup_error off;",
        "passenger_base_uri /a;\npassenger_base_uri /b/;\npassenger_document_root /tmp;\n\
         passenger_app_group_name g;\npassenger_max_instances 2;\n\
         passenger_force_max_concurrent_requests_per_process -1;\npassenger_memory_limit 100;\n\
         passenger_max_request_time 10;\npassenger_rolling_restarts on;\n\
         passenger_sticky_sessions on;\npassenger_sticky_sessions_cookie_name route;\n\
         passenger_sticky_sessions_cookie_attributes \"SameSite=Strict\";\n\
         passenger_abort_websockets_on_process_shutdown off;\npassenger_preload_bundler on;\n\
         passenger_request_buffering off;\npassenger_buffer_size 16k;\npassenger_buffers 8 16k;\n\
         passenger_busy_buffers_size 32k;\npassenger_read_timeout 30s;\n\
         passenger_ignore_client_abort on;\npassenger_intercept_errors on;\n\
         passenger_pass_header X-Accel-Charset;\npassenger_ignore_headers X-Accel-Expires;\n\
         passenger_set_header X-A $host;\npassenger_headers_hash_max_size 1024;\n\
         passenger_headers_hash_bucket_size 128;",
    );
}

/// The headers hash sizes are the ones nginx builds the hidden-headers hash with: too small a
/// one gets nginx's own warning naming the size given.
fn headers_hash_sizes_reach_nginx(flavour: Flavour) {
    let dir = Scratch::new("headers-hash");
    let (ok, err) = nginx_t(
        flavour,
        &dir.0,
        "",
        "passenger_pass_header X-Foo;\npassenger_headers_hash_max_size 1;\n\
         passenger_headers_hash_bucket_size 32;",
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("could not build optimal passenger_hide_headers_hash")
            && err.contains("max_size: 1"),
        "{err}"
    );
}

fn new_directives_refuse_bad_values(flavour: Flavour) {
    assert_bad_values_fail_nginx_t(
        flavour,
        "bad-values",
        &[
            in_http(
                "passenger_spawn_dir /nonexistent/dir;",
                &["passenger_spawn_dir"],
            ),
            in_http("passenger_socket_backlog 0;", &["passenger_socket_backlog"]),
            in_http(
                "passenger_pre_start https://x/;",
                &["https is not supported"],
            ),
            in_http("passenger_pre_start localhost/;", &["passenger_pre_start"]),
            in_server(
                "passenger_base_uri app;",
                &["passenger_base_uri", "starting with /"],
            ),
            in_server(
                "passenger_force_max_concurrent_requests_per_process -2;",
                &["whole number"],
            ),
            in_server(
                "passenger_sticky_sessions_cookie_name \"a b\";",
                &["cookie name"],
            ),
            in_server("passenger_set_header \"Bad Name\" x;", &["header name"]),
            in_server("passenger_read_timeout forever;", &["invalid value"]),
            in_server("passenger_ignore_headers Nonsense;", &["invalid value"]),
            in_server("passenger_request_buffering maybe;", &["invalid value"]),
            in_http(
                "passenger_show_version_in_header sometimes;",
                &["invalid value"],
            ),
        ],
    );
}

for_both_nginx! {
    passengers_integration_config_passes_nginx_t_and_serves,
    sub_uri_apps_get_script_name_and_path_info,
    static_files_and_page_cache_are_served_by_nginx,
    autodetection_follows_stat_throttle_rate,
    set_header_and_forwarding_headers,
    large_and_chunked_uploads_arrive_intact,
    client_max_body_size_is_honoured,
    request_buffering_off_streams_the_body,
    large_responses_arrive_intact_with_and_without_length,
    show_version_in_header,
    intercept_errors_hands_app_errors_to_error_page,
    buffer_size_bounds_the_response_header,
    pass_header_and_ignore_headers,
    buffered_responses_spill_to_passenger_temp_path,
    read_timeout_gives_504,
    ignore_client_abort,
    http2_clients_are_served,
    pre_start_spawns_the_app_before_any_request,
    core_socket_backlog_and_fd_limit,
    a_long_instance_registry_path_still_spawns_apps,
    agents_failing_to_start,
    a_restarted_core_is_used_without_reloading_nginx,
    app_group_name_separates_groups,
    an_unreachable_core_gives_502_and_one_log_line,
    settings_inherit_from_http_to_location_and_if,
    large_request_headers_within_nginx_limits_reach_the_app,
    aliases_and_obsolete_directives_are_accepted,
    new_directives_accept_good_values,
    new_directives_refuse_bad_values,
    headers_hash_sizes_reach_nginx,
}
