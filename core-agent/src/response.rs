//! The response head: parsing what an app sends back, normalising it into the HTTP/1.1 head the
//! core hands to nginx, and the core's own error pages.
//!
//! Apps answer either with a status line (`HTTP/1.1 200 OK`) followed by headers, or with
//! headers only, carrying a CGI-style `Status: 404 Not Found` header. Both become
//! `HTTP/1.1 NNN Reason`, the app's headers minus the hop-by-hop ones the core owns, and
//! `X-Powered-By`.

use std::borrow::Cow;
use std::io::Write;

use thiserror::Error;

/// Bound on the app's response head; a longer one is refused with 502.
pub const MAX_HEAD: usize = 64 * 1024;
/// Bound on the number of header lines in the app's response head.
const MAX_HEADERS: usize = 256;

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Borrowed when it is the standard phrase, as a rule: nothing to allocate per response.
    pub reason: Cow<'static, str>,
    /// The app's headers in order, repeated names kept as separate entries, without `Status`,
    /// `Connection` and `Keep-Alive`.
    pub headers: HeaderLines,
    /// The app said `Connection: close`: it closes the connection after this response.
    pub connection_close: bool,
}

/// Response headers as the lines that go to nginx (`Name: value` CRLF, in order, a repeated
/// name as a line of its own), in one buffer. A String and a Vec per header were a third of
/// the core's allocations per request; this is two per response, and rendering the head is
/// one copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderLines {
    text: Vec<u8>,
    /// Per line: where it starts in `text`, where its name ends (the value starts 2 bytes
    /// later, after `: `), and where its value ends (before the CRLF).
    lines: Vec<[u32; 3]>,
}

impl HeaderLines {
    /// Room for `lines` lines of `bytes` bytes in all.
    pub fn with_capacity(lines: usize, bytes: usize) -> HeaderLines {
        HeaderLines {
            text: Vec::with_capacity(bytes),
            lines: Vec::with_capacity(lines),
        }
    }

    /// Adds a line. (Offsets are u32: a head is bounded far below 4 GiB.)
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.text.len() as u32;
        self.text.extend_from_slice(name);
        let name_end = self.text.len() as u32;
        self.text.extend_from_slice(b": ");
        self.text.extend_from_slice(value);
        let value_end = self.text.len() as u32;
        self.text.extend_from_slice(b"\r\n");
        self.lines.push([start, name_end, value_end]);
    }

    /// (name, value) of each line, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines.iter().map(|&[start, name_end, value_end]| {
            let (start, name_end, value_end) =
                (start as usize, name_end as usize, value_end as usize);
            (
                &self.text[start..name_end],
                &self.text[name_end + 2..value_end],
            )
        })
    }

    /// The lines as rendered, each ending in CRLF.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }

    /// Drops the lines named `name` (any case); whether there were any.
    pub fn remove_named(&mut self, name: &str) -> bool {
        if !self
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        {
            return false;
        }
        let kept = std::mem::take(self);
        for (n, v) in kept.iter() {
            if !n.eq_ignore_ascii_case(name.as_bytes()) {
                self.push(n, v);
            }
        }
        true
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("the response head is not valid HTTP: {0}")]
    Invalid(String),
    #[error("the response head exceeds {MAX_HEAD} bytes")]
    TooLarge,
    #[error("the Status header {0:?} does not start with a three-digit status code")]
    BadStatus(String),
}

/// Headers the core never passes on: `Status` becomes the status line; the connection
/// between nginx and the core is not the client's, so its management headers are dropped.
fn is_dropped(name: &str) -> bool {
    ["status", "connection", "keep-alive"]
        .iter()
        .any(|d| name.eq_ignore_ascii_case(d))
}

