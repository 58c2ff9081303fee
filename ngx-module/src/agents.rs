//! Starting the watchdog when the nginx master starts, and holding what it reports: the core
//! agent's socket and password.
//!
//! Runs in the module's `init_module` hook, which nginx calls in the master (before workers
//! fork, and before nginx daemonizes) on every configuration (re)load. A master starts one
//! watchdog; reloads reuse it. The watchdog's lifeline is a pipe whose write end only the
//! master holds: it survives the daemon fork, is closed on exec (a binary upgrade starts its
//! own agents) and in every worker (`init_process`), so the watchdog sees EOF exactly when the
//! master is gone, whether it stopped or was killed. (The master's pid can't serve: under
//! `daemon on` the process running this hook is not the one that stays.)

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nginx_sys::{
    NGINX_VERSION, NGX_LOG_EMERG, NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_OK, NGX_PROCESS_SIGNALLER,
    ngx_cycle_t, ngx_http_conf_ctx_t, ngx_http_module, ngx_int_t, ngx_uint_t,
};
use passenger_protocol::channel::decode_array;
use passenger_protocol::instance::StartupReport;

use crate::config::MainConf;
use crate::util::{guard, log_error};

/// How long the master waits for the watchdog's start-up report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(60);
/// The fd on which the watchdog writes its report.
const REPORT_FD: RawFd = 3;
/// The fd on which the watchdog reads its lifeline (EOF = the master is gone).
const LIFELINE_FD: RawFd = 4;

/// The lifeline's write end, held by the master; -1 when none.
static LIFELINE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// The module's `init_process` hook: a worker must not hold the lifeline, or the watchdog
/// would outlive a killed master for as long as its orphaned workers run.
pub unsafe extern "C" fn init_process(_cycle: *mut ngx_cycle_t) -> ngx_int_t {
    let fd = LIFELINE.swap(-1, std::sync::atomic::Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: this worker's inherited copy of the master's descriptor; nothing else uses it.
        unsafe { libc::close(fd) };
    }
    NGX_OK as ngx_int_t
}

/// What the watchdog reported: where the core listens and the password it expects.
pub struct Core {
    /// The `passenger_root` the watchdog was started from.
    pub root: Vec<u8>,
    /// The `passenger_ctl integration_mode` it was started with.
    pub integration_mode: &'static str,
    pub socket_path: String,
    pub password: String,
    /// `unix:<socket_path>`, the peer name in nginx's log lines.
    pub peer_name: String,
    pub sockaddr: libc::sockaddr_un,
    pub socklen: libc::socklen_t,
}

static CORE: OnceLock<Core> = OnceLock::new();

/// The running core, once the watchdog reported it (in the master, and inherited by workers).
pub fn core() -> Option<&'static Core> {
    CORE.get()
}

/// The module's `init_module` hook.
pub unsafe extern "C" fn init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard(nginx_sys::NGX_ERROR as ngx_int_t, || unsafe { init(cycle) })
}

unsafe fn init(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    let ok = NGX_OK as ngx_int_t;
    unsafe {
        if nginx_sys::ngx_test_config != 0
            || nginx_sys::ngx_process == NGX_PROCESS_SIGNALLER as ngx_uint_t
        {
            return ok;
        }
    }
    let Some(mcf) = (unsafe { main_conf(cycle) }) else {
        return ok; // no http block
    };
    if mcf.root().is_empty() {
        return ok; // inert
    }
    let log = unsafe { (*cycle).log };
    if let Some(core) = CORE.get() {
        // A reload: this master already runs a watchdog, which stays.
        if core.root != mcf.root() {
            unsafe {
                log_error(
                    NGX_LOG_WARN,
                    log,
                    0,
                    &format!(
                        "passenger: passenger_root changed from {} to {}; the running agents \
                         keep using the old one until nginx is restarted",
                        String::from_utf8_lossy(&core.root),
                        String::from_utf8_lossy(mcf.root())
                    ),
                )
            };
        }
        if core.integration_mode != mcf.integration_mode() {
            unsafe {
                log_error(
                    NGX_LOG_WARN,
                    log,
                    0,
                    &format!(
                        "passenger: passenger_ctl integration_mode changed from {} to {}; the \
                         running agents keep the old one until nginx is restarted",
                        core.integration_mode,
                        mcf.integration_mode()
                    ),
                )
            };
        }
        return ok;
    }
    let root = PathBuf::from(OsStr::from_bytes(mcf.root()));
    let exe = root.join("agents/passenger-watchdog");
    let args = WatchdogArgs {
        exe: exe.clone(),
        root,
        log_level: mcf.log_level,
        log_file: non_empty(mcf.log_file()),
        registry_dir: non_empty(mcf.registry_dir()),
        integration_mode: mcf.integration_mode(),
        socket_backlog: mcf.socket_backlog,
        core_fd_ulimit: (mcf.core_file_descriptor_ulimit > 0)
            .then_some(mcf.core_file_descriptor_ulimit),
        pre_start: mcf
            .pre_start()
            .iter()
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .collect(),
    };
    match start_watchdog(&args) {
        Ok(core) => {
            unsafe {
                log_error(
                    NGX_LOG_NOTICE,
                    log,
                    0,
                    &format!(
                        "passenger: watchdog started, core listening on {}",
                        core.socket_path
                    ),
                )
            };
            let _ = CORE.set(Core {
                root: mcf.root().to_vec(),
                integration_mode: mcf.integration_mode(),
                ..core
            });
            ok
        }
        Err(reason) => {
            // passenger_abort_on_startup_error off (the default, as in Passenger): nginx runs
            // on, serving static files, and app requests get 503 until it is restarted.
            let abort = mcf.abort_on_startup_error == 1;
            let consequence = if abort {
                "nginx stops (passenger_abort_on_startup_error on)"
            } else {
                "nginx runs on without apps: their requests get 503 until nginx is restarted"
            };
            unsafe {
                log_error(
                    NGX_LOG_EMERG,
                    log,
                    0,
                    &format!(
                        "passenger: could not start the watchdog ({}): {reason}; {consequence}",
                        exe.display()
                    ),
                )
            };
            if abort {
                nginx_sys::NGX_ERROR as ngx_int_t
            } else {
                ok
            }
        }
    }
}

