//! The options of `passenger start` and where each value came from. Four layers, lowest to
//! highest: the defaults (applied later, in [`crate::config`]), `Passengerfile.json` in the app
//! directory, `PASSENGER_*` environment variables, and command-line flags. Every option has one
//! key (its `Passengerfile.json` name), one environment variable and one flag, as in Phusion
//! Passenger Standalone; values from all three sources go through the same parsers, so an
//! error names the option the way its source spells it.

use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// What kind of value an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// A path; a relative one is taken relative to the layer's base directory (the app dir for
    /// `Passengerfile.json`, the current directory for the environment and flags).
    Path,
    Port,
    Number {
        min: u64,
        max: u64,
    },
    Bool,
    /// `NAME=VALUE` pairs (`--envvar`, repeatable), a JSON object in the file and in
    /// `PASSENGER_ENVVARS`.
    EnvVars,
    /// A shell command (`--app-start-command`): not blank, no NUL byte.
    Command,
    /// A cookie name: an HTTP token (RFC 9110), as the module's
    /// `passenger_sticky_sessions_cookie_name` takes.
    CookieName,
    /// Cookie attributes (`SameSite=Lax; Secure;`): one line, no control characters; empty
    /// means none.
    CookieAttributes,
}

pub struct Spec {
    /// The `Passengerfile.json` key.
    pub key: &'static str,
    pub env: &'static str,
    pub flag: &'static str,
    pub kind: Kind,
}

/// One [`Spec`]: its key, its environment variable without the `PASSENGER_` prefix, its flag
/// without the leading `--`, its kind.
macro_rules! spec {
    ($key:literal, $env:literal, $flag:literal, $kind:expr) => {
        Spec {
            key: $key,
            env: concat!("PASSENGER_", $env),
            flag: concat!("--", $flag),
            kind: $kind,
        }
    };
}

const COUNT: Kind = Kind::Number {
    min: 0,
    max: u32::MAX as u64,
};
const AT_LEAST_ONE: Kind = Kind::Number {
    min: 1,
    max: u32::MAX as u64,
};
/// The most threads per app process: the nginx module's and the core's limit for
/// `passenger_thread_count`.
pub const MAX_THREAD_COUNT: u64 = 1024;
const THREADS: Kind = Kind::Number {
    min: 1,
    max: MAX_THREAD_COUNT,
};

