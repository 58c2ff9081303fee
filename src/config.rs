//! The configuration of one `passenger start`: the merged layers with the defaults applied and
//! every value checked, before anything starts.

use crate::binding::{self, Endpoint, Listener};
use crate::detect::{self, App};
use crate::settings::Layer;
use passenger_protocol::options::AppType;
use std::path::{Path, PathBuf};

pub const DEFAULT_PORT: u16 = 3000;
pub const DEFAULT_ADDRESS: &str = "0.0.0.0";
/// Passenger Standalone's default environment (the module's own default is production).
pub const DEFAULT_ENVIRONMENT: &str = "development";
pub const DEFAULT_LOG_LEVEL: u8 = 3;
pub const DEFAULT_TEMPLATE: &str = "nginx-conf/standalone.conf.template";

/// The identity nginx's workers and the apps run as (`--user`, when started as root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssl {
    pub certificate: PathBuf,
    pub certificate_key: PathBuf,
}

/// `--sticky-sessions`: a cookie routes each client to the process that served it first. A
/// `None` cookie name or attributes is the module's default (`_passenger_route`,
/// `SameSite=Lax; Secure;`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickySessions {
    pub cookie_name: Option<String>,
    pub cookie_attributes: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StartConfig {
    pub app: App,
    pub environment: String,
    pub listeners: Vec<Listener>,
    pub backlog: u32,
    pub ssl: Option<Ssl>,
    pub static_files_dir: PathBuf,
    pub max_pool_size: Option<u64>,
    pub min_instances: Option<u64>,
    pub max_requests: Option<u64>,
    pub max_request_queue_size: Option<u64>,
    /// Threads per app process (1 to [`crate::settings::MAX_THREAD_COUNT`]).
    pub thread_count: Option<u64>,
    pub sticky_sessions: Option<StickySessions>,
    /// Normalised to `smart` or `direct`.
    pub spawn_method: Option<&'static str>,
    pub ruby: Option<String>,
    pub python: Option<String>,
    pub nodejs: Option<String>,
    pub env_vars: Vec<(String, String)>,
    /// None: the terminal (only in the foreground).
    pub log_file: Option<PathBuf>,
    pub log_level: u8,
    pub pid_file: PathBuf,
    pub daemonize: bool,
    pub run_as: Option<RunAs>,
    pub friendly_error_pages: Option<bool>,
    pub instance_registry_dir: Option<PathBuf>,
    pub template: PathBuf,
    /// Notes for the person, printed before starting.
    pub warnings: Vec<String>,
}

/// The app directory: the given one or the current directory, made absolute.
pub fn app_dir(given: Option<&Path>) -> Result<PathBuf, String> {
    let dir = given.unwrap_or(Path::new("."));
    match dir.canonicalize() {
        Ok(d) if d.is_dir() => Ok(d),
        Ok(d) => Err(format!(
            "the app directory {} is not a directory",
            d.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "the app directory {} does not exist",
            dir.display()
        )),
        Err(e) => Err(format!(
            "the app directory {} cannot be used: {e}",
            dir.display()
        )),
    }
}

/// `<app>/tmp/pids/passenger.<port>.pid` when `tmp/pids` exists, else `<app>/passenger.<port>.pid`
/// (Phusion Passenger's places), unless the layers name a pid file.
pub fn pid_file(layer: &Layer, app_dir: &Path) -> PathBuf {
    if let Some(p) = layer.path("pid_file") {
        return p.to_path_buf();
    }
    let name = format!("passenger.{}.pid", instance_label(layer));
    let pids = app_dir.join("tmp/pids");
    if pids.is_dir() {
        pids.join(name)
    } else {
        app_dir.join(name)
    }
}

/// `<app>/log/passenger.<port>.log` when `log` exists, else `<app>/passenger.<port>.log`: where a
/// daemonized instance logs unless told otherwise.
fn default_log_file(layer: &Layer, app_dir: &Path) -> PathBuf {
    let name = format!("passenger.{}.log", instance_label(layer));
    let log = app_dir.join("log");
    if log.is_dir() {
        log.join(name)
    } else {
        app_dir.join(name)
    }
}

/// The port, or `socket` for an instance on a unix socket.
fn instance_label(layer: &Layer) -> String {
    if layer.get("socket_file").is_some() {
        "socket".to_string()
    } else {
        layer
            .number("port")
            .unwrap_or(DEFAULT_PORT.into())
            .to_string()
    }
}

