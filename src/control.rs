//! The pid file of an instance and the commands that find an instance by it: `passenger stop`
//! and `passenger status`. The pid file holds the pid of the `passenger start` process that
//! supervises the instance (the command itself in the foreground, its background child with
//! `--daemonize`); SIGTERM to it stops nginx gracefully, waits for the agents and apps to exit,
//! removes the runtime files and the pid file, and exits 0.
//!
//! The runtime directory of a running instance holds `standalone.json` (where it listens, the
//! app, the log file); `status` finds that directory through nginx's `-p` argument, nginx being
//! the supervisor's child.

use crate::config::StartConfig;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const INFO_FILE: &str = "standalone.json";

/// How long `passenger stop` waits for the instance to finish stopping.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

pub fn write_info(run_dir: &Path, cfg: &StartConfig, pid: i32) -> Result<(), String> {
    let urls = cfg.urls();
    let info = serde_json::json!({
        "pid": pid,
        "app_root": cfg.app.root,
        "app_type": cfg.app.app_type.name(),
        "startup_file": cfg.app.startup_file,
        "app_start_command": cfg.app.start_command,
        "environment": cfg.environment,
        "urls": urls,
        "log_file": cfg.log_file,
        "pid_file": cfg.pid_file,
        "instance_registry_dir": cfg.instance_registry_dir,
    });
    let path = run_dir.join(INFO_FILE);
    std::fs::write(&path, format!("{info:#}\n"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes `pid` to `path` atomically (a reader never sees a partial file).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), String> {
    let tmp = path.with_file_name(format!(
        ".{}.{pid}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, format!("{pid}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write the pid file {}: {e}", path.display())
        })
}

/// Removes the pid file if it still names `pid`.
pub fn remove_pid_file(path: &Path, pid: i32) {
    if read_pid(path) == Ok(Some(pid)) {
        let _ = std::fs::remove_file(path);
    }
}

fn read_pid(path: &Path) -> Result<Option<i32>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "the pid file {} does not hold a pid ({:?})",
                    path.display(),
                    text.trim()
                )
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read the pid file {}: {e}", path.display())),
    }
}

/// Live (non-zombie) children of `parent`, from /proc.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| matches!(stat(pid), Some((ppid, state)) if ppid == parent && state != 'Z'))
        .collect()
}

