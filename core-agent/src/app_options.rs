//! The per-request app options, taken from the `PASSENGER_*` keys nginx puts in the SCGI header.

use passenger_protocol::options::{self, AppType};
use passenger_protocol::scgi::ScgiHeader;
use std::path::Path;
use thiserror::Error;

/// Everything the pool and the spawner need to know about the app a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppOptions {
    pub app_root: String,
    pub app_type: AppType,
    /// Absolute path of the startup file (`config.ru` by default).
    pub startup_file: String,
    pub app_env: String,
    pub group_name: String,
    /// The Ruby interpreter (`passenger_ruby`).
    pub ruby: String,
    /// The Python interpreter (`passenger_python`).
    pub python: String,
    /// The Node.js interpreter (`passenger_nodejs`).
    pub nodejs: String,
    pub base_uri: String,
    pub show_version_in_header: bool,
    pub pool: PoolOptions,
    pub spawn: SpawnOptions,
}

impl AppOptions {
    /// The interpreter that runs this app's loader.
    pub fn interpreter(&self) -> &str {
        match self.app_type {
            AppType::Rack => &self.ruby,
            AppType::Wsgi => &self.python,
            AppType::Node => &self.nodejs,
            // A generic app's start command runs through the shell.
            AppType::Generic => "/bin/sh",
        }
    }
}

/// Smart spawning forks ready processes from a preloader that loaded the app once; direct
/// spawning starts each process from scratch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnMethod {
    Smart,
    Direct,
}

/// How the app's processes are started, and what a failed start shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnOptions {
    pub method: SpawnMethod,
    /// Seconds an unused preloader lives on (0 = forever).
    pub max_preloader_idle_time: u64,
    /// Seconds from exec to `!> Ready`.
    pub start_timeout: u64,
    /// `passenger_env_var` pairs, applied last.
    pub env_vars: Vec<(String, String)>,
    /// Start through the app user's login shell (bash, zsh, ksh) so its profile applies.
    pub load_shell_envvars: bool,
    /// Run the app's processes under SCHED_BATCH (`passenger_app_scheduling_policy batch`,
    /// the default), else under the normal policy.
    pub batch_scheduling: bool,
    /// RLIMIT_NOFILE of the app's processes.
    pub fd_ulimit: Option<u64>,
    /// `passenger_user` / `passenger_group`.
    pub user: Option<String>,
    pub group: Option<String>,
    /// Global: run apps as their startup file's owner (when the agents are root).
    pub user_switching: bool,
    /// Global: the fallback identity.
    pub default_user: String,
    pub default_group: Option<String>,
    /// Global: log app output without the `App <pid> output: ` prefix.
    pub disable_log_prefix: bool,
    /// A detailed page on spawn failure (else a short generic one).
    pub friendly_error_pages: bool,
    pub custom_error_page: Option<String>,
    pub spawn_exception_status: u16,
    /// Threads per Ruby/Python process: the loader serves that many requests at once.
    pub thread_count: u32,
    /// The Ruby loaders require `bundler/setup` before loading the app
    /// (`passenger_preload_bundler`).
    pub preload_bundler: bool,
    /// `passenger_app_start_command`: the shell command that starts a generic app (always
    /// set for one, ignored for the others).
    pub start_command: Option<String>,
}

impl SpawnOptions {
    /// The defaults for an app of `app_type` in environment `app_env`.
    pub fn defaults(app_type: AppType, app_env: &str) -> SpawnOptions {
        SpawnOptions {
            method: if app_type == AppType::Rack {
                SpawnMethod::Smart
            } else {
                SpawnMethod::Direct
            },
            max_preloader_idle_time: options::DEFAULT_MAX_PRELOADER_IDLE_TIME,
            start_timeout: options::DEFAULT_START_TIMEOUT,
            env_vars: Vec::new(),
            load_shell_envvars: true,
            batch_scheduling: true,
            fd_ulimit: None,
            user: None,
            group: None,
            user_switching: true,
            default_user: options::DEFAULT_USER_NAME.to_string(),
            default_group: None,
            disable_log_prefix: false,
            friendly_error_pages: app_env == "development",
            custom_error_page: None,
            spawn_exception_status: options::DEFAULT_SPAWN_EXCEPTION_STATUS_CODE as u16,
            thread_count: 1,
            preload_bundler: false,
            start_command: None,
        }
    }