pub fn resolve(layer: &Layer, app_dir: &Path, root: &Path) -> Result<StartConfig, String> {
    let mut warnings = layer.warnings.clone();
    let app = match layer.text("app_start_command") {
        // A generic app: nothing to detect; what would choose or start another kind is moot.
        Some(command) => {
            let because = layer.source("app_start_command");
            if layer.get("app_type").is_some() && layer.text("app_type") != Some("generic") {
                warnings.push(format!(
                    "{} is ignored: with {because} the app is a generic one",
                    layer.source("app_type")
                ));
            }
            for key in ["startup_file", "ruby", "python", "nodejs"] {
                if layer.get(key).is_some() {
                    warnings.push(format!(
                        "{} has no effect on a generic app: {because} starts it",
                        layer.source(key)
                    ));
                }
            }
            detect::generic(app_dir, command)
        }
        None => detect::detect(app_dir, layer.text("app_type"), layer.text("startup_file"))?,
    };

    let ssl_on = layer.flag("ssl").unwrap_or(false);
    let ssl = if ssl_on {
        let file = |key: &str, what: &str| -> Result<PathBuf, String> {
            let path = layer.path(key).ok_or_else(|| {
                format!(
                    "{} needs {} (the {what})",
                    layer.source("ssl"),
                    crate::settings::spec_of(key).flag
                )
            })?;
            std::fs::File::open(path).map_err(|e| {
                format!(
                    "the {what} {} ({}) cannot be read: {e}",
                    path.display(),
                    layer.source(key)
                )
            })?;
            Ok(path.to_path_buf())
        };
        Some(Ssl {
            certificate: file("ssl_certificate", "SSL certificate")?,
            certificate_key: file("ssl_certificate_key", "SSL certificate key")?,
        })
    } else {
        for key in ["ssl_certificate", "ssl_certificate_key"] {
            if layer.get(key).is_some() {
                warnings.push(format!("{} is ignored without --ssl", layer.source(key)));
            }
        }
        None
    };
    let ssl_port = layer.number("ssl_port").map(|p| p as u16);
    if ssl_port.is_some() && !ssl_on {
        return Err(format!(
            "{} needs --ssl (and --ssl-certificate, --ssl-certificate-key)",
            layer.source("ssl_port")
        ));
    }

    let address = layer.text("address").unwrap_or(DEFAULT_ADDRESS);
    let port = layer.number("port").map_or(DEFAULT_PORT, |p| p as u16);
    let mut listeners = Vec::new();
    if let Some(socket) = layer.path("socket_file") {
        listeners.push(Listener {
            endpoint: Endpoint::Unix(socket.to_path_buf()),
            ssl: ssl_on && ssl_port.is_none(),
            option: "--socket",
        });
    } else {
        listeners.push(Listener {
            endpoint: Endpoint::Tcp(binding::resolve(address, port)?),
            ssl: ssl_on && ssl_port.is_none(),
            option: "--port",
        });
    }
    if let Some(ssl_port) = ssl_port {
        if layer.get("socket_file").is_none() && ssl_port == port {
            return Err(format!(
                "--ssl-port {ssl_port} is the same as --port: HTTPS needs a port of its own (or leave out --ssl-port to serve only HTTPS on --port)"
            ));
        }
        listeners.push(Listener {
            endpoint: Endpoint::Tcp(binding::resolve(address, ssl_port)?),
            ssl: true,
            option: "--ssl-port",
        });
    }
    let requested_backlog = layer
        .number("socket_backlog")
        .map_or(binding::DEFAULT_BACKLOG, |b| b.min(u32::MAX.into()) as u32);
    let (backlog, note) = binding::backlog(requested_backlog);
    warnings.extend(note);

    let spawn_method = match layer.text("spawn_method") {
        None => None,
        Some("smart" | "smart-lv2") => Some("smart"),
        Some("direct" | "conservative") => Some("direct"),
        Some(other) => {
            return Err(format!(
                "{}: unknown spawn method {other:?}; use smart or direct",
                layer.source("spawn_method")
            ));
        }
    };

    if spawn_method == Some("smart") && app.app_type == AppType::Generic {
        warnings.push(format!(
            "{} smart has no effect on a generic app: its command starts every process anew",
            layer.source("spawn_method")
        ));
    }

    let thread_count = layer.number("thread_count");
    if thread_count.is_some() {
        match app.app_type {
            AppType::Node => warnings.push(format!(
                "{} has no effect on a Node.js app: its one thread takes many requests at once",
                layer.source("thread_count")
            )),
            AppType::Generic => warnings.push(format!(
                "{} has no effect on a generic app: its own server decides how many requests it takes at once",
                layer.source("thread_count")
            )),
            AppType::Rack | AppType::Wsgi => {}
        }
    }

    let cookie = |key: &str| layer.text(key).map(str::to_string);
    let sticky_sessions = if layer.flag("sticky_sessions").unwrap_or(false) {
        Some(StickySessions {
            cookie_name: cookie("sticky_sessions_cookie_name"),
            cookie_attributes: cookie("sticky_sessions_cookie_attributes"),
        })
    } else {
        for key in [
            "sticky_sessions_cookie_name",
            "sticky_sessions_cookie_attributes",
        ] {
            if layer.get(key).is_some() {
                warnings.push(format!(
                    "{} is ignored without --sticky-sessions",
                    layer.source(key)
                ));
            }
        }
        None
    };

    let daemonize = layer.flag("daemonize").unwrap_or(false);
    let log_file = match layer.path("log_file") {
        Some(p) => Some(p.to_path_buf()),
        None if daemonize => Some(default_log_file(layer, app_dir)),
        None => None,
    };
    let pid_file = pid_file(layer, app_dir);

    let registry = layer.path("instance_registry_dir");
    if let Some(dir) = registry
        && !dir.is_dir()
    {
        return Err(format!(
            "the instance registry directory {} ({}) does not exist",
            dir.display(),
            layer.source("instance_registry_dir")
        ));
    }

    let static_files_dir = layer
        .path("static_files_dir")
        .map_or_else(|| app.root.join("public"), Path::to_path_buf);
    let template = layer
        .path("nginx_config_template")
        .map_or_else(|| root.join(DEFAULT_TEMPLATE), Path::to_path_buf);

    Ok(StartConfig {
        environment: layer
            .text("environment")
            .unwrap_or(DEFAULT_ENVIRONMENT)
            .to_string(),
        listeners,
        backlog,
        ssl,
        static_files_dir,
        max_pool_size: layer.number("max_pool_size"),
        min_instances: layer.number("min_instances"),
        max_requests: layer.number("max_requests"),
        max_request_queue_size: layer.number("max_request_queue_size"),
        thread_count,
        sticky_sessions,
        spawn_method,
        ruby: layer.text("ruby").map(str::to_string),
        python: layer.text("python").map(str::to_string),
        nodejs: layer.text("nodejs").map(str::to_string),
        env_vars: layer.env_vars().to_vec(),
        log_file,
        log_level: layer
            .number("log_level")
            .map_or(DEFAULT_LOG_LEVEL, |l| l as u8),
        pid_file,
        daemonize,
        run_as: run_as(layer)?,
        friendly_error_pages: layer.flag("friendly_error_pages"),
        instance_registry_dir: registry.map(Path::to_path_buf),
        template,
        warnings,
        app,
    })
}

