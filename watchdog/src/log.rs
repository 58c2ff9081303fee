//! The watchdog's few log lines, in the format the core uses, on stderr (nginx's error log or
//! passenger_log_file).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

fn line(level: &str, msg: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // One write per line, so that lines from several processes sharing the file don't mix.
    let text = format!(
        "{} {level:>5} passenger-watchdog {}: {msg}\n",
        iso8601(now),
        std::process::id()
    );
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// `2026-11-22T03:55:16.497Z`, the shape of the core's timestamps.
fn iso8601(since_epoch: std::time::Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
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

#[cfg(test)]
mod tests {
    #[test]
    fn iso8601_formats_utc() {
        let t = std::time::Duration::from_millis(1_795_319_716_497);
        assert_eq!(super::iso8601(t), "2026-11-22T03:55:16.497Z");
        assert_eq!(
            super::iso8601(std::time::Duration::ZERO),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