    fn from_header(
        h: &ScgiHeader,
        app_type: AppType,
        app_env: &str,
    ) -> Result<SpawnOptions, OptionsError> {
        let d = SpawnOptions::defaults(app_type, app_env);
        let method = match text(h, options::SPAWN_METHOD)? {
            // A generic app has nothing to preload.
            _ if app_type == AppType::Generic => SpawnMethod::Direct,
            None => d.method,
            Some("smart" | "smart-lv2") => SpawnMethod::Smart,
            Some("direct" | "conservative") => SpawnMethod::Direct,
            Some(other) => {
                return Err(OptionsError::BadValue {
                    key: options::SPAWN_METHOD,
                    value: other.to_string(),
                    expected: "smart or direct",
                });
            }
        };
        let batch_scheduling = match text(h, options::APP_SCHEDULING_POLICY)? {
            None => d.batch_scheduling,
            Some("batch") => true,
            Some("normal" | "other") => false,
            Some(other) => {
                return Err(OptionsError::BadValue {
                    key: options::APP_SCHEDULING_POLICY,
                    value: other.to_string(),
                    expected: "batch or normal",
                });
            }
        };
        let env_vars = match text(h, options::ENV_VARS)? {
            None => Vec::new(),
            Some(encoded) => options::decode_env_vars(encoded).ok_or(OptionsError::BadValue {
                key: options::ENV_VARS,
                value: encoded.to_string(),
                expected: "base64 of NAME\\0VALUE\\0 pairs",
            })?,
        };
        let name =
            |key| -> Result<Option<String>, OptionsError> { Ok(text(h, key)?.map(str::to_string)) };
        Ok(SpawnOptions {
            method,
            max_preloader_idle_time: number(h, options::MAX_PRELOADER_IDLE_TIME, 0, u64::MAX)?
                .unwrap_or(d.max_preloader_idle_time),
            start_timeout: number(h, options::START_TIMEOUT, 1, 365 * 24 * 3600)?
                .unwrap_or(d.start_timeout),
            env_vars,
            load_shell_envvars: flag(h, options::LOAD_SHELL_ENVVARS)?
                .unwrap_or(d.load_shell_envvars),
            batch_scheduling,
            fd_ulimit: number(h, options::APP_FILE_DESCRIPTOR_ULIMIT, 1, u64::MAX)?,
            user: name(options::USER)?,
            group: name(options::GROUP)?,
            user_switching: flag(h, options::USER_SWITCHING)?.unwrap_or(d.user_switching),
            default_user: name(options::DEFAULT_USER)?.unwrap_or(d.default_user),
            default_group: name(options::DEFAULT_GROUP)?,
            disable_log_prefix: flag(h, options::DISABLE_LOG_PREFIX)?
                .unwrap_or(d.disable_log_prefix),
            friendly_error_pages: flag(h, options::FRIENDLY_ERROR_PAGES)?
                .unwrap_or(d.friendly_error_pages),
            custom_error_page: name(options::CUSTOM_ERROR_PAGE)?,
            spawn_exception_status: number(h, options::SPAWN_EXCEPTION_STATUS_CODE, 100, 599)?
                .map_or(d.spawn_exception_status, |v| v as u16),
            thread_count: number(h, options::THREAD_COUNT, 1, 1024)?
                .map_or(d.thread_count, |v| v as u32),
            preload_bundler: flag(h, options::PRELOAD_BUNDLER)?.unwrap_or(d.preload_bundler),
            start_command: match text(h, options::APP_START_COMMAND)? {
                Some(c) if !c.trim().is_empty() => Some(c.to_string()),
                _ if app_type == AppType::Generic => return Err(OptionsError::NoStartCommand),
                _ => None,
            },
        })
    }
}

/// The pool's settings for an app (and the global ones, which the core applies as the latest
/// request carries them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Global: processes across all apps (at least 1).
    pub max_pool_size: u32,
    /// Global: processes of one app, 0 = no cap.
    pub max_instances_per_app: u32,
    /// This app's own cap (`passenger_max_instances`), 0 = none; the lower non-zero of it and
    /// `max_instances_per_app` applies ([`PoolOptions::instance_cap`]).
    pub max_instances: u32,
    /// Requests one process takes at once, overriding what its loader advertised
    /// (`passenger_force_max_concurrent_requests_per_process`; 0 = unlimited; `None`, sent as
    /// -1 or absent: what the loader advertised).
    pub force_max_concurrent_requests_per_process: Option<u32>,
    /// Seconds a request may run in a process before the process is killed and the client
    /// answered 504 (`passenger_max_request_time`), 0 = no limit.
    pub max_request_time: u64,
    /// Megabytes of private memory above which a process is recycled after a request
    /// (`passenger_memory_limit`), 0 = no limit.
    pub memory_limit: u64,
    /// Restart one process at a time, the old ones serving meanwhile
    /// (`passenger_rolling_restarts`, default on); off: every old process stops (after its
    /// requests) before new ones start, and requests wait for those.
    pub rolling_restarts: bool,
    /// Route a client to the same process by a cookie (`passenger_sticky_sessions`).
    pub sticky_sessions: bool,
    pub sticky_sessions_cookie_name: String,
    /// What follows `<name>=<id>; ` in the Set-Cookie header.
    pub sticky_sessions_cookie_attributes: String,
    /// Close a process's upgraded connections (WebSockets) when it is shut down
    /// (`passenger_abort_websockets_on_process_shutdown`, default on); off: they run on.
    pub abort_websockets_on_process_shutdown: bool,
    /// Global: seconds after which idle processes beyond min_instances stop, 0 = never.
    pub pool_idle_time: u64,
    /// Global: seconds between two stat() checks of restart.txt.
    pub stat_throttle_rate: u64,
    pub min_instances: u32,
    /// Requests after which a process is recycled, 0 = never.
    pub max_requests: u64,
    /// Each process recycles after `max_requests` plus up to this many more (uniformly).
    pub max_requests_jitter: u64,
    /// When a restart's new version fails to spawn, keep the old processes serving.
    pub resist_deployment_errors: bool,
    /// Wait list length, 0 = unbounded.
    pub max_request_queue_size: u32,
    pub queue_overflow_status: u16,
    /// Seconds a request may wait, 0 = no limit.
    pub max_request_queue_time: u64,
    /// Absolute directory of restart.txt / always_restart.txt.
    pub restart_dir: String,
    /// Global: bytes of one response held for a slow client before the core stops reading the
    /// app (at least 1).
    pub response_buffer_high_watermark: u64,
}

