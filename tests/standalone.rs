//! `passenger start`, `stop` and `status` as a person uses them: the bundled nginx, the
//! example apps with real Ruby, Python and Node, real signals. Needs `scripts/build`.
//!
//! Every instance gets its own registry dir and TMPDIR (where its runtime dir goes) in a
//! scratch dir, so a test can check that nothing of it is left: no process, no instance dir,
//! no runtime dir, no pid file. Waits are bounded (common::PATIENCE) and say what they waited
//! for; `passenger start` prints its banner only once nginx serves, so the tests wait for it.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn passenger() -> Command {
    Command::new(buildout().join("bin/passenger"))
}

fn example(name: &str) -> PathBuf {
    repo().join("examples").join(name)
}

/// A scratch area for one instance: TMPDIR (the runtime dir goes there) and the registry.
struct Area {
    tmp: Scratch,
    registry: Scratch,
}

impl Area {
    fn new() -> Area {
        Area {
            tmp: Scratch::writable_by_apps("sa-tmp"),
            registry: Scratch::new("sa-reg"),
        }
    }

    /// `passenger <args>` isolated in this area.
    fn passenger(&self) -> Command {
        let mut cmd = passenger();
        cmd.env("TMPDIR", &self.tmp.0)
            .env("PASSENGER_INSTANCE_REGISTRY_DIR", &self.registry.0);
        cmd
    }

    fn instance_dir(&self) -> PathBuf {
        let dirs = instance_dirs(&self.registry.0);
        assert_eq!(dirs.len(), 1, "one instance directory expected: {dirs:?}");
        dirs.into_iter().next().unwrap()
    }

    /// `integration_mode` in the instance's `properties.json`, as tools read it.
    fn integration_mode(&self) -> String {
        let path = self.instance_dir().join("properties.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()));
        json["integration_mode"]
            .as_str()
            .unwrap_or_else(|| panic!("no integration_mode in {}: {text}", path.display()))
            .to_string()
    }

    /// The watchdog, the core and every process below it, plus everything below `supervisor`
    /// (nginx, its workers, and the agents it adopted).
    fn pids(&self, supervisor: i32) -> Vec<i32> {
        let inst = self.instance_dir();
        let read = |f: &str| -> i32 {
            std::fs::read_to_string(inst.join(f))
                .unwrap_or_else(|e| panic!("{f} in {}: {e}", inst.display()))
                .trim()
                .parse()
                .unwrap()
        };
        let core = read("core.pid");
        let mut pids = vec![supervisor, read("watchdog.pid"), core];
        pids.extend(descendants(core));
        pids.extend(descendants(supervisor));
        pids.sort();
        pids.dedup();
        pids
    }

    /// `passenger start APP --address ADDRESS --port PORT --pid-file TMP/PID_NAME`.
    fn start(&self, app: impl AsRef<Path>, address: &str, port: u16, pid_name: &str) -> Command {
        let mut cmd = self.passenger();
        cmd.arg("start")
            .arg(app.as_ref())
            .args(["--address", address, "--port", &port.to_string()])
            .arg("--pid-file")
            .arg(self.tmp.0.join(pid_name));
        cmd
    }

    /// Stops `run` with `sig`; checks that it exits 0 and leaves nothing behind.
    fn stop(&self, run: &mut Running, sig: i32, what: &str) {
        let pids = self.pids(run.pid());
        run.signal(sig);
        let status = run.wait(what);
        assert!(
            status.success(),
            "{what}: passenger start exited with {status}; stderr:\n{}",
            run.stderr()
        );
        self.assert_nothing_left(&pids, what);
    }

    /// Nothing of the instance is left: right now, not eventually.
    fn assert_nothing_left(&self, pids: &[i32], what: &str) {
        let alive_now: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        let alive_now = with_cmdlines(&alive_now);
        assert!(
            alive_now.is_empty(),
            "{what}: processes of the instance still run: {alive_now:?}"
        );
        let left = |dir: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("passenger")
                })
                .collect()
        };
        assert_eq!(
            left(&self.registry.0),
            Vec::<PathBuf>::new(),
            "{what}: registry"
        );
        assert_eq!(left(&self.tmp.0), Vec::<PathBuf>::new(), "{what}: TMPDIR");
    }
}

