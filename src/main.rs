//! `passenger`: the command-line tool. `passenger start` serves an app folder on the bundled
//! nginx; `passenger stop` and `passenger status` find a running instance by its pid file.
//!
//! Modules: `settings` (options and their layering), `config` (defaults and checks),
//! `detect` (app type), `binding` (listen addresses and their checks), `render` (the nginx
//! config), `runner` (running and supervising nginx), `control` (pid file, stop, status),
//! `banner`, `install` (the install tree).

mod banner;
mod binding;
mod config;
mod control;
mod detect;
mod install;
mod render;
mod runner;
mod settings;

use clap::{Parser, Subcommand};
use settings::Layer;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "passenger",
    version,
    about = "passenger-rs: an application server for Ruby, Python and Node.js apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve an app folder on the bundled nginx.
    Start(Box<StartArgs>),
    /// Stop an instance started with --daemonize (or in another terminal).
    Stop(StopArgs),
    /// Say whether an instance runs, and where.
    Status(StatusArgs),
}

/// Options are layered: defaults < APP_DIR/Passengerfile.json < PASSENGER_* environment
/// variables < these flags.
#[derive(clap::Args)]
#[command(
    after_help = "Every option can also be set in APP_DIR/Passengerfile.json (\"max_pool_size\": 4) \
or in the environment (PASSENGER_MAX_POOL_SIZE=4); flags win over the environment, which wins over the file."
)]
struct StartArgs {
    /// The app's directory (default: the current directory).
    app_dir: Option<PathBuf>,
    /// Address to listen on (IPv4 or IPv6) [default: 0.0.0.0]
    #[arg(short, long, value_name = "HOST")]
    address: Option<String>,
    /// TCP port to listen on [default: 3000]
    #[arg(short, long, value_name = "NUMBER")]
    port: Option<String>,
    /// Listen on this unix domain socket instead of a TCP port.
    #[arg(long, value_name = "PATH")]
    socket: Option<String>,
    /// Listen backlog, capped at net.core.somaxconn [default: 2048]
    #[arg(long, value_name = "NUMBER")]
    socket_backlog: Option<String>,
    /// App environment (RACK_ENV, NODE_ENV, ...) [default: development]
    #[arg(short, long, value_name = "NAME")]
    environment: Option<String>,
    /// Maximum number of app processes [default: 6]
    #[arg(long, value_name = "NUMBER")]
    max_pool_size: Option<String>,
    /// App processes kept running [default: 1]
    #[arg(long, value_name = "NUMBER")]
    min_instances: Option<String>,
    /// smart (preload, then fork) or direct [default: smart for Ruby, else direct]
    #[arg(long, value_name = "NAME")]
    spawn_method: Option<String>,
    /// rack, wsgi or node [default: detected; generic with --app-start-command]
    #[arg(long, value_name = "NAME")]
    app_type: Option<String>,
    /// The app's startup file, relative to the app directory [default: detected]
    #[arg(long, value_name = "FILE")]
    startup_file: Option<String>,
    /// Start a generic app (any language) with this command, run by /bin/sh -c in the app directory; it must listen on 127.0.0.1:$PORT
    #[arg(long, value_name = "COMMAND")]
    app_start_command: Option<String>,
    /// Ruby interpreter for Rack apps [default: ruby]
    #[arg(long, value_name = "PATH")]
    ruby: Option<String>,
    /// Python interpreter for WSGI apps [default: python3]
    #[arg(long, value_name = "PATH")]
    python: Option<String>,
    /// Node.js interpreter for Node apps [default: node]
    #[arg(long, value_name = "PATH")]
    nodejs: Option<String>,
    /// An environment variable for the app (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    envvar: Vec<String>,
    /// Log file of nginx, the agents and the apps [default: this terminal; with --daemonize, APP_DIR/passenger.PORT.log]
    #[arg(long, value_name = "PATH")]
    log_file: Option<String>,
    /// Log level, 0 (critical) to 7 (debug) [default: 3]
    #[arg(long, value_name = "NUMBER")]
    log_level: Option<String>,
    /// Pid file [default: APP_DIR/passenger.PORT.pid, or APP_DIR/tmp/pids/ when it exists]
    #[arg(long, value_name = "PATH")]
    pid_file: Option<String>,
    /// Run in the background.
    #[arg(short, long)]
    daemonize: bool,
    /// When started as root: run nginx's workers and the apps as this user.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Serve HTTPS (on --port, or on --ssl-port alongside HTTP on --port).
    #[arg(long)]
    ssl: bool,
    /// The SSL certificate (PEM) for --ssl.
    #[arg(long, value_name = "PATH")]
    ssl_certificate: Option<String>,
    /// The SSL certificate's private key (PEM) for --ssl.
    #[arg(long, value_name = "PATH")]
    ssl_certificate_key: Option<String>,
    /// Serve HTTPS on this port, HTTP on --port.
    #[arg(long, value_name = "NUMBER")]
    ssl_port: Option<String>,
    /// Directory of static files served by nginx [default: APP_DIR/public]
    #[arg(long, value_name = "PATH")]
    static_files_dir: Option<String>,
    /// Show detailed error pages when the app cannot start [default: on in development]
    #[arg(long, overrides_with = "no_friendly_error_pages")]
    friendly_error_pages: bool,
    /// Show generic error pages when the app cannot start.
    #[arg(long, overrides_with = "friendly_error_pages")]
    no_friendly_error_pages: bool,
    /// Recycle an app process after this many requests [default: 0, never]
    #[arg(long, value_name = "NUMBER")]
    max_requests: Option<String>,
    /// Requests that may wait for a process, per app [default: 100]
    #[arg(long, value_name = "NUMBER")]
    max_request_queue_size: Option<String>,
    /// Threads per Ruby or Python app process, 1 to 1024 [default: 1]
    #[arg(long, value_name = "NUMBER")]
    thread_count: Option<String>,
    /// Route each client to the process that served it first, by a cookie.
    #[arg(long)]
    sticky_sessions: bool,
    /// The cookie of --sticky-sessions [default: _passenger_route]
    #[arg(long, value_name = "NAME")]
    sticky_sessions_cookie_name: Option<String>,
    /// The attributes of that cookie [default: "SameSite=Lax; Secure;"]
    #[arg(long, value_name = "ATTRS")]
    sticky_sessions_cookie_attributes: Option<String>,
    /// Where the instance directory goes [default: $PASSENGER_INSTANCE_REGISTRY_DIR, $TMPDIR or /tmp]
    #[arg(long, value_name = "PATH")]
    instance_registry_dir: Option<String>,
    /// Use this nginx config template instead of the bundled one.
    #[arg(long, value_name = "PATH")]
    nginx_config_template: Option<String>,
    /// Print the generated nginx config and exit.
    #[arg(long)]
    debug_nginx_config: bool,
}