impl PoolOptions {
    /// The defaults for an app in `app_root`.
    pub fn defaults(app_root: &str) -> PoolOptions {
        PoolOptions {
            max_pool_size: options::DEFAULT_MAX_POOL_SIZE as u32,
            max_instances_per_app: 0,
            max_instances: 0,
            force_max_concurrent_requests_per_process: None,
            max_request_time: 0,
            memory_limit: 0,
            rolling_restarts: true,
            sticky_sessions: false,
            abort_websockets_on_process_shutdown: true,
            sticky_sessions_cookie_name: options::DEFAULT_STICKY_SESSIONS_COOKIE_NAME.to_string(),
            sticky_sessions_cookie_attributes: options::DEFAULT_STICKY_SESSIONS_COOKIE_ATTRIBUTES
                .to_string(),
            pool_idle_time: options::DEFAULT_POOL_IDLE_TIME,
            stat_throttle_rate: options::DEFAULT_STAT_THROTTLE_RATE,
            min_instances: options::DEFAULT_MIN_INSTANCES as u32,
            max_requests: 0,
            max_requests_jitter: 0,
            resist_deployment_errors: false,
            max_request_queue_size: options::DEFAULT_MAX_REQUEST_QUEUE_SIZE as u32,
            queue_overflow_status: options::DEFAULT_REQUEST_QUEUE_OVERFLOW_STATUS_CODE as u16,
            max_request_queue_time: 0,
            restart_dir: format!(
                "{}/{}",
                app_root.trim_end_matches('/'),
                options::DEFAULT_RESTART_DIR
            ),
            response_buffer_high_watermark: options::DEFAULT_RESPONSE_BUFFER_HIGH_WATERMARK,
        }
    }

    /// The most processes this app may have given the global `max_instances_per_app`: the
    /// lower non-zero of the two (0 = no cap).
    pub fn instance_cap(&self, max_instances_per_app: u32) -> u32 {
        match (self.max_instances, max_instances_per_app) {
            (0, global) => global,
            (own, 0) => own,
            (own, global) => own.min(global),
        }
    }

    fn from_header(h: &ScgiHeader, app_root: &str) -> Result<PoolOptions, OptionsError> {
        let d = PoolOptions::defaults(app_root);
        let restart_dir = match text(h, options::RESTART_DIR)? {
            Some(dir) if dir.starts_with('/') => dir.trim_end_matches('/').to_string(),
            Some(dir) => format!("{}/{}", app_root.trim_end_matches('/'), dir),
            None => d.restart_dir,
        };
        let status = number(h, options::REQUEST_QUEUE_OVERFLOW_STATUS_CODE, 100, 599)?
            .map_or(d.queue_overflow_status, |v| v as u16);
        Ok(PoolOptions {
            max_pool_size: number(h, options::MAX_POOL_SIZE, 1, u32::MAX as u64)?
                .map_or(d.max_pool_size, |v| v as u32),
            max_instances_per_app: number(h, options::MAX_INSTANCES_PER_APP, 0, u32::MAX as u64)?
                .map_or(d.max_instances_per_app, |v| v as u32),
            max_instances: number(h, options::MAX_INSTANCES, 0, u32::MAX as u64)?
                .map_or(d.max_instances, |v| v as u32),
            force_max_concurrent_requests_per_process: match text(
                h,
                options::FORCE_MAX_CONCURRENT_REQUESTS_PER_PROCESS,
            )? {
                Some(v) if v.trim() == "-1" => None,
                _ => number(
                    h,
                    options::FORCE_MAX_CONCURRENT_REQUESTS_PER_PROCESS,
                    0,
                    u32::MAX as u64,
                )
                .map_err(|e| match e {
                    OptionsError::BadNumber { key, value, .. } => OptionsError::BadValue {
                        key,
                        value,
                        expected: "-1 (what the app advertises), 0 (unlimited) or a positive number",
                    },
                    e => e,
                })?
                .map(|v| v as u32),
            },
            max_request_time: number(h, options::MAX_REQUEST_TIME, 0, 365 * 24 * 3600)?
                .unwrap_or(d.max_request_time),
            memory_limit: number(h, options::MEMORY_LIMIT, 0, u64::MAX / (1024 * 1024))?
                .unwrap_or(d.memory_limit),
            rolling_restarts: flag(h, options::ROLLING_RESTARTS)?.unwrap_or(d.rolling_restarts),
            sticky_sessions: flag(h, options::STICKY_SESSIONS)?.unwrap_or(d.sticky_sessions),
            abort_websockets_on_process_shutdown: flag(
                h,
                options::ABORT_WEBSOCKETS_ON_PROCESS_SHUTDOWN,
            )?
            .unwrap_or(d.abort_websockets_on_process_shutdown),
            sticky_sessions_cookie_name: match text(h, options::STICKY_SESSIONS_COOKIE_NAME)? {
                None => d.sticky_sessions_cookie_name,
                Some(name) if is_cookie_name(name) => name.to_string(),
                Some(name) => {
                    return Err(OptionsError::BadValue {
                        key: options::STICKY_SESSIONS_COOKIE_NAME,
                        value: name.to_string(),
                        expected: "a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
                    });
                }
            },
            sticky_sessions_cookie_attributes: match text(
                h,
                options::STICKY_SESSIONS_COOKIE_ATTRIBUTES,
            )? {
                None => d.sticky_sessions_cookie_attributes,
                Some(a) if !a.chars().any(char::is_control) => a.to_string(),
                Some(a) => {
                    return Err(OptionsError::BadValue {
                        key: options::STICKY_SESSIONS_COOKIE_ATTRIBUTES,
                        value: a.to_string(),
                        expected: "cookie attributes on one line",
                    });
                }
            },
            pool_idle_time: number(h, options::POOL_IDLE_TIME, 0, u64::MAX)?
                .unwrap_or(d.pool_idle_time),
            stat_throttle_rate: number(h, options::STAT_THROTTLE_RATE, 0, u64::MAX)?
                .unwrap_or(d.stat_throttle_rate),
            min_instances: number(h, options::MIN_INSTANCES, 0, u32::MAX as u64)?
                .map_or(d.min_instances, |v| v as u32),
            max_requests: number(h, options::MAX_REQUESTS, 0, u64::MAX)?.unwrap_or(d.max_requests),
            max_requests_jitter: number(h, options::MAX_REQUESTS_JITTER, 0, u64::MAX)?
                .unwrap_or(d.max_requests_jitter),
            resist_deployment_errors: number(h, options::RESIST_DEPLOYMENT_ERRORS, 0, 1)?
                .map_or(d.resist_deployment_errors, |v| v == 1),
            max_request_queue_size: number(h, options::MAX_REQUEST_QUEUE_SIZE, 0, u32::MAX as u64)?
                .map_or(d.max_request_queue_size, |v| v as u32),
            queue_overflow_status: status,
            max_request_queue_time: number(h, options::MAX_REQUEST_QUEUE_TIME, 0, u64::MAX)?
                .unwrap_or(d.max_request_queue_time),
            restart_dir,
            response_buffer_high_watermark: number(
                h,
                options::RESPONSE_BUFFER_HIGH_WATERMARK,
                1,
                usize::MAX as u64,
            )?
            .unwrap_or(d.response_buffer_high_watermark),
        })
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error(
        "the request carries no {key}; the nginx module must send it (is `passenger_enabled on` \
         set for a location with a `root` inside the app's public/ directory?)"
    )]
    Missing { key: &'static str },
    #[error("{key} is not valid UTF-8")]
    NotUtf8 { key: &'static str },
    #[error("{key} {value:?} is not an absolute path")]
    NotAbsolute { key: &'static str, value: String },
    #[error("{key} {value:?} is not a whole number from {min} to {max}")]
    BadNumber {
        key: &'static str,
        value: String,
        min: u64,
        max: u64,
    },
    #[error("{key} {value:?} is not valid: expected {expected}")]
    BadValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("app type {0:?} is unknown: use rack, wsgi, node or generic")]
    UnsupportedType(String),
    #[error(
        "the app type of {0} could not be detected: it has no config.ru, passenger_wsgi.py or \
         app.js; set passenger_app_type"
    )]
    Undetected(String),
    #[error(
        "a generic app needs a start command, and {} is missing or empty; set \
         passenger_app_start_command",
        options::APP_START_COMMAND
    )]
    NoStartCommand,
}

