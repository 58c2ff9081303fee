//! Running an instance: the bundled nginx in the foreground as our child, supervised until it
//! stops, then everything it left behind collected before we exit.
//!
//! - We are a child subreaper, so the agents (the watchdog daemonizes itself out of nginx) and
//!   any orphaned app process become our children: when nginx has exited we wait for every
//!   one of them, so `passenger start` returns only when nothing of the instance runs.
//! - nginx runs in its own process group (a terminal's Ctrl-C reaches only us, and we stop
//!   nginx in order) and gets SIGTERM if we die (PR_SET_PDEATHSIG).
//! - Ready means nginx wrote its pid file: it has read its config, bound its sockets and the
//!   module has started the agents. Then our pid file is written and the banner printed.
//! - SIGINT, SIGTERM or SIGHUP stop nginx gracefully (SIGQUIT: requests in flight finish); a
//!   second one stops it at once (SIGTERM).
//! - `--daemonize`: we fork; the child leaves the session, logs to the log file and does all
//!   of the above; the parent waits for its "ok" (or error) on a pipe, prints the banner and
//!   exits 0.

use crate::banner;
use crate::config::StartConfig;
use crate::control;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// How long nginx may take to become ready (the module bounds the agents' start itself).
const START_TIMEOUT: Duration = Duration::from_secs(150);
/// How long the agents and apps may take to leave after nginx has exited before they get
/// SIGTERM, and then SIGKILL.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(60);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

static SIGNALS: AtomicU32 = AtomicU32::new(0);
static NGINX_PID: AtomicI32 = AtomicI32::new(0);
static READY: AtomicBool = AtomicBool::new(false);

