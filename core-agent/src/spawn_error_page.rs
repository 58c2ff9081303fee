//! What a request sees when its app could not be started. With
//! `passenger_friendly_error_pages` on (the default in development): a page that says what
//! failed, a hint for the common causes, the app's output, the command, the user and the
//! environment. Otherwise a short generic page that gives nothing away (environment values are
//! often secrets). `passenger_custom_error_page` replaces either; the status is
//! `passenger_spawn_exception_status_code`.

use crate::app_options::AppOptions;
use crate::pool::SpawnError;
use crate::response::{html_escape, html_response};

pub fn render(options: &AppOptions, e: &SpawnError, powered_by: &str) -> Vec<u8> {
    let status = options.spawn.spawn_exception_status;
    if let Some(path) = &options.spawn.custom_error_page {
        match std::fs::read_to_string(path) {
            Ok(page) => return html_response(status, &page, powered_by),
            Err(err) => tracing::warn!(
                "Cannot read passenger_custom_error_page {path}: {err}; showing the built-in page"
            ),
        }
    }
    let body = if options.spawn.friendly_error_pages {
        friendly(options, e)
    } else {
        generic()
    };
    html_response(status, &body, powered_by)
}

const STYLE: &str = "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;\
                     color:#222}pre{background:#f4f4f4;padding:1em;overflow:auto}\
                     th{text-align:left;padding-right:1em;vertical-align:top}";

fn generic() -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>We're sorry, but something \
         went wrong</title><style>{STYLE}</style></head>\n<body><h1>We're sorry, but something \
         went wrong.</h1>\n<p>The web application could not be started. The problem has been \
         logged; its details are in the web server's error log.</p>\n</body></html>\n"
    )
}

fn friendly(options: &AppOptions, e: &SpawnError) -> String {
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Web application could not \
         be started</title><style>{STYLE}</style></head>\n<body>\n<h1>Web application could not \
         be started</h1>\n<p>The app in <code>{}</code> could not be started: {}.</p>\n",
        html_escape(&options.app_root),
        html_escape(&e.summary)
    );
    if let Some(hint) = hint(e) {
        page.push_str(&format!(
            "<h2>What you can do</h2>\n<p>{}</p>\n",
            html_escape(hint)
        ));
    }
    page.push_str("<h2>The app's output</h2>\n");
    if e.output.trim().is_empty() {
        page.push_str("<p>It printed nothing.</p>\n");
    } else {
        page.push_str(&format!("<pre>{}</pre>\n", html_escape(&e.output)));
    }
    page.push_str("<h2>How it was started</h2>\n<table>\n");
    for (name, value) in [
        ("Command", e.command.as_str()),
        ("Working directory", options.app_root.as_str()),
        ("User", e.user.as_str()),
        ("Environment (app_env)", options.app_env.as_str()),
        ("Startup file", options.startup_file.as_str()),
    ] {
        page.push_str(&format!(
            "<tr><th>{name}</th><td><code>{}</code></td></tr>\n",
            html_escape(value)
        ));
    }
    page.push_str("</table>\n");
    if !e.environment.is_empty() {
        page.push_str("<h2>Environment variables</h2>\n<pre>");
        for (k, v) in &e.environment {
            page.push_str(&html_escape(&format!("{k}={v}\n")));
        }
        page.push_str("</pre>\n");
    }
    page.push_str(
        "<p><small>This page is shown because passenger_friendly_error_pages is on (the default \
         when the app environment is development). Turn it off in production: it shows the \
         app's environment.</small></p>\n</body></html>\n",
    );
    page
}