#[derive(clap::Args)]
struct StopArgs {
    /// The app's directory, for its Passengerfile.json and default pid file (default: the current directory).
    app_dir: Option<PathBuf>,
    /// The port the instance listens on [default: 3000]
    #[arg(short, long, value_name = "NUMBER")]
    port: Option<String>,
    /// The instance's pid file.
    #[arg(long, value_name = "PATH")]
    pid_file: Option<String>,
    /// Exit 0 when no instance runs.
    #[arg(long)]
    ignore_pid_not_found: bool,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The app's directory, for its Passengerfile.json and default pid file (default: the current directory).
    app_dir: Option<PathBuf>,
    /// The port the instance listens on [default: 3000]
    #[arg(short, long, value_name = "NUMBER")]
    port: Option<String>,
    /// The instance's pid file.
    #[arg(long, value_name = "PATH")]
    pid_file: Option<String>,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => exit_on_usage_error(e),
    };
    let result = match cli.command {
        Command::Start(args) => start(*args).map(|()| 0),
        Command::Stop(args) => pid_file_of(args.app_dir.as_deref(), args.port, args.pid_file)
            .and_then(|f| control::stop(&f, args.ignore_pid_not_found)),
        Command::Status(args) => pid_file_of(args.app_dir.as_deref(), args.port, args.pid_file)
            .and_then(|f| control::status(&f)),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("passenger: {e}");
            std::process::exit(1);
        }
    }
}

/// Help and version as clap prints them; any other command-line mistake in one line, exit 2.
fn exit_on_usage_error(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {}
    }
    let command = std::env::args()
        .nth(1)
        .filter(|c| ["start", "stop", "status"].contains(&c.as_str()))
        .map_or_else(|| "passenger".to_string(), |c| format!("passenger {c}"));
    let message = match (e.kind(), e.get(ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(ContextValue::String(arg))) => {
            format!("unknown option {arg} for `{command}`")
        }
        _ => e
            .render()
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid command line")
            .trim_start_matches("error: ")
            .to_string(),
    };
    eprintln!("passenger: {message}; see `{command} --help`");
    std::process::exit(2);
}