/// A cookie name is an HTTP token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads `key` as text: `Ok(None)` when absent or empty.
fn text<'a>(h: &'a ScgiHeader, key: &'static str) -> Result<Option<&'a str>, OptionsError> {
    match h.get(key) {
        None => Ok(None),
        Some([]) => Ok(None),
        Some(v) => std::str::from_utf8(v)
            .map(Some)
            .map_err(|_| OptionsError::NotUtf8 { key }),
    }
}

/// Reads `key` as a number within `min..=max`: `Ok(None)` when absent or empty.
fn number(
    h: &ScgiHeader,
    key: &'static str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, OptionsError> {
    match text(h, key)? {
        None => Ok(None),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(OptionsError::BadNumber {
                key,
                value: v.to_string(),
                min,
                max,
            }),
        },
    }
}

/// Reads `key` as a flag (`1`/`0`, `on`/`off`): `Ok(None)` when absent or empty.
fn flag(h: &ScgiHeader, key: &'static str) -> Result<Option<bool>, OptionsError> {
    match text(h, key)? {
        None => Ok(None),
        Some("1" | "on" | "true" | "yes") => Ok(Some(true)),
        Some("0" | "off" | "false" | "no") => Ok(Some(false)),
        Some(other) => Err(OptionsError::BadValue {
            key,
            value: other.to_string(),
            expected: "1 or 0",
        }),
    }
}

/// `passenger_show_version_in_header`: on unless the request says off. Also read on its own,
/// because even the error page for a request with bad options carries `X-Powered-By`.
pub fn show_version_in_header(h: &ScgiHeader) -> bool {
    // (Compared without a lowercased copy: this runs for every request.)
    !h.get(options::SHOW_VERSION_IN_HEADER).is_some_and(|v| {
        [&b"off"[..], b"false", b"0", b"no"]
            .iter()
            .any(|o| v.eq_ignore_ascii_case(o))
    })
}

