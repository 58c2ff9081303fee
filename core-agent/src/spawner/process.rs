//! A started process until it exits: how to wait for it (a child of the core is reaped; a
//! child a preloader forked is watched through a pidfd, its parent reaps it), how to signal
//! it, and the graceful stop sequence.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::process::Child;
use tokio::sync::oneshot;

/// Each step of a graceful stop: stdin closed, then SIGTERM, then SIGKILL.
pub const STOP_STEP: Duration = Duration::from_secs(5);

pub enum Handle {
    /// Started by the core.
    Child(Child),
    /// Forked by a preloader. `None`: it was gone before it could be watched.
    Forked {
        pid: u32,
        pidfd: Option<AsyncFd<OwnedFd>>,
    },
}

impl Handle {
    pub fn forked(pid: u32) -> Handle {
        // SAFETY: pidfd_open returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let pidfd = (fd >= 0)
            .then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
            // SAFETY: the AsyncFd owns the OwnedFd, which stays open as long as it does.
            .and_then(|fd| {
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
            });
        Handle::Forked { pid, pidfd }
    }

    pub fn pid(&self) -> u32 {
        match self {
            Handle::Child(c) => c.id().unwrap_or(0),
            Handle::Forked { pid, .. } => *pid,
        }
    }

    /// Waits for the process to exit; says how it ended.
    pub async fn wait(&mut self) -> String {
        match self {
            Handle::Child(c) => c
                .wait()
                .await
                .map(describe)
                .unwrap_or_else(|e| e.to_string()),
            Handle::Forked {
                pidfd: Some(fd), ..
            } => {
                // A pidfd turns readable once the process has exited, and stays so.
                let _ = fd.readable().await;
                "exited".into()
            }
            Handle::Forked { pidfd: None, .. } => "exited".into(),
        }
    }

    /// Signals the process's group (each app process leads its own).
    pub fn signal_group(&self, signal: Signal) {
        let pid = self.pid();
        if pid > 0 {
            let _ = killpg(Pid::from_raw(pid as i32), signal);
        }
    }

    /// Kills it at once and waits for it: for a spawn that failed or timed out.
    pub async fn kill(&mut self) -> String {
        self.signal_group(Signal::SIGKILL);
        if let Handle::Child(c) = self {
            let _ = c.start_kill();
        }
        match tokio::time::timeout(STOP_STEP, self.wait()).await {
            Ok(how) => how,
            Err(_) => "killed, but it did not go away".into(),
        }
    }

    /// Waits up to `limit` for it to exit by itself, then kills it.
    pub async fn wait_or_kill(&mut self, limit: Duration) -> String {
        match tokio::time::timeout(limit, self.wait()).await {
            Ok(how) => how,
            Err(_) => {
                self.kill().await;
                "killed: it did not exit after reporting the error".into()
            }
        }
    }
}

pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => status.to_string(),
    }
}

/// What a supervised process is, for the log and for how it is stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    App,
    Preloader,
    /// An app started by `passenger_app_start_command`: it knows nothing of its stdin, so a
    /// stop begins with SIGTERM; and what it left in its process group goes with it.
    Generic,
}

/// Owns the process until it exits. A stop request (or the owner dropping the sender) closes
/// its stdin, then after [`STOP_STEP`] sends SIGTERM, then SIGKILL, to its process group (a
/// [`Kind::Generic`] app gets SIGTERM at once).
/// Afterwards its private directory (and the socket in it) is removed.
pub async fn supervise<S: Send + 'static>(
    mut handle: Handle,
    kind: Kind,
    stdin: S,
    stop: oneshot::Receiver<()>,
    exited: oneshot::Sender<()>,
    private_dir: PathBuf,
) {
    let pid = handle.pid();
    let requested = tokio::select! {
        how = handle.wait() => {
            match kind {
                Kind::App | Kind::Generic => tracing::warn!(
                    "App {pid} exited unexpectedly ({how}); it is removed from the pool and the \
                     next request starts a new one. Its output above may tell why"
                ),
                Kind::Preloader => tracing::info!(
                    "Preloader {pid} exited ({how}); the next spawn starts a new one"
                ),
            }
            false
        }
        _ = stop => true,
    };
    drop(stdin);
    if requested {
        let mut how = if kind == Kind::Generic {
            handle.signal_group(Signal::SIGTERM);
            tokio::time::timeout(STOP_STEP, handle.wait()).await.ok()
        } else {
            tokio::time::timeout(STOP_STEP, handle.wait()).await.ok()
        };
        if how.is_none() && kind != Kind::Generic {
            tracing::warn!(
                "Process {pid} did not exit within {} s of its stdin closing; sending SIGTERM",
                STOP_STEP.as_secs()
            );
            handle.signal_group(Signal::SIGTERM);
            how = tokio::time::timeout(STOP_STEP, handle.wait()).await.ok();
        }
        if how.is_none() {
            tracing::warn!(
                "Process {pid} did not exit within {} s of SIGTERM; sending SIGKILL",
                STOP_STEP.as_secs()
            );
            how = Some(handle.kill().await);
        }
        let what = if kind == Kind::Preloader {
            "Preloader"
        } else {
            "App"
        };
        tracing::info!("{what} {pid} stopped ({})", how.unwrap_or_default());
    }
    if kind == Kind::Generic {
        // Whatever the start command left behind in the app's process group (a shell's
        // background jobs, a server's workers) goes too: the group outlives its leader only
        // while such members remain, so its id is still theirs.
        handle.signal_group(Signal::SIGKILL);
    }
    let _ = std::fs::remove_dir_all(&private_dir);
    let _ = exited.send(());
}
