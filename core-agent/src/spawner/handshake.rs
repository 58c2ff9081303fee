//! The spawner's side of the loader handshake (DESIGN.md, "Loader protocol"), over any pair of
//! streams: the pipes of a process the core started, or those a preloader passed back.

use passenger_protocol::loader::{self, LoaderLine, SocketInfo};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// App output lines longer than this are split.
const MAX_LINE: usize = 16 * 1024;

/// What came of the handshake.
pub enum Handshake {
    Ready(SocketInfo),
    /// `!> Error`, or EOF without Ready; the text is what the loader said.
    Failed(String),
}

/// Reads one line (without the newline), lossily decoded; `None` at EOF.
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Option<String> {
    buf.clear();
    loop {
        let available = match r.fill_buf().await {
            Ok(b) => b,
            Err(_) => return None,
        };
        if available.is_empty() {
            return if buf.is_empty() {
                None
            } else {
                Some(String::from_utf8_lossy(buf).into_owned())
            };
        }
        let room = MAX_LINE - buf.len();
        let take = available.len().min(room);
        if let Some(i) = available[..take].iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&available[..i]);
            r.consume(i + 1);
            break;
        }
        buf.extend_from_slice(&available[..take]);
        r.consume(take);
        if buf.len() >= MAX_LINE {
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Some(String::from_utf8_lossy(buf).into_owned())
}

/// Runs the handshake: waits for the greeting, sends the options, waits for Ready and the
/// socket. App output seen along the way goes to `output` (and to `on_output`), so that a
/// failure or a timeout can show it.
pub async fn run<R, W>(
    stdout: &mut R,
    stdin: &mut W,
    options: &str,
    output: &mut Vec<String>,
    on_output: impl Fn(&str),
) -> Handshake
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    // Anything printed before the greeting is the app's (or the interpreter's) own output.
    loop {
        let Some(line) = read_line(stdout, &mut buf).await else {
            return Handshake::Failed(String::new());
        };
        match loader::parse_line(&line) {
            LoaderLine::Greeting => break,
            LoaderLine::Error => return error_block(stdout, output).await,
            _ => output.push(line),
        }
    }
    if let Err(e) = stdin.write_all(options.as_bytes()).await {
        output.push(format!("(could not send the options to the loader: {e})"));
        return Handshake::Failed(String::new());
    }
    let _ = stdin.flush().await;
    let mut ready = false;
    let mut socket = None;
    let mut prefetch = 0;
    loop {
        let Some(line) = read_line(stdout, &mut buf).await else {
            return Handshake::Failed(String::new());
        };
        match loader::parse_line(&line) {
            LoaderLine::Ready => ready = true,
            LoaderLine::Socket(info) if ready => socket = Some(info),
            LoaderLine::Prefetch(n) if ready => prefetch = n,
            LoaderLine::Terminator if ready => {
                return match socket {
                    Some(s) => Handshake::Ready(SocketInfo { prefetch, ..s }),
                    None => Handshake::Failed(
                        "the loader said it was ready but reported no socket".into(),
                    ),
                };
            }
            LoaderLine::Error => return error_block(stdout, output).await,
            LoaderLine::AppOutput(text) => {
                on_output(&text);
                output.push(text);
            }
            _ => {
                tracing::debug!("Unexpected protocol line from a loader: {line}");
                output.push(line);
            }
        }
    }
}

/// After `!> Error`: everything else on stdout until EOF is the message.
async fn error_block<R: AsyncBufRead + Unpin>(
    stdout: &mut R,
    output: &mut Vec<String>,
) -> Handshake {
    let mut buf = Vec::new();
    let mut message = Vec::new();
    while let Some(line) = read_line(stdout, &mut buf).await {
        match loader::parse_line(&line) {
            LoaderLine::Html(_) | LoaderLine::Terminator => {}
            LoaderLine::Protocol(text) | LoaderLine::AppOutput(text) => message.push(text),
            _ => message.push(line),
        }
    }
    let mut text = message.join("\n");
    if !output.is_empty() {
        text = std::mem::take(output).join("\n") + "\n" + &text;
    }
    Handshake::Failed(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn reads_lines() {
        let data: &[u8] = b"one\r\ntwo\nlast";
        let mut r = BufReader::new(data);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf).await.as_deref(), Some("one"));
        assert_eq!(read_line(&mut r, &mut buf).await.as_deref(), Some("two"));
        assert_eq!(read_line(&mut r, &mut buf).await.as_deref(), Some("last"));
        assert_eq!(read_line(&mut r, &mut buf).await, None);
    }

    #[tokio::test]
    async fn ready_and_error() {
        let script: &[u8] =
            b"booting\n!> I have control 1.0\nhello\n!> Ready\n!> socket: main;unix:/s;session;1\n!> \n";
        let mut out = Vec::new();
        let mut sink = Vec::new();
        let r = run(
            &mut BufReader::new(script),
            &mut sink,
            "opts\n\n",
            &mut out,
            |_| {},
        )
        .await;
        assert!(matches!(r, Handshake::Ready(ref s) if s.path == "/s" && s.prefetch == 0));
        assert_eq!(out, vec!["booting", "hello"]);
        assert_eq!(sink, b"opts\n\n");

        // A loader that takes a request ahead says so in the Ready block, before or after its
        // socket.
        for script in [
            &b"!> I have control 1.0\n!> Ready\n!> socket: main;unix:/s;session;1\n!> prefetch: 1\n!> \n"[..],
            &b"!> I have control 1.0\n!> Ready\n!> prefetch: 1\n!> socket: main;unix:/s;session;1\n!> \n"[..],
        ] {
            let r = run(&mut BufReader::new(script), &mut Vec::new(), "o\n\n", &mut Vec::new(), |_| {}).await;
            assert!(matches!(r, Handshake::Ready(ref s) if s.concurrency == 1 && s.prefetch == 1));
        }

        let script: &[u8] = b"!> I have control 1.0\n!> Error\n!> html: false\nboom\n  at x\n";
        let mut out = Vec::new();
        let r = run(
            &mut BufReader::new(script),
            &mut Vec::new(),
            "o\n\n",
            &mut out,
            |_| {},
        )
        .await;
        assert!(matches!(r, Handshake::Failed(ref t) if t == "boom\n  at x"));
    }
}