/// A `passenger start` in the foreground, past its banner.
struct Running {
    child: Child,
    banner: Vec<String>,
    stderr: Arc<Mutex<String>>,
    _stdout: Receiver<String>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("passenger start runs");
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let mut banner = Vec::new();
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let last = line.starts_with("Press Ctrl-C");
                    banner.push(line);
                    if last {
                        break;
                    }
                }
                Err(e) => {
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    panic!(
                        "passenger start printed no complete banner ({e:?}; exited: {status:?}); stdout: {banner:#?}\nstderr:\n{}",
                        stderr.lock().unwrap()
                    );
                }
            }
        }
        Running {
            child,
            banner,
            stderr,
            _stdout: rx,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The value of a banner line (`"Accessible via:"` → `http://...`).
    fn banner(&self, label: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} in the banner {:#?}", self.banner))
            .trim()
            .to_string()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits (bounded) for `passenger start` to exit.
    fn wait(&mut self, what: &str) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: passenger start did not exit within {PATIENCE:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl runs")
}

fn curl_text(args: &[&str]) -> String {
    let out = curl(args);
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts `app` in the foreground on a free port, fetches /hello, stops it with `sig` and
/// checks that it exits 0 leaving nothing behind.
fn serve_and_stop(app: &str, expected_body: &str, sig: i32) {
    let area = Area::new();
    let port = free_port();
    let pid_file = area.tmp.0.join("sa.pid");
    let mut run = Running::start(area.start(example(app), "127.0.0.1", port, "sa.pid"));
    assert_eq!(
        run.banner("Accessible via:"),
        format!("http://127.0.0.1:{port}/")
    );
    assert_eq!(run.banner("Environment:"), "development");
    assert_eq!(run.banner("Log file:"), "this terminal");
    let kind = match app {
        "hello-rack" => "rack, config.ru",
        "hello-wsgi" => "wsgi, passenger_wsgi.py",
        _ => "node, app.js",
    };
    assert_eq!(
        run.banner("App:"),
        format!("{} ({kind})", example(app).display())
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", run.pid()),
        "the pid file names the passenger start process"
    );

    let r = http(port, "GET", "/hello", &[], b"");
    assert_eq!(r.status, 200, "{r:?}\nstderr:\n{}", run.stderr());
    assert_eq!(r.text(), expected_body);
    // The template's `passenger_ctl integration_mode standalone` reached the watchdog.
    assert_eq!(
        area.integration_mode(),
        "standalone",
        "integration_mode in properties.json"
    );

    area.stop(&mut run, sig, "after the stop signal");
    assert!(!pid_file.exists(), "the pid file is removed");
}

#[test]
fn the_rack_example_serves_and_ctrl_c_leaves_nothing() {
    serve_and_stop(
        "hello-rack",
        "Hello from passenger-rs! You asked for /hello\n",
        libc::SIGINT,
    );
}

#[test]
fn the_wsgi_example_serves_and_ctrl_c_leaves_nothing() {
    serve_and_stop(
        "hello-wsgi",
        "Hello from passenger-rs (WSGI)! You asked for /hello\n",
        libc::SIGINT,
    );
}

#[test]
fn the_node_example_serves_and_ctrl_c_leaves_nothing() {
    serve_and_stop(
        "hello-node",
        "Hello from passenger-rs (Node.js)! You asked for /hello\n",
        libc::SIGINT,
    );
}

#[test]
fn sigterm_stops_as_cleanly_as_ctrl_c() {
    serve_and_stop(
        "hello-rack",
        "Hello from passenger-rs! You asked for /hello\n",
        libc::SIGTERM,
    );
}

#[test]
fn daemonize_status_and_stop_round_trip() {
    let area = Area::new();
    let app = Scratch::new("sa-app");
    std::fs::copy(example("hello-rack/config.ru"), app.0.join("config.ru")).unwrap();
    let port = free_port();
    let in_app = |args: &[&str]| -> Output {
        area.passenger()
            .current_dir(&app.0)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let port_s = port.to_string();

    // The command returns once the background instance serves; nothing of it holds our pipes.
    let out = in_app(&[
        "start",
        "--daemonize",
        "--port",
        &port_s,
        "--address",
        "127.0.0.1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "passenger start -d: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The default pid file and log file: in the app directory, named after the port.
    let pid_file = app.0.join(format!("passenger.{port}.pid"));
    let log_file = app.0.join(format!("passenger.{port}.log"));
    assert!(
        stdout.contains(&format!("Log file:       {}", log_file.display())),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&pid_file).expect("the pid file exists once start returns");
    assert!(text.ends_with('\n'), "{text:?}");
    let pid: i32 = text.trim().parse().expect("the pid file holds a pid");
    assert!(alive(pid), "PID {pid} of the pid file runs");
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<&str> = cmdline.split('\0').collect();
    assert!(
        argv[0].ends_with("bin/passenger") && argv[1] == "start",
        "the pid file names the background passenger start: {argv:?}"
    );
    assert_ne!(parent_of(pid), Some(std::process::id() as i32));
    assert!(stdout.contains(&format!("(PID {pid})")), "{stdout}");

    let r = http(port, "GET", "/daemon", &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "Hello from passenger-rs! You asked for /daemon\n");

    let out = in_app(&["status", "--port", &port_s]);
    let status_text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{status_text}");
    assert!(
        status_text.starts_with(&format!(
            "passenger-rs is running on PID {pid}, according to the pid file {}\n",
            pid_file.display()
        )),
        "{status_text}"
    );
    assert!(
        status_text.contains(&format!("Accessible via: http://127.0.0.1:{port}/")),
        "{status_text}"
    );

    // A second start on the same pid file is refused before anything starts.
    let out = in_app(&[
        "start",
        "--daemonize",
        "--port",
        &port_s,
        "--address",
        "127.0.0.1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("already running on PID {pid}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pids = area.pids(pid);
    let out = in_app(&["stop", "--port", &port_s]);
    assert!(
        out.status.success(),
        "passenger stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Stopped passenger-rs (PID {pid}).\n")
    );
    // stop returns when the instance is gone.
    area.assert_nothing_left(&pids, "after passenger stop");
    assert!(!pid_file.exists(), "the pid file is removed");
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("Shutdown complete"), "{log}");

    let out = in_app(&["status", "--port", &port_s]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "passenger-rs is not running: there is no pid file {}\n",
            pid_file.display()
        )
    );
    let out = in_app(&["stop", "--port", &port_s]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("passenger: nothing to stop: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = in_app(&["stop", "--port", &port_s, "--ignore-pid-not-found"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn ssl_with_a_self_signed_certificate() {
    let area = Area::new();
    let certs = Scratch::new("sa-cert");
    let (cert, key) = (certs.0.join("cert.pem"), certs.0.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (port, ssl_port) = (free_port(), free_port());
    let mut cmd = area.start(example("hello-rack"), "127.0.0.1", port, "ssl.pid");
    cmd.args(["--ssl", "--ssl-port", &ssl_port.to_string()])
        .arg("--ssl-certificate")
        .arg(&cert)
        .arg("--ssl-certificate-key")
        .arg(&key);
    let mut run = Running::start(cmd);
    assert_eq!(
        run.banner("Accessible via:"),
        format!("http://127.0.0.1:{port}/")
    );
    assert!(
        run.banner
            .contains(&format!("                https://127.0.0.1:{ssl_port}/")),
        "{:#?}",
        run.banner
    );
    let url = format!("https://127.0.0.1:{ssl_port}/secure");
    let body = curl_text(&["--cacert", cert.to_str().unwrap(), &url]);
    assert_eq!(body, "Hello from passenger-rs! You asked for /secure\n");
    // Without the certificate, curl refuses: it really is TLS with our certificate.
    assert!(!curl(&[&url]).status.success());
    // Plain HTTP on --port alongside.
    assert_eq!(
        http(port, "GET", "/plain", &[], b"").text(),
        "Hello from passenger-rs! You asked for /plain\n"
    );
    area.stop(&mut run, libc::SIGINT, "SSL instance");
}

#[test]
fn ipv6_address() {
    let area = Area::new();
    let port = free_port();
    let mut run = Running::start(area.start(example("hello-wsgi"), "::1", port, "v6.pid"));
    assert_eq!(
        run.banner("Accessible via:"),
        format!("http://[::1]:{port}/")
    );
    let body = curl_text(&["-g", &format!("http://[::1]:{port}/v6")]);
    assert_eq!(body, "Hello from passenger-rs (WSGI)! You asked for /v6\n");
    area.stop(&mut run, libc::SIGTERM, "IPv6 instance");
}

#[test]
fn unix_socket_and_stop_of_a_foreground_instance() {
    let area = Area::new();
    let socket = area.tmp.0.join("web.sock");
    let pid_file = area.tmp.0.join("sock.pid");
    let mut cmd = area.passenger();
    cmd.arg("start")
        .arg(example("hello-node"))
        .arg("--socket")
        .arg(&socket)
        .arg("--pid-file")
        .arg(&pid_file)
        .env("PASSENGER_THREAD_COUNT", "2");
    let mut run = Running::start(cmd);
    assert_eq!(
        run.banner("Accessible via:"),
        format!("unix:{}", socket.display())
    );
    wait_until("a note that threads do not apply to Node.js", || {
        run.stderr().contains(
            "passenger: note: PASSENGER_THREAD_COUNT has no effect on a Node.js app: its one thread takes many requests at once",
        )
    });
    let body = curl_text(&[
        "--unix-socket",
        socket.to_str().unwrap(),
        "http://localhost/sock",
    ]);
    assert_eq!(
        body,
        "Hello from passenger-rs (Node.js)! You asked for /sock\n"
    );

    let pids = area.pids(run.pid());
    let out = area
        .passenger()
        .args(["stop", "--pid-file"])
        .arg(&pid_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run.wait("after passenger stop").success());
    assert!(!socket.exists(), "the socket file is removed");
    area.assert_nothing_left(&pids, "after passenger stop");
}

/// Defaults < Passengerfile.json < PASSENGER_* < flags, seen by the app itself.
#[test]
fn passengerfile_environment_and_flags_layer_in_order() {
    let area = Area::new();
    let app = Scratch::new("sa-layers");
    std::fs::write(
        app.0.join("config.ru"),
        "run lambda { |env|\n  keys = %w[RACK_ENV FROM_FILE OVERRIDDEN FROM_FLAG]\n  \
         [200, { 'content-type' => 'text/plain' }, [keys.map { |k| \"#{k}=#{ENV[k]}\" }.join(' ')]]\n}\n",
    )
    .unwrap();
    let (file_port, env_port) = (free_port(), free_port());
    std::fs::write(
        app.0.join("Passengerfile.json"),
        format!(
            r#"{{"address": "127.0.0.1", "port": {file_port}, "environment": "from_file",
                "max_pool_size": 2, "envvars": {{"FROM_FILE": "file", "OVERRIDDEN": "file"}}}}"#
        ),
    )
    .unwrap();
    let mut cmd = area.passenger();
    cmd.arg("start")
        .arg(&app.0)
        .env("PASSENGER_PORT", env_port.to_string())
        .env("PASSENGER_APP_ENV", "from_env")
        .env("PASSENGER_ENVVARS", r#"{"OVERRIDDEN": "env"}"#)
        .args(["--environment", "from_flag", "--envvar", "FROM_FLAG=flag"])
        .arg("--pid-file")
        .arg(area.tmp.0.join("layers.pid"));
    let mut run = Running::start(cmd);
    assert_eq!(
        run.banner("Accessible via:"),
        format!("http://127.0.0.1:{env_port}/")
    );
    assert_eq!(run.banner("Environment:"), "from_flag");
    let r = http(env_port, "GET", "/", &[], b"");
    assert_eq!(
        r.text(),
        "RACK_ENV=from_flag FROM_FILE=file OVERRIDDEN=env FROM_FLAG=flag",
        "{r:?}"
    );
    area.stop(&mut run, libc::SIGINT, "layered instance");
}

// ---- The generated config: each option onto its directive ----

fn debug_config(args: &[&str], envs: &[(&str, &str)]) -> String {
    let area = Area::new();
    let out = area
        .passenger()
        .args(["start", "--debug-nginx-config"])
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--debug-nginx-config {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn assert_lines(config: &str, lines: &[&str]) {
    for l in lines {
        assert!(
            config.lines().any(|c| c.trim() == *l),
            "no line {l:?} in the config:\n{config}"
        );
    }
}

#[test]
fn debug_nginx_config_maps_each_option_onto_its_directive() {
    let rack = example("hello-rack");
    let config = debug_config(
        &[
            rack.to_str().unwrap(),
            "--address",
            "127.0.0.1",
            "--port",
            "4123",
            "-e",
            "staging",
            "--max-pool-size",
            "4",
            "--min-instances",
            "2",
            "--spawn-method",
            "direct",
            "--app-type",
            "rack",
            "--startup-file",
            "config.ru",
            "--ruby",
            "/usr/bin/ruby",
            "--python",
            "/usr/bin/python3",
            "--nodejs",
            "/usr/bin/node",
            "--envvar",
            "GREETING=say \"hi\"",
            "--log-file",
            "/tmp/sa-debug.log",
            "--log-level",
            "5",
            "--static-files-dir",
            "/srv/static",
            "--no-friendly-error-pages",
            "--max-requests",
            "100",
            "--max-request-queue-size",
            "7",
            "--instance-registry-dir",
            "/tmp",
            "--user",
            "nobody",
            "--socket-backlog",
            "511",
            "--thread-count",
            "4",
        ],
        &[],
    );
    assert_lines(
        &config,
        &[
            "listen 127.0.0.1:4123 backlog=511;",
            "passenger_app_env \"staging\";",
            "passenger_max_pool_size 4;",
            "passenger_min_instances 2;",
            "passenger_spawn_method direct;",
            "passenger_app_type rack;",
            "passenger_startup_file \"config.ru\";",
            "passenger_ruby \"/usr/bin/ruby\";",
            "passenger_python \"/usr/bin/python3\";",
            "passenger_nodejs \"/usr/bin/node\";",
            "passenger_env_var GREETING \"say \\\"hi\\\"\";",
            "passenger_log_file \"/tmp/sa-debug.log\";",
            "error_log \"/tmp/sa-debug.log\" info;",
            "passenger_log_level 5;",
            "root \"/srv/static\";",
            "passenger_friendly_error_pages off;",
            "passenger_max_requests 100;",
            "passenger_max_request_queue_size 7;",
            "passenger_thread_count 4;",
            "passenger_instance_registry_dir \"/tmp\";",
            "user \"nobody\" \"nogroup\";",
            "passenger_user \"nobody\";",
            "passenger_group \"nogroup\";",
            &format!("passenger_app_root \"{}\";", rack.display()),
        ],
    );
    // Defaults: 0.0.0.0:3000, development, the app's public dir, the deliberate backlog, and
    // a burst of connections accepted at once.
    let config = debug_config(&[example("hello-node").to_str().unwrap()], &[]);
    assert_lines(
        &config,
        &[
            "listen 0.0.0.0:3000 backlog=2048;",
            "multi_accept on;",
            "passenger_app_env \"development\";",
            "passenger_app_type node;",
            "error_log stderr notice;",
            "passenger_ctl integration_mode standalone;",
            &format!(
                "root \"{}\";",
                example("hello-node").join("public").display()
            ),
        ],
    );
    for absent in ["passenger_friendly_error_pages", "passenger_thread_count"] {
        assert!(!config.contains(absent), "{absent} by default:\n{config}");
    }
    // IPv6 and a unix socket.
    let config = debug_config(
        &[
            example("hello-wsgi").to_str().unwrap(),
            "-a",
            "::",
            "-p",
            "4124",
        ],
        &[],
    );
    assert_lines(&config, &["listen [::]:4124 backlog=2048;"]);
    let config = debug_config(
        &[
            example("hello-wsgi").to_str().unwrap(),
            "--socket",
            "/tmp/x.sock",
        ],
        &[
            ("PASSENGER_FRIENDLY_ERROR_PAGES", "true"),
            ("PASSENGER_THREAD_COUNT", "8"),
        ],
    );
    assert_lines(
        &config,
        &[
            "listen \"unix:/tmp/x.sock\" backlog=2048;",
            "passenger_friendly_error_pages on;",
            "passenger_thread_count 8;",
        ],
    );
    // And from Passengerfile.json, as a number or a string.
    for value in ["16", "\"16\""] {
        let app = Scratch::new("sa-threads-file");
        std::fs::copy(example("hello-rack/config.ru"), app.0.join("config.ru")).unwrap();
        std::fs::write(
            app.0.join("Passengerfile.json"),
            format!(r#"{{"thread_count": {value}}}"#),
        )
        .unwrap();
        let config = debug_config(&[app.0.to_str().unwrap()], &[]);
        assert_lines(&config, &["passenger_thread_count 16;"]);
    }
}

#[test]
fn a_custom_nginx_config_template_is_used() {
    let dir = Scratch::new("sa-tpl");
    let template = dir.0.join("my.conf.template");
    let original =
        std::fs::read_to_string(repo().join("nginx-conf/standalone.conf.template")).unwrap();
    std::fs::write(
        &template,
        original.replace(
            "server_name _;",
            "server_name _;\n        add_header X-Custom-Template yes;",
        ),
    )
    .unwrap();
    let config = debug_config(
        &[
            example("hello-rack").to_str().unwrap(),
            "--nginx-config-template",
            template.to_str().unwrap(),
        ],
        &[],
    );
    assert_lines(&config, &["add_header X-Custom-Template yes;"]);

    // And nginx really runs it.
    let area = Area::new();
    let port = free_port();
    let mut cmd = area.start(example("hello-rack"), "127.0.0.1", port, "tpl.pid");
    cmd.env("PASSENGER_NGINX_CONFIG_TEMPLATE", &template);
    let mut run = Running::start(cmd);
    let r = http(port, "GET", "/", &[], b"");
    assert_eq!(r.header("x-custom-template"), Some("yes"), "{r:?}");
    area.stop(&mut run, libc::SIGINT, "custom template");
}

// ---- Bad input: one clear line, a non-zero exit, nothing started ----

/// Runs `passenger <args>` in a fresh area; checks that it started nothing (no runtime dir,
/// no instance dir, no process naming the area); returns its exit code and stderr.
fn refused(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    refused_as(None, args, envs)
}

fn refused_as(user: Option<&str>, args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let area = Area::new();
    let mut cmd = match user {
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={user}"),
                "--regid=nogroup",
                "--clear-groups",
                "--",
            ])
            .arg(buildout().join("bin/passenger"));
            c
        }
        None => passenger(),
    };
    let out = cmd
        .args(args)
        .envs(envs.iter().copied())
        .env("TMPDIR", &area.tmp.0)
        .env("PASSENGER_INSTANCE_REGISTRY_DIR", &area.registry.0)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "nothing on stdout for {args:?}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line on stderr for {args:?}: {stderr}"
    );
    area.assert_nothing_left(&[], &format!("refused {args:?}"));
    let needle = area.tmp.0.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&needle),
            "a process of the refused start runs: {}",
            String::from_utf8_lossy(&cmdline)
        );
    }
    (
        out.status.code().expect("exited"),
        stderr.trim_end().to_string(),
    )
}

#[test]
fn a_port_in_use_is_refused_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let rack = example("hello-rack");
    let (code, err) = refused(
        &[
            "start",
            rack.to_str().unwrap(),
            "--port",
            &port,
            "--address",
            "127.0.0.1",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "passenger: cannot listen on 127.0.0.1:{port}: the port is already in use; choose another with --port"
        )
    );
}

#[test]
fn a_privileged_port_as_non_root_is_refused() {
    let rack = example("hello-rack");
    let writable = Scratch::writable_by_apps("sa-nobody");
    let pid_file = writable.0.join("p.pid");
    let (code, err) = refused_as(
        Some("nobody"),
        &[
            "start",
            rack.to_str().unwrap(),
            "--port",
            "80",
            "--address",
            "127.0.0.1",
            "--pid-file",
            pid_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: cannot listen on 127.0.0.1:80: ports below 1024 need root, and you are nobody"
    );
}

#[test]
fn an_address_not_on_this_host_is_refused() {
    let rack = example("hello-rack");
    let (code, err) = refused(
        &[
            "start",
            rack.to_str().unwrap(),
            "--address",
            "192.0.2.1",
            "--port",
            "3000",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: cannot listen on 192.0.2.1:3000: the address is not on this host"
    );
}

#[test]
fn an_unknown_app_dir_is_refused() {
    let (code, err) = refused(&["start", "/nonexistent/app"], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: the app directory /nonexistent/app does not exist"
    );
}

#[test]
fn an_unknown_option_is_refused() {
    let (code, err) = refused(&["start", "--frobnicate", "3"], &[]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "passenger: unknown option --frobnicate for `passenger start`; see `passenger start --help`"
    );
}

#[test]
fn an_invalid_passengerfile_is_refused() {
    let app = Scratch::new("sa-badfile");
    std::fs::copy(example("hello-rack/config.ru"), app.0.join("config.ru")).unwrap();
    let file = app.0.join("Passengerfile.json");
    std::fs::write(&file, "{\"port\": 3000\n \"address\": \"127.0.0.1\"}\n").unwrap();
    let (code, err) = refused(&["start", app.0.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "passenger: {} is not valid JSON: expected `,` or `}}` at line 2 column 2; fix it or move it away",
            file.display()
        )
    );
    std::fs::write(&file, r#"{"port": "three thousand"}"#).unwrap();
    let (code, err) = refused(&["start", app.0.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "passenger: \"port\" in {} must be a port number from 1 to 65535, not \"three thousand\"",
            file.display()
        )
    );
}

#[test]
fn no_app_found_names_the_files_looked_for() {
    let empty = Scratch::new("sa-noapp");
    let (code, err) = refused(&["start", empty.0.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "passenger: no app found in {}: looked for config.ru, passenger_wsgi.py, app.js (or name the startup file with --startup-file and --app-type)",
            empty.0.display()
        )
    );
}

#[test]
fn bad_values_name_their_source() {
    let rack = example("hello-rack");
    let rack = rack.to_str().unwrap();
    let (code, err) = refused(&["start", rack], &[("PASSENGER_PORT", "http")]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: PASSENGER_PORT must be a port number from 1 to 65535, not \"http\""
    );
    let (code, err) = refused(&["start", rack, "--log-level", "9"], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: --log-level must be a whole number from 0 to 7, not \"9\""
    );
    let (code, err) = refused(&["start", rack, "--spawn-method", "fast"], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: --spawn-method: unknown spawn method \"fast\"; use smart or direct"
    );
    let (code, err) = refused(&["start", rack, "--ssl"], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: --ssl needs --ssl-certificate (the SSL certificate)"
    );
    for count in ["0", "1025", "many"] {
        let (code, err) = refused(&["start", rack, "--thread-count", count], &[]);
        assert_eq!(code, 1);
        assert_eq!(
            err,
            format!(
                "passenger: --thread-count must be a whole number from 1 to 1024, not \"{count}\""
            )
        );
    }
    let (code, err) = refused(&["start", rack], &[("PASSENGER_THREAD_COUNT", "2000")]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: PASSENGER_THREAD_COUNT must be a whole number from 1 to 1024, not \"2000\""
    );
    let app = Scratch::new("sa-threads-bad");
    std::fs::copy(example("hello-rack/config.ru"), app.0.join("config.ru")).unwrap();
    let file = app.0.join("Passengerfile.json");
    std::fs::write(&file, r#"{"thread_count": 0}"#).unwrap();
    let (code, err) = refused(&["start", app.0.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "passenger: \"thread_count\" in {} must be a whole number from 1 to 1024, not 0",
            file.display()
        )
    );
    let (code, err) = refused(&["start", rack, "--user", "no-such-user-here"], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: --user: there is no user \"no-such-user-here\" on this host"
    );
}

/// The `route=<id>` part of a response's Set-Cookie for cookie `name`, and its attributes.
/// `--sticky-sessions --sticky-sessions-cookie-name route --min-instances 2`: the first
/// response sets `route=<id>` (with the default attributes), and requests carrying a process's
/// cookie all go to that process while the other one lives.
#[test]
fn sticky_sessions_route_a_client_to_its_process() {
    let area = Area::new();
    let port = free_port();
    let mut cmd = area.start(test_app("pool"), "127.0.0.1", port, "sticky.pid");
    cmd.args([
        "--sticky-sessions",
        "--sticky-sessions-cookie-name",
        "route",
        "--min-instances",
        "2",
    ]);
    let mut run = Running::start(cmd);

    // Without a cookie every response sets one naming its process; ask until both processes
    // (the second one spawns after the first request) have answered.
    let mut cookies = std::collections::BTreeMap::new();
    let deadline = Instant::now() + PATIENCE;
    while cookies.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "a second process served within {PATIENCE:?}: {cookies:?}"
        );
        let r = http(port, "GET", "/", &[], b"");
        let (cookie, attributes) = r
            .set_cookie("route")
            .unwrap_or_else(|| panic!("no route cookie in {r:?}"));
        assert_eq!(attributes, "SameSite=Lax; Secure;", "{r:?}");
        cookies.insert(r.pid(), cookie.to_string());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for (pid, cookie) in &cookies {
        for _ in 0..5 {
            let r = http(
                port,
                "GET",
                "/",
                &[("Cookie", &format!("other=1; {cookie}"))],
                b"",
            );
            assert_eq!(r.pid(), *pid, "{cookie} goes to process {pid}: {cookies:?}");
            assert!(
                r.set_cookie("route").is_none(),
                "a valid cookie is kept: {r:?}"
            );
        }
    }
    assert!(
        cookies.keys().all(|&p| alive(p)),
        "both processes still run: {cookies:?}"
    );
    area.stop(&mut run, libc::SIGINT, "sticky sessions instance");
}

/// The cookie options from each source reach the config, quoted; without `--sticky-sessions`
/// nothing is set.
#[test]
fn sticky_sessions_options_from_every_source() {
    let rack = example("hello-rack");
    let rack = rack.to_str().unwrap();
    let config = debug_config(
        &[
            rack,
            "--sticky-sessions",
            "--sticky-sessions-cookie-name",
            "my_route",
            "--sticky-sessions-cookie-attributes",
            "Path=/; Comment=\"x\"",
        ],
        &[],
    );
    assert_lines(
        &config,
        &[
            "passenger_sticky_sessions on;",
            "passenger_sticky_sessions_cookie_name \"my_route\";",
            "passenger_sticky_sessions_cookie_attributes \"Path=/; Comment=\\\"x\\\"\";",
        ],
    );
    let config = debug_config(
        &[rack],
        &[
            ("PASSENGER_STICKY_SESSIONS", "true"),
            ("PASSENGER_STICKY_SESSIONS_COOKIE_NAME", "env_route"),
        ],
    );
    assert_lines(
        &config,
        &[
            "passenger_sticky_sessions on;",
            "passenger_sticky_sessions_cookie_name \"env_route\";",
        ],
    );
    assert!(!config.contains("cookie_attributes"), "{config}");

    let app = Scratch::new("sa-sticky-file");
    std::fs::copy(example("hello-rack/config.ru"), app.0.join("config.ru")).unwrap();
    std::fs::write(
        app.0.join("Passengerfile.json"),
        r#"{"sticky_sessions": true, "sticky_sessions_cookie_attributes": ""}"#,
    )
    .unwrap();
    let config = debug_config(&[app.0.to_str().unwrap()], &[]);
    assert_lines(
        &config,
        &[
            "passenger_sticky_sessions on;",
            "passenger_sticky_sessions_cookie_attributes \"\";",
        ],
    );

    let config = debug_config(&[rack, "--sticky-sessions-cookie-name", "r"], &[]);
    assert!(!config.contains("sticky"), "{config}");
}

/// A cookie name that is not an HTTP token, or attributes on more than one line, are refused
/// in one line naming their source, before anything starts.
#[test]
fn an_invalid_sticky_sessions_cookie_is_refused() {
    let rack = example("hello-rack");
    let rack = rack.to_str().unwrap();
    let (code, err) = refused(
        &[
            "start",
            rack,
            "--sticky-sessions",
            "--sticky-sessions-cookie-name",
            "my route",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: --sticky-sessions-cookie-name must be a cookie name (letters, digits and !#$%&'*+-.^_`|~), not \"my route\""
    );
    let (code, err) = refused(
        &["start", rack, "--sticky-sessions"],
        &[("PASSENGER_STICKY_SESSIONS_COOKIE_NAME", "a;b")],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: PASSENGER_STICKY_SESSIONS_COOKIE_NAME must be a cookie name (letters, digits and !#$%&'*+-.^_`|~), not \"a;b\""
    );
    let app = Scratch::new("sa-sticky-bad");
    std::fs::copy(example("hello-rack/config.ru"), app.0.join("config.ru")).unwrap();
    let file = app.0.join("Passengerfile.json");
    std::fs::write(
        &file,
        r#"{"sticky_sessions": true, "sticky_sessions_cookie_attributes": "Path=/\nX-Evil: 1"}"#,
    )
    .unwrap();
    let (code, err) = refused(&["start", app.0.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "passenger: \"sticky_sessions_cookie_attributes\" in {} must be cookie attributes on one line, not \"Path=/\\nX-Evil: 1\"",
            file.display()
        )
    );
}

/// nginx refusing its config (here a template with a directive it does not know) ends
/// `passenger start` with exit 1 and nginx's own reason, in the foreground and in the
/// background, and leaves nothing behind.
#[test]
fn nginx_refusing_its_config_is_reported() {
    let dir = Scratch::new("sa-badtpl");
    let template = dir.0.join("bad.conf.template");
    let original =
        std::fs::read_to_string(repo().join("nginx-conf/standalone.conf.template")).unwrap();
    std::fs::write(
        &template,
        original.replace(
            "server_name _;",
            "server_name _;\n        no_such_directive on;",
        ),
    )
    .unwrap();
    for daemonize in [false, true] {
        let area = Area::new();
        let log = area.tmp.0.join("bad.log");
        let mut cmd = area.start(example("hello-rack"), "127.0.0.1", free_port(), "bad.pid");
        cmd.arg("--nginx-config-template")
            .arg(&template)
            .stdin(Stdio::null());
        if daemonize {
            cmd.arg("--daemonize").arg("--log-file").arg(&log);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "daemonize {daemonize}: {stderr}"
        );
        assert!(
            stderr.contains("unknown directive \"no_such_directive\""),
            "daemonize {daemonize}: nginx's reason is shown: {stderr}"
        );
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("passenger: nginx could not start (exit status 1)"),
            "daemonize {daemonize}: {stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "no banner");
        let _ = std::fs::remove_file(&log);
        area.assert_nothing_left(&[], "nginx refused its config");
    }
}

/// Even SIGKILL of `passenger start` stops the instance: nginx gets SIGTERM when its parent
/// dies, and the agents stop when nginx is gone.
#[test]
fn sigkill_of_passenger_start_still_stops_everything() {
    let area = Area::new();
    let port = free_port();
    let mut run = Running::start(area.start(example("hello-rack"), "127.0.0.1", port, "kill.pid"));
    assert_eq!(http(port, "GET", "/", &[], b"").status, 200);
    let inst = area.instance_dir();
    let pids = area.pids(run.pid());
    run.signal(libc::SIGKILL);
    run.wait("after SIGKILL");
    wait_all_gone(&pids, "after SIGKILL of passenger start");
    wait_until("instance directory removed after SIGKILL", || {
        !inst.exists()
    });
}

/// A slow app: /slow says it started (a file), then waits until it is released (another
/// file) or 120 s pass.
fn slow_app(area: &Area) -> (Scratch, PathBuf, PathBuf) {
    let app = Scratch::new("sa-slow");
    std::fs::write(
        app.0.join("config.ru"),
        "run lambda { |env|\n  if env['PATH_INFO'] == '/slow'\n    File.write(ENV['STARTED'], 'x')\n    \
         2400.times { break if File.exist?(ENV['RELEASE']); sleep 0.05 }\n  end\n  \
         [200, { 'content-type' => 'text/plain' }, [\"finished #{env['PATH_INFO']}\\n\"]]\n}\n",
    )
    .unwrap();
    (app, area.tmp.0.join("started"), area.tmp.0.join("release"))
}

fn start_slow(area: &Area, app: &Path, started: &Path, release: &Path) -> (Running, u16) {
    let port = free_port();
    let mut cmd = area.start(app, "127.0.0.1", port, "slow.pid");
    cmd.arg("--envvar")
        .arg(format!("STARTED={}", started.display()))
        .arg("--envvar")
        .arg(format!("RELEASE={}", release.display()));
    (Running::start(cmd), port)
}

/// Raw GET in a thread: the whole response, or what arrived before the connection closed.
fn get_in_background(port: u16, path: &str) -> std::thread::JoinHandle<Vec<u8>> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        raw
    })
}

#[test]
fn ctrl_c_lets_the_request_in_flight_finish_and_a_second_one_stops_at_once() {
    // Graceful: the request in flight when Ctrl-C comes gets its whole response.
    let area = Area::new();
    let (app, started, release) = slow_app(&area);
    let (mut run, port) = start_slow(&area, &app.0, &started, &release);
    let request = get_in_background(port, "/slow");
    wait_until("the app is handling /slow", || started.exists());
    let pids = area.pids(run.pid());
    run.signal(libc::SIGINT);
    wait_until("passenger start says it is stopping", || {
        run.stderr().contains("stopping gracefully")
    });
    std::fs::write(&release, "").unwrap();
    let r = parse_response(&request.join().unwrap());
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "finished /slow\n");
    assert!(run.wait("graceful stop").success(), "{}", run.stderr());
    area.assert_nothing_left(&pids, "graceful stop");
    drop(run);

    // At once: a second Ctrl-C does not wait for the app (which would wait 120 s).
    let area = Area::new();
    let (app, started, release) = slow_app(&area);
    let (mut run, port) = start_slow(&area, &app.0, &started, &release);
    let request = get_in_background(port, "/slow");
    wait_until("the app is handling /slow", || started.exists());
    let pids = area.pids(run.pid());
    run.signal(libc::SIGINT);
    wait_until("passenger start says it is stopping", || {
        run.stderr().contains("stopping gracefully")
    });
    run.signal(libc::SIGINT);
    assert!(run.wait("immediate stop").success(), "{}", run.stderr());
    area.assert_nothing_left(&pids, "immediate stop");
    let _ = request.join();
}

/// `--user` (as root): nginx's workers and the app run as that user.
#[test]
fn user_runs_the_workers_and_the_app_as_that_user() {
    let area = Area::new();
    let port = free_port();
    let mut cmd = area.start(example("hello-rack"), "127.0.0.1", port, "user.pid");
    cmd.args(["--user", "www-data"]);
    let mut run = Running::start(cmd);
    assert_eq!(http(port, "GET", "/", &[], b"").status, 200);
    let id = Command::new("id")
        .args(["-u", "www-data"])
        .output()
        .unwrap();
    let www_data: u32 = String::from_utf8_lossy(&id.stdout).trim().parse().unwrap();
    let nginx_master = children(run.pid())
        .into_iter()
        .find(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .starts_with("nginx: master")
        })
        .expect("nginx's master is a child of passenger start");
    let workers = children(nginx_master);
    assert!(!workers.is_empty());
    for w in workers {
        assert_eq!(uid_of(w), Some(www_data), "worker {w}");
    }
    let inst = area.instance_dir();
    let core: i32 = std::fs::read_to_string(inst.join("core.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let apps = descendants(core);
    assert!(!apps.is_empty(), "the app runs");
    for a in apps {
        assert_eq!(uid_of(a), Some(www_data), "app process {a}");
    }
    area.stop(&mut run, libc::SIGINT, "--user instance");
}

/// A Rack app whose every request sleeps 0.5 s and answers `PID START END`, its process id
/// and the monotonic clock (system-wide, so comparable across processes) before and after.
fn timed_app() -> Scratch {
    let app = Scratch::new("sa-threads");
    std::fs::write(
        app.0.join("config.ru"),
        "run lambda { |env|\n  \
         t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)\n  sleep 0.5\n  \
         t1 = Process.clock_gettime(Process::CLOCK_MONOTONIC)\n  \
         [200, { 'content-type' => 'text/plain' }, [format('%d %.6f %.6f', Process.pid, t0, t1)]]\n}\n",
    )
    .unwrap();
    app
}

/// One request of [`timed_app`]: who served it and when.
#[derive(Debug)]
struct Served {
    pid: i32,
    start: f64,
    end: f64,
}

/// `passenger start` of [`timed_app`] with at most one process and `extra` flags; `n` requests
/// sent at once; what each says.
fn serve_at_once(extra: &[&str], n: usize) -> Vec<Served> {
    let area = Area::new();
    let app = timed_app();
    let port = free_port();
    let mut cmd = area.start(&app.0, "127.0.0.1", port, "threads.pid");
    cmd.args(["--max-pool-size", "1"]).args(extra);
    let mut run = Running::start(cmd);
    // The process is up before the measured requests (its spawn is not part of them).
    assert_eq!(http(port, "GET", "/warm-up", &[], b"").status, 200);
    let requests: Vec<_> = (0..n)
        .map(|i| std::thread::spawn(move || http(port, "GET", &format!("/r{i}"), &[], b"")))
        .collect();
    let served = requests
        .into_iter()
        .map(|t| {
            let r = t.join().unwrap();
            assert_eq!(r.status, 200, "{r:?}\nstderr:\n{}", run.stderr());
            let text = r.text();
            let f: Vec<&str> = text.split(' ').collect();
            assert_eq!(f.len(), 3, "{text:?}");
            Served {
                pid: f[0].parse().unwrap(),
                start: f[1].parse().unwrap(),
                end: f[2].parse().unwrap(),
            }
        })
        .collect();
    area.stop(&mut run, libc::SIGINT, "threaded instance");
    served
}

/// `--thread-count 4`: one process serves four slow requests at the same time (all four were
/// in progress at one instant: the latest start is before the earliest end). Without it the
/// same process serves them one after another.
#[test]
fn thread_count_serves_concurrent_requests_from_one_process() {
    let served = serve_at_once(&["--thread-count", "4"], 4);
    let pid = served[0].pid;
    assert!(
        served.iter().all(|s| s.pid == pid),
        "one process served them all: {served:#?}"
    );
    let latest_start = served.iter().map(|s| s.start).fold(f64::MIN, f64::max);
    let earliest_end = served.iter().map(|s| s.end).fold(f64::MAX, f64::min);
    assert!(
        latest_start < earliest_end,
        "the four requests were in progress at once: {served:#?}"
    );

    let mut served = serve_at_once(&[], 2);
    assert_eq!(served[0].pid, served[1].pid, "{served:#?}");
    served.sort_by(|a, b| a.start.total_cmp(&b.start));
    assert!(
        served[1].start >= served[0].end,
        "one thread: the second request began after the first ended: {served:#?}"
    );
}

// ---- Generic apps: --app-start-command ----

/// The generic app's JSON answer to `path`, with a status check.
fn generic_answer(port: u16, path: &str, run: &Running) -> serde_json::Value {
    let r = http(port, "GET", path, &[], b"");
    assert_eq!(r.status, 200, "{r:?}\nstderr:\n{}", run.stderr());
    serde_json::from_str(&r.text()).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

/// `--app-start-command`: no config.ru, passenger_wsgi.py or app.js in the folder, the command
/// starts the app (in the app directory, on $PORT), the banner and `passenger status` say it
/// is generic, and Ctrl-C stops it leaving nothing behind (the app's processes included).
#[test]
fn app_start_command_serves_a_generic_app_and_ctrl_c_leaves_nothing() {
    let area = Area::new();
    let app = copy_app("generic");
    let port = free_port();
    let pid_file = area.tmp.0.join("generic.pid");
    let mut cmd = area.start(&app.0, "127.0.0.1", port, "generic.pid");
    cmd.args(["--app-start-command", "/usr/bin/python3 server.py"]);
    let mut run = Running::start(cmd);
    assert_eq!(
        run.banner("App:"),
        format!("{} (generic, /usr/bin/python3 server.py)", app.0.display())
    );
    let body = generic_answer(port, "/hello?PORT", &run);
    assert_eq!(body["path"], "/hello?PORT", "{body}");
    assert_eq!(body["cwd"], app.0.to_str().unwrap(), "{body}");
    let app_port = body["port"].as_u64().unwrap();
    assert_ne!(
        app_port,
        u64::from(port),
        "the app listens on a port of its own"
    );
    assert_eq!(body["env"]["PORT"], app_port.to_string(), "{body}");

    let out = area
        .passenger()
        .args(["status", "--pid-file"])
        .arg(&pid_file)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{status}");
    assert!(
        status.contains(&format!(
            "App:            {} (generic, /usr/bin/python3 server.py)\n",
            app.0.display()
        )),
        "{status}"
    );

    area.stop(&mut run, libc::SIGINT, "generic app");
    assert!(!pid_file.exists(), "the pid file is removed");
}

/// `"app_start_command"` in Passengerfile.json, with quotes, `$` and spaces: the shell gets
/// the command byte for byte (nginx neither unquotes too much nor expands `$PORT`), and the
/// options that mean nothing to a generic app are notes, as for Node.js.
#[test]
fn app_start_command_from_passengerfile_reaches_the_shell_intact() {
    let area = Area::new();
    let app = copy_app("generic");
    let command = r#"MARK="it's \"q\"  \\ $PORT" /usr/bin/python3 'server.py'"#;
    std::fs::write(
        app.0.join("Passengerfile.json"),
        serde_json::json!({
            "app_start_command": command,
            "thread_count": 4,
            "spawn_method": "smart",
        })
        .to_string(),
    )
    .unwrap();
    let port = free_port();
    let mut run = Running::start(area.start(&app.0, "127.0.0.1", port, "generic.pid"));
    assert_eq!(
        run.banner("App:"),
        format!("{} (generic, {command})", app.0.display())
    );
    let body = generic_answer(port, "/?MARK", &run);
    let app_port = body["port"].as_u64().unwrap();
    assert_eq!(
        body["env"]["MARK"],
        format!("it's \"q\"  \\ {app_port}"),
        "{body}"
    );
    let stderr = run.stderr();
    let file = app.0.join("Passengerfile.json");
    for note in [
        format!(
            "passenger: note: \"thread_count\" in {} has no effect on a generic app",
            file.display()
        ),
        format!(
            "passenger: note: \"spawn_method\" in {} smart has no effect on a generic app",
            file.display()
        ),
    ] {
        assert!(stderr.contains(&note), "no {note:?} in:\n{stderr}");
    }
    area.stop(
        &mut run,
        libc::SIGINT,
        "generic app from Passengerfile.json",
    );
}

#[test]
fn debug_nginx_config_of_a_generic_app() {
    let app = copy_app("generic");
    let config = debug_config(
        &[
            app.0.to_str().unwrap(),
            "--app-start-command",
            r#"exec env X="a b" /usr/bin/python3 server.py $HOME"#,
        ],
        &[],
    );
    assert_lines(
        &config,
        &[r#"passenger_app_start_command "exec env X=\"a b\" /usr/bin/python3 server.py $HOME";"#],
    );
    assert!(
        !config.contains("passenger_app_type"),
        "no app type for a generic app:\n{config}"
    );
    // The environment sets it too.
    let config = debug_config(
        &[app.0.to_str().unwrap()],
        &[("PASSENGER_APP_START_COMMAND", "./run")],
    );
    assert_lines(&config, &[r#"passenger_app_start_command "./run";"#]);
}

/// A blank start command is refused wherever it comes from, naming its source, before
/// detection (the folder has no app to detect).
#[test]
fn a_blank_app_start_command_is_refused() {
    let empty = Scratch::new("sa-blank-cmd");
    let dir = empty.0.to_str().unwrap();
    for blank in ["", "   "] {
        let (code, err) = refused(&["start", dir, "--app-start-command", blank], &[]);
        assert_eq!(code, 1);
        assert_eq!(
            err,
            format!(
                "passenger: --app-start-command must be a command that starts the app, not {blank:?}"
            )
        );
    }
    let (code, err) = refused(&["start", dir], &[("PASSENGER_APP_START_COMMAND", " \t")]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: PASSENGER_APP_START_COMMAND must be a command that starts the app, not \" \\t\""
    );
    let file = empty.0.join("Passengerfile.json");
    for (value, shown) in [("\"\"", "\"\""), ("false", "a boolean")] {
        std::fs::write(&file, format!(r#"{{"app_start_command": {value}}}"#)).unwrap();
        let (code, err) = refused(&["start", dir], &[]);
        assert_eq!(code, 1);
        assert_eq!(
            err,
            format!(
                "passenger: \"app_start_command\" in {} must be a command that starts the app, not {shown}",
                file.display()
            )
        );
    }
    std::fs::remove_file(&file).unwrap();
    let (code, err) = refused(&["start", dir, "--app-type", "generic"], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "passenger: a generic app needs --app-start-command (the command that starts it, listening on $PORT)"
    );
}
