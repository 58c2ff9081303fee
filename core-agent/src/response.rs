//! The response head: parsing what an app sends back, normalising it into the HTTP/1.1 head the
//! core hands to nginx, and the core's own error pages.
//!
//! Apps answer either with a status line (`HTTP/1.1 200 OK`) followed by headers, or with
//! headers only, carrying a CGI-style `Status: 404 Not Found` header. Both become
//! `HTTP/1.1 NNN Reason`, the app's headers minus the hop-by-hop ones the core owns, and
//! `X-Powered-By`.

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
    pub reason: String,
    /// The app's headers in order, repeated names kept as separate entries, without `Status`,
    /// `Connection` and `Keep-Alive`.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The app said `Connection: close`: it closes the connection after this response.
    pub connection_close: bool,
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
    let (status_line, headers, used) = if is_status_line {
        let mut resp = httparse::Response::new(&mut storage);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(used)) => {
                let code = resp.code.unwrap_or(200);
                let reason = resp.reason.unwrap_or("").to_string();
                (Some((code, reason)), resp.headers.to_vec(), used)
            }
            Ok(httparse::Status::Partial) => return check_partial(buf),
            Err(e) => return Err(HeadError::Invalid(e.to_string())),
        }
    } else {
        match httparse::parse_headers(buf, &mut storage) {
            Ok(httparse::Status::Complete((used, headers))) => (None, headers.to_vec(), used),
            Ok(httparse::Status::Partial) => return check_partial(buf),
            Err(e) => return Err(HeadError::Invalid(e.to_string())),
        }
    };

    let mut status = status_line;
    if status.is_none()
        && let Some(h) = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("status"))
    {
        status = Some(parse_status_header(h.value)?);
    }
    let (code, reason) = status.unwrap_or((200, String::new()));
    let reason = if reason.trim().is_empty() {
        canonical_reason(code).to_string()
    } else {
        reason.trim().to_string()
    };
    let connection_close = headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    });
    let headers = headers
        .iter()
        .filter(|h| !is_dropped(h.name))
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    Ok(Some((
        ResponseHead {
            status: code,
            reason,
            headers,
            connection_close,
        },
        used,
    )))
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
    let mut out = Vec::with_capacity(256);
    // (write! into the buffer: a format! per response was a visible allocation.)
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", head.status, head.reason);
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
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
pub fn framed_length(
    status: u16,
    headers: &[(String, Vec<u8>)],
    head_request: bool,
) -> Option<u64> {
    if bodiless(status, head_request)
        || headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("transfer-encoding"))
    {
        return None;
    }
    single_content_length(headers)
}

/// The length of the body a session-protocol app sends after `head`, when it delimits it:
/// none for HEAD and bodiless statuses, else its one Content-Length (a loader keeps the
/// connection for the next request only after such a response, see [`crate::session`]).
/// `None`: the body ends when the app closes the connection.
pub fn app_body_length(
    status: u16,
    headers: &[(String, Vec<u8>)],
    head_request: bool,
) -> Option<u64> {
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
fn single_content_length(headers: &[(String, Vec<u8>)]) -> Option<u64> {
    let mut lengths = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"));
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
        assert_eq!(
            h.headers,
            vec![("Content-Type".to_string(), b"text/plain".to_vec())]
        );
    }

    #[test]
    fn status_header_head() {
        let h = head(b"Status: 302 Found\r\nLocation: /x\r\n\r\nbody");
        assert_eq!((h.status, h.reason.as_str()), (302, "Found"));
        assert_eq!(h.headers, vec![("Location".to_string(), b"/x".to_vec())]);
        let h = head(b"Status: 503\r\n\r\nbody");
        assert_eq!((h.status, h.reason.as_str()), (503, "Service Unavailable"));
        let h = head(b"Content-Type: text/plain\r\n\r\nbody");
        assert_eq!((h.status, h.reason.as_str()), (200, "OK"));
    }

    #[test]
    fn status_line_wins_and_missing_reason_is_filled() {
        let h = head(b"HTTP/1.0 201\r\nStatus: 500 Oops\r\n\r\nbody");
        assert_eq!((h.status, h.reason.as_str()), (201, "Created"));
        assert!(h.headers.is_empty());
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

    fn headers(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
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
        assert!(h.connection_close && h.headers.is_empty());
        let (h, _) = parse_head(b"Status: 200\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.connection_close);
    }
}
