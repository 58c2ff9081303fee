//! Process-level plumbing: daemonizing, closing inherited descriptors, pidfds.

use std::os::fd::{FromRawFd, OwnedFd};

/// Forks; the parent exits at once, the child continues in a new session.
pub fn daemonize() {
    // SAFETY: single-threaded at this point; the child only continues our own code.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = nix::unistd::setsid();
        }
        Err(e) => {
            eprintln!("passenger-watchdog: fork failed: {e}");
            std::process::exit(1);
        }
    }
}

/// Closes every descriptor from `first` upwards.
pub fn close_fds_from(first: i32) {
    // SAFETY: closing descriptors we own by inheritance; nothing in this process uses them.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0u32) };
    if rc != 0 {
        for fd in first..1024 {
            unsafe { libc::close(fd) };
        }
    }
}

/// A descriptor that becomes readable when process `pid` exits (Linux 5.3+).
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether `pid` still exists (for when pidfds are unavailable).
pub fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// `len` random characters from [A-Za-z0-9], for passwords.
pub fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while out.len() < len {
        getrandom::getrandom(&mut bytes).expect("the OS random source works");
        // Rejection sampling: 248 = 4 * 62, so every character is equally likely.
        out.extend(
            bytes
                .iter()
                .filter(|&&b| b < 248)
                .map(|&b| CHARS[b as usize % 62] as char),
        );
    }
    out.truncate(len);
    out
}
