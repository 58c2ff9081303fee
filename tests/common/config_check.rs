//! `nginx -t` on the test configuration with extra directives: for the tests of what the
//! module accepts and refuses. (Test files declare `mod common;` and
//! `use common::config_check::*;`.)

use super::*;
use std::path::Path;

/// Writes the test configuration (one server for the echo app) with `http_extra` in the http
/// block and `server_extra` in the server block, and runs `nginx -t` on it: whether it passed,
/// and what it printed.
pub fn nginx_t(
    flavour: Flavour,
    dir: &Path,
    http_extra: &str,
    server_extra: &str,
) -> (bool, String) {
    std::fs::create_dir_all(dir.join("registry")).unwrap();
    let site = Site {
        extra: server_extra.to_string(),
        ..Site::app("echo")
    };
    let conf = Nginx::config_with(flavour, dir, &[(free_port(), &site)], http_extra);
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let out = nginx_command(flavour, dir).arg("-t").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The 1-based line of the configuration that contains `text`.
pub fn line_of(dir: &Path, text: &str) -> usize {
    let conf = std::fs::read_to_string(dir.join("nginx.conf")).unwrap();
    conf.lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text:?} is not in the configuration:\n{conf}"))
        + 1
}

/// A bad use of a directive: where it goes (the http and server block text), the line that is
/// wrong, and what the error must say.
pub struct Bad {
    pub http: &'static str,
    pub server: &'static str,
    /// Text of the offending line.
    pub at: &'static str,
    pub says: &'static [&'static str],
}

/// `text` in the http block, wrong as a whole.
pub const fn in_http(text: &'static str, says: &'static [&'static str]) -> Bad {
    Bad {
        http: text,
        server: "",
        at: text,
        says,
    }
}

/// `text` in the server block, wrong as a whole.
pub const fn in_server(text: &'static str, says: &'static [&'static str]) -> Bad {
    Bad {
        http: "",
        server: text,
        at: text,
        says,
    }
}

/// Each of `bads` (in a scratch dir named by `label`) fails `nginx -t` with an error that says
/// everything in its `says` and names the file and the offending line; panics listing every
/// one that does not.
pub fn assert_bad_values_fail_nginx_t(flavour: Flavour, label: &str, bads: &[Bad]) {
    let mut failures = Vec::new();
    for bad in bads {
        let dir = Scratch::new(label);
        let (ok, err) = nginx_t(flavour, &dir.0, bad.http, bad.server);
        let place = format!(
            "{}:{}",
            dir.0.join("nginx.conf").display(),
            line_of(&dir.0, bad.at)
        );
        let missing: Vec<&str> = bad
            .says
            .iter()
            .copied()
            .chain([place.as_str()])
            .filter(|s| !err.contains(s))
            .collect();
        if ok || !missing.is_empty() {
            failures.push(format!(
                "{:?}: nginx -t {}; missing from its error {missing:?}:\n{err}",
                bad.at,
                if ok { "passed" } else { "failed" }
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `nginx -t` passes the test configuration with `http_extra` and `server_extra`, with
/// neither an `[emerg]` nor a `[warn]`.
pub fn assert_nginx_t_passes(flavour: Flavour, dir: &Path, http_extra: &str, server_extra: &str) {
    let (ok, err) = nginx_t(flavour, dir, http_extra, server_extra);
    assert!(ok, "nginx -t refused good values:\n{err}");
    assert!(
        !err.contains("[emerg]") && !err.contains("[warn]"),
        "nginx -t complained:\n{err}"
    );
}
