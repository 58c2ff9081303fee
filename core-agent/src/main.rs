//! passenger-core: the core agent. Started by the watchdog as
//! `passenger-core --instance-dir <dir> --passenger-root <root> --log-level <0-7>` with the
//! core socket (bound and listening) as fd 3, the nginx module's password in
//! `PASSENGER_CORE_PASSWORD`, and a lifeline pipe as stdin. Prints `ready` on stdout once it
//! serves; shuts down gracefully on stdin EOF, SIGTERM or SIGINT, and exits 0.

mod app_options;
mod http_session;
mod idle_connections;
mod memory;
mod pool;
mod relay;
mod request_server;
mod response;
mod session;
mod socket_dir;
mod spawn_error_page;
mod spawner;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::level_filters::LevelFilter;

/// The fd on which the watchdog passes the core socket.
const LISTENER_FD: RawFd = 3;
const PASSWORD_ENV: &str = "PASSENGER_CORE_PASSWORD";

struct Args {
    instance_dir: PathBuf,
    passenger_root: PathBuf,
    log_level: u8,
}

const USAGE: &str =
    "usage: passenger-core --instance-dir <dir> --passenger-root <root> [--log-level <0-7>]";

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut instance_dir = None;
    let mut passenger_root = None;
    let mut log_level = 3u8;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if name == "--help" || name == "-h" {
            return Err(USAGE.to_string());
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match name.as_str() {
            "--instance-dir" => instance_dir = Some(PathBuf::from(value()?)),
            "--passenger-root" => passenger_root = Some(PathBuf::from(value()?)),
            "--log-level" => {
                let v = value()?;
                log_level = v
                    .parse()
                    .ok()
                    .filter(|l| *l <= 7)
                    .ok_or_else(|| format!("--log-level {v:?} is not a number from 0 to 7"))?;
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        instance_dir: instance_dir.ok_or_else(|| format!("--instance-dir is required\n{USAGE}"))?,
        passenger_root: passenger_root
            .ok_or_else(|| format!("--passenger-root is required\n{USAGE}"))?,
        log_level,
    })
}

/// Passenger log levels: 0–1 error, 2 warn, 3–4 info, 5 debug, 6–7 trace.
fn level_filter(level: u8) -> LevelFilter {
    match level {
        0 | 1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 | 4 => LevelFilter::INFO,
        5 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Takes fd 3 as the listening socket: checks it is one, keeps it from leaking into apps, and
/// makes it non-blocking for tokio.
fn take_listener() -> Result<std::os::unix::net::UnixListener, String> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    use nix::sys::socket::{SockaddrStorage, getsockname};
    let fd = LISTENER_FD;
    let flags = fcntl(fd, FcntlArg::F_GETFD).map_err(|e| {
        format!("fd {fd} is not open ({e}); the core must be started by the watchdog, which passes the core socket as fd {fd}")
    })?;
    let flags = FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC;
    fcntl(fd, FcntlArg::F_SETFD(flags))
        .map_err(|e| format!("cannot set FD_CLOEXEC on fd {fd}: {e}"))?;
    let addr: SockaddrStorage = getsockname(fd)
        .map_err(|e| format!("fd {fd} is not a socket ({e}); expected the bound core socket"))?;
    if addr.as_unix_addr().is_none() {
        return Err(format!(
            "fd {fd} is not a unix socket; expected the bound core socket"
        ));
    }
    // SAFETY: fd 3 is open (checked above), is a unix socket, and nothing else in this process
    // owns it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot make fd {fd} non-blocking: {e}"))?;
    Ok(listener)
}

fn main() -> ExitCode {
    // First thing, while single-threaded: take the password out of the environment, so no app
    // process ever inherits it.
    let password = std::env::var(PASSWORD_ENV).ok();
    // SAFETY: no other thread exists yet.
    unsafe { std::env::remove_var(PASSWORD_ENV) };

    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("passenger-core: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(level_filter(args.log_level))
        .init();

    let Some(password) = password.filter(|p| !p.is_empty()) else {
        tracing::error!(
            "{PASSWORD_ENV} is not set; the core refuses to serve without the password nginx \
             authenticates with. Start the core through the watchdog"
        );
        return ExitCode::from(1);
    };
    let listener = match take_listener() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("Cannot take the core socket: {e}");
            return ExitCode::from(1);
        }
    };
    // One thread runs every request: a request's work is a few syscalls and some parsing, and
    // on the small machines this serves, handing tasks between worker threads (futex wake-ups,
    // work stealing) cost more CPU per request than the work itself. Nothing on the request
    // path blocks: spawning, handshakes and app I/O are asynchronous; app output is written by
    // its own thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("Cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(args, password, listener));
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn run(args: Args, password: String, listener: std::os::unix::net::UnixListener) -> ExitCode {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("Cannot register the core socket with the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let socket_dir = match socket_dir::SocketDir::create(&args.instance_dir) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let (mut sigterm, mut sigint) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("Cannot install the SIGTERM/SIGINT handlers: {e}");
            return ExitCode::from(1);
        }
    };

    // The lifeline: EOF on stdin means the watchdog is gone or wants us to stop. A plain thread
    // (not the runtime's blocking pool) so that a pending read never holds up the exit.
    let (lifeline_tx, mut lifeline_rx) = tokio::sync::mpsc::channel::<()>(1);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 256];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = lifeline_tx.blocking_send(());
    });

    let spawner = spawner::AppSpawner::new(spawner::SpawnConfig {
        passenger_root: args.passenger_root.clone(),
        socket_dir: socket_dir.path.clone(),
        log_level: args.log_level,
    });
    let pool = pool::Pool::new(spawner);
    let server = Arc::new(request_server::RequestServer {
        password,
        pool: pool.clone(),
        http: http_session::Connections::default(),
        sessions: session::IdleSessions::default(),
        options: app_options::OptionsCache::default(),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(return_freed_memory(server.clone()));
    let accept_task = tokio::spawn(server.run(listener, shutdown_rx));

    tracing::info!(
        "passenger-core {} ready: serving the core socket (fd {LISTENER_FD}) for instance {}, loaders from {}",
        passenger_protocol::VERSION,
        args.instance_dir.display(),
        args.passenger_root.join("loaders").display()
    );
    {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(b"ready\n");
        let _ = stdout.flush();
    }

    let reason = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        _ = lifeline_rx.recv() => "stdin closed (the watchdog is gone or asked us to stop)",
    };
    tracing::info!("Shutting down gracefully: {reason}; stopping the app processes");
    let _ = shutdown_tx.send(true);
    let _ = accept_task.await;
    pool.shutdown().await;
    socket_dir.remove_short();
    tracing::info!("Shutdown complete");
    ExitCode::SUCCESS
}