fn non_empty(b: &[u8]) -> Option<PathBuf> {
    (!b.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(b)))
}

/// This module's main conf in `cycle`, if the configuration has an http block.
unsafe fn main_conf<'a>(cycle: *mut ngx_cycle_t) -> Option<&'a MainConf> {
    unsafe {
        let conf_ctx = (*cycle).conf_ctx;
        if conf_ctx.is_null() {
            return None;
        }
        let http = *conf_ctx.add(ngx_http_module.index) as *mut ngx_http_conf_ctx_t;
        if http.is_null() {
            return None;
        }
        let module = &raw const crate::ngx_http_passenger_module;
        let mcf = *(*http).main_conf.add((*module).ctx_index) as *const MainConf;
        mcf.as_ref()
    }
}

struct WatchdogArgs {
    exe: PathBuf,
    root: PathBuf,
    log_level: ngx_int_t,
    log_file: Option<PathBuf>,
    registry_dir: Option<PathBuf>,
    /// `nginx` or `standalone` (`passenger_ctl integration_mode`).
    integration_mode: &'static str,
    socket_backlog: ngx_int_t,
    core_fd_ulimit: Option<ngx_int_t>,
    /// `passenger_pre_start` URLs, requested by the watchdog once the core is up.
    pre_start: Vec<String>,
}

/// Spawns the watchdog, reaps its first (daemonizing) process and reads its report.
fn start_watchdog(args: &WatchdogArgs) -> Result<Core, String> {
    check_executable(&args.exe)?;
    let (read_end, write_end) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let (lifeline_read, lifeline_write) =
        pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;

    let server_software = format!("nginx/{}", NGINX_VERSION.to_string_lossy());
    let mut cmd = Command::new(&args.exe);
    cmd.arg("--passenger-root")
        .arg(&args.root)
        .arg("--lifeline-fd")
        .arg(LIFELINE_FD.to_string())
        .arg("--report-fd")
        .arg(REPORT_FD.to_string())
        .arg("--integration-mode")
        .arg(args.integration_mode)
        .arg("--server-software")
        .arg(server_software)
        .arg("--log-level")
        .arg(args.log_level.to_string());
    if let Some(f) = &args.log_file {
        cmd.arg("--log-file").arg(f);
    }
    if let Some(d) = &args.registry_dir {
        cmd.arg("--registry-dir").arg(d);
    }
    cmd.arg("--socket-backlog")
        .arg(args.socket_backlog.to_string());
    if let Some(n) = args.core_fd_ulimit {
        cmd.arg("--core-file-descriptor-ulimit").arg(n.to_string());
    }
    for url in &args.pre_start {
        cmd.arg("--pre-start").arg(url);
    }
    // stdout and stderr stay nginx's (the error log once nginx runs).
    cmd.stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let report_fd = write_end.as_raw_fd();
    let lifeline_fd = lifeline_read.as_raw_fd();
    // SAFETY: the closure only makes async-signal-safe system calls.
    unsafe { cmd.pre_exec(move || child_fds(report_fd, lifeline_fd)) };
    let mut child = cmd.spawn().map_err(|e| format!("cannot execute it: {e}"))?;
    drop(write_end);
    drop(lifeline_read);

    let deadline = Instant::now() + REPORT_TIMEOUT;
    let result = read_report(&read_end, &mut child, deadline);
    if result.is_err() {
        // Do not leave a hung first process behind (the daemonized one cannot be reached).
        let _ = child.kill();
    }
    reap(
        &mut child,
        deadline.min(Instant::now() + Duration::from_secs(5)),
    );
    let report = StartupReport::from_items(&result?).map_err(|e| e.to_string())?;
    // Held (close-on-exec) until the master exits.
    LIFELINE.store(
        std::os::fd::IntoRawFd::into_raw_fd(lifeline_write),
        std::sync::atomic::Ordering::SeqCst,
    );
    match report {
        StartupReport::Ok {
            instance_dir: _,
            core_socket,
            core_password,
        } => Core::new(core_socket, core_password),
        StartupReport::Error(message) => Err(format!("it reported an error: {message}")),
    }
}

