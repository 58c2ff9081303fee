//! passenger-watchdog: started by the nginx module in the nginx master (or by `passenger
//! start`), it creates the instance directory, starts the core agent, reports the core's
//! socket and password back, restarts the core if it crashes, and removes everything when
//! the nginx master goes away, whether it stopped cleanly or was killed.

mod args;
mod core_agent;
mod instance_dir;
mod log;
mod pre_start;
mod process;
mod supervise;

use passenger_protocol::instance::StartupReport;
use std::os::fd::{FromRawFd, OwnedFd};

fn main() {
    let args = match args::Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("passenger-watchdog: {e}");
            std::process::exit(2);
        }
    };
    // Nothing but stdio and the report pipe may leak into the agents: nginx's listening
    // sockets are inherited without close-on-exec and would stay bound after nginx stops.
    let last_kept = args.report_fd.max(args.lifeline_fd).unwrap_or(2);
    process::close_fds_from(last_kept + 1);
    // SAFETY: the report fd was handed to us by our parent for exactly this use.
    let report = args.report_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    // The first process returns at once so the module's wait() does not block; the daemon
    // goes on in a new session, no longer nginx's child.
    process::daemonize();
    if let Some(file) = &args.log_file
        && let Err(e) = log::redirect_stdio_to(file)
    {
        log::error(&format!(
            "cannot open the log file {}: {e}; logging to nginx's error log instead",
            file.display()
        ));
    }
    let watchdog = match supervise::Watchdog::start(&args) {
        Ok(w) => w,
        Err(e) => {
            log::error(&e);
            send_report(report, &StartupReport::Error(e));
            std::process::exit(1);
        }
    };
    send_report(report, &watchdog.report());
    watchdog.finalize_creation();
    pre_start::request_all(args.pre_start.clone());
    let code = watchdog.run();
    std::process::exit(code);
}

fn send_report(report: Option<OwnedFd>, msg: &StartupReport) {
    use passenger_protocol::channel::write_array;
    let Some(fd) = report else { return };
    let mut pipe = std::fs::File::from(fd);
    // Encoding fails before anything is written, so a shorter report can still follow.
    let result = write_array(&mut pipe, &msg.to_items()).or_else(|e| {
        if e.kind() != std::io::ErrorKind::InvalidData {
            return Err(e);
        }
        let short = StartupReport::Error(format!("the start-up report did not fit: {e}"));
        write_array(&mut pipe, &short.to_items())
    });
    if let Err(e) = result {
        log::error(&format!("could not send the start-up report to nginx: {e}"));
    }
}
