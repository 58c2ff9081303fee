//! Names shared between the nginx module (which sends them as SCGI keys), the core (which
//! reads them) and the loaders (which receive them in the handshake).

/// SCGI key of the core's password; also the session-protocol key of the app's password.
pub const CONNECT_PASSWORD: &str = "PASSENGER_CONNECT_PASSWORD";
pub const APP_ROOT: &str = "PASSENGER_APP_ROOT";
pub const APP_TYPE: &str = "PASSENGER_APP_TYPE";
pub const STARTUP_FILE: &str = "PASSENGER_STARTUP_FILE";
pub const APP_ENV: &str = "PASSENGER_APP_ENV";
pub const APP_GROUP_NAME: &str = "PASSENGER_APP_GROUP_NAME";
pub const RUBY: &str = "PASSENGER_RUBY";
pub const PYTHON: &str = "PASSENGER_PYTHON";
pub const NODEJS: &str = "PASSENGER_NODEJS";
pub const BASE_URI: &str = "PASSENGER_BASE_URI";
pub const SHOW_VERSION_IN_HEADER: &str = "PASSENGER_SHOW_VERSION_IN_HEADER";

// Pool options (`passenger_<name>` directives). Numbers are decimal; times in seconds.
/// Global: processes across all apps (the core applies the latest value it receives).
pub const MAX_POOL_SIZE: &str = "PASSENGER_MAX_POOL_SIZE";
/// Global: processes of one app, 0 = no cap.
pub const MAX_INSTANCES_PER_APP: &str = "PASSENGER_MAX_INSTANCES_PER_APP";
/// Global: idle processes beyond min_instances stop after this many seconds (0 = never).
pub const POOL_IDLE_TIME: &str = "PASSENGER_POOL_IDLE_TIME";
/// Global: restart.txt is stat()ed at most this often (seconds).
pub const STAT_THROTTLE_RATE: &str = "PASSENGER_STAT_THROTTLE_RATE";
pub const MIN_INSTANCES: &str = "PASSENGER_MIN_INSTANCES";
/// Recycle a process after this many requests (0 = never).
pub const MAX_REQUESTS: &str = "PASSENGER_MAX_REQUESTS";
pub const MAX_REQUESTS_JITTER: &str = "PASSENGER_MAX_REQUESTS_JITTER";
/// `1` or `0`.
pub const RESIST_DEPLOYMENT_ERRORS: &str = "PASSENGER_RESIST_DEPLOYMENT_ERRORS";
/// Per-app wait list length (0 = unbounded).
pub const MAX_REQUEST_QUEUE_SIZE: &str = "PASSENGER_MAX_REQUEST_QUEUE_SIZE";
pub const REQUEST_QUEUE_OVERFLOW_STATUS_CODE: &str = "PASSENGER_REQUEST_QUEUE_OVERFLOW_STATUS_CODE";
/// Seconds a request may wait in the queue (0 = no limit); beyond it, 504.
pub const MAX_REQUEST_QUEUE_TIME: &str = "PASSENGER_MAX_REQUEST_QUEUE_TIME";
/// Where restart.txt and always_restart.txt live (relative to the app root, or absolute).
pub const RESTART_DIR: &str = "PASSENGER_RESTART_DIR";

// Spawning options (issue 5).
/// `smart` (preloader + fork) or `direct` (a fresh exec per process); absent = smart for Ruby,
/// direct otherwise.
pub const SPAWN_METHOD: &str = "PASSENGER_SPAWN_METHOD";
/// `batch` (the default) or `normal`: the Linux scheduling policy of the app's processes.
pub const APP_SCHEDULING_POLICY: &str = "PASSENGER_APP_SCHEDULING_POLICY";
/// Seconds a preloader may sit unused before it exits (0 = never).
pub const MAX_PRELOADER_IDLE_TIME: &str = "PASSENGER_MAX_PRELOADER_IDLE_TIME";
/// Seconds a spawn may take from exec to `!> Ready`.
pub const START_TIMEOUT: &str = "PASSENGER_START_TIMEOUT";
/// `passenger_env_var` pairs, encoded with [`encode_env_vars`].
pub const ENV_VARS: &str = "PASSENGER_ENV_VARS";
/// `1` or `0`: start the app through the user's login shell.
pub const LOAD_SHELL_ENVVARS: &str = "PASSENGER_LOAD_SHELL_ENVVARS";
/// RLIMIT_NOFILE for app processes (absent = the core's).
pub const APP_FILE_DESCRIPTOR_ULIMIT: &str = "PASSENGER_APP_FILE_DESCRIPTOR_ULIMIT";
/// Explicit identity of the app (names).
pub const USER: &str = "PASSENGER_USER";
pub const GROUP: &str = "PASSENGER_GROUP";
/// Global, `1` or `0`: when the agents run as root, run apps as their startup file's owner.
pub const USER_SWITCHING: &str = "PASSENGER_USER_SWITCHING";
/// Global: the fallback identity (names); never root.
pub const DEFAULT_USER: &str = "PASSENGER_DEFAULT_USER";
pub const DEFAULT_GROUP: &str = "PASSENGER_DEFAULT_GROUP";
/// Global, `1` or `0`: log app output lines without the `App <pid> output: ` prefix.
pub const DISABLE_LOG_PREFIX: &str = "PASSENGER_DISABLE_LOG_PREFIX";
/// `1` or `0`; absent = on iff the app environment is `development`.
pub const FRIENDLY_ERROR_PAGES: &str = "PASSENGER_FRIENDLY_ERROR_PAGES";
/// Absolute path of a static HTML file shown instead of the spawn-error page.
pub const CUSTOM_ERROR_PAGE: &str = "PASSENGER_CUSTOM_ERROR_PAGE";
/// Status of a spawn-failure response.
pub const SPAWN_EXCEPTION_STATUS_CODE: &str = "PASSENGER_SPAWN_EXCEPTION_STATUS_CODE";
/// Threads per Ruby/Python process (absent = 1); the process takes that many requests at once.
pub const THREAD_COUNT: &str = "PASSENGER_THREAD_COUNT";