impl StartConfig {
    /// Where the instance is accessible, one URL per distinct listener (the banner and
    /// `standalone.json` list these).
    pub fn urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self
            .listeners
            .iter()
            .map(|l| l.endpoint.url(l.ssl))
            .collect();
        urls.dedup();
        urls
    }

    /// The pid file and the log file can be written (not needed to print the config).
    pub fn check_files(&self) -> Result<(), String> {
        if let Some(log) = &self.log_file {
            check_writable_dir(log, "log file")?;
        }
        check_writable_dir(&self.pid_file, "pid file")
    }
}

/// `--user`: only root can switch; naming yourself is accepted and changes nothing.
fn run_as(layer: &Layer) -> Result<Option<RunAs>, String> {
    use nix::unistd::{Group, User, geteuid};
    let Some(name) = layer.text("user") else {
        return Ok(None);
    };
    let source = layer.source("user");
    let user = User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| format!("{source}: there is no user {name:?} on this host"))?;
    if user.uid.is_root() {
        return Err(format!(
            "{source}: apps never run as root; name an ordinary user"
        ));
    }
    if !geteuid().is_root() {
        if user.uid == geteuid() {
            return Ok(None);
        }
        return Err(format!(
            "{source} {name}: only root can run nginx and the apps as another user, and you are {}",
            binding::current_user()
        ));
    }
    let group = Group::from_gid(user.gid).ok().flatten().ok_or_else(|| {
        format!(
            "{source}: the primary group (gid {}) of {name} has no name",
            user.gid
        )
    })?;
    Ok(Some(RunAs {
        user: user.name,
        group: group.name,
    }))
}

/// The directory `file` goes into exists and we may write there.
fn check_writable_dir(file: &Path, what: &str) -> Result<(), String> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!(
            "cannot write the {what} {}: the directory {} does not exist",
            file.display(),
            dir.display()
        ));
    }
    if nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err() {
        return Err(format!(
            "cannot write the {what} {}: the directory {} is not writable by {}; name another with --{}",
            file.display(),
            dir.display(),
            binding::current_user(),
            what.replace(' ', "-")
        ));
    }
    Ok(())
}