impl AppOptions {
    /// Extracts the options from a request header, applying the defaults.
    pub fn from_header(h: &ScgiHeader) -> Result<AppOptions, OptionsError> {
        let app_root = text(h, options::APP_ROOT)?
            .ok_or(OptionsError::Missing {
                key: options::APP_ROOT,
            })?
            .trim_end_matches('/');
        let app_root = if app_root.is_empty() { "/" } else { app_root }.to_string();
        if !app_root.starts_with('/') {
            return Err(OptionsError::NotAbsolute {
                key: options::APP_ROOT,
                value: app_root,
            });
        }
        let app_type = match text(h, options::APP_TYPE)? {
            Some(name) => AppType::from_name(name)
                .ok_or_else(|| OptionsError::UnsupportedType(name.to_string()))?,
            None if text(h, options::APP_START_COMMAND)?.is_some() => AppType::Generic,
            None => AppType::detect(Path::new(&app_root))
                .ok_or_else(|| OptionsError::Undetected(app_root.clone()))?,
        };
        let startup_file = match text(h, options::STARTUP_FILE)? {
            Some(f) if f.starts_with('/') => f.to_string(),
            Some(f) => format!("{}/{f}", app_root.trim_end_matches('/')),
            None if app_type == AppType::Generic => app_root.clone(),
            None => format!(
                "{}/{}",
                app_root.trim_end_matches('/'),
                app_type.default_startup_file()
            ),
        };
        let app_env = text(h, options::APP_ENV)?
            .unwrap_or(options::DEFAULT_APP_ENV)
            .to_string();
        let group_name = match text(h, options::APP_GROUP_NAME)? {
            Some(g) => g.to_string(),
            None => options::default_group_name(&app_root, &app_env),
        };
        let ruby = text(h, options::RUBY)?.unwrap_or("ruby").to_string();
        let python = text(h, options::PYTHON)?.unwrap_or("python3").to_string();
        let nodejs = text(h, options::NODEJS)?.unwrap_or("node").to_string();
        let base_uri = match text(h, options::BASE_URI)? {
            Some(b) => b.to_string(),
            None => text(h, "SCRIPT_NAME")
                .unwrap_or(None)
                .unwrap_or("")
                .to_string(),
        };
        let show_version_in_header = show_version_in_header(h);
        let pool = PoolOptions::from_header(h, &app_root)?;
        let spawn = SpawnOptions::from_header(h, app_type, &app_env)?;
        Ok(AppOptions {
            app_root,
            app_type,
            startup_file,
            app_env,
            group_name,
            ruby,
            python,
            nodejs,
            base_uri,
            show_version_in_header,
            pool,
            spawn,
        })
    }
}

/// Parsed options by the text they were parsed from. nginx sends the same `PASSENGER_*` keys
/// for every request of a location (serialised once at configuration time), so parsing them
/// again per request is wasted work: this keeps the last results (a bounded number).
#[derive(Default)]
pub struct OptionsCache {
    cached: std::sync::Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    parsed: ParsedOptions,
    /// The text of the request being looked up: kept, so that a lookup allocates nothing.
    scratch: Vec<u8>,
}

/// Keyed by [`options_text`], a few KB hashed per request. Fx rather than SipHash: the text
/// comes from the nginx configuration (clients cannot send `PASSENGER_*` keys), so nobody can
/// aim collisions at it, and SipHash over it was a visible part of the core's profile.
type ParsedOptions = rustc_hash::FxHashMap<Vec<u8>, std::sync::Arc<AppOptions>>;

/// More distinct option sets than this (locations times option variants) clear the cache.
const MAX_CACHED_OPTION_SETS: usize = 256;