/// Every option that can be layered (`--debug-nginx-config` is a flag only).
pub const SPECS: &[Spec] = &[
    spec!("address", "ADDRESS", "address", Kind::Text),
    spec!("port", "PORT", "port", Kind::Port),
    spec!("socket_file", "SOCKET_FILE", "socket", Kind::Path),
    spec!(
        "socket_backlog",
        "SOCKET_BACKLOG",
        "socket-backlog",
        AT_LEAST_ONE
    ),
    spec!("environment", "APP_ENV", "environment", Kind::Text),
    spec!(
        "max_pool_size",
        "MAX_POOL_SIZE",
        "max-pool-size",
        AT_LEAST_ONE
    ),
    spec!("min_instances", "MIN_INSTANCES", "min-instances", COUNT),
    spec!("spawn_method", "SPAWN_METHOD", "spawn-method", Kind::Text),
    spec!("app_type", "APP_TYPE", "app-type", Kind::Text),
    spec!("startup_file", "STARTUP_FILE", "startup-file", Kind::Text),
    spec!(
        "app_start_command",
        "APP_START_COMMAND",
        "app-start-command",
        Kind::Command
    ),
    spec!("ruby", "RUBY", "ruby", Kind::Text),
    spec!("python", "PYTHON", "python", Kind::Text),
    spec!("nodejs", "NODEJS", "nodejs", Kind::Text),
    spec!("envvars", "ENVVARS", "envvar", Kind::EnvVars),
    spec!("log_file", "LOG_FILE", "log-file", Kind::Path),
    spec!(
        "log_level",
        "LOG_LEVEL",
        "log-level",
        Kind::Number { min: 0, max: 7 }
    ),
    spec!("pid_file", "PID_FILE", "pid-file", Kind::Path),
    spec!("daemonize", "DAEMONIZE", "daemonize", Kind::Bool),
    spec!("user", "USER", "user", Kind::Text),
    spec!("ssl", "SSL", "ssl", Kind::Bool),
    spec!(
        "ssl_certificate",
        "SSL_CERTIFICATE",
        "ssl-certificate",
        Kind::Path
    ),
    spec!(
        "ssl_certificate_key",
        "SSL_CERTIFICATE_KEY",
        "ssl-certificate-key",
        Kind::Path
    ),
    spec!("ssl_port", "SSL_PORT", "ssl-port", Kind::Port),
    spec!(
        "static_files_dir",
        "STATIC_FILES_DIR",
        "static-files-dir",
        Kind::Path
    ),
    spec!(
        "friendly_error_pages",
        "FRIENDLY_ERROR_PAGES",
        "friendly-error-pages",
        Kind::Bool
    ),
    spec!("max_requests", "MAX_REQUESTS", "max-requests", COUNT),
    spec!(
        "max_request_queue_size",
        "MAX_REQUEST_QUEUE_SIZE",
        "max-request-queue-size",
        COUNT
    ),
    spec!("thread_count", "THREAD_COUNT", "thread-count", THREADS),
    spec!(
        "sticky_sessions",
        "STICKY_SESSIONS",
        "sticky-sessions",
        Kind::Bool
    ),
    spec!(
        "sticky_sessions_cookie_name",
        "STICKY_SESSIONS_COOKIE_NAME",
        "sticky-sessions-cookie-name",
        Kind::CookieName
    ),
    spec!(
        "sticky_sessions_cookie_attributes",
        "STICKY_SESSIONS_COOKIE_ATTRIBUTES",
        "sticky-sessions-cookie-attributes",
        Kind::CookieAttributes
    ),
    spec!(
        "instance_registry_dir",
        "INSTANCE_REGISTRY_DIR",
        "instance-registry-dir",
        Kind::Path
    ),
    spec!(
        "nginx_config_template",
        "NGINX_CONFIG_TEMPLATE",
        "nginx-config-template",
        Kind::Path
    ),
];

pub fn spec_of(key: &str) -> &'static Spec {
    SPECS
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no option {key:?} in SPECS"))
}

/// The name of the file read from the app directory.
pub const PASSENGERFILE: &str = "Passengerfile.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Path(PathBuf),
    Number(u64),
    Bool(bool),
    EnvVars(Vec<(String, String)>),
}

/// Where a value came from, spelled as that source spells the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File { path: PathBuf, key: &'static str },
    Env(&'static str),
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File { path, key } => write!(f, "\"{key}\" in {}", path.display()),
            Source::Env(name) => write!(f, "{name}"),
            Source::Flag(flag) => write!(f, "{flag}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: Value,
    pub source: Source,
}

/// The options set by one or more sources, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    pub settings: BTreeMap<&'static str, Setting>,
    /// Notes for the person (unknown keys in the file), printed by `passenger start`.
    pub warnings: Vec<String>,
}

impl Layer {
    /// `higher` wins, option by option; environment variables for the app are merged by name.
    pub fn merge(&mut self, higher: Layer) {
        for (key, setting) in higher.settings {
            match (self.settings.get_mut(key), &setting.value) {
                (
                    Some(Setting {
                        value: Value::EnvVars(lower),
                        source,
                    }),
                    Value::EnvVars(upper),
                ) => {
                    for (name, value) in upper {
                        match lower.iter_mut().find(|(n, _)| n == name) {
                            Some(existing) => existing.1 = value.clone(),
                            None => lower.push((name.clone(), value.clone())),
                        }
                    }
                    *source = setting.source.clone();
                }
                _ => {
                    self.settings.insert(key, setting);
                }
            }
        }
        self.warnings.extend(higher.warnings);
    }