fn check_executable(exe: &Path) -> Result<(), String> {
    let c = std::ffi::CString::new(exe.as_os_str().as_bytes())
        .map_err(|_| "the path contains a NUL byte".to_string())?;
    // SAFETY: `c` is a valid C string.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
        return Err(format!(
            "it is not an executable file ({}); check that passenger_root points at the \
             passenger-rs install root",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just created both and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In the child between fork and exec: the report pipe becomes fd 3 and the lifeline fd 4,
/// and every other fd above them (nginx's listening sockets, log files, ...) is closed on exec
/// so the agents do not hold them.
fn child_fds(report_fd: RawFd, lifeline_fd: RawFd) -> io::Result<()> {
    // SAFETY: plain system calls on descriptors of this (child) process.
    unsafe {
        // Move both out of the way first, so neither dup2 can clobber the other.
        let report = libc::fcntl(report_fd, libc::F_DUPFD_CLOEXEC, 10);
        let lifeline = libc::fcntl(lifeline_fd, libc::F_DUPFD_CLOEXEC, 10);
        if report < 0
            || lifeline < 0
            || libc::dup2(report, REPORT_FD) < 0
            || libc::dup2(lifeline, LIFELINE_FD) < 0
        {
            return Err(io::Error::last_os_error());
        }
        let first = (LIFELINE_FD + 1) as libc::c_uint;
        let r = libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if r != 0 {
            // Kernels before 5.11: mark them one by one.
            let mut limit = libc::sysconf(libc::_SC_OPEN_MAX);
            if !(0..=1 << 20).contains(&limit) {
                limit = 1 << 20;
            }
            for fd in first as libc::c_int..limit as libc::c_int {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
    }
    Ok(())
}

/// Reads one MessageChannel array message from `fd` before `deadline`.
fn read_report(fd: &OwnedFd, child: &mut Child, deadline: Instant) -> Result<Vec<Vec<u8>>, String> {
    let mut buf = Vec::new();
    let mut exited: Option<Option<ExitStatus>> = None;
    loop {
        match decode_array(&buf) {
            Ok(Some((items, _))) => return Ok(items),
            Ok(None) => {}
            Err(e) => return Err(format!("its start-up report is malformed: {e}")),
        }
        if exited.is_none() {
            match child.try_wait() {
                Ok(Some(status)) => exited = Some(Some(status)),
                Ok(None) => {}
                // Reaped by someone else (nginx's SIGCHLD handler on a reload).
                Err(_) => exited = Some(None),
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "it did not report within {} seconds",
                REPORT_TIMEOUT.as_secs()
            ));
        }
        let wait = (deadline - now).min(Duration::from_millis(100));
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("cannot poll its report pipe: {e}"));
        }
        if n == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        // SAFETY: reading into a local buffer of the given size.
        let got = unsafe { libc::read(fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) {
                continue;
            }
            return Err(format!("cannot read its report pipe: {e}"));
        }
        if got == 0 {
            if !buf.is_empty() {
                return Err("its start-up report was cut short".to_string());
            }
            let status = exited
                .flatten()
                .or_else(|| reap(child, Instant::now() + Duration::from_secs(1)));
            return Err(match status {
                Some(s) if !s.success() => format!(
                    "it exited ({s}) without reporting; its own messages are in the error log"
                ),
                _ => "it closed its report pipe without reporting; its own messages are in the \
                      error log"
                    .to_string(),
            });
        }
        buf.extend_from_slice(&chunk[..got as usize]);
    }
}

/// Waits for the watchdog's first process (it daemonizes and exits at once) until `deadline`.
fn reap(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

impl Core {
    fn new(socket_path: String, password: String) -> Result<Core, String> {
        // SAFETY: sockaddr_un is plain data; all-zero is valid.
        let mut sockaddr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sockaddr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let path = socket_path.as_bytes();
        if path.is_empty() || path.len() >= sockaddr.sun_path.len() || path.contains(&0) {
            return Err(format!(
                "it reported a core socket path that cannot be used ({socket_path:?}: a unix \
                 socket path must be 1 to {} bytes); use a shorter \
                 passenger_instance_registry_dir",
                sockaddr.sun_path.len() - 1
            ));
        }
        for (dst, src) in sockaddr.sun_path.iter_mut().zip(path) {
            *dst = *src as libc::c_char;
        }
        let socklen =
            (std::mem::offset_of!(libc::sockaddr_un, sun_path) + path.len() + 1) as libc::socklen_t;
        Ok(Core {
            root: Vec::new(),
            integration_mode: "",
            peer_name: format!("unix:{socket_path}"),
            socket_path,
            password,
            sockaddr,
            socklen,
        })
    }
}
