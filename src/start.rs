//! `passenger start`: runs the bundled nginx with the module and a generated config.

use passenger_protocol::options::AppType;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args)]
pub struct StartOptions {
    /// The app's directory (default: the current directory).
    app_dir: Option<PathBuf>,
    /// The port to listen on.
    #[arg(short, long, default_value_t = 3000)]
    port: u16,
    /// The address to listen on.
    #[arg(short, long, default_value = "0.0.0.0")]
    address: String,
    /// The app's environment (RACK_ENV and friends).
    #[arg(short, long, default_value = "development")]
    environment: String,
    /// The Ruby interpreter for Rack apps.
    #[arg(long, default_value = "ruby")]
    ruby: String,
    /// Where nginx and the agents log (default: this terminal).
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Agent log level, 0 (critical) to 7 (debug).
    #[arg(long, default_value_t = 3)]
    log_level: u8,
}

pub fn run(opts: StartOptions) -> Result<(), String> {
    let root = passenger_root()?;
    let app_dir = opts.app_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let app_dir = app_dir.canonicalize().map_err(|e| {
        format!(
            "the app directory {} cannot be used: {e}",
            app_dir.display()
        )
    })?;
    let app_type = AppType::detect(&app_dir).ok_or_else(|| {
        let looked_for: Vec<_> = AppType::DETECTION.iter().map(|(_, f)| *f).collect();
        format!(
            "no app found in {}: looked for {}",
            app_dir.display(),
            looked_for.join(", ")
        )
    })?;
    let listen = check_address(&opts.address, opts.port)?;

    let run_dir = nix::unistd::mkdtemp(&std::env::temp_dir().join("passenger-standalone.XXXXXX"))
        .map_err(|e| {
        format!(
            "cannot create a runtime directory in {}: {e}",
            std::env::temp_dir().display()
        )
    })?;
    // nginx's workers may run as another user (nobody, when started as root).
    std::fs::set_permissions(
        &run_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| e.to_string())?;
    let result = serve(&opts, &root, &app_dir, app_type, &listen, &run_dir);
    let _ = std::fs::remove_dir_all(&run_dir);
    result
}

fn serve(
    opts: &StartOptions,
    root: &Path,
    app_dir: &Path,
    app_type: AppType,
    listen: &str,
    run_dir: &Path,
) -> Result<(), String> {
    let template_path = root.join("nginx-conf/standalone.conf.template");
    let template = std::fs::read_to_string(&template_path).map_err(|e| {
        format!(
            "cannot read the config template {}: {e}",
            template_path.display()
        )
    })?;
    let log_file = opts
        .log_file
        .as_ref()
        .map_or("stderr".to_string(), |p| p.display().to_string());
    let config = fill_template(
        &template,
        &[
            ("passenger_root", &root.display().to_string()),
            ("run_dir", &run_dir.display().to_string()),
            ("app_root", &app_dir.display().to_string()),
            ("listen", listen),
            ("environment", &opts.environment),
            ("ruby", &opts.ruby),
            ("log_file", &log_file),
            ("log_level", &opts.log_level.to_string()),
            (
                "error_log_level",
                if opts.log_level >= 5 {
                    "info"
                } else {
                    "notice"
                },
            ),
        ],
    )?;
    let config_path = run_dir.join("nginx.conf");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;

    let nginx = root.join("webhelper/nginx");
    let mut child = Command::new(&nginx)
        .arg("-p")
        .arg(run_dir)
        .arg("-c")
        .arg(&config_path)
        // Where nginx logs before it has read the config (else its compiled-in logs/error.log).
        .arg("-e")
        .arg(&log_file)
        .spawn()
        .map_err(|e| format!("cannot run the bundled nginx {}: {e}", nginx.display()))?;
    println!(
        "=============== passenger-rs {} ===============",
        passenger_protocol::VERSION
    );
    println!("App:         {} ({})", app_dir.display(), app_type.name());
    println!("Environment: {}", opts.environment);
    println!("URL:         http://{listen}/");
    println!("Log:         {log_file}");
    println!("Press Ctrl-C to stop.");
    forward_stop_signals(child.id());
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() || stopped_by_us() {
        Ok(())
    } else {
        Err(format!("nginx exited with {status}; see the log above"))
    }
}

/// Replaces every `{{name}}`; an unknown placeholder left in the template is an error.
fn fill_template(template: &str, values: &[(&str, &str)]) -> Result<String, String> {
    let mut out = template.to_string();
    for (k, v) in values {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    match out.find("{{") {
        Some(i) => Err(format!(
            "the config template has an unknown placeholder: {}",
            &out[i..out.len().min(i + 40)]
        )),
        None => Ok(out),
    }
}

/// Checks that the address can be bound now, so that a port in use or a privileged port is
/// reported in one line before anything starts; returns nginx's `listen` argument.
fn check_address(address: &str, port: u16) -> Result<String, String> {
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    let listen = format!("{host}:{port}");
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| format!("{address:?} is not an IP address"))?;
    match TcpListener::bind(addr) {
        Ok(_) => Ok(listen),
        Err(e) => Err(match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                format!("cannot listen on {listen}: the port is already in use")
            }
            std::io::ErrorKind::PermissionDenied => {
                format!("cannot listen on {listen}: ports below 1024 need root")
            }
            std::io::ErrorKind::AddrNotAvailable => {
                format!("cannot listen on {listen}: the address is not on this host")
            }
            _ => format!("cannot listen on {listen}: {e}"),
        }),
    }
}

/// The install root: this binary lives in `<root>/bin/`.
fn passenger_root() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let root = exe.parent().and_then(Path::parent).map(Path::to_path_buf);
    match root {
        Some(r) if r.join("webhelper/nginx").is_file() => Ok(r),
        _ => Err(format!(
            "{} is not inside an install tree (expected ../webhelper/nginx beside it); run scripts/build and use buildout/bin/passenger",
            exe.display()
        )),
    }
}

static STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static NGINX_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

fn stopped_by_us() -> bool {
    STOPPED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Ctrl-C and SIGTERM stop nginx gracefully (SIGQUIT lets in-flight requests finish).
fn forward_stop_signals(nginx_pid: u32) {
    extern "C" fn on_signal(_: libc::c_int) {
        STOPPED.store(true, std::sync::atomic::Ordering::SeqCst);
        let pid = NGINX_PID.load(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
    }
    NGINX_PID.store(nginx_pid as i32, std::sync::atomic::Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only touches atomics and calls kill.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}
