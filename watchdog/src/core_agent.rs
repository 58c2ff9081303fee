//! The core agent as the watchdog sees it: its listening socket (bound once, so that nginx's
//! connections queue in the backlog across a core restart), and one running core process.

use crate::process::pidfd_open;
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// Listen backlog of the core's socket (`passenger_socket_backlog`'s default).
pub const DEFAULT_SOCKET_BACKLOG: i32 = 2048;
/// How long a starting core may take to say `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds and listens on the core's request socket; world-connectable because nginx workers
/// may run as another user: every request must carry the password.
pub fn bind_core_socket(path: &Path, backlog: i32) -> Result<OwnedFd, String> {
    let fail = |e: nix::Error| format!("cannot listen on the core socket {}: {e}", path.display());
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(fail)?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new(path).map_err(fail)?).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("cannot chmod the core socket {}: {e}", path.display()))?;
    socket::listen(&fd, Backlog::new(backlog).map_err(fail)?).map_err(fail)?;
    Ok(fd)
}

pub struct CoreProcess {
    child: Child,
    /// The core's lifeline: closing it tells the core to shut down gracefully.
    lifeline: Option<ChildStdin>,
    /// Readable when the core exits.
    pub exit_fd: Option<OwnedFd>,
}

pub struct CoreSpec<'a> {
    pub binary: PathBuf,
    pub instance_dir: &'a Path,
    pub passenger_root: &'a Path,
    pub log_level: u8,
    pub password: &'a str,
    pub listener: &'a OwnedFd,
    /// RLIMIT_NOFILE (soft and hard) of the core; None = the watchdog's.
    pub fd_ulimit: Option<u64>,
}

impl CoreProcess {
    /// Starts the core and waits until it reports `ready`.
    pub fn start(spec: &CoreSpec) -> Result<CoreProcess, String> {
        let listener = spec.listener.as_raw_fd();
        let fd_ulimit = spec.fd_ulimit;
        let mut cmd = Command::new(&spec.binary);
        cmd.arg("--instance-dir")
            .arg(spec.instance_dir)
            .arg("--passenger-root")
            .arg(spec.passenger_root)
            .arg("--log-level")
            .arg(spec.log_level.to_string())
            .env("PASSENGER_CORE_PASSWORD", spec.password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if listener == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(listener, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The watchdog blocks its signals to read them from a signalfd; the core must
                // start with none blocked.
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                if let Some(n) = fd_ulimit {
                    let limit = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the core agent {}: {e}", spec.binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut core = CoreProcess {
            lifeline: child.stdin.take(),
            exit_fd: pidfd_open(child.id() as i32).ok(),
            child,
        };
        match wait_ready(stdout) {
            Ok(()) => Ok(core),
            Err(e) => {
                core.kill();
                Err(format!("the core agent did not start: {e}"))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reaps the core if it has exited; returns its exit description.
    pub fn try_reap(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown status ({e})")),
        }
    }

    /// Asks the core to shut down (lifeline closed, SIGTERM), waits up to `grace`, then kills.
    pub fn stop(mut self, grace: Duration) {
        self.lifeline.take();
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if !self.wait_exit(grace) {
            crate::log::error(&format!(
                "the core agent (pid {pid}) did not stop within {} s; killing it",
                grace.as_secs()
            ));
            self.kill();
        } else {
            let _ = self.child.wait();
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.try_reap().is_some() {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            match &self.exit_fd {
                Some(fd) => {
                    let ms = left.as_millis().min(i32::MAX as u128) as i32;
                    let mut fds = [nix::poll::PollFd::new(
                        fd.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    let _ = nix::poll::poll(
                        &mut fds,
                        nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
                    );
                }
                None => std::thread::sleep(Duration::from_millis(50).min(left)),
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for the line `ready` on the core's stdout, within [`READY_TIMEOUT`].
fn wait_ready(stdout: std::process::ChildStdout) -> Result<(), String> {
    let mut fds = [nix::poll::PollFd::new(
        stdout.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = READY_TIMEOUT.as_millis() as i32;
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(ms).unwrap()) {
        Ok(0) => {
            return Err(format!(
                "it did not report readiness within {} s",
                READY_TIMEOUT.as_secs()
            ));
        }
        Err(e) => return Err(format!("waiting for it failed: {e}")),
        Ok(_) => {}
    }
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading its readiness line failed: {e}"))?;
    if line.trim_end() == "ready" {
        Ok(())
    } else {
        Err("it exited before reporting readiness (see the log lines above)".into())
    }
}