/// Starts the instance described by `cfg` (already checked: ports free, files writable) with
/// the rendered-on-demand `template`; returns when it has stopped (or, daemonized, when the
/// background instance is ready).
pub fn run(cfg: &StartConfig, root: &Path, template: &str) -> Result<(), String> {
    if !cfg.daemonize {
        return serve(cfg, root, template, &mut None);
    }
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot create a pipe: {e}"))?;
    let log = cfg
        .log_file
        .as_ref()
        .expect("a daemonized instance always has a log file");
    let log_fd = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open the log file {}: {e}", log.display()))?;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: single-threaded here; the child goes on with ordinary Rust code.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("cannot fork: {e}"))? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(write_end);
            drop(log_fd);
            let mut report = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut report);
            match report.split_once('\n') {
                Some(("ok", _)) => {
                    show(&banner::banner(cfg, child.as_raw(), true));
                    Ok(())
                }
                Some(("error", message)) => Err(message.trim_end().to_string()),
                _ => Err(format!(
                    "the background instance stopped during start-up; see the log file {}",
                    log.display()
                )),
            }
        }
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            let _ = nix::unistd::setsid();
            // Every path in `cfg` is absolute: do not keep the caller's directory busy.
            let _ = std::env::set_current_dir("/");
            redirect_stdio(&log_fd);
            drop(log_fd);
            let mut report = Some(std::fs::File::from(write_end));
            let result = serve(cfg, root, template, &mut report);
            let code = match result {
                Ok(()) => 0,
                Err(message) => {
                    match report.take() {
                        Some(mut pipe) => {
                            let _ = write!(pipe, "error\n{message}\n");
                        }
                        None => eprintln!("passenger: {message}"),
                    }
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// Prints to stdout, ignoring a closed stdout (`passenger start | head` must not stop us).
fn show(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// stdin from /dev/null, stdout and stderr to the log file.
fn redirect_stdio(log: &std::fs::File) {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::File::open("/dev/null") {
        // SAFETY: dup2 on descriptors we own onto the standard ones.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
    unsafe {
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
}

/// Runs nginx in a fresh runtime directory, removed afterwards.
fn serve(
    cfg: &StartConfig,
    root: &Path,
    template: &str,
    report: &mut Option<std::fs::File>,
) -> Result<(), String> {
    // SAFETY: prctl with plain integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "cannot become a subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    let tmp = std::env::temp_dir();
    let run_dir = nix::unistd::mkdtemp(&tmp.join("passenger-standalone.XXXXXX")).map_err(|e| {
        format!(
            "cannot create a runtime directory in {}: {e}",
            tmp.display()
        )
    })?;
    // nginx's workers may run as another user (nobody, when started as root).
    let result = std::fs::set_permissions(
        &run_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| format!("cannot set up {}: {e}", run_dir.display()))
    .and_then(|()| supervise(cfg, root, template, &run_dir, report));
    let _ = std::fs::remove_dir_all(&run_dir);
    result
}

fn supervise(
    cfg: &StartConfig,
    root: &Path,
    template: &str,
    run_dir: &Path,
    report: &mut Option<std::fs::File>,
) -> Result<(), String> {
    let config = crate::render::render(template, cfg, root, run_dir)?;
    let config_path = run_dir.join("nginx.conf");
    std::fs::write(&config_path, config)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    control::write_info(run_dir, cfg, std::process::id() as i32)?;
    install_signal_handlers();

    let nginx = root.join("webhelper/nginx");
    let error_log = cfg
        .log_file
        .as_ref()
        .map_or_else(|| PathBuf::from("stderr"), PathBuf::clone);
    let mut cmd = Command::new(&nginx);
    cmd.arg("-p")
        .arg(run_dir)
        .arg("-c")
        .arg(&config_path)
        // Where nginx logs before it has read the config (else its compiled-in logs/error.log).
        .arg("-e")
        .arg(&error_log)
        .stdin(Stdio::null())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run the bundled nginx {}: {e}", nginx.display()))?;
    let pid = Pid::from_raw(child.id() as i32);
    // The child is reaped with waitpid below, never through `child`.
    drop(child);
    NGINX_PID.store(pid.as_raw(), SeqCst);

    if let Some(status) = wait_ready(pid, run_dir) {
        collect_everything();
        if SIGNALS.load(SeqCst) > 0 {
            return Ok(());
        }
        return Err(start_failure(cfg, status));
    }
    READY.store(true, SeqCst);
    let pending = SIGNALS.load(SeqCst);
    if pending > 0 {
        forward_stop(pending);
    } else {
        let our_pid = std::process::id() as i32;
        if let Err(e) = control::write_pid_file(&cfg.pid_file, our_pid) {
            forward_stop(2);
            wait_exit(pid);
            collect_everything();
            return Err(e);
        }
        match report.take() {
            Some(mut pipe) => {
                let _ = pipe.write_all(b"ok\n");
            }
            None => {
                show(&banner::banner(cfg, our_pid, false));
            }
        }
    }

    let status = wait_exit(pid);
    collect_everything();
    control::remove_pid_file(&cfg.pid_file, std::process::id() as i32);
    for l in &cfg.listeners {
        if let crate::binding::Endpoint::Unix(path) = &l.endpoint {
            let _ = std::fs::remove_file(path);
        }
    }
    match status {
        WaitStatus::Exited(_, 0) => Ok(()),
        _ if SIGNALS.load(SeqCst) > 0 => Ok(()),
        other => Err(format!(
            "nginx stopped unexpectedly ({}); see {}",
            describe(other),
            log_place(cfg)
        )),
    }
}

/// Waits until nginx has written its pid file (None) or exited (its status).
fn wait_ready(nginx: Pid, run_dir: &Path) -> Option<WaitStatus> {
    let pid_file = run_dir.join("nginx.pid");
    let deadline = Instant::now() + START_TIMEOUT;
    let mut escalated = false;
    loop {
        if let Some(status) = reap_nohang(nginx) {
            return Some(status);
        }
        if std::fs::read_to_string(&pid_file)
            .is_ok_and(|s| s.trim().parse::<i32>() == Ok(nginx.as_raw()))
        {
            return None;
        }
        let timed_out = Instant::now() > deadline;
        if !escalated && (SIGNALS.load(SeqCst) >= 2 || timed_out) {
            if timed_out {
                eprintln!(
                    "passenger: nginx did not start within {} s; stopping it",
                    START_TIMEOUT.as_secs()
                );
            }
            let _ = kill(nginx, Signal::SIGTERM);
            escalated = true;
        }
        std::thread::sleep(POLL);
    }
}

/// Reaps every child that has exited without blocking; nginx's status if it was among them.
fn reap_nohang(nginx: Pid) -> Option<WaitStatus> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return None,
            Ok(status) if status.pid() == Some(nginx) && is_exit(&status) => {
                return Some(status);
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Waits for nginx to exit, reaping any other child on the way (orphans we adopted).
fn wait_exit(nginx: Pid) -> WaitStatus {
    loop {
        match waitpid(None, None) {
            Ok(status) if status.pid() == Some(nginx) && is_exit(&status) => return status,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return WaitStatus::Exited(nginx, 0),
        }
    }
}

fn is_exit(status: &WaitStatus) -> bool {
    matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..))
}

/// Once nginx is gone: waits until every process left (the agents, app processes) has exited;
/// SIGTERM to whatever overstays LEAVE_TIMEOUT (at once after a second stop signal), SIGKILL
/// KILL_TIMEOUT later.
fn collect_everything() {
    let start = Instant::now();
    let mut termed = false;
    let mut termed_at = start;
    let mut killed = false;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return,
            Ok(WaitStatus::StillAlive) => {
                let waited = start.elapsed();
                let hurry = SIGNALS.load(SeqCst) >= 2;
                if !termed && (waited > LEAVE_TIMEOUT || hurry) {
                    if !hurry {
                        eprintln!(
                            "passenger: processes of the instance still run {} s after nginx stopped; sending them SIGTERM",
                            LEAVE_TIMEOUT.as_secs()
                        );
                    }
                    signal_descendants(Signal::SIGTERM);
                    termed = true;
                    termed_at = Instant::now();
                }
                if termed && !killed && termed_at.elapsed() > KILL_TIMEOUT {
                    signal_descendants(Signal::SIGKILL);
                    killed = true;
                }
                std::thread::sleep(POLL);
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// Signals every process below us (the agents we adopted, their apps, orphaned apps).
fn signal_descendants(sig: Signal) {
    let mut todo = vec![std::process::id() as i32];
    let mut all = Vec::new();
    while let Some(p) = todo.pop() {
        for c in control::children_of(p) {
            all.push(c);
            todo.push(c);
        }
    }
    for pid in all {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by {sig}"),
        other => format!("{other:?}"),
    }
}

fn log_place(cfg: &StartConfig) -> String {
    match &cfg.log_file {
        Some(f) => format!("the log file {}", f.display()),
        None => "its messages above".to_string(),
    }
}

/// Why nginx did not start, with the log's last error lines when it logs to a file.
fn start_failure(cfg: &StartConfig, status: WaitStatus) -> String {
    let mut message = format!("nginx could not start ({})", describe(status));
    match &cfg.log_file {
        Some(file) => {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let errors: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("[emerg]") || l.contains("[alert]") || l.contains("[crit]"))
                .collect();
            let last: Vec<&str> = errors.iter().rev().take(3).rev().copied().collect();
            if !last.is_empty() {
                message.push_str(": ");
                message.push_str(&last.join(" / "));
            }
            message.push_str(&format!("; see the log file {}", file.display()));
        }
        None => message.push_str("; see its messages above"),
    }
    message
}

fn install_signal_handlers() {
    extern "C" fn on_stop_signal(_: libc::c_int) {
        let n = SIGNALS.fetch_add(1, SeqCst) + 1;
        if n == 1 {
            const MSG: &[u8] = b"passenger: stopping gracefully (signal again to stop at once)\n";
            // SAFETY: write is async-signal-safe.
            unsafe { libc::write(2, MSG.as_ptr().cast(), MSG.len()) };
        }
        if READY.load(SeqCst) {
            forward_stop(n);
        }
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only touches atomics and calls write and kill.
        unsafe { libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t) };
    }
}

/// The first stop request is graceful (SIGQUIT), any later one immediate (SIGTERM).
fn forward_stop(n: u32) {
    let pid = NGINX_PID.load(SeqCst);
    if pid > 0 {
        let sig = if n <= 1 { libc::SIGQUIT } else { libc::SIGTERM };
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}
