//! The watchdog's few log lines, in the format the core uses, on stderr (nginx's error log or
//! passenger_log_file).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

fn line(level: &str, msg: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let _ = writeln!(
        std::io::stderr(),
        "[ {}.{:03} {level} passenger-watchdog {} ] {msg}",
        now.as_secs(),
        now.subsec_millis(),
        std::process::id()
    );
}

pub fn error(msg: &str) {
    line("ERROR", msg);
}

pub fn info(msg: &str) {
    line("INFO", msg);
}

/// Points stdout and stderr (ours and the core's, which inherits them) at `path`.
pub fn redirect_stdio_to(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    for fd in [1, 2] {
        nix::unistd::dup2(file.as_raw_fd(), fd)?;
    }
    Ok(())
}