/// Tries to parse a response head from the start of `buf`. `Ok(None)` means more bytes are
/// needed; `Ok(Some((head, used)))` means the body starts at `buf[used..]`.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let is_status_line = buf.starts_with(b"HTTP/");
    if !is_status_line && buf.len() < 5 && b"HTTP/".starts_with(buf) {
        return Ok(None);
    }
    let (status_line, headers, used): (_, &[httparse::Header<'_>], _) = if is_status_line {
        let mut resp = httparse::Response::new(&mut storage);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(used)) => {
                let code = resp.code.unwrap_or(200);
                (Some((code, resp.reason.unwrap_or(""))), resp.headers, used)
            }
            Ok(httparse::Status::Partial) => return check_partial(buf),
            Err(e) => return Err(HeadError::Invalid(e.to_string())),
        }
    } else {
        match httparse::parse_headers(buf, &mut storage) {
            Ok(httparse::Status::Complete((used, headers))) => (None, headers, used),
            Ok(httparse::Status::Partial) => return check_partial(buf),
            Err(e) => return Err(HeadError::Invalid(e.to_string())),
        }
    };

    let (code, reason) = match status_line {
        Some((code, reason)) => (code, reason_phrase(code, reason)),
        None => match headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("status"))
        {
            Some(h) => {
                let (code, reason) = parse_status_header(h.value)?;
                (code, reason_phrase(code, &reason))
            }
            None => (200, Cow::Borrowed(canonical_reason(200))),
        },
    };
    let connection_close = headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    });
    let kept = || headers.iter().filter(|h| !is_dropped(h.name));
    let bytes = kept().map(|h| h.name.len() + h.value.len() + 4).sum();
    let mut lines = HeaderLines::with_capacity(headers.len(), bytes);
    for h in kept() {
        lines.push(h.name.as_bytes(), h.value);
    }
    Ok(Some((
        ResponseHead {
            status: code,
            reason,
            headers: lines,
            connection_close,
        },
        used,
    )))
}

/// The reason phrase of the head: the app's, trimmed, or the standard one when it gave none;
/// borrowed when it is the standard one.
fn reason_phrase(code: u16, given: &str) -> Cow<'static, str> {
    let standard = canonical_reason(code);
    match given.trim() {
        "" => Cow::Borrowed(standard),
        same if same == standard => Cow::Borrowed(standard),
        own => Cow::Owned(own.to_string()),
    }
}

fn check_partial(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    if buf.len() >= MAX_HEAD {
        Err(HeadError::TooLarge)
    } else {
        Ok(None)
    }
}

/// `404`, `404 Not Found` → (404, "Not Found").
fn parse_status_header(value: &[u8]) -> Result<(u16, String), HeadError> {
    let text = String::from_utf8_lossy(value).trim().to_string();
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let code = match digits.len() {
        3 => digits.parse::<u16>().ok().filter(|c| *c >= 100),
        _ => None,
    };
    let Some(code) = code else {
        return Err(HeadError::BadStatus(text));
    };
    Ok((code, text[3..].trim().to_string()))
}

/// The standard reason phrase of a status code, for heads that leave it out.
pub fn canonical_reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// The `X-Powered-By` value: with the version unless `passenger_show_version_in_header off`.
/// (A constant: the core and the protocol crate share the workspace's version.)
pub fn powered_by(show_version: bool) -> &'static str {
    if show_version {
        concat!("Passenger-rs ", env!("CARGO_PKG_VERSION"))
    } else {
        "Passenger-rs"
    }
}

/// Renders the normalised head that goes to nginx.
pub fn render_head(head: &ResponseHead, powered_by: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.headers.as_bytes().len() + 128);
    // (write! into the buffer: a format! per response was a visible allocation.)
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", head.status, head.reason);
    out.extend_from_slice(head.headers.as_bytes());
    out.extend_from_slice(b"X-Powered-By: ");
    out.extend_from_slice(powered_by.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// The body length of a response the core frames for nginx: one that ends after exactly this
/// many body bytes, so that the connection to nginx can carry another request. `None`: the
/// response ends when the core closes the connection (and its head says `Connection: close`).
/// Framed needs exactly one valid `Content-Length` and no `Transfer-Encoding`, and neither a
/// HEAD request nor a status without a body (1xx, 204, 304), where the length says nothing.
pub fn framed_length(status: u16, headers: &HeaderLines, head_request: bool) -> Option<u64> {
    if bodiless(status, head_request)
        || headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(b"transfer-encoding"))
    {
        return None;
    }
    single_content_length(headers)
}

/// The length of the body a session-protocol app sends after `head`, when it delimits it:
/// none for HEAD and bodiless statuses, else its one Content-Length (a loader keeps the
/// connection for the next request only after such a response, see [`crate::session`]).
/// `None`: the body ends when the app closes the connection.
pub fn app_body_length(status: u16, headers: &HeaderLines, head_request: bool) -> Option<u64> {
    if bodiless(status, head_request) {
        return Some(0);
    }
    single_content_length(headers)
}

/// A response to HEAD, or with a status that has no body (1xx, 204, 304).
fn bodiless(status: u16, head_request: bool) -> bool {
    head_request || status < 200 || status == 204 || status == 304
}

