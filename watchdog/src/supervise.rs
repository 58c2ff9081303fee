//! The watchdog's life: start the instance, then wait for one of: the master exits (shut
//! everything down), the core exits (restart it), a stop signal (shut down).

use crate::args::Args;
use crate::core_agent::{CoreProcess, CoreSpec, bind_core_socket};
use crate::instance_dir::InstanceDir;
use crate::log;
use crate::process::{alive, pidfd_open, random_token};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use passenger_protocol::instance::{self as layout, StartupReport};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long the core gets to stop its apps and exit before it is killed.
const CORE_STOP_GRACE: Duration = Duration::from_secs(20);
/// Restart delays after consecutive core crashes, capped at the last.
const RESTART_BACKOFF: [u64; 5] = [0, 1, 2, 5, 10];

pub struct Watchdog {
    args: Args,
    instance: InstanceDir,
    listener: OwnedFd,
    password: String,
    core: Option<CoreProcess>,
    signals: SignalFd,
    /// Readable when the master is gone: the lifeline (EOF) or the master's pidfd.
    master: Option<OwnedFd>,
}

impl Watchdog {
    pub fn start(args: &Args) -> Result<Watchdog, String> {
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| format!("cannot block signals: {e}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| format!("cannot create a signalfd: {e}"))?;
        let master = match (args.lifeline_fd, args.master_pid) {
            // SAFETY: the lifeline fd was handed to us by the module for exactly this use.
            (Some(fd), _) => Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }),
            (None, Some(pid)) => {
                if !alive(pid) {
                    return Err(format!(
                        "the process that started the watchdog (pid {pid}) is gone"
                    ));
                }
                pidfd_open(pid).ok()
            }
            (None, None) => None,
        };
        let registry = layout::registry_dir(args.registry_dir.as_deref());
        let instance =
            InstanceDir::create(&registry, args.integration_mode, &args.server_software)?;
        let listener =
            match bind_core_socket(&instance.join(layout::CORE_SOCKET), args.socket_backlog) {
                Ok(l) => l,
                Err(e) => {
                    instance.remove();
                    return Err(e);
                }
            };
        let mut watchdog = Watchdog {
            args: args.clone(),
            instance,
            listener,
            password: random_token(32),
            core: None,
            signals,
            master,
        };
        match watchdog.start_core() {
            Ok(()) => Ok(watchdog),
            Err(e) => {
                watchdog.instance.remove();
                Err(e)
            }
        }
    }

    fn start_core(&mut self) -> Result<(), String> {
        let core = CoreProcess::start(&CoreSpec {
            binary: self.args.passenger_root.join("agents/passenger-core"),
            instance_dir: &self.instance.path,
            passenger_root: &self.args.passenger_root,
            log_level: self.args.log_level,
            password: &self.password,
            listener: &self.listener,
            fd_ulimit: self.args.core_fd_ulimit,
        })?;
        self.instance
            .write_file(layout::CORE_PID, &format!("{}\n", core.pid()));
        log::info(&format!(
            "core agent started (pid {}), instance {}",
            core.pid(),
            self.instance.path.display()
        ));
        self.core = Some(core);
        Ok(())
    }

    pub fn report(&self) -> StartupReport {
        StartupReport::Ok {
            instance_dir: self.instance.path.display().to_string(),
            core_socket: self
                .instance
                .join(layout::CORE_SOCKET)
                .display()
                .to_string(),
            core_password: self.password.clone(),
        }
    }

    pub fn finalize_creation(&self) {
        self.instance.write_file(layout::CREATION_FINALIZED, "");
    }

    /// Supervises until the instance ends; returns the exit code.
    pub fn run(mut self) -> i32 {
        let mut crashes = 0usize;
        let mut last_start = Instant::now();
        loop {
            match self.wait_event() {
                Event::Stop(why) => {
                    log::info(&format!("{why}; shutting down"));
                    break;
                }
                Event::CoreExited(status) => {
                    self.core = None;
                    // A core that ran for a minute gets a fresh backoff.
                    if last_start.elapsed() > Duration::from_secs(60) {
                        crashes = 0;
                    }
                    let delay = RESTART_BACKOFF[crashes.min(RESTART_BACKOFF.len() - 1)];
                    crashes += 1;
                    log::error(&format!(
                        "the core agent exited unexpectedly ({status}); restarting it in {delay} s"
                    ));
                    if self.sleep_unless_stopped(Duration::from_secs(delay)) {
                        break;
                    }
                    last_start = Instant::now();
                    if let Err(e) = self.start_core() {
                        log::error(&e);
                    }
                }
                Event::Nothing => {}
            }
        }
        if let Some(core) = self.core.take() {
            core.stop(CORE_STOP_GRACE);
        }
        self.instance.remove();
        0
    }

    /// Sleeps for `d`; returns true if a stop event came meanwhile.
    fn sleep_unless_stopped(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if let Event::Stop(why) = self.wait_event_for(deadline - Instant::now()) {
                log::info(&format!("{why}; shutting down"));
                return true;
            }
        }
        false
    }

    fn wait_event(&mut self) -> Event {
        self.wait_event_for(Duration::from_secs(3600))
    }

    fn wait_event_for(&mut self, timeout: Duration) -> Event {
        let master_pid = self.args.master_pid;
        // Without a pidfd, poll the master's existence once a second.
        let timeout = if self.master.is_none() {
            timeout.min(Duration::from_secs(1))
        } else {
            timeout
        };
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = &self.master {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
        }
        let core_fd = self.core.as_ref().and_then(|c| c.exit_fd.as_ref());
        if let Some(c) = core_fd {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        );
        drop(fds);
        if let Ok(Some(info)) = self.signals.read_signal() {
            let name = Signal::try_from(info.ssi_signo as i32).map_or("a signal", |s| s.as_str());
            return Event::Stop(format!("received {name}"));
        }
        let master_gone =
            self.master.as_ref().is_some_and(readable) || master_pid.is_some_and(|pid| !alive(pid));
        if master_gone {
            return Event::Stop("the nginx master exited".to_string());
        }
        if let Some(core) = self.core.as_mut() {
            let exited = core.exit_fd.as_ref().is_none_or(readable);
            if exited && let Some(status) = core.try_reap() {
                return Event::CoreExited(status);
            }
        }
        Event::Nothing
    }
}

enum Event {
    Stop(String),
    CoreExited(String),
    Nothing,
}

fn readable(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}
