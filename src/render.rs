//! The nginx configuration of `passenger start`: the template with its `{{name}}` placeholders
//! filled in from a [`StartConfig`], each option mapped onto the module's directive.

use crate::binding::Endpoint;
use crate::config::StartConfig;
use std::path::Path;

/// The bundled nginx's module, relative to the install root.
pub const MODULE: &str = "modules/bundled/ngx_http_passenger_module.so";

pub fn load_template(cfg: &StartConfig) -> Result<String, String> {
    std::fs::read_to_string(&cfg.template).map_err(|e| {
        format!(
            "cannot read the nginx config template {}: {e}",
            cfg.template.display()
        )
    })
}

/// An nginx string: double-quoted, with `\` and `"` escaped (nginx unescapes both).
pub fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn quote_path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// The placeholders and their values for `cfg`, with nginx's runtime files in `run_dir`.
pub fn values(cfg: &StartConfig, root: &Path, run_dir: &Path) -> Vec<(&'static str, String)> {
    let mut main = Vec::new();
    let mut http = vec![format!("passenger_log_level {};", cfg.log_level)];
    let mut listen = Vec::new();
    let mut app = Vec::new();
    let mut ssl = Vec::new();

    if let Some(r) = &cfg.run_as {
        main.push(format!("user {} {};", quote(&r.user), quote(&r.group)));
    }
    if let Some(f) = &cfg.log_file {
        http.push(format!("passenger_log_file {};", quote_path(f)));
    }
    if let Some(n) = cfg.max_pool_size {
        http.push(format!("passenger_max_pool_size {n};"));
    }
    if let Some(d) = &cfg.instance_registry_dir {
        http.push(format!(
            "passenger_instance_registry_dir {};",
            quote_path(d)
        ));
    }

    for l in &cfg.listeners {
        let addr = match &l.endpoint {
            Endpoint::Tcp(a) => a.to_string(),
            Endpoint::Unix(p) => quote(&format!("unix:{}", p.display())),
        };
        let ssl_flag = if l.ssl { " ssl" } else { "" };
        listen.push(format!("listen {addr}{ssl_flag} backlog={};", cfg.backlog));
    }

    match &cfg.app.start_command {
        // A plain string to the module (no nginx variables): quoting is all it needs.
        Some(command) => app.push(format!("passenger_app_start_command {};", quote(command))),
        None => app.push(format!("passenger_app_type {};", cfg.app.app_type.name())),
    }
    if cfg.app.startup_file_given {
        app.push(format!(
            "passenger_startup_file {};",
            quote(&cfg.app.startup_file)
        ));
    }
    app.push(format!("passenger_app_env {};", quote(&cfg.environment)));
    for (directive, value) in [
        ("passenger_ruby", &cfg.ruby),
        ("passenger_python", &cfg.python),
        ("passenger_nodejs", &cfg.nodejs),
    ] {
        if let Some(v) = value {
            app.push(format!("{directive} {};", quote(v)));
        }
    }
    if let Some(m) = cfg.spawn_method {
        app.push(format!("passenger_spawn_method {m};"));
    }
    for (directive, value) in [
        ("passenger_min_instances", cfg.min_instances),
        ("passenger_max_requests", cfg.max_requests),
        (
            "passenger_max_request_queue_size",
            cfg.max_request_queue_size,
        ),
        ("passenger_thread_count", cfg.thread_count),
    ] {
        if let Some(n) = value {
            app.push(format!("{directive} {n};"));
        }
    }
    if let Some(sticky) = &cfg.sticky_sessions {
        app.push("passenger_sticky_sessions on;".to_string());
        if let Some(name) = &sticky.cookie_name {
            app.push(format!(
                "passenger_sticky_sessions_cookie_name {};",
                quote(name)
            ));
        }
        if let Some(attributes) = &sticky.cookie_attributes {
            app.push(format!(
                "passenger_sticky_sessions_cookie_attributes {};",
                quote(attributes)
            ));
        }
    }
    if let Some(on) = cfg.friendly_error_pages {
        app.push(format!(
            "passenger_friendly_error_pages {};",
            if on { "on" } else { "off" }
        ));
    }
    for (name, value) in &cfg.env_vars {
        app.push(format!("passenger_env_var {name} {};", quote(value)));
    }
    if let Some(r) = &cfg.run_as {
        app.push(format!("passenger_user {};", quote(&r.user)));
        app.push(format!("passenger_group {};", quote(&r.group)));
    }

    if let Some(s) = &cfg.ssl {
        ssl.push(format!("ssl_certificate {};", quote_path(&s.certificate)));
        ssl.push(format!(
            "ssl_certificate_key {};",
            quote_path(&s.certificate_key)
        ));
    }

    let block = |lines: Vec<String>, indent: usize| -> String {
        lines
            .iter()
            .map(|l| format!("{:indent$}{l}", ""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    vec![
        ("module", quote_path(&root.join(MODULE))),
        ("passenger_root", quote_path(root)),
        ("run_dir", escape(&run_dir.to_string_lossy())),
        ("nginx_pid_file", quote_path(&run_dir.join("nginx.pid"))),
        (
            "error_log",
            cfg.log_file
                .as_deref()
                .map_or_else(|| "stderr".to_string(), quote_path),
        ),
        (
            "error_log_level",
            if cfg.log_level >= 5 { "info" } else { "notice" }.to_string(),
        ),
        ("main_directives", block(main, 0)),
        ("http_directives", block(http, 4)),
        ("listen", block(listen, 8)),
        ("static_files_dir", quote_path(&cfg.static_files_dir)),
        ("app_root", quote_path(&cfg.app.root)),
        ("app_directives", block(app, 8)),
        ("ssl_directives", block(ssl, 8)),
    ]
}

/// Fills in every `{{name}}` of `template` in one pass (values are not scanned again); an
/// unknown placeholder is an error naming it and its line.
pub fn fill(template: &str, values: &[(&str, String)], origin: &Path) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let line = template[..template.len() - rest.len() + start]
            .matches('\n')
            .count()
            + 1;
        let Some(end) = after.find("}}") else {
            return Err(format!(
                "the nginx config template {} has an unclosed {{{{ on line {line}",
                origin.display()
            ));
        };
        let name = after[..end].trim();
        match values.iter().find(|(k, _)| *k == name) {
            Some((_, v)) => out.push_str(v),
            None => {
                let known: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "the nginx config template {} has an unknown placeholder {{{{{name}}}}} on line {line}; known: {}",
                    origin.display(),
                    known.join(", ")
                ));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

pub fn render(
    template: &str,
    cfg: &StartConfig,
    root: &Path,
    run_dir: &Path,
) -> Result<String, String> {
    fill(template, &values(cfg, root, run_dir), &cfg.template)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_what_nginx_unescapes() {
        assert_eq!(quote(r#"a "b" \c; $d"#), r#""a \"b\" \\c; $d""#);
    }

    #[test]
    fn a_start_command_survives_quoting() {
        // What nginx reads back from the quoted string is the command, byte for byte; `$x`
        // stays as is (passenger_app_start_command takes a plain string, no variables).
        let command = r#"env X="a b" Y='$c' /usr/bin/python3 \"server.py"  ; echo {}"#;
        let quoted = quote(command);
        assert_eq!(
            quoted,
            r#""env X=\"a b\" Y='$c' /usr/bin/python3 \\\"server.py\"  ; echo {}""#
        );
        assert_eq!(unquote(&quoted), command);
    }

    /// nginx's unescaping of a double-quoted token (ngx_conf_read_token: `\"`, `\'` and `\\`
    /// lose their backslash; `\t`, `\r`, `\n` become control characters).
    fn unquote(token: &str) -> String {
        let inner = &token[1..token.len() - 1];
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some(e @ ('"' | '\'' | '\\')) => out.push(e),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('n') => out.push('\n'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        }
        out
    }

    #[test]
    fn fill_is_one_pass_and_names_unknown_placeholders() {
        let values = vec![("a", "{{b}}".to_string())];
        assert_eq!(
            fill("x {{a}} y {{ a }}", &values, Path::new("t")).unwrap(),
            "x {{b}} y {{b}}"
        );
        let err = fill("ok\n{{nope}}", &values, Path::new("/t")).unwrap_err();
        assert_eq!(
            err,
            "the nginx config template /t has an unknown placeholder {{nope}} on line 2; known: a"
        );
        assert!(
            fill("{{a", &values, Path::new("/t"))
                .unwrap_err()
                .contains("unclosed")
        );
    }
}