/// The value of the one valid `Content-Length`; `None` when there is none, or more than one.
fn single_content_length(headers: &HeaderLines) -> Option<u64> {
    let mut lengths = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"content-length"));
    match (lengths.next(), lengths.next()) {
        (Some((_, value)), None) => parse_content_length(value),
        _ => None,
    }
}

/// Digits only (no sign, no list), surrounding blanks allowed.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A complete response generated by the core itself: a short HTML page with a title, a
/// sentence saying what happened, and optional detail text shown preformatted.
pub fn error_page(status: u16, message: &str, detail: Option<&str>, powered_by: &str) -> Vec<u8> {
    let reason = canonical_reason(status);
    let mut body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{status} {reason}</title></head>\n\
         <body><h1>{status} {reason}</h1>\n<p>{}</p>\n",
        html_escape(message)
    );
    if let Some(detail) = detail.filter(|d| !d.trim().is_empty()) {
        body.push_str(&format!("<pre>{}</pre>\n", html_escape(detail)));
    }
    body.push_str("</body></html>\n");
    html_response(status, &body, powered_by)
}

/// A complete response of the core's own: `body` as HTML with `status`, never cached. The
/// core closes the connection after it (the request may not have been read whole).
pub fn html_response(status: u16, body: &str, powered_by: &str) -> Vec<u8> {
    let reason = canonical_reason(status);
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nX-Powered-By: {powered_by}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head's header lines as text.
    fn lines(h: &ResponseHead) -> Vec<(&str, &str)> {
        let text = |b| std::str::from_utf8(b).unwrap();
        h.headers.iter().map(|(n, v)| (text(n), text(v))).collect()
    }

    fn head(buf: &[u8]) -> ResponseHead {
        let (h, used) = parse_head(buf).unwrap().unwrap();
        assert_eq!(&buf[used..], b"body");
        h
    }

    #[test]
    fn status_line_head() {
        let h = head(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nbody");
        assert_eq!(h.status, 404);
        assert_eq!(h.reason, "Not Found");
        assert_eq!(lines(&h), [("Content-Type", "text/plain")]);
    }

    #[test]
    fn status_header_head() {
        let h = head(b"Status: 302 Found\r\nLocation: /x\r\n\r\nbody");
        assert_eq!((h.status, &*h.reason), (302, "Found"));
        assert_eq!(lines(&h), [("Location", "/x")]);
        let h = head(b"Status: 503\r\n\r\nbody");
        assert_eq!((h.status, &*h.reason), (503, "Service Unavailable"));
        let h = head(b"Content-Type: text/plain\r\n\r\nbody");
        assert_eq!((h.status, &*h.reason), (200, "OK"));
    }

    #[test]
    fn status_line_wins_and_missing_reason_is_filled() {
        let h = head(b"HTTP/1.0 201\r\nStatus: 500 Oops\r\n\r\nbody");
        assert_eq!((h.status, &*h.reason), (201, "Created"));
        assert!(lines(&h).is_empty());
    }

    #[test]
    fn multi_headers_are_kept_and_rendered() {
        let h = head(b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nbody");
        let out = render_head(&h, "Passenger-rs");
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Powered-By: Passenger-rs\r\n\r\n"
        );
    }

    #[test]
    fn partial_and_bad_heads() {
        assert_eq!(parse_head(b""), Ok(None));
        assert_eq!(parse_head(b"HT"), Ok(None));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nA: b\r\n"), Ok(None));
        assert_eq!(parse_head(b"Content-Type: text/plain\r\n"), Ok(None));
        assert!(matches!(
            parse_head(b"HTTP/1.1 abc\r\n\r\n"),
            Err(HeadError::Invalid(_))
        ));
        assert!(matches!(
            parse_head(b"Status: nope\r\n\r\n"),
            Err(HeadError::BadStatus(_))
        ));
        assert!(matches!(
            parse_head(b"bad header line\r\n\r\n"),
            Err(HeadError::Invalid(_))
        ));
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() < MAX_HEAD {
            big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(parse_head(&big).is_err());
    }

    #[test]
    fn powered_by_and_error_page() {
        assert_eq!(powered_by(false), "Passenger-rs");
        assert_eq!(
            powered_by(true),
            format!("Passenger-rs {}", passenger_protocol::VERSION)
        );
        let page =
            String::from_utf8(error_page(500, "App <x> failed", Some("a & b"), "P")).unwrap();
        assert!(page.starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(page.contains("App &lt;x&gt; failed"));
        assert!(page.contains("<pre>a &amp; b</pre>"));
        let (head, body) = page.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(head.ends_with("\r\nConnection: close"));
    }

    fn headers(list: &[(&str, &str)]) -> HeaderLines {
        let mut lines = HeaderLines::default();
        for (n, v) in list {
            lines.push(n.as_bytes(), v.as_bytes());
        }
        lines
    }

    #[test]
    fn header_lines_keep_order_and_repeats_and_drop_by_name() {
        let mut h = headers(&[("A", "1"), ("!~X", "y"), ("a", "2"), ("!~x", "z")]);
        assert_eq!(h.as_bytes(), b"A: 1\r\n!~X: y\r\na: 2\r\n!~x: z\r\n");
        assert!(h.remove_named("!~X"));
        assert!(!h.remove_named("!~X"));
        let text = |b| std::str::from_utf8(b).unwrap();
        let left: Vec<_> = h.iter().map(|(n, v)| (text(n), text(v))).collect();
        assert_eq!(left, [("A", "1"), ("a", "2")]);
        assert_eq!(h.as_bytes(), b"A: 1\r\na: 2\r\n");
    }

    #[test]
    fn a_standard_reason_is_not_copied_and_an_own_one_is_kept() {
        let h = head(b"HTTP/1.1 200 OK\r\n\r\nbody");
        assert!(matches!(h.reason, Cow::Borrowed("OK")));
        let h = head(b"HTTP/1.1 200  Fine \r\n\r\nbody");
        assert!(matches!(&h.reason, Cow::Owned(r) if r == "Fine"));
        let h = head(b"Status: 404 Not Found\r\n\r\nbody");
        assert!(matches!(h.reason, Cow::Borrowed("Not Found")));
    }

    #[test]
    fn framing_needs_one_valid_content_length() {
        let cl = |v: &str| headers(&[("Content-Type", "text/plain"), ("content-length", v)]);
        assert_eq!(framed_length(200, &cl("12"), false), Some(12));
        assert_eq!(framed_length(200, &cl(" 0 "), false), Some(0));
        assert_eq!(framed_length(404, &cl("5"), false), Some(5));
        assert_eq!(framed_length(200, &headers(&[]), false), None);
        for bad in [
            "",
            "-1",
            "+5",
            "5, 5",
            "1e3",
            "0x10",
            "99999999999999999999999",
        ] {
            assert_eq!(framed_length(200, &cl(bad), false), None, "{bad:?}");
        }
        let twice = |a: &str, b: &str| headers(&[("Content-Length", a), ("Content-Length", b)]);
        assert_eq!(framed_length(200, &twice("5", "6"), false), None);
        assert_eq!(framed_length(200, &twice("5", "5"), false), None);
    }

    #[test]
    fn framing_excludes_head_bodiless_statuses_and_transfer_encoding() {
        let cl = headers(&[("Content-Length", "7")]);
        assert_eq!(framed_length(200, &cl, true), None);
        for status in [100, 101, 103, 204, 304] {
            assert_eq!(framed_length(status, &cl, false), None, "{status}");
        }
        assert_eq!(framed_length(205, &cl, false), Some(7));
        let te = headers(&[("Content-Length", "7"), ("Transfer-Encoding", "chunked")]);
        assert_eq!(framed_length(200, &te, false), None);
        let te = headers(&[("transfer-encoding", "identity")]);
        assert_eq!(framed_length(200, &te, false), None);
    }

    #[test]
    fn where_an_apps_response_ends() {
        let cl = headers(&[("Content-Length", "7")]);
        assert_eq!(app_body_length(200, &cl, false), Some(7));
        // No body after the head, whatever the length says.
        assert_eq!(app_body_length(200, &cl, true), Some(0));
        for status in [100, 204, 304] {
            assert_eq!(app_body_length(status, &cl, false), Some(0), "{status}");
        }
        // The loader counts what it writes against the one Content-Length, chunked or not.
        let te = headers(&[("Content-Length", "7"), ("Transfer-Encoding", "chunked")]);
        assert_eq!(app_body_length(200, &te, false), Some(7));
        // Else the body ends where the app closes the connection.
        assert_eq!(app_body_length(200, &headers(&[]), false), None);
        let twice = headers(&[("Content-Length", "7"), ("content-length", "7")]);
        assert_eq!(app_body_length(200, &twice, false), None);
        assert_eq!(
            app_body_length(200, &headers(&[("Content-Length", "x")]), false),
            None
        );
    }

    #[test]
    fn connection_close_from_the_app_is_seen_and_dropped() {
        let (h, _) = parse_head(b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.connection_close && lines(&h).is_empty());
        let (h, _) = parse_head(b"Status: 200\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.connection_close);
    }
}