// Pool, request and spawning options of issue 7 (each is absent when its directive is unset).
/// Per-app process cap (`passenger_max_instances`), 0 = none; the lower of it and the global
/// `MAX_INSTANCES_PER_APP` applies.
pub const MAX_INSTANCES: &str = "PASSENGER_MAX_INSTANCES";
/// Requests one process takes at once, overriding what its loader advertised (0 = unlimited).
pub const FORCE_MAX_CONCURRENT_REQUESTS_PER_PROCESS: &str =
    "PASSENGER_FORCE_MAX_CONCURRENT_REQUESTS_PER_PROCESS";
/// Megabytes of private memory above which a process is recycled (0 = no limit).
pub const MEMORY_LIMIT: &str = "PASSENGER_MEMORY_LIMIT";
/// Seconds a request may run in a process before the process is killed and 504 answered.
pub const MAX_REQUEST_TIME: &str = "PASSENGER_MAX_REQUEST_TIME";
/// `1` or `0` (default 1): restart processes one at a time.
pub const ROLLING_RESTARTS: &str = "PASSENGER_ROLLING_RESTARTS";
/// `1` or `0` (default 0): route a client to the same process by a cookie.
pub const STICKY_SESSIONS: &str = "PASSENGER_STICKY_SESSIONS";
pub const STICKY_SESSIONS_COOKIE_NAME: &str = "PASSENGER_STICKY_SESSIONS_COOKIE_NAME";
pub const STICKY_SESSIONS_COOKIE_ATTRIBUTES: &str = "PASSENGER_STICKY_SESSIONS_COOKIE_ATTRIBUTES";
/// `1` or `0` (default 1): close upgraded connections when their process stops.
pub const ABORT_WEBSOCKETS_ON_PROCESS_SHUTDOWN: &str =
    "PASSENGER_ABORT_WEBSOCKETS_ON_PROCESS_SHUTDOWN";
/// Global: bytes the core buffers for a slow client before it stops reading the app.
pub const RESPONSE_BUFFER_HIGH_WATERMARK: &str = "PASSENGER_RESPONSE_BUFFER_HIGH_WATERMARK";
/// `1` or `0` (default 0): the Ruby loader requires bundler/setup before loading the app.
pub const PRELOAD_BUNDLER: &str = "PASSENGER_PRELOAD_BUNDLER";
/// A shell command that starts an app of any language listening on `$PORT` (HTTP).
pub const APP_START_COMMAND: &str = "PASSENGER_APP_START_COMMAND";

pub const DEFAULT_STICKY_SESSIONS_COOKIE_NAME: &str = "_passenger_route";
pub const DEFAULT_STICKY_SESSIONS_COOKIE_ATTRIBUTES: &str = "SameSite=Lax; Secure;";
pub const DEFAULT_RESPONSE_BUFFER_HIGH_WATERMARK: u64 = 128 * 1024 * 1024;

pub const DEFAULT_MAX_POOL_SIZE: u64 = 6;
pub const DEFAULT_MIN_INSTANCES: u64 = 1;
pub const DEFAULT_MAX_REQUEST_QUEUE_SIZE: u64 = 100;
pub const DEFAULT_REQUEST_QUEUE_OVERFLOW_STATUS_CODE: u64 = 503;
pub const DEFAULT_POOL_IDLE_TIME: u64 = 300;
pub const DEFAULT_STAT_THROTTLE_RATE: u64 = 10;
pub const DEFAULT_RESTART_DIR: &str = "tmp";

pub const DEFAULT_MAX_PRELOADER_IDLE_TIME: u64 = 300;
pub const DEFAULT_START_TIMEOUT: u64 = 90;
pub const DEFAULT_SPAWN_EXCEPTION_STATUS_CODE: u64 = 500;
pub const DEFAULT_USER_NAME: &str = "nobody";