/// A hint for the usual causes, recognised in what the loader said.
fn hint(e: &SpawnError) -> Option<&'static str> {
    let text = format!("{}\n{}", e.summary, e.output);
    let has = |needle: &str| text.contains(needle);
    Some(
        if has("Bundler::GemNotFound")
            || has("Gem::MissingSpecError")
            || has("Could not find gem")
            || has("cannot load such file")
        {
            "A gem the app needs is not installed. Run `bundle install` in the app root (or \
             install the gem or its Debian package ruby-<name>) for the Ruby in passenger_ruby, \
             then reload the page."
        } else if has("ModuleNotFoundError") || has("ImportError") {
            "A Python module the app needs is not installed for the interpreter in \
             passenger_python. Install it (pip or python3-<name>), then reload the page."
        } else if has("Cannot find module") {
            "A Node.js module the app needs is missing. Run `npm install` in the app root, then \
             reload the page."
        } else if has("SyntaxError") || has("syntax error") {
            "The app's code has a syntax error; the output below says which file and line."
        } else if has("was not found; install it or set passenger_") {
            "The interpreter could not be found. Install it, or set passenger_ruby, \
             passenger_python or passenger_nodejs to its full path."
        } else if has("Permission denied") || has("EACCES") || has("may not enter") {
            "The app's user may not read the app's files or run the interpreter. Check the \
             permissions of the app root, its parent directories and the interpreter, or choose \
             another user with passenger_user."
        } else if has("passenger_start_timeout") {
            "The app took longer to start than passenger_start_timeout allows. Make it boot \
             faster or raise the timeout."
        } else {
            return None;
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_options::{PoolOptions, SpawnOptions};
    use passenger_protocol::options::AppType;

    fn options(friendly: bool) -> AppOptions {
        let mut spawn = SpawnOptions::defaults(AppType::Rack, "production");
        spawn.friendly_error_pages = friendly;
        AppOptions {
            app_root: "/srv/app".into(),
            app_type: AppType::Rack,
            startup_file: "/srv/app/config.ru".into(),
            app_env: "production".into(),
            group_name: "g".into(),
            ruby: "ruby".into(),
            python: "python3".into(),
            nodejs: "node".into(),
            base_uri: String::new(),
            show_version_in_header: true,
            pool: PoolOptions::defaults("/srv/app"),
            spawn,
        }
    }

    fn error() -> SpawnError {
        SpawnError {
            summary: "the loader failed before it became ready (exit status 1)".into(),
            output: "config.ru:1: cannot load such file -- nonexistent_gem (LoadError)".into(),
            command: "ruby /p/rack-loader.rb".into(),
            environment: vec![("SECRET_KEY".into(), "hunter2".into())],
            user: "nobody (uid 65534, gid 65534)".into(),
        }
    }

    fn text(response: Vec<u8>) -> String {
        String::from_utf8(response).unwrap()
    }

    #[test]
    fn friendly_page_tells_everything() {
        let page = text(render(&options(true), &error(), "P"));
        assert!(
            page.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{page}"
        );
        for needle in [
            "Web application could not be started",
            "exit status 1",
            "nonexistent_gem",
            "bundle install",
            "ruby /p/rack-loader.rb",
            "nobody (uid 65534",
            "SECRET_KEY=hunter2",
        ] {
            assert!(page.contains(needle), "{needle} missing from {page}");
        }
    }

    #[test]
    fn generic_page_keeps_secrets() {
        let mut o = options(false);
        o.spawn.spawn_exception_status = 503;
        let page = text(render(&o, &error(), "P"));
        assert!(
            page.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{page}"
        );
        assert!(page.contains("something went wrong"));
        for secret in [
            "hunter2",
            "SECRET_KEY",
            "nonexistent_gem",
            "rack-loader",
            "/srv/app",
        ] {
            assert!(!page.contains(secret), "{secret} leaked: {page}");
        }
    }

    #[test]
    fn custom_page_replaces_both() {
        let path = std::env::temp_dir().join(format!("custom-error-{}.html", std::process::id()));
        std::fs::write(&path, "<h1>Down for maintenance</h1>").unwrap();
        let mut o = options(true);
        o.spawn.custom_error_page = Some(path.to_string_lossy().into_owned());
        let page = text(render(&o, &error(), "P"));
        std::fs::remove_file(&path).unwrap();
        assert!(page.starts_with("HTTP/1.1 500 "));
        assert!(page.ends_with("<h1>Down for maintenance</h1>"), "{page}");
        // An unreadable custom page falls back to the built-in one.
        o.spawn.custom_error_page = Some("/nonexistent/page.html".into());
        assert!(text(render(&o, &error(), "P")).contains("Web application could not be started"));
    }

    #[test]
    fn hints() {
        let mut e = error();
        e.output = "syntax error, unexpected end-of-input".into();
        assert!(hint(&e).unwrap().contains("syntax error"));
        e.output = "ModuleNotFoundError: No module named 'flask'".into();
        assert!(hint(&e).unwrap().contains("Python module"));
        e.output = String::new();
        e.summary = "could not execute /opt/ruby: No such file or directory (os error 2); the \
                     interpreter \"/opt/ruby\" was not found; install it or set passenger_ruby"
            .into();
        assert!(hint(&e).unwrap().contains("interpreter could not be found"));
        e.summary = "all fine".into();
        assert_eq!(hint(&e), None);
    }
}
