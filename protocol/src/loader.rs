//! The loader handshake, spawner ↔ loader over the loader's stdin/stdout.
//!
//! ```text
//! loader:  !> I have control 1.0
//! spawner: You have control 1.0
//! spawner: key: value            (one line per option)
//! spawner: (empty line)
//! loader:  !> Ready
//! loader:  !> socket: main;unix:/path/to/socket;session;1
//! loader:  !> prefetch: 1        (optional, this project's own: see SocketInfo::prefetch)
//! loader:  !>                    (the terminator, with its trailing space)
//! ```
//!
//! A failing loader prints `!> Error`, optionally `!> html: true`, then message lines, then
//! exits. Stdout lines without the `!> ` prefix are the app's own output.

use thiserror::Error;

/// What the loader prints first.
pub const LOADER_GREETING: &str = "I have control 1.0";
/// What the spawner answers.
pub const SPAWNER_GREETING: &str = "You have control 1.0";
/// Prefix of every protocol line the loader prints.
pub const PREFIX: &str = "!> ";

/// How the core talks to an app process on its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketProtocol {
    /// The session protocol (Ruby, Python).
    Session,
    /// Plain HTTP/1.1 (Node.js).
    HttpSession,
    /// A preloader's spawn-command socket (MessageChannel; see `loaders/rack-preloader.rb`).
    Preloader,
}

impl SocketProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SocketProtocol::Session => "session",
            SocketProtocol::HttpSession => "http_session",
            SocketProtocol::Preloader => "preloader",
        }
    }
}

/// A socket the loader reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketInfo {
    pub name: String,
    /// A unix socket path (the part after `unix:`).
    pub path: String,
    pub protocol: SocketProtocol,
    /// Concurrent sessions the process takes; 0 means unlimited.
    pub concurrency: u32,
    /// Sessions the process takes beyond `concurrency`, waiting in it for a free thread
    /// (`!> prefetch: N` in the Ready block; 0 without it): its loader serves more connections
    /// than threads, one request at a time each, so a busy process can be sent its next request
    /// ahead and start it without waiting for the core.
    pub prefetch: u32,
}

/// One line of the loader's stdout, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoaderLine {
    Greeting,
    Ready,
    Socket(SocketInfo),
    /// `!> prefetch: N` (see [`SocketInfo::prefetch`]).
    Prefetch(u32),
    Error,
    Html(bool),
    /// `!> ` alone: the end of the Ready or Error block.
    Terminator,
    /// Another `!> ` line: inside an Error block, a message line; otherwise unknown.
    Protocol(String),
    /// A line without the prefix: the app's own output.
    AppOutput(String),
}

/// Classifies one line (without its trailing newline).
pub fn parse_line(line: &str) -> LoaderLine {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let Some(rest) = line
        .strip_prefix(PREFIX)
        .or_else(|| (line == "!>").then_some(""))
    else {
        return LoaderLine::AppOutput(line.to_string());
    };
    match rest {
        "" => LoaderLine::Terminator,
        LOADER_GREETING => LoaderLine::Greeting,
        "Ready" => LoaderLine::Ready,
        "Error" => LoaderLine::Error,
        "html: true" => LoaderLine::Html(true),
        "html: false" => LoaderLine::Html(false),
        _ => {
            if let Some(info) = rest.strip_prefix("socket: ").and_then(parse_socket) {
                LoaderLine::Socket(info)
            } else if let Some(n) = rest.strip_prefix("prefetch: ").and_then(|n| n.parse().ok()) {
                LoaderLine::Prefetch(n)
            } else {
                LoaderLine::Protocol(rest.to_string())
            }
        }
    }
}

/// Parses `main;unix:/path;session;1`.
fn parse_socket(spec: &str) -> Option<SocketInfo> {
    let mut parts = spec.split(';');
    let name = parts.next()?.to_string();
    let path = parts.next()?.strip_prefix("unix:")?.to_string();
    let protocol = match parts.next()? {
        "session" => SocketProtocol::Session,
        "http_session" => SocketProtocol::HttpSession,
        "preloader" => SocketProtocol::Preloader,
        _ => return None,
    };
    let concurrency = parts.next()?.parse().ok()?;
    if parts.next().is_some() || path.is_empty() {
        return None;
    }
    Some(SocketInfo {
        name,
        path,
        protocol,
        concurrency,
        prefetch: 0,
    })
}

