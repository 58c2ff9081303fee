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
    pub base_uri: String,
    pub show_version_in_header: bool,
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
    #[error("app type {0} is not supported yet (only rack is)")]
    UnsupportedType(String),
    #[error(
        "the app type of {0} could not be detected: it has no config.ru, passenger_wsgi.py or \
         app.js; set passenger_app_type"
    )]
    Undetected(String),
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

/// `passenger_show_version_in_header`: on unless the request says off. Also read on its own,
/// because even the error page for a request with bad options carries `X-Powered-By`.
pub fn show_version_in_header(h: &ScgiHeader) -> bool {
    !matches!(
        h.get_str(options::SHOW_VERSION_IN_HEADER)
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("off" | "false" | "0" | "no")
    )
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
            None => AppType::detect(Path::new(&app_root))
                .ok_or_else(|| OptionsError::Undetected(app_root.clone()))?,
        };
        if app_type != AppType::Rack {
            return Err(OptionsError::UnsupportedType(app_type.name().to_string()));
        }
        let startup_file = match text(h, options::STARTUP_FILE)? {
            Some(f) if f.starts_with('/') => f.to_string(),
            Some(f) => format!("{}/{f}", app_root.trim_end_matches('/')),
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
        let base_uri = match text(h, options::BASE_URI)? {
            Some(b) => b.to_string(),
            None => text(h, "SCRIPT_NAME")
                .unwrap_or(None)
                .unwrap_or("")
                .to_string(),
        };
        let show_version_in_header = show_version_in_header(h);
        Ok(AppOptions {
            app_root,
            app_type,
            startup_file,
            app_env,
            group_name,
            ruby,
            base_uri,
            show_version_in_header,
        })
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
            ("PASSENGER_APP_TYPE", "wsgi"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "app type wsgi is not supported yet (only rack is)"
        );
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
}
