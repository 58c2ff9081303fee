//! Shared harness of the end-to-end tests: a real nginx (Debian's or the bundled one) with
//! the module from `buildout/`, a minimal HTTP client, and process inspection via /proc.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod config_check;
pub mod fake_core;
pub mod websocket_frames;

/// How long anything in a test may take before it is a failure (never a timing assertion).
/// Defines one test per nginx flavour from functions taking a [`Flavour`], so that a failure
/// names the build it happened with. (Test files declare `#[macro_use] mod common;`.)
#[allow(unused_macros)]
macro_rules! for_both_nginx {
    ($($name:ident,)*) => {
        mod system { $( #[test] fn $name() { super::$name(super::Flavour::System) } )* }
        mod bundled { $( #[test] fn $name() { super::$name(super::Flavour::Bundled) } )* }
    };
}

pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The install tree under test: `$PASSENGER_BUILDOUT` or `buildout/`.
pub fn buildout() -> PathBuf {
    let dir = std::env::var_os("PASSENGER_BUILDOUT")
        .map_or_else(|| repo().join("buildout"), PathBuf::from);
    assert!(
        dir.join("agents/passenger-watchdog").is_file(),
        "no install tree at {}: run scripts/build first",
        dir.display()
    );
    dir
}

pub fn test_app(name: &str) -> PathBuf {
    repo().join("tests/apps").join(name)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Debian's nginx 1.22 with `modules/system/`.
    System,
    /// The bundled nginx with `modules/bundled/`.
    Bundled,
}

/// `nginx -p DIR -c DIR/nginx.conf -e DIR/error.log`: the nginx of `flavour` on a test's
/// scratch dir (-e: nginx logs there, not to its compiled-in path, before reading the config).
pub fn nginx_command(flavour: Flavour, dir: &Path) -> Command {
    let mut cmd = Command::new(flavour.nginx());
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"));
    cmd
}

impl Flavour {
    pub const ALL: [Flavour; 2] = [Flavour::System, Flavour::Bundled];

    pub fn nginx(self) -> PathBuf {
        match self {
            Flavour::System => PathBuf::from("/usr/sbin/nginx"),
            Flavour::Bundled => buildout().join("webhelper/nginx"),
        }
    }

    pub fn module(self) -> PathBuf {
        let dir = match self {
            Flavour::System => "system",
            Flavour::Bundled => "bundled",
        };
        buildout()
            .join("modules")
            .join(dir)
            .join("ngx_http_passenger_module.so")
    }
}

/// A fresh scratch directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        // Short: app sockets live a few levels below, and a unix socket path has 108 bytes.
        let dir = std::env::temp_dir().join(format!(
            "prs-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir); // a leftover of an earlier run with this pid
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        Scratch(dir)
    }
}

impl Scratch {
    /// A scratch dir the apps may write to: when the tests run as root, apps run as another
    /// user (nobody, for root-owned test apps).
    pub fn writable_by_apps(label: &str) -> Scratch {
        let scratch = Scratch::new(label);
        std::fs::set_permissions(
            &scratch.0,
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        scratch
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves test app `app` in the staging environment with `passenger_env_var GREETING hi`, and
/// checks what every language's test app shows: `/env?NAME` answers `$NAME` (the environment
/// name in `env_name`, and GREETING), `/` carries `X-Pid`, and `/log` prints
/// `<lang> app <pid> says hello on stdout|stderr`, which must reach the log with the pid.
pub fn check_env_and_output(flavour: Flavour, app: &str, lang: &str, env_name: &str) {
    let nginx = Nginx::start(
        flavour,
        &[Site {
            app: test_app(app),
            extra: "passenger_app_env staging; passenger_env_var GREETING hi;".into(),
        }],
    );
    let env = |name: &str| nginx.get(&format!("/env?{name}")).text();
    assert_eq!(env(env_name), "staging");
    assert_eq!(env("GREETING"), "hi");
    let pid = nginx.get("/").header("x-pid").unwrap().to_string();
    assert_eq!(nginx.get("/log").text(), "logged");
    for stream in ["stdout", "stderr"] {
        let line = format!("App {pid} output: {lang} app {pid} says hello on {stream}");
        wait_until(&format!("`{line}` in the log"), || {
            nginx.passenger_log().contains(&line)
        });
    }
}

/// Serves an app made of `files` (in a scratch dir) in development, and returns the response
/// to `/`: for apps that fail to load.
pub fn broken_app_response(flavour: Flavour, files: &[(&str, &str)]) -> Response {
    let app = Scratch::new("broken-app");
    for (name, content) in files {
        std::fs::write(app.0.join(name), content).unwrap();
    }
    let nginx = Nginx::start(
        flavour,
        &[Site {
            app: app.0.clone(),
            extra: "passenger_app_env development;".into(),
        }],
    );
    nginx.get("/")
}

/// A copy of test app `name` in a scratch directory (files keep their content, not owner).
pub fn copy_app(name: &str) -> Scratch {
    let scratch = Scratch::new(name);
    let status = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", test_app(name).display()))
        .arg(&scratch.0)
        .status()
        .unwrap();
    assert!(status.success(), "copying test app {name}");
    scratch
}

/// Whether something listens on 127.0.0.1:`port`. A connection to an ephemeral port nothing
/// listens on can come back established to itself (TCP simultaneous open, when the kernel picks
/// that same port as the source): that one does not count.
pub fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}

/// A port nothing listens on now, never handed to another test of this process: tests run in
/// parallel, and the kernel may offer a port again as soon as it is released, so two tests
/// could otherwise both start an nginx on it (one fails to bind, the other's requests go to
/// the wrong nginx).
pub fn free_port() -> u16 {
    static ISSUED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut issued = ISSUED.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !issued.contains(&port) {
            issued.push(port);
            return port;
        }
    }
}

/// One `server` block serving an app.
pub struct Site {
    pub app: PathBuf,
    /// Extra directives inside the server block.
    pub extra: String,
}

impl Site {
    pub fn app(name: &str) -> Site {
        Site {
            app: test_app(name),
            extra: String::new(),
        }
    }
}

/// A running nginx master with the module, in the foreground as our child.
pub struct Nginx {
    pub flavour: Flavour,
    pub dir: Scratch,
    pub ports: Vec<u16>,
    child: Option<Child>,
    /// The master's pid when nginx daemonized (then `child` is None).
    daemon_pid: Option<i32>,
}

impl Nginx {
    pub fn config(flavour: Flavour, dir: &Path, sites: &[(u16, &Site)]) -> String {
        Nginx::config_with(flavour, dir, sites, "")
    }

    /// The configuration, with `http_extra` directives in the http block.
    pub fn config_with(
        flavour: Flavour,
        dir: &Path,
        sites: &[(u16, &Site)],
        http_extra: &str,
    ) -> String {
        let mut servers = String::new();
        for (port, site) in sites {
            servers.push_str(&format!(
                "    server {{\n        listen 127.0.0.1:{port};\n        root {}/public;\n        passenger_enabled on;\n{}\n    }}\n",
                site.app.display(),
                site.extra
            ));
        }
        format!(
            "load_module {module};\n\
             worker_processes 2;\n\
             pid {dir}/nginx.pid;\n\
             error_log {dir}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             \x20   passenger_root {root};\n\
             \x20   passenger_ruby /usr/bin/ruby;\n\
             \x20   passenger_instance_registry_dir {dir}/registry;\n\
             \x20   passenger_log_file {dir}/passenger.log;\n\
             \x20   access_log off;\n\
             \x20   client_max_body_size 64m;\n\
             \x20   client_body_temp_path {dir}/client_body_temp;\n\
             {http_extra}\n\
             {servers}}}\n",
            module = flavour.module().display(),
            dir = dir.display(),
            root = buildout().display(),
        )
    }

    pub fn start(flavour: Flavour, sites: &[Site]) -> Nginx {
        Nginx::launch(flavour, sites, false, "")
    }

    /// With extra directives in the http block.
    pub fn start_with(flavour: Flavour, sites: &[Site], http_extra: &str) -> Nginx {
        Nginx::launch(flavour, sites, false, http_extra)
    }

    /// As nginx runs by default: the process we start forks the master and exits.
    pub fn start_daemonized(flavour: Flavour, sites: &[Site]) -> Nginx {
        Nginx::launch(flavour, sites, true, "")
    }

    fn launch(flavour: Flavour, sites: &[Site], daemon: bool, http_extra: &str) -> Nginx {
        let dir = Scratch::new("nginx");
        std::fs::create_dir_all(dir.0.join("registry")).unwrap();
        let ports: Vec<u16> = sites.iter().map(|_| free_port()).collect();
        let pairs: Vec<(u16, &Site)> = ports.iter().copied().zip(sites.iter()).collect();
        // Debian's interpreters by full path: apps may run as nobody, who can't use a PATH
        // entry under root's home (pyenv, nvm).
        let http_extra = format!(
            "passenger_python /usr/bin/python3;\npassenger_nodejs /usr/bin/node;\n{http_extra}"
        );
        std::fs::write(
            dir.0.join("nginx.conf"),
            Nginx::config_with(flavour, &dir.0, &pairs, &http_extra),
        )
        .unwrap();
        let child = nginx_command(flavour, &dir.0)
            .args(["-g", if daemon { "daemon on;" } else { "daemon off;" }])
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx runs");
        let mut nginx = Nginx {
            flavour,
            dir,
            ports,
            child: Some(child),
            daemon_pid: None,
        };
        if daemon {
            let status = nginx.child.take().unwrap().wait().unwrap();
            assert!(
                status.success(),
                "nginx failed to start: {}",
                nginx.error_log()
            );
            let pid_file = nginx.dir.0.join("nginx.pid");
            wait_until("nginx.pid written", || {
                std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
            });
            let pid = std::fs::read_to_string(&pid_file)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            nginx.daemon_pid = Some(pid);
        }
        for port in nginx.ports.clone() {
            nginx.wait_listening(port);
        }
        nginx
    }

    fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + PATIENCE;
        while !listening(port) {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "nginx ({:?}) exited with {status} at start; error log:\n{}",
                    self.flavour,
                    self.error_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on port {port} within {PATIENCE:?}; error log:\n{}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    pub fn master_pid(&self) -> i32 {
        self.daemon_pid
            .or(self.child.as_ref().map(|c| c.id() as i32))
            .unwrap_or(0)
    }

    pub fn get(&self, path: &str) -> Response {
        http(self.port(), "GET", path, &[], b"")
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
    }

    pub fn passenger_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("passenger.log")).unwrap_or_default()
    }

    pub fn registry(&self) -> PathBuf {
        self.dir.0.join("registry")
    }

    /// The one instance directory of this nginx (waiting for it: nginx listens before the
    /// module's init starts the watchdog, so a test may get here first).
    pub fn instance_dir(&self) -> PathBuf {
        wait_until("the watchdog created the instance directory", || {
            !instance_dirs(&self.registry()).is_empty()
        });
        let dirs = instance_dirs(&self.registry());
        assert_eq!(
            dirs.len(),
            1,
            "expected one instance directory, found {dirs:?}"
        );
        dirs.into_iter().next().unwrap()
    }

    /// The core's pid (waiting, within [`PATIENCE`], while the watchdog is writing it).
    pub fn core_pid(&self) -> i32 {
        let path = self.instance_dir().join("core.pid");
        let read = || {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .parse::<i32>()
                .ok()
        };
        wait_until(&format!("a pid in {}", path.display()), || read().is_some());
        read().unwrap()
    }

    /// The live app processes: below the core, directly (direct spawning) or under a
    /// preloader (smart spawning); the preloaders themselves are not counted.
    pub fn app_pids(&self) -> Vec<i32> {
        descendants(self.core_pid())
            .into_iter()
            .filter(|&p| alive(p))
            .filter(|&p| {
                let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                !cmdline.contains("AppPreloader") && !cmdline.contains("rack-preloader")
            })
            .collect()
    }

    /// The watchdog, the core and every process below the core (the apps).
    pub fn agent_pids(&self) -> Vec<i32> {
        let inst = self.instance_dir();
        let read = |f: &str| -> i32 {
            std::fs::read_to_string(inst.join(f))
                .unwrap_or_default()
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{f} in {}", inst.display()))
        };
        let core = read("core.pid");
        let mut pids = vec![read("watchdog.pid"), core];
        pids.extend(descendants(core));
        pids
    }

    /// `nginx -s stop`, then waits for the master to exit.
    pub fn stop(&mut self) {
        let status = nginx_command(self.flavour, &self.dir.0)
            .args(["-s", "stop"])
            .status()
            .unwrap();
        assert!(status.success(), "nginx -s stop failed");
        self.wait_master_exit();
    }

    /// SIGKILL to the master; its orphaned workers are killed too (nginx leaves them running).
    pub fn kill_master(&mut self) {
        let master = self.master_pid();
        let workers: Vec<i32> = children(master);
        unsafe { libc::kill(master, libc::SIGKILL) };
        self.wait_master_exit();
        for w in workers {
            unsafe { libc::kill(w, libc::SIGKILL) };
        }
    }

    fn wait_master_exit(&mut self) {
        if let Some(pid) = self.daemon_pid.take() {
            wait_all_gone(&[pid], "the daemonized nginx master");
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + PATIENCE;
            while child.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "nginx master did not exit within {PATIENCE:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A failing test shows what nginx and the agents said (the scratch dir goes away).
        if std::thread::panicking() {
            eprintln!(
                "--- nginx error log ---\n{}\n--- passenger log ---\n{}",
                self.error_log(),
                self.passenger_log()
            );
        }
        if let Some(pid) = self.daemon_pid {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if let Some(child) = self.child.as_mut() {
            let pid = child.id() as i32;
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// `passenger.*` directories in a registry dir.
pub fn instance_dirs(registry: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(registry) else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("passenger.")
        })
        .collect()
}

/// Field `n` (numbered as in proc(5), from 3 on: the state) of a /proc/.../stat line. The
/// fields are counted after the command name, which may hold spaces and parentheses.
pub fn stat_field(stat: &str, n: usize) -> Option<&str> {
    stat[stat.rfind(')')? + 2..]
        .split(' ')
        .nth(n.checked_sub(3)?)
}

/// Parent pid and state of a process.
fn proc_info(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat_field(&stat, 3)?.chars().next()?;
    let ppid = stat_field(&stat, 4)?.parse().ok()?;
    Some((ppid, state))
}

pub fn parent_of(pid: i32) -> Option<i32> {
    proc_info(pid).map(|(ppid, _)| ppid)
}

/// The real uid of a live process.
pub fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether any thread of the process still runs. A multi-threaded process killed by a signal
/// shows its main thread as a zombie while the others are still exiting, and its descriptors
/// (a listening socket) stay open until the last one is done.
pub fn alive(pid: i32) -> bool {
    let running = |stat: &str| {
        stat_field(stat, 3)
            .and_then(|state| state.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    };
    match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(tasks) => tasks.filter_map(Result::ok).any(|task| {
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| running(&stat))
        }),
        Err(_) => false,
    }
}

pub fn children(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| matches!(proc_info(pid), Some((ppid, _)) if ppid == parent))
        .collect()
}

pub fn descendants(root: i32) -> Vec<i32> {
    let mut out = vec![];
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for c in children(p) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// Each of `pids` with its command line, `PID (ARGV...)`, for messages.
pub fn with_cmdlines(pids: &[i32]) -> Vec<String> {
    pids.iter()
        .map(|p| {
            format!(
                "{p} ({})",
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ")
            )
        })
        .collect()
}

/// Waits (bounded) until none of `pids` is alive; panics naming the survivors.
pub fn wait_all_gone(pids: &[i32], what: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let names = with_cmdlines(&left);
            panic!("{what}: processes still alive after {PATIENCE:?}: {names:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until `cond` holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: not the case after {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Readable in failure messages: the body as text, cut at 4 KB.
impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(4096)]);
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &text)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The pid of the app process that answered (the test apps name it in `X-Pid`).
    pub fn pid(&self) -> i32 {
        self.header("x-pid")
            .unwrap_or_else(|| panic!("no X-Pid in {self:?}"))
            .parse()
            .unwrap()
    }

    /// The `Set-Cookie` of cookie `name`: its `name=value` pair and the attributes after it.
    pub fn set_cookie(&self, name: &str) -> Option<(&str, &str)> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .find_map(|(_, v)| {
                let (pair, rest) = v.split_once(';').unwrap_or((v, ""));
                pair.starts_with(&format!("{name}="))
                    .then(|| (pair, rest.trim()))
            })
    }
}

/// One HTTP/1.1 request with `Connection: close`; reads the response to EOF.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the response to {method} {path}: {e}"));
    parse_response(&raw)
}

/// The status and headers of a response head (without the blank line that ends it).
pub fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    (status, headers)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let (status, headers) = parse_head(&String::from_utf8_lossy(&raw[..end]));
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end])
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