impl OptionsCache {
    /// The options of the request with `h`, from the cache when the same keys came before.
    pub fn get(&self, h: &ScgiHeader) -> Result<std::sync::Arc<AppOptions>, OptionsError> {
        let key = {
            let mut cached = self.lock();
            let Cached { parsed, scratch } = &mut *cached;
            options_text(h, scratch);
            if let Some(found) = parsed.get(scratch.as_slice()) {
                return Ok(found.clone());
            }
            scratch.clone()
        };
        let parsed = std::sync::Arc::new(AppOptions::from_header(h)?);
        let mut cached = self.lock();
        if cached.parsed.len() >= MAX_CACHED_OPTION_SETS {
            cached.parsed.clear();
        }
        cached.parsed.insert(key, parsed.clone());
        Ok(parsed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Everything [`AppOptions::from_header`] reads, into `text` (cleared first): the
/// `PASSENGER_*` pairs but the password, and `SCRIPT_NAME` (the base URI when
/// `PASSENGER_BASE_URI` is absent).
fn options_text(h: &ScgiHeader, text: &mut Vec<u8>) {
    text.clear();
    for (k, v) in h.pairs() {
        if (k.starts_with(b"PASSENGER_") && k != options::CONNECT_PASSWORD.as_bytes())
            || k == b"SCRIPT_NAME"
        {
            text.extend_from_slice(k);
            text.push(0);
            text.extend_from_slice(v);
            text.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passenger_protocol::scgi;

    fn header(pairs: &[(&str, &str)]) -> ScgiHeader {
        let mut all = vec![("CONTENT_LENGTH", "0")];
        all.extend_from_slice(pairs);
        let raw = scgi::encode(all.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        scgi::decode(&raw, scgi::DEFAULT_MAX_HEADER)
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn the_cache_reuses_options_parsed_from_the_same_keys() {
        let cache = OptionsCache::default();
        let request = |password: &str, script: &str, min: &str| {
            header(&[
                ("REQUEST_URI", "/x"),
                ("SCRIPT_NAME", script),
                ("PASSENGER_APP_ROOT", "/srv/app"),
                ("PASSENGER_APP_TYPE", "rack"),
                ("PASSENGER_MIN_INSTANCES", min),
                ("PASSENGER_CONNECT_PASSWORD", password),
            ])
        };
        let first = cache.get(&request("a", "", "1")).unwrap();
        // Another request of the same location (the password is not an option).
        let again = cache.get(&request("b", "", "1")).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again));
        // Other options, or another base URI, are parsed afresh.
        let other = cache.get(&request("a", "", "2")).unwrap();
        assert_eq!(other.pool.min_instances, 2);
        let sub = cache.get(&request("a", "/sub", "1")).unwrap();
        assert_eq!(sub.base_uri, "/sub");
        assert!(!std::sync::Arc::ptr_eq(&first, &sub));
        // Errors are not kept.
        assert!(cache.get(&request("a", "", "lots")).is_err());
        assert!(cache.get(&request("a", "", "lots")).is_err());
    }

    #[test]
    fn defaults() {
        let o = AppOptions::from_header(&header(&[
            ("PASSENGER_APP_ROOT", "/srv/app/"),
            ("PASSENGER_APP_TYPE", "rack"),
        ]))
        .unwrap();
        assert_eq!(o.app_root, "/srv/app");
        assert_eq!(o.app_type, AppType::Rack);
        assert_eq!(o.startup_file, "/srv/app/config.ru");
        assert_eq!(o.app_env, "production");
        assert_eq!(o.group_name, "/srv/app (production)");
        assert_eq!(o.ruby, "ruby");
        assert_eq!(o.base_uri, "");
        assert!(o.show_version_in_header);
        assert_eq!(o.pool, PoolOptions::defaults("/srv/app"));
        assert_eq!(o.pool.max_pool_size, 6);
        assert_eq!(o.pool.min_instances, 1);
        assert_eq!(o.pool.max_request_queue_size, 100);
        assert_eq!(o.pool.queue_overflow_status, 503);
        assert_eq!(o.pool.pool_idle_time, 300);
        assert_eq!(o.pool.stat_throttle_rate, 10);
        assert_eq!(o.pool.restart_dir, "/srv/app/tmp");
        assert_eq!(o.pool.response_buffer_high_watermark, 128 * 1024 * 1024);
        assert!(!o.pool.sticky_sessions);
        assert_eq!(o.pool.sticky_sessions_cookie_name, "_passenger_route");
        assert_eq!(
            o.pool.sticky_sessions_cookie_attributes,
            "SameSite=Lax; Secure;"
        );
        assert!(o.pool.rolling_restarts);
        assert!(o.pool.abort_websockets_on_process_shutdown);
        assert_eq!(o.spawn, SpawnOptions::defaults(AppType::Rack, "production"));
        assert_eq!(o.spawn.method, SpawnMethod::Smart);
        assert!(!o.spawn.friendly_error_pages);
        assert_eq!(o.spawn.start_timeout, 90);
        assert_eq!(o.spawn.spawn_exception_status, 500);
        assert_eq!(o.spawn.default_user, "nobody");
        assert!(o.spawn.batch_scheduling);
        assert_eq!(o.interpreter(), "ruby");
    }

    #[test]
    fn spawn_options() {
        let env = options::encode_env_vars([(&b"A"[..], &b"1"[..]), (&b"B"[..], &b"x y"[..])]);
        let o = AppOptions::from_header(&header(&[
            ("PASSENGER_APP_ROOT", "/srv/app"),
            ("PASSENGER_APP_TYPE", "rack"),
            ("PASSENGER_APP_ENV", "development"),
            ("PASSENGER_SPAWN_METHOD", "direct"),
            ("PASSENGER_MAX_PRELOADER_IDLE_TIME", "0"),
            ("PASSENGER_START_TIMEOUT", "5"),
            ("PASSENGER_ENV_VARS", &env),
            ("PASSENGER_LOAD_SHELL_ENVVARS", "0"),
            ("PASSENGER_APP_FILE_DESCRIPTOR_ULIMIT", "1024"),
            ("PASSENGER_USER", "www-data"),
            ("PASSENGER_GROUP", "www-data"),
            ("PASSENGER_USER_SWITCHING", "0"),
            ("PASSENGER_DEFAULT_USER", "daemon"),
            ("PASSENGER_DEFAULT_GROUP", "daemon"),
            ("PASSENGER_DISABLE_LOG_PREFIX", "1"),
            ("PASSENGER_CUSTOM_ERROR_PAGE", "/srv/error.html"),
            ("PASSENGER_SPAWN_EXCEPTION_STATUS_CODE", "503"),
            ("PASSENGER_THREAD_COUNT", "4"),
            ("PASSENGER_PRELOAD_BUNDLER", "1"),
            ("PASSENGER_APP_SCHEDULING_POLICY", "normal"),
        ]))
        .unwrap();
        assert_eq!(
            o.spawn,
            SpawnOptions {
                method: SpawnMethod::Direct,
                max_preloader_idle_time: 0,
                start_timeout: 5,
                env_vars: vec![("A".into(), "1".into()), ("B".into(), "x y".into())],
                load_shell_envvars: false,
                batch_scheduling: false,
                fd_ulimit: Some(1024),
                user: Some("www-data".into()),
                group: Some("www-data".into()),
                user_switching: false,
                default_user: "daemon".into(),
                default_group: Some("daemon".into()),
                disable_log_prefix: true,
                friendly_error_pages: true,
                custom_error_page: Some("/srv/error.html".into()),
                spawn_exception_status: 503,
                thread_count: 4,
                preload_bundler: true,
                start_command: None,
            }
        );
        for (key, value) in [
            ("PASSENGER_STICKY_SESSIONS_COOKIE_NAME", "a b"),
            (
                "PASSENGER_STICKY_SESSIONS_COOKIE_ATTRIBUTES",
                "Path=/\r\nX: y",
            ),
            ("PASSENGER_STICKY_SESSIONS", "sometimes"),
            ("PASSENGER_SPAWN_METHOD", "fast"),
            ("PASSENGER_APP_SCHEDULING_POLICY", "idle"),
            ("PASSENGER_ENV_VARS", "!!"),
            ("PASSENGER_FRIENDLY_ERROR_PAGES", "maybe"),
            ("PASSENGER_START_TIMEOUT", "0"),
            ("PASSENGER_SPAWN_EXCEPTION_STATUS_CODE", "600"),
        ] {
            let e = AppOptions::from_header(&header(&[
                ("PASSENGER_APP_ROOT", "/srv/app"),
                ("PASSENGER_APP_TYPE", "rack"),
                (key, value),
            ]))
            .unwrap_err();
            assert!(e.to_string().contains(key), "{key}={value}: {e}");
        }
    }

    #[test]
    fn pool_options() {
        let o = AppOptions::from_header(&header(&[
            ("PASSENGER_APP_ROOT", "/srv/app"),
            ("PASSENGER_APP_TYPE", "rack"),
            ("PASSENGER_MAX_POOL_SIZE", "2"),
            ("PASSENGER_MAX_INSTANCES_PER_APP", "3"),
            ("PASSENGER_MAX_INSTANCES", "5"),
            ("PASSENGER_FORCE_MAX_CONCURRENT_REQUESTS_PER_PROCESS", "0"),
            ("PASSENGER_MAX_REQUEST_TIME", "9"),
            ("PASSENGER_MEMORY_LIMIT", "256"),
            ("PASSENGER_ROLLING_RESTARTS", "0"),
            ("PASSENGER_STICKY_SESSIONS", "1"),
            ("PASSENGER_ABORT_WEBSOCKETS_ON_PROCESS_SHUTDOWN", "0"),
            ("PASSENGER_STICKY_SESSIONS_COOKIE_NAME", "route"),
            (
                "PASSENGER_STICKY_SESSIONS_COOKIE_ATTRIBUTES",
                "Path=/; HttpOnly",
            ),
            ("PASSENGER_POOL_IDLE_TIME", "0"),
            ("PASSENGER_STAT_THROTTLE_RATE", "1"),
            ("PASSENGER_MIN_INSTANCES", "2"),
            ("PASSENGER_MAX_REQUESTS", "3"),
            ("PASSENGER_MAX_REQUESTS_JITTER", "4"),
            ("PASSENGER_RESIST_DEPLOYMENT_ERRORS", "1"),
            ("PASSENGER_MAX_REQUEST_QUEUE_SIZE", "0"),
            ("PASSENGER_REQUEST_QUEUE_OVERFLOW_STATUS_CODE", "429"),
            ("PASSENGER_MAX_REQUEST_QUEUE_TIME", "7"),
            ("PASSENGER_RESTART_DIR", "restart"),
            ("PASSENGER_RESPONSE_BUFFER_HIGH_WATERMARK", "65536"),
        ]))
        .unwrap();
        assert_eq!(
            o.pool,
            PoolOptions {
                max_pool_size: 2,
                max_instances_per_app: 3,
                max_instances: 5,
                force_max_concurrent_requests_per_process: Some(0),
                max_request_time: 9,
                memory_limit: 256,
                rolling_restarts: false,
                sticky_sessions: true,
                abort_websockets_on_process_shutdown: false,
                sticky_sessions_cookie_name: "route".into(),
                sticky_sessions_cookie_attributes: "Path=/; HttpOnly".into(),
                pool_idle_time: 0,
                stat_throttle_rate: 1,
                min_instances: 2,
                max_requests: 3,
                max_requests_jitter: 4,
                resist_deployment_errors: true,
                max_request_queue_size: 0,
                queue_overflow_status: 429,
                max_request_queue_time: 7,
                restart_dir: "/srv/app/restart".into(),
                response_buffer_high_watermark: 65536,
            }
        );
        let abs = AppOptions::from_header(&header(&[
            ("PASSENGER_APP_ROOT", "/srv/app"),
            ("PASSENGER_APP_TYPE", "rack"),
            ("PASSENGER_RESTART_DIR", "/var/restart/"),
        ]))
        .unwrap();
        assert_eq!(abs.pool.restart_dir, "/var/restart");
        let force = |v: &str| {
            AppOptions::from_header(&header(&[
                ("PASSENGER_APP_ROOT", "/srv/app"),
                ("PASSENGER_APP_TYPE", "rack"),
                ("PASSENGER_FORCE_MAX_CONCURRENT_REQUESTS_PER_PROCESS", v),
            ]))
            .map(|o| o.pool.force_max_concurrent_requests_per_process)
        };
        assert_eq!(force("-1"), Ok(None));
        assert_eq!(force("7"), Ok(Some(7)));
        let e = force("-2").unwrap_err();
        assert!(
            e.to_string().contains("-1 (what the app advertises)"),
            "{e}"
        );
        // The lower non-zero of passenger_max_instances and passenger_max_instances_per_app.
        let cap = |own, global| {
            let mut p = PoolOptions::defaults("/srv/app");
            p.max_instances = own;
            p.instance_cap(global)
        };
        assert_eq!(
            [cap(0, 0), cap(2, 0), cap(0, 3), cap(2, 3), cap(4, 3)],
            [0, 2, 3, 2, 3]
        );
        for (key, value) in [
            ("PASSENGER_MAX_POOL_SIZE", "0"),
            ("PASSENGER_MIN_INSTANCES", "-1"),
            ("PASSENGER_REQUEST_QUEUE_OVERFLOW_STATUS_CODE", "99"),
            ("PASSENGER_MAX_REQUESTS", "many"),
            ("PASSENGER_RESPONSE_BUFFER_HIGH_WATERMARK", "0"),
            ("PASSENGER_MAX_INSTANCES", "-1"),
            ("PASSENGER_MAX_REQUEST_TIME", "1.5"),
            ("PASSENGER_MEMORY_LIMIT", "200MB"),
        ] {
            let e = AppOptions::from_header(&header(&[
                ("PASSENGER_APP_ROOT", "/srv/app"),
                ("PASSENGER_APP_TYPE", "rack"),
                (key, value),
            ]))
            .unwrap_err();
            assert!(
                matches!(e, OptionsError::BadNumber { .. }),
                "{key}={value}: {e}"
            );
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn explicit_values() {
        let o = AppOptions::from_header(&header(&[
            ("SCRIPT_NAME", "/sub"),
            ("PASSENGER_APP_ROOT", "/srv/app"),
            ("PASSENGER_APP_TYPE", "rack"),
            ("PASSENGER_STARTUP_FILE", "boot.ru"),
            ("PASSENGER_APP_ENV", "staging"),
            ("PASSENGER_APP_GROUP_NAME", "mygroup"),
            ("PASSENGER_RUBY", "/usr/bin/ruby3.1"),
            ("PASSENGER_SHOW_VERSION_IN_HEADER", "off"),
        ]))
        .unwrap();
        assert_eq!(o.startup_file, "/srv/app/boot.ru");
        assert_eq!(o.app_env, "staging");
        assert_eq!(o.group_name, "mygroup");
        assert_eq!(o.ruby, "/usr/bin/ruby3.1");
        assert_eq!(o.base_uri, "/sub");
        assert!(!o.show_version_in_header);
    }

    #[test]
    fn errors() {
        assert_eq!(
            AppOptions::from_header(&header(&[("PASSENGER_APP_TYPE", "rack")])),
            Err(OptionsError::Missing {
                key: "PASSENGER_APP_ROOT"
            })
        );
        let e = AppOptions::from_header(&header(&[
            ("PASSENGER_APP_ROOT", "/srv/app"),
            ("PASSENGER_APP_TYPE", "cobol"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "app type \"cobol\" is unknown: use rack, wsgi, node or generic"
        );
        let wsgi = AppOptions::from_header(&header(&[
            ("PASSENGER_APP_ROOT", "/srv/app"),
            ("PASSENGER_APP_TYPE", "wsgi"),
        ]))
        .unwrap();
        assert_eq!(wsgi.startup_file, "/srv/app/passenger_wsgi.py");
        assert_eq!(wsgi.interpreter(), "python3");
        assert_eq!(wsgi.spawn.method, SpawnMethod::Direct);
        assert!(matches!(
            AppOptions::from_header(&header(&[
                ("PASSENGER_APP_ROOT", "srv"),
                ("PASSENGER_APP_TYPE", "rack")
            ])),
            Err(OptionsError::NotAbsolute { .. })
        ));
        assert!(matches!(
            AppOptions::from_header(&header(&[("PASSENGER_APP_ROOT", "/nonexistent/app")])),
            Err(OptionsError::Undetected(_))
        ));
    }

    #[test]
    fn generic_apps_need_a_start_command() {
        let o = AppOptions::from_header(&header(&[
            ("PASSENGER_APP_ROOT", "/srv/app"),
            ("PASSENGER_APP_TYPE", "generic"),
            ("PASSENGER_APP_START_COMMAND", "./server --port $PORT"),
            ("PASSENGER_SPAWN_METHOD", "smart"),
        ]))
        .unwrap();
        assert_eq!(o.app_type, AppType::Generic);
        assert_eq!(o.startup_file, "/srv/app");
        assert_eq!(
            o.spawn.start_command.as_deref(),
            Some("./server --port $PORT")
        );
        assert_eq!(o.spawn.method, SpawnMethod::Direct);
        assert_eq!(o.interpreter(), "/bin/sh");
        // Without a type, a start command makes the app generic (nothing is detected).
        let o = AppOptions::from_header(&header(&[
            ("PASSENGER_APP_ROOT", "/nonexistent/app"),
            ("PASSENGER_APP_START_COMMAND", "x"),
        ]))
        .unwrap();
        assert_eq!(o.app_type, AppType::Generic);
        for command in [None, Some(""), Some("  ")] {
            let mut pairs = vec![
                ("PASSENGER_APP_ROOT", "/srv/app"),
                ("PASSENGER_APP_TYPE", "generic"),
            ];
            if let Some(c) = command {
                pairs.push(("PASSENGER_APP_START_COMMAND", c));
            }
            let e = AppOptions::from_header(&header(&pairs)).unwrap_err();
            assert!(matches!(e, OptionsError::NoStartCommand), "{command:?}");
            assert!(e.to_string().contains("passenger_app_start_command"));
        }
        let o = AppOptions::from_header(&header(&[
            ("PASSENGER_APP_ROOT", "/srv/app"),
            ("PASSENGER_APP_TYPE", "rack"),
        ]))
        .unwrap();
        assert_eq!(o.spawn.start_command, None);
    }
}