/// Parent pid and state of a process.
fn stat(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
    let state = fields.next()?.chars().next()?;
    Some((fields.next()?.parse().ok()?, state))
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` is a live `passenger start` (guards against a stale pid file whose pid was
/// reused by an unrelated process).
fn is_passenger_start(pid: i32) -> bool {
    if !matches!(stat(pid), Some((_, state)) if state != 'Z') {
        return false;
    }
    let argv = cmdline(pid);
    argv.first()
        .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "passenger"))
        && argv.iter().skip(1).any(|a| a == "start")
}

enum PidFile {
    Missing,
    Stale(i32),
    Live(i32),
}

fn inspect(path: &Path) -> Result<PidFile, String> {
    Ok(match read_pid(path)? {
        None => PidFile::Missing,
        Some(pid) if is_passenger_start(pid) => PidFile::Live(pid),
        Some(pid) => PidFile::Stale(pid),
    })
}

/// Refuses to start a second instance on the same pid file.
pub fn check_not_running(pid_file: &Path) -> Result<(), String> {
    match inspect(pid_file) {
        Ok(PidFile::Live(pid)) => Err(format!(
            "passenger-rs is already running on PID {pid} according to the pid file {}; stop it with `passenger stop --pid-file {}`",
            pid_file.display(),
            pid_file.display()
        )),
        _ => Ok(()),
    }
}

/// The runtime info of the instance supervised by `pid`.
fn info_of(pid: i32) -> Option<serde_json::Value> {
    children_of(pid).into_iter().find_map(|child| {
        // nginx rewrites its title to "nginx: master process <argv joined by spaces>".
        let words: Vec<String> = cmdline(child)
            .iter()
            .flat_map(|a| a.split(' ').map(str::to_string).collect::<Vec<_>>())
            .collect();
        let i = words.iter().position(|a| a == "-p")?;
        let dir = PathBuf::from(words.get(i + 1)?);
        let text = std::fs::read_to_string(dir.join(INFO_FILE)).ok()?;
        let info: serde_json::Value = serde_json::from_str(&text).ok()?;
        (info["pid"].as_i64() == Some(pid.into())).then_some(info)
    })
}

/// `passenger status`: 0 and where it serves when running, 1 when not.
pub fn status(pid_file: &Path) -> Result<i32, String> {
    match inspect(pid_file)? {
        PidFile::Missing => {
            println!(
                "passenger-rs is not running: there is no pid file {}",
                pid_file.display()
            );
            Ok(1)
        }
        PidFile::Stale(pid) => {
            println!(
                "passenger-rs is not running: the pid file {} names PID {pid}, which is not a running passenger start (the pid file is stale)",
                pid_file.display()
            );
            Ok(1)
        }
        PidFile::Live(pid) => {
            println!(
                "passenger-rs is running on PID {pid}, according to the pid file {}",
                pid_file.display()
            );
            if let Some(info) = info_of(pid) {
                let urls: Vec<&str> = info["urls"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|u| u.as_str()).collect())
                    .unwrap_or_default();
                println!("Accessible via: {}", urls.join(" "));
                println!(
                    "App:            {} ({}, {})",
                    info["app_root"].as_str().unwrap_or("?"),
                    info["app_type"].as_str().unwrap_or("?"),
                    info["app_start_command"]
                        .as_str()
                        .or(info["startup_file"].as_str())
                        .unwrap_or("?")
                );
                println!(
                    "Environment:    {}",
                    info["environment"].as_str().unwrap_or("?")
                );
                println!(
                    "Log file:       {}",
                    info["log_file"].as_str().unwrap_or("its terminal")
                );
            }
            Ok(0)
        }
    }
}

/// `passenger stop`: stops the instance of `pid_file` and waits until it has.
pub fn stop(pid_file: &Path, ignore_not_running: bool) -> Result<i32, String> {
    let pid = match inspect(pid_file)? {
        PidFile::Live(pid) => pid,
        PidFile::Missing if ignore_not_running => return Ok(0),
        PidFile::Missing => {
            return Err(format!(
                "nothing to stop: there is no pid file {} (give the instance's --port or --pid-file)",
                pid_file.display()
            ));
        }
        PidFile::Stale(pid) => {
            let _ = std::fs::remove_file(pid_file);
            if ignore_not_running {
                return Ok(0);
            }
            return Err(format!(
                "nothing to stop: the pid file {} named PID {pid}, which is not a running passenger start; removed the stale pid file",
                pid_file.display()
            ));
        }
    };
    let target = nix::unistd::Pid::from_raw(pid);
    match nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM) {
        Ok(()) => {}
        Err(nix::errno::Errno::ESRCH) => {
            println!("passenger-rs on PID {pid} had already stopped");
            return Ok(0);
        }
        Err(nix::errno::Errno::EPERM) => {
            return Err(format!(
                "not allowed to stop PID {pid} (pid file {}): it runs as another user; run passenger stop as that user or as root",
                pid_file.display()
            ));
        }
        Err(e) => return Err(format!("cannot signal PID {pid}: {e}")),
    }
    if wait_gone(pid, STOP_TIMEOUT) {
        println!("Stopped passenger-rs (PID {pid}).");
        Ok(0)
    } else {
        Err(format!(
            "passenger-rs on PID {pid} did not stop within {} s; its log file says why, and `kill -TERM {pid}` again stops it at once",
            STOP_TIMEOUT.as_secs()
        ))
    }
}

/// Waits until `pid` has exited: on a pidfd when the kernel has them, else by looking.
fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        // SAFETY: a fresh descriptor that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        loop {
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            // SAFETY: one valid pollfd.
            let r =
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            match r {
                n if n > 0 => return true,
                0 => return false,
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
    }
    while Instant::now() < deadline {
        if !matches!(stat(pid), Some((_, state)) if state != 'Z') {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