/// Default environment when `passenger_app_env` is not set.
pub const DEFAULT_APP_ENV: &str = "production";

/// The kinds of app this project runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppType {
    Rack,
    Wsgi,
    Node,
    /// An app of any language started by `passenger_app_start_command`: it listens for HTTP on
    /// `127.0.0.1:$PORT`. Never autodetected (it has no startup file).
    Generic,
}

impl AppType {
    /// Detection order and the file each kind is recognised by, relative to the app root.
    pub const DETECTION: [(AppType, &'static str); 3] = [
        (AppType::Rack, "config.ru"),
        (AppType::Wsgi, "passenger_wsgi.py"),
        (AppType::Node, "app.js"),
    ];

    pub fn name(self) -> &'static str {
        match self {
            AppType::Rack => "rack",
            AppType::Wsgi => "wsgi",
            AppType::Node => "node",
            AppType::Generic => "generic",
        }
    }

    pub fn from_name(name: &str) -> Option<AppType> {
        Self::DETECTION
            .iter()
            .map(|(t, _)| *t)
            .chain([AppType::Generic])
            .find(|t| t.name() == name)
    }

    /// The startup file used when `passenger_startup_file` is not set, relative to the app
    /// root; empty for a generic app, whose "startup file" is the app root itself.
    pub fn default_startup_file(self) -> &'static str {
        Self::DETECTION
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, f)| *f)
            .unwrap_or("")
    }

    /// The loader script under `<passenger_root>/loaders/`; a generic app has none (the core
    /// runs its start command itself).
    pub fn loader(self) -> Option<&'static str> {
        match self {
            AppType::Rack => Some("rack-loader.rb"),
            AppType::Wsgi => Some("wsgi-loader.py"),
            AppType::Node => Some("node-loader.js"),
            AppType::Generic => None,
        }
    }

    /// Detects the type of the app in `app_root` by its startup file.
    pub fn detect(app_root: &std::path::Path) -> Option<AppType> {
        Self::DETECTION
            .iter()
            .find(|(_, file)| app_root.join(file).is_file())
            .map(|(t, _)| *t)
    }
}

/// The default group name of an app: `<app root> (<environment>)`.
pub fn default_group_name(app_root: &str, env: &str) -> String {
    default_group_name_parts(app_root, env).concat()
}

/// [`default_group_name`] in the pieces it is made of, for writing it out without making it
/// first (the nginx module sends it with every request).
pub fn default_group_name_parts<'a>(app_root: &'a str, env: &'a str) -> [&'a str; 4] {
    [app_root, " (", env, ")"]
}

/// Encodes `passenger_env_var` pairs for [`ENV_VARS`]: `NAME\0VALUE\0...`, base64 (standard
/// alphabet, padded), so that any value survives the SCGI header.
pub fn encode_env_vars<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> String {
    let mut raw = Vec::new();
    for (name, value) in pairs {
        raw.extend_from_slice(name);
        raw.push(0);
        raw.extend_from_slice(value);
        raw.push(0);
    }
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw)
}

/// Decodes [`encode_env_vars`]; `None` when the text is not such an encoding.
pub fn decode_env_vars(text: &str) -> Option<Vec<(String, String)>> {
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let mut items: Vec<&str> = raw.split('\0').collect();
    if items.pop() != Some("") || !items.len().is_multiple_of(2) {
        return if raw.is_empty() {
            Some(Vec::new())
        } else {
            None
        };
    }
    Some(
        items
            .chunks(2)
            .map(|kv| (kv[0].to_string(), kv[1].to_string()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_is_named_but_never_detected() {
        assert_eq!(AppType::from_name("generic"), Some(AppType::Generic));
        assert_eq!(AppType::Generic.name(), "generic");
        assert_eq!(AppType::Generic.loader(), None);
        assert_eq!(AppType::Generic.default_startup_file(), "");
        assert!(
            AppType::DETECTION
                .iter()
                .all(|(t, _)| *t != AppType::Generic)
        );
        for (t, _) in AppType::DETECTION {
            assert_eq!(AppType::from_name(t.name()), Some(t));
            assert!(t.loader().is_some());
        }
    }

    #[test]
    fn env_vars_round_trip() {
        let pairs: [(&[u8], &[u8]); 3] = [(b"A", b"1"), (b"EMPTY", b""), (b"X", b"a=b c\nd")];
        let text = encode_env_vars(pairs);
        assert_eq!(
            decode_env_vars(&text).unwrap(),
            vec![
                ("A".to_string(), "1".to_string()),
                ("EMPTY".to_string(), String::new()),
                ("X".to_string(), "a=b c\nd".to_string()),
            ]
        );
        assert_eq!(decode_env_vars(&encode_env_vars([])).unwrap(), vec![]);
        assert_eq!(decode_env_vars("not base64!"), None);
        assert_eq!(
            decode_env_vars(&encode_env_vars([(&b"odd"[..], &b"x"[..])])[..4]),
            None
        );
    }
}