    pub fn get(&self, key: &str) -> Option<&Setting> {
        debug_assert!(SPECS.iter().any(|s| s.key == key), "unknown key {key}");
        self.settings.get(key)
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        match self.get(key).map(|s| &s.value) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        }
    }

    pub fn path(&self, key: &str) -> Option<&Path> {
        match self.get(key).map(|s| &s.value) {
            Some(Value::Path(p)) => Some(p),
            _ => None,
        }
    }

    pub fn number(&self, key: &str) -> Option<u64> {
        match self.get(key).map(|s| &s.value) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn flag(&self, key: &str) -> Option<bool> {
        match self.get(key).map(|s| &s.value) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    pub fn env_vars(&self) -> &[(String, String)] {
        match self.get("envvars").map(|s| &s.value) {
            Some(Value::EnvVars(v)) => v,
            _ => &[],
        }
    }

    /// Where `key`'s value came from, for messages ("--port", "PASSENGER_PORT", ...).
    pub fn source(&self, key: &str) -> String {
        self.get(key)
            .map_or_else(|| "the default".to_string(), |s| s.source.to_string())
    }

    /// Sets `key` from a string as typed on the command line.
    pub fn set_flag(&mut self, key: &str, raw: &str, cwd: &Path) -> Result<(), String> {
        let spec = spec_of(key);
        let source = Source::Flag(spec.flag);
        let value = match spec.kind {
            Kind::EnvVars => Value::EnvVars(vec![parse_envvar_pair(raw, &source)?]),
            _ => parse_str(spec.kind, raw, cwd, &source)?,
        };
        self.merge(Layer {
            settings: BTreeMap::from([(spec.key, Setting { value, source })]),
            warnings: vec![],
        });
        Ok(())
    }

    /// Sets a boolean option given as a bare flag (`--ssl`, `--no-friendly-error-pages`).
    pub fn set_bool_flag(&mut self, key: &str, value: bool, flag: &'static str) {
        let spec = spec_of(key);
        self.settings.insert(
            spec.key,
            Setting {
                value: Value::Bool(value),
                source: Source::Flag(flag),
            },
        );
    }
}

/// The `PASSENGER_*` variables of `vars` that name options; empty ones are ignored (as Phusion
/// Passenger does), and so are `PASSENGER_*` variables that are not options.
pub fn from_env(
    vars: impl IntoIterator<Item = (String, String)>,
    cwd: &Path,
) -> Result<Layer, String> {
    let vars: BTreeMap<String, String> = vars.into_iter().collect();
    let mut layer = Layer::default();
    for spec in SPECS {
        let Some(raw) = vars.get(spec.env).filter(|v| !v.is_empty()) else {
            continue;
        };
        let source = Source::Env(spec.env);
        let value = match spec.kind {
            Kind::EnvVars => {
                let json: Json = serde_json::from_str(raw).map_err(|e| {
                    format!("{source} must be a JSON object of names to values ({e})")
                })?;
                parse_json(spec.kind, &json, cwd, &source)?
            }
            kind => parse_str(kind, raw, cwd, &source)?,
        };
        layer.settings.insert(spec.key, Setting { value, source });
    }
    Ok(layer)
}

/// `Passengerfile.json` in `app_dir`, if there is one.
pub fn from_passengerfile(app_dir: &Path) -> Result<Layer, String> {
    let path = app_dir.join(PASSENGERFILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Layer::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    from_json_text(&text, &path, app_dir)
}

pub fn from_json_text(text: &str, path: &Path, base: &Path) -> Result<Layer, String> {
    let json: Json = serde_json::from_str(text).map_err(|e| {
        format!(
            "{} is not valid JSON: {e}; fix it or move it away",
            path.display()
        )
    })?;
    let Json::Object(map) = json else {
        return Err(format!(
            "{} must hold a JSON object ({{\"port\": 3000, ...}}), not {}",
            path.display(),
            json_kind(&json)
        ));
    };
    let mut layer = Layer::default();
    for (key, value) in &map {
        let Some(spec) = SPECS.iter().find(|s| s.key == key) else {
            layer.warnings.push(format!(
                "ignoring \"{key}\" in {}: passenger-rs has no such option",
                path.display()
            ));
            continue;
        };
        let source = Source::File {
            path: path.to_path_buf(),
            key: spec.key,
        };
        let value = parse_json(spec.kind, value, base, &source)?;
        layer.settings.insert(spec.key, Setting { value, source });
    }
    Ok(layer)
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn expected(kind: Kind) -> String {
    match kind {
        Kind::Text => "a string".into(),
        Kind::Path => "a path".into(),
        Kind::Port => "a port number from 1 to 65535".into(),
        Kind::Number { min, max } if max == u32::MAX as u64 => {
            format!("a whole number of at least {min}")
        }
        Kind::Number { min, max } => format!("a whole number from {min} to {max}"),
        Kind::Bool => "true or false".into(),
        Kind::EnvVars => "NAME=VALUE".into(),
        Kind::Command => "a command that starts the app".into(),
        Kind::CookieName => "a cookie name (letters, digits and !#$%&'*+-.^_`|~)".into(),
        Kind::CookieAttributes => "cookie attributes on one line".into(),
    }
}

/// Parses a value given as a string (an environment variable or a flag's argument).
pub fn parse_str(kind: Kind, raw: &str, base: &Path, source: &Source) -> Result<Value, String> {
    let bad = || format!("{source} must be {}, not {raw:?}", expected(kind));
    Ok(match kind {
        Kind::Text => {
            if raw.is_empty() {
                return Err(format!("{source} must not be empty"));
            }
            Value::Text(raw.to_string())
        }
        Kind::Path => {
            if raw.is_empty() {
                return Err(format!("{source} must not be empty"));
            }
            Value::Path(base.join(raw))
        }
        Kind::Port => match raw.trim().parse::<u16>() {
            Ok(p) if p > 0 => Value::Number(p.into()),
            _ => return Err(bad()),
        },
        Kind::Number { min, max } => match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Value::Number(n),
            _ => return Err(bad()),
        },
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Value::Bool(true),
            "false" | "no" | "off" | "0" => Value::Bool(false),
            _ => return Err(bad()),
        },
        Kind::EnvVars => Value::EnvVars(vec![parse_envvar_pair(raw, source)?]),
        Kind::Command => {
            if raw.trim().is_empty() || raw.contains('\0') {
                return Err(bad());
            }
            Value::Text(raw.to_string())
        }
        Kind::CookieName => {
            if !is_http_token(raw) {
                return Err(bad());
            }
            Value::Text(raw.to_string())
        }
        Kind::CookieAttributes => {
            if raw.chars().any(char::is_control) {
                return Err(bad());
            }
            Value::Text(raw.to_string())
        }
    })
}

/// An HTTP token (RFC 9110 `tchar`s), as cookie names are.
fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a value from `Passengerfile.json` (or the JSON of `PASSENGER_ENVVARS`). Numbers and
/// booleans may also be written as strings (`"port": "4000"`, as Phusion's docs show).
pub fn parse_json(kind: Kind, v: &Json, base: &Path, source: &Source) -> Result<Value, String> {
    let bad = || {
        format!(
            "{source} must be {}, not {}",
            expected(kind),
            match v {
                Json::String(s) => format!("{s:?}"),
                Json::Number(n) => n.to_string(),
                other => json_kind(other).to_string(),
            }
        )
    };
    match (kind, v) {
        (Kind::EnvVars, Json::Object(map)) => {
            let mut pairs = Vec::with_capacity(map.len());
            for (name, value) in map {
                check_envvar_name(name, source)?;
                let value = match value {
                    Json::String(s) => s.clone(),
                    Json::Number(n) => n.to_string(),
                    Json::Bool(b) => b.to_string(),
                    other => {
                        return Err(format!(
                            "{source}: the value of {name} must be a string, not {}",
                            json_kind(other)
                        ));
                    }
                };
                pairs.push((name.clone(), value));
            }
            Ok(Value::EnvVars(pairs))
        }
        (Kind::EnvVars, _) => Err(format!(
            "{source} must be an object of names to values ({{\"NAME\": \"value\"}}), not {}",
            json_kind(v)
        )),
        (Kind::Bool, Json::Bool(b)) => Ok(Value::Bool(*b)),
        (Kind::Port | Kind::Number { .. }, Json::Number(n)) => match n.as_u64() {
            Some(n) => parse_str(kind, &n.to_string(), base, source).map_err(|_| bad()),
            None => Err(bad()),
        },
        (
            Kind::Text | Kind::Path | Kind::Command | Kind::CookieName | Kind::CookieAttributes,
            Json::String(s),
        ) => parse_str(kind, s, base, source),
        (Kind::Port | Kind::Number { .. } | Kind::Bool, Json::String(s)) => {
            parse_str(kind, s, base, source)
        }
        _ => Err(bad()),
    }
}

fn parse_envvar_pair(raw: &str, source: &Source) -> Result<(String, String), String> {
    let Some((name, value)) = raw.split_once('=') else {
        return Err(format!("{source} takes NAME=VALUE, not {raw:?}"));
    };
    check_envvar_name(name, source)?;
    Ok((name.to_string(), value.to_string()))
}

fn check_envvar_name(name: &str, source: &Source) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{source}: {name:?} is not a valid environment variable name (letters, digits and _, not starting with a digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cwd() -> PathBuf {
        PathBuf::from("/cwd")
    }

    #[test]
    fn file_values_take_numbers_as_numbers_or_strings() {
        let l = from_json_text(
            r#"{"port": "4000", "max_pool_size": 3, "daemonize": "true", "ssl": false,
                "log_file": "log/x.log", "envvars": {"A": "1", "B": 2}}"#,
            Path::new("/app/Passengerfile.json"),
            Path::new("/app"),
        )
        .unwrap();
        assert_eq!(l.number("port"), Some(4000));
        assert_eq!(l.number("max_pool_size"), Some(3));
        assert_eq!(l.flag("daemonize"), Some(true));
        assert_eq!(l.flag("ssl"), Some(false));
        assert_eq!(l.path("log_file"), Some(Path::new("/app/log/x.log")));
        assert_eq!(
            l.env_vars(),
            &[("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn file_errors_name_the_key_and_the_file() {
        let err = from_json_text(
            r#"{"port": "abc"}"#,
            Path::new("/app/Passengerfile.json"),
            Path::new("/app"),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "\"port\" in /app/Passengerfile.json must be a port number from 1 to 65535, not \"abc\""
        );
        let err = from_json_text(
            "{\"port\": 3000,",
            Path::new("/app/Passengerfile.json"),
            Path::new("/app"),
        )
        .unwrap_err();
        assert!(
            err.starts_with("/app/Passengerfile.json is not valid JSON: "),
            "{err}"
        );
        let err = from_json_text(
            r#"{"thread_count": 1025}"#,
            Path::new("/app/Passengerfile.json"),
            Path::new("/app"),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "\"thread_count\" in /app/Passengerfile.json must be a whole number from 1 to 1024, not 1025"
        );
        let err = from_json_text("[1]", Path::new("/a/P.json"), Path::new("/a")).unwrap_err();
        assert!(err.contains("must hold a JSON object"), "{err}");
    }

    #[test]
    fn a_start_command_is_kept_as_given_and_must_not_be_blank() {
        let mut l = Layer::default();
        let command = r#"X="a b" exec ./run $PORT"#;
        l.set_flag("app_start_command", command, &cwd()).unwrap();
        assert_eq!(l.text("app_start_command"), Some(command));
        assert_eq!(
            l.set_flag("app_start_command", " ", &cwd()).unwrap_err(),
            "--app-start-command must be a command that starts the app, not \" \""
        );
        let err = from_env(
            [("PASSENGER_APP_START_COMMAND".into(), "\t".into())],
            &cwd(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "PASSENGER_APP_START_COMMAND must be a command that starts the app, not \"\\t\""
        );
        let err = from_json_text(
            r#"{"app_start_command": ["./run"]}"#,
            Path::new("/a/Passengerfile.json"),
            Path::new("/a"),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "\"app_start_command\" in /a/Passengerfile.json must be a command that starts the app, not an array"
        );
    }

    #[test]
    fn a_cookie_name_is_an_http_token_and_attributes_are_one_line() {
        let mut l = Layer::default();
        l.set_flag("sticky_sessions_cookie_name", "_my-route.1!", &cwd())
            .unwrap();
        assert_eq!(l.text("sticky_sessions_cookie_name"), Some("_my-route.1!"));
        for bad in ["", "a b", "a=b", "a;b", "r\u{e9}"] {
            assert_eq!(
                l.set_flag("sticky_sessions_cookie_name", bad, &cwd())
                    .unwrap_err(),
                format!(
                    "--sticky-sessions-cookie-name must be a cookie name (letters, digits and !#$%&'*+-.^_`|~), not {bad:?}"
                )
            );
        }
        l.set_flag("sticky_sessions_cookie_attributes", "", &cwd())
            .unwrap();
        assert_eq!(l.text("sticky_sessions_cookie_attributes"), Some(""));
        let attributes = r#"Path=/; Domain="x"; HttpOnly"#;
        l.set_flag("sticky_sessions_cookie_attributes", attributes, &cwd())
            .unwrap();
        assert_eq!(
            l.text("sticky_sessions_cookie_attributes"),
            Some(attributes)
        );
        let err = from_env(
            [(
                "PASSENGER_STICKY_SESSIONS_COOKIE_ATTRIBUTES".into(),
                "Path=/\r\nX: 1".into(),
            )],
            &cwd(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "PASSENGER_STICKY_SESSIONS_COOKIE_ATTRIBUTES must be cookie attributes on one line, not \"Path=/\\r\\nX: 1\""
        );
    }

    #[test]
    fn unknown_file_keys_are_warnings() {
        let l = from_json_text(
            r#"{"frobnicate": 1}"#,
            Path::new("/a/Passengerfile.json"),
            Path::new("/a"),
        )
        .unwrap();
        assert_eq!(l.warnings.len(), 1);
        assert!(l.warnings[0].contains("\"frobnicate\""));
    }

    #[test]
    fn env_ignores_empty_and_unrelated_variables() {
        let l = from_env(
            [
                ("PASSENGER_PORT".into(), "".into()),
                ("PASSENGER_BUILDOUT".into(), "/x".into()),
                ("PASSENGER_APP_ENV".into(), "staging".into()),
                ("PASSENGER_ENVVARS".into(), r#"{"X": "y"}"#.into()),
                ("PASSENGER_LOG_FILE".into(), "rel.log".into()),
            ],
            &cwd(),
        )
        .unwrap();
        assert_eq!(l.number("port"), None);
        assert_eq!(l.text("environment"), Some("staging"));
        assert_eq!(l.env_vars(), &[("X".into(), "y".into())]);
        assert_eq!(l.path("log_file"), Some(Path::new("/cwd/rel.log")));
        let err = from_env([("PASSENGER_LOG_LEVEL".into(), "9".into())], &cwd()).unwrap_err();
        assert_eq!(
            err,
            "PASSENGER_LOG_LEVEL must be a whole number from 0 to 7, not \"9\""
        );
    }

    #[test]
    fn higher_layers_win_and_env_vars_merge_by_name() {
        let mut l = from_json_text(
            r#"{"port": 1000, "environment": "file", "envvars": {"A": "file", "B": "file"}}"#,
            Path::new("/a/Passengerfile.json"),
            Path::new("/a"),
        )
        .unwrap();
        l.merge(
            from_env(
                [
                    ("PASSENGER_PORT".into(), "2000".into()),
                    ("PASSENGER_APP_ENV".into(), "env".into()),
                ],
                &cwd(),
            )
            .unwrap(),
        );
        l.set_flag("environment", "flag", &cwd()).unwrap();
        l.set_flag("envvars", "B=flag", &cwd()).unwrap();
        l.set_flag("envvars", "C=x=y", &cwd()).unwrap();
        assert_eq!(l.number("port"), Some(2000));
        assert_eq!(l.source("port"), "PASSENGER_PORT");
        assert_eq!(l.text("environment"), Some("flag"));
        assert_eq!(l.source("environment"), "--environment");
        assert_eq!(
            l.env_vars(),
            &[
                ("A".into(), "file".into()),
                ("B".into(), "flag".into()),
                ("C".into(), "x=y".into())
            ]
        );
        assert_eq!(
            l.set_flag("envvars", "1X=a", &cwd()).unwrap_err(),
            "--envvar: \"1X\" is not a valid environment variable name (letters, digits and _, not starting with a digit)"
        );
        assert_eq!(
            l.set_flag("envvars", "novalue", &cwd()).unwrap_err(),
            "--envvar takes NAME=VALUE, not \"novalue\""
        );
    }
}