/// The layers in order: the app dir's Passengerfile.json, the environment, then `flags`.
fn layers(app_dir: &Path, flags: Layer) -> Result<Layer, String> {
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot find the current directory: {e}"))?;
    let mut layer = settings::from_passengerfile(app_dir)?;
    layer.merge(settings::from_env(std::env::vars(), &cwd)?);
    layer.merge(flags);
    Ok(layer)
}

fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
}

fn start(args: StartArgs) -> Result<(), String> {
    let app_dir = config::app_dir(args.app_dir.as_deref())?;
    let layer = layers(&app_dir, start_flags(&args)?)?;
    let root = install::root()?;
    let cfg = config::resolve(&layer, &app_dir, &root)?;
    let template = render::load_template(&cfg)?;
    if args.debug_nginx_config {
        let run_dir = std::env::temp_dir().join("passenger-standalone.XXXXXX");
        print!("{}", render::render(&template, &cfg, &root, &run_dir)?);
        return Ok(());
    }
    // Everything a person can get wrong is checked here, before anything starts.
    render::render(&template, &cfg, &root, Path::new("/"))?;
    control::check_not_running(&cfg.pid_file)?;
    for listener in &cfg.listeners {
        binding::check(listener)?;
    }
    cfg.check_files()?;
    for w in &cfg.warnings {
        eprintln!("passenger: note: {w}");
    }
    runner::run(&cfg, &root, &template)
}

fn start_flags(a: &StartArgs) -> Result<Layer, String> {
    let cwd = cwd();
    let mut layer = Layer::default();
    let valued: &[(&str, &Option<String>)] = &[
        ("address", &a.address),
        ("port", &a.port),
        ("socket_file", &a.socket),
        ("socket_backlog", &a.socket_backlog),
        ("environment", &a.environment),
        ("max_pool_size", &a.max_pool_size),
        ("min_instances", &a.min_instances),
        ("spawn_method", &a.spawn_method),
        ("app_type", &a.app_type),
        ("startup_file", &a.startup_file),
        ("app_start_command", &a.app_start_command),
        ("ruby", &a.ruby),
        ("python", &a.python),
        ("nodejs", &a.nodejs),
        ("log_file", &a.log_file),
        ("log_level", &a.log_level),
        ("pid_file", &a.pid_file),
        ("user", &a.user),
        ("ssl_certificate", &a.ssl_certificate),
        ("ssl_certificate_key", &a.ssl_certificate_key),
        ("ssl_port", &a.ssl_port),
        ("static_files_dir", &a.static_files_dir),
        ("max_requests", &a.max_requests),
        ("max_request_queue_size", &a.max_request_queue_size),
        ("thread_count", &a.thread_count),
        (
            "sticky_sessions_cookie_name",
            &a.sticky_sessions_cookie_name,
        ),
        (
            "sticky_sessions_cookie_attributes",
            &a.sticky_sessions_cookie_attributes,
        ),
        ("instance_registry_dir", &a.instance_registry_dir),
        ("nginx_config_template", &a.nginx_config_template),
    ];
    for &(key, value) in valued {
        if let Some(v) = value {
            layer.set_flag(key, v, &cwd)?;
        }
    }
    for pair in &a.envvar {
        layer.set_flag("envvars", pair, &cwd)?;
    }
    for (key, on, value, flag) in [
        ("daemonize", a.daemonize, true, "--daemonize"),
        ("ssl", a.ssl, true, "--ssl"),
        (
            "sticky_sessions",
            a.sticky_sessions,
            true,
            "--sticky-sessions",
        ),
        (
            "friendly_error_pages",
            a.friendly_error_pages,
            true,
            "--friendly-error-pages",
        ),
        (
            "friendly_error_pages",
            a.no_friendly_error_pages,
            false,
            "--no-friendly-error-pages",
        ),
    ] {
        if on {
            layer.set_bool_flag(key, value, flag);
        }
    }
    Ok(layer)
}

/// The pid file `stop`/`status` look at: `--pid-file`, else the one `passenger start` would use
/// for the port (`--port`, else PASSENGER_PORT, else Passengerfile.json, else 3000).
fn pid_file_of(
    app_dir: Option<&Path>,
    port: Option<String>,
    pid_file: Option<String>,
) -> Result<PathBuf, String> {
    let app_dir = config::app_dir(app_dir)?;
    let cwd = cwd();
    let mut flags = Layer::default();
    if let Some(p) = port {
        flags.set_flag("port", &p, &cwd)?;
    }
    if let Some(f) = pid_file {
        flags.set_flag("pid_file", &f, &cwd)?;
    }
    let layer = layers(&app_dir, flags)?;
    Ok(config::pid_file(&layer, &app_dir))
}
