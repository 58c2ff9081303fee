//! Which kind of app an app directory holds, and its startup file.

use passenger_protocol::options::AppType;
use std::path::{Path, PathBuf};

/// The app `passenger start` serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub root: PathBuf,
    pub app_type: AppType,
    /// Relative to the root, as given (`--startup-file`) or detected.
    pub startup_file: String,
    /// Whether the startup file was given (then it is passed to the module explicitly).
    pub startup_file_given: bool,
    /// The command that starts a generic app (`--app-start-command`); None for the others.
    pub start_command: Option<String>,
}

impl App {
    /// What starts the app, for the banner and `passenger status`: the startup file, or a
    /// generic app's command.
    pub fn started_by(&self) -> &str {
        self.start_command.as_deref().unwrap_or(&self.startup_file)
    }
}

/// The app types `--app-type` accepts, with Phusion Passenger's aliases.
pub fn parse_app_type(name: &str) -> Option<AppType> {
    match name {
        "rack" | "ruby" => Some(AppType::Rack),
        "wsgi" | "python" => Some(AppType::Wsgi),
        "node" | "nodejs" => Some(AppType::Node),
        "generic" => Some(AppType::Generic),
        _ => None,
    }
}

/// A generic app in `root`, started by `command` (`--app-start-command`): nothing to detect,
/// no startup file (Phusion Passenger 6's "any language" apps).
pub fn generic(root: &Path, command: &str) -> App {
    App {
        root: root.to_path_buf(),
        app_type: AppType::Generic,
        startup_file: String::new(),
        startup_file_given: false,
        start_command: Some(command.to_string()),
    }
}

/// The app type a startup file's extension suggests (for `--startup-file` without `--app-type`).
fn type_by_extension(file: &str) -> Option<AppType> {
    let ext = Path::new(file).extension()?.to_str()?;
    match ext {
        "ru" => Some(AppType::Rack),
        "py" => Some(AppType::Wsgi),
        "js" | "mjs" | "cjs" => Some(AppType::Node),
        _ => None,
    }
}

/// Decides the app type and startup file of `root` (an existing directory).
/// `app_type` and `startup_file` are the `--app-type`/`--startup-file` values, if set.
pub fn detect(
    root: &Path,
    app_type: Option<&str>,
    startup_file: Option<&str>,
) -> Result<App, String> {
    let given_type = match app_type {
        Some(name) => Some(parse_app_type(name).ok_or_else(|| {
            format!(
                "unknown app type {name:?}: use rack (or ruby), wsgi (or python), or node (or nodejs)"
            )
        })?),
        None => None,
    };
    if given_type == Some(AppType::Generic) {
        return Err(
            "a generic app needs --app-start-command (the command that starts it, listening on $PORT)"
                .to_string(),
        );
    }
    if let Some(file) = startup_file {
        let path = root.join(file);
        if !path.is_file() {
            return Err(format!(
                "the startup file {file} does not exist in {} (--startup-file is relative to the app directory)",
                root.display()
            ));
        }
        let app_type = given_type
            .or_else(|| AppType::detect(root))
            .or_else(|| type_by_extension(file))
            .ok_or_else(|| {
                format!(
                    "cannot tell what kind of app the startup file {file} starts: give --app-type (rack, wsgi or node)"
                )
            })?;
        return Ok(App {
            root: root.to_path_buf(),
            app_type,
            startup_file: file.to_string(),
            startup_file_given: true,
            start_command: None,
        });
    }
    let app_type = match given_type {
        Some(t) => {
            let file = t.default_startup_file();
            if !root.join(file).is_file() {
                return Err(format!(
                    "no {file} in {} for a {} app: add it, or name the startup file with --startup-file",
                    root.display(),
                    t.name()
                ));
            }
            t
        }
        None => AppType::detect(root).ok_or_else(|| {
            let looked_for: Vec<_> = AppType::DETECTION.iter().map(|(_, f)| *f).collect();
            format!(
                "no app found in {}: looked for {} (or name the startup file with --startup-file and --app-type)",
                root.display(),
                looked_for.join(", ")
            )
        })?,
    };
    Ok(App {
        root: root.to_path_buf(),
        app_type,
        startup_file: app_type.default_startup_file().to_string(),
        startup_file_given: false,
        start_command: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[&str]) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "prs-detect-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::write(dir.join(f), "").unwrap();
        }
        dir
    }

    #[test]
    fn detection_order_and_explicit_choices() {
        let d = dir_with(&["app.js", "passenger_wsgi.py"]);
        assert_eq!(detect(&d, None, None).unwrap().app_type, AppType::Wsgi);
        let app = detect(&d, Some("nodejs"), None).unwrap();
        assert_eq!(
            (app.app_type, app.startup_file.as_str()),
            (AppType::Node, "app.js")
        );
        assert!(
            detect(&d, Some("rack"), None)
                .unwrap_err()
                .starts_with("no config.ru in ")
        );
        assert!(
            detect(&d, Some("generic"), None)
                .unwrap_err()
                .starts_with("a generic app needs --app-start-command")
        );
        assert!(
            detect(&d, Some("perl"), None)
                .unwrap_err()
                .starts_with("unknown app type \"perl\"")
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn startup_files_and_their_types() {
        let d = dir_with(&["server.mjs", "main.txt"]);
        let app = detect(&d, None, Some("server.mjs")).unwrap();
        assert_eq!(app.app_type, AppType::Node);
        assert!(app.startup_file_given);
        assert!(
            detect(&d, None, Some("main.txt"))
                .unwrap_err()
                .contains("give --app-type")
        );
        assert!(
            detect(&d, None, Some("missing.js"))
                .unwrap_err()
                .starts_with("the startup file missing.js does not exist")
        );
        let empty = dir_with(&[]);
        let err = detect(&empty, None, None).unwrap_err();
        assert!(
            err.contains("looked for config.ru, passenger_wsgi.py, app.js"),
            "{err}"
        );
        std::fs::remove_dir_all(d).unwrap();
        std::fs::remove_dir_all(empty).unwrap();
    }
}