/// How often the core gives freed heap memory back to the system, and closes the idle
/// connections to apps that no request took since the time before.
const MEMORY_TRIM_INTERVAL: Duration = Duration::from_secs(2);

/// A burst of concurrent requests (each with its buffers, and a connection per Node.js
/// request) leaves the heap at its high-water mark: malloc keeps freed memory for reuse, and
/// idle connections to apps stay open for the next burst. Every 2 s the free pages go back to
/// the system, and the connections no request took in the last 2 s are closed (their memory is
/// given back the next time, once their tasks have ended): within about 6 s of a burst, the
/// core's RSS is what the load that goes on needs, not what the burst once did. (A closed
/// connection costs the next burst a connect to a local socket.)
async fn return_freed_memory<S: pool::Spawner>(server: Arc<request_server::RequestServer<S>>) {
    loop {
        tokio::time::sleep(MEMORY_TRIM_INTERVAL).await;
        // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
        unsafe { libc::malloc_trim(0) };
        server.http.shrink();
        server.sessions.shrink();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_arguments() {
        let a = args(&[
            "--instance-dir",
            "/i",
            "--passenger-root=/r",
            "--log-level",
            "5",
        ])
        .unwrap();
        assert_eq!(a.instance_dir, PathBuf::from("/i"));
        assert_eq!(a.passenger_root, PathBuf::from("/r"));
        assert_eq!(a.log_level, 5);
        assert!(args(&["--instance-dir", "/i"]).is_err());
        assert!(
            args(&[
                "--instance-dir",
                "/i",
                "--passenger-root",
                "/r",
                "--log-level",
                "9"
            ])
            .is_err()
        );
        assert!(args(&["--bogus"]).is_err());
    }

    #[test]
    fn maps_levels() {
        assert_eq!(level_filter(0), LevelFilter::ERROR);
        assert_eq!(level_filter(2), LevelFilter::WARN);
        assert_eq!(level_filter(4), LevelFilter::INFO);
        assert_eq!(level_filter(5), LevelFilter::DEBUG);
        assert_eq!(level_filter(7), LevelFilter::TRACE);
    }
}
