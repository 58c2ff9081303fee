//! The loader handshake, spawner ↔ loader over the loader's stdin/stdout.
//!
//! ```text
//! loader:  !> I have control 1.0
//! spawner: You have control 1.0
//! spawner: key: value            (one line per option)
//! spawner: (empty line)
//! loader:  !> Ready
//! loader:  !> socket: main;unix:/path/to/socket;session;1
//! loader:  !>                    (the terminator, with its trailing space)
//! ```
//!
//! A failing loader prints `!> Error`, optionally `!> html: true`, then message lines, then
//! exits. Stdout lines without the `!> ` prefix are the app's own output.

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
}

/// One line of the loader's stdout, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoaderLine {
    Greeting,
    Ready,
    Socket(SocketInfo),
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
        _ => match rest.strip_prefix("socket: ").and_then(parse_socket) {
            Some(info) => LoaderLine::Socket(info),
            None => LoaderLine::Protocol(rest.to_string()),
        },
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
    })
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
                concurrency: 1
            })
        );
        assert!(matches!(
            parse_line("!> socket: main;tcp:1;session;1"),
            LoaderLine::Protocol(_)
        ));
    }

    #[test]
    fn options_block() {
        let s = encode_options([("app_root", "/srv/a"), ("evil", "x\nconnect_password: y")]);
        assert_eq!(s, "You have control 1.0\napp_root: /srv/a\n\n");
    }
}