/// Prints a line the way a loader does (without the newline); [`parse_line`] reads it back
/// as long as no text in it ends in `\r` (which reads as part of a CRLF line ending).
pub fn encode_line(line: &LoaderLine) -> String {
    match line {
        LoaderLine::Greeting => format!("{PREFIX}{LOADER_GREETING}"),
        LoaderLine::Ready => format!("{PREFIX}Ready"),
        LoaderLine::Socket(s) => format!(
            "{PREFIX}socket: {};unix:{};{};{}",
            s.name,
            s.path,
            s.protocol.name(),
            s.concurrency
        ),
        LoaderLine::Prefetch(n) => format!("{PREFIX}prefetch: {n}"),
        LoaderLine::Error => format!("{PREFIX}Error"),
        LoaderLine::Html(html) => format!("{PREFIX}html: {html}"),
        LoaderLine::Terminator => PREFIX.to_string(),
        LoaderLine::Protocol(text) => format!("{PREFIX}{text}"),
        LoaderLine::AppOutput(text) => text.clone(),
    }
}

/// Why the options block a loader received is not one.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("loader handshake starts with {found:?} instead of {SPAWNER_GREETING:?}")]
    BadGreeting { found: String },
    #[error("loader option line {line} ({text:?}) is not `key: value`")]
    BadOption { line: usize, text: String },
}

/// The loader's side of [`encode_options`] (for tests and tools that play a loader):
/// `Ok(None)` until the terminating empty line has arrived, else the options and the bytes used.
pub fn decode_options(text: &str) -> Result<crate::Decoded<Vec<(String, String)>>, OptionsError> {
    let mut options = Vec::new();
    let mut used = 0;
    for (number, raw) in text.split_inclusive('\n').enumerate() {
        let Some(line) = raw.strip_suffix('\n') else {
            // An unfinished line: it may still turn out right, unless it already cannot.
            return match number == 0 && !SPAWNER_GREETING.starts_with(raw) {
                true => Err(OptionsError::BadGreeting { found: raw.into() }),
                false => Ok(None),
            };
        };
        used += raw.len();
        if number == 0 {
            if line != SPAWNER_GREETING {
                return Err(OptionsError::BadGreeting { found: line.into() });
            }
        } else if line.is_empty() {
            return Ok(Some((options, used)));
        } else {
            let (k, v) = line
                .split_once(": ")
                .ok_or_else(|| OptionsError::BadOption {
                    line: number + 1,
                    text: line.into(),
                })?;
            options.push((k.to_string(), v.to_string()));
        }
    }
    Ok(None)
}

/// The spawner's side: the greeting answer and the options block, ready to write to stdin.
/// Keys and values must not contain newlines; such pairs are dropped rather than let one
/// option forge another.
pub fn encode_options<'a>(options: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = format!("{SPAWNER_GREETING}\n");
    for (k, v) in options {
        if k.contains(['\n', '\r', ':']) || v.contains(['\n', '\r']) {
            continue;
        }
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_lines() {
        assert_eq!(parse_line("!> I have control 1.0"), LoaderLine::Greeting);
        assert_eq!(parse_line("!> Ready"), LoaderLine::Ready);
        assert_eq!(parse_line("!> "), LoaderLine::Terminator);
        assert_eq!(parse_line("!>"), LoaderLine::Terminator);
        assert_eq!(parse_line("!> Error"), LoaderLine::Error);
        assert_eq!(parse_line("!> html: true"), LoaderLine::Html(true));
        assert_eq!(parse_line("hello"), LoaderLine::AppOutput("hello".into()));
        assert_eq!(parse_line("!> oops"), LoaderLine::Protocol("oops".into()));
        assert_eq!(
            parse_line("!> socket: main;unix:/tmp/s;session;1"),
            LoaderLine::Socket(SocketInfo {
                name: "main".into(),
                path: "/tmp/s".into(),
                protocol: SocketProtocol::Session,
                concurrency: 1,
                prefetch: 0,
            })
        );
        assert_eq!(parse_line("!> prefetch: 1"), LoaderLine::Prefetch(1));
        assert!(matches!(
            parse_line("!> prefetch: -1"),
            LoaderLine::Protocol(_)
        ));
        assert!(matches!(
            parse_line("!> socket: main;tcp:1;session;1"),
            LoaderLine::Protocol(_)
        ));
    }

    #[test]
    fn options_block() {
        let s = encode_options([("app_root", "/srv/a"), ("evil", "x\nconnect_password: y")]);
        assert_eq!(s, "You have control 1.0\napp_root: /srv/a\n\n");
        assert_eq!(
            decode_options(&s),
            Ok(Some((vec![("app_root".into(), "/srv/a".into())], s.len())))
        );
        assert_eq!(decode_options(&s[..s.len() - 1]), Ok(None));
        assert!(matches!(
            decode_options("Hello\n"),
            Err(OptionsError::BadGreeting { .. })
        ));
        assert_eq!(
            decode_options("You have control 1.0\nnocolon\n"),
            Err(OptionsError::BadOption {
                line: 2,
                text: "nocolon".into()
            })
        );
    }
}
