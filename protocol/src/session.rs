//! Session protocol, core agent → Ruby/Python app process.
//!
//! A 4-byte big-endian length, then `KEY\0VALUE\0` pairs (the CGI/Rack environment, including
//! the app's connect password), then the request body. The app answers with an HTTP response.
//!
//! A connection carries requests one after the other (never pipelined: the core sends the
//! next one only once it has read the previous response whole). After a response the loader
//! keeps the connection and reads the next header on it only when the response was delimited
//! and nothing went wrong:
//! - delimited: a HEAD request, or a 1xx (not 101), 204 or 304 status, with no body bytes; or
//!   exactly one `Content-Length` and exactly that many body bytes (a longer body is cut at
//!   it; a shorter one ends the connection);
//! - not hijacked, not a 101, not the core's `OOBW` pseudo-request, the whole request body
//!   read, the loader not stopping.
//!
//! Otherwise it says `Connection: close` in the head when it can still do so, and closes the
//! connection after the response. A loader waiting on a kept connection goes back to accepting
//! when the core closes it; stopping wakes such waits. Each loader thread serves one
//! connection at a time, so the core keeps connections only to processes it sends no more
//! concurrent requests than they advertised.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SessionHeaderError {
    #[error("session header of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error(
        "session header pairs are malformed at byte {offset}: every key and value must end in NUL"
    )]
    BadPairs { offset: usize },
}

/// Encodes the session header (length prefix and pairs); the body follows it on the socket.
pub fn encode_header<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    encode_header_sized(256, pairs)
}

/// [`encode_header`] into a buffer made for about `capacity` bytes of pairs: the core knows
/// roughly how large each request's header is, and a buffer grown from nothing was reallocated
/// about seven times per request.
pub fn encode_header_sized<'a>(
    capacity: usize,
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + capacity);
    out.extend_from_slice(&[0; 4]);
    crate::join_pairs(&mut out, pairs);
    let len = u32::try_from(out.len() - 4).expect("session header below 4 GiB");
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Maps an HTTP header name to its CGI name (`X-Foo` → `HTTP_X_FOO`). Returns `None` for a
/// name with bytes other than ASCII alphanumerics and `-`: such a header could otherwise pose
/// as another (`X_Foo` and `X-Foo` would both become `HTTP_X_FOO`), so it is dropped.
pub fn cgi_header_name(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len() + 5);
    cgi_header_name_into(name, &mut out).then_some(out)
}

/// [`cgi_header_name`] into `out` (cleared first), for a caller that reuses one buffer; false
/// (and `out` unspecified) for a name that is dropped.
pub fn cgi_header_name_into(name: &[u8], out: &mut Vec<u8>) -> bool {
    if name.is_empty() || !name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-') {
        return false;
    }
    out.clear();
    out.extend_from_slice(b"HTTP_");
    out.extend(name.iter().map(|&b| {
        if b == b'-' {
            b'_'
        } else {
            b.to_ascii_uppercase()
        }
    }));
    true
}

/// Decodes a session header from the start of `buf`: `Ok(None)` if incomplete, else the pairs
/// and the number of bytes consumed. Used by tests and tools that play the app's side.
pub fn decode_header(
    buf: &[u8],
    max: usize,
) -> Result<crate::Decoded<crate::Pairs>, SessionHeaderError> {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Ok(None);
    };
    // Checked before anything is buffered for it.
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len > max {
        return Err(SessionHeaderError::TooLarge { len, limit: max });
    }
    let Some(data) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let spans =
        crate::pair_spans(data).map_err(|o| SessionHeaderError::BadPairs { offset: 4 + o })?;
    Ok(Some((
        spans
            .into_iter()
            .map(|[ks, ke, vs, ve]| (data[ks..ke].to_vec(), data[vs..ve].to_vec()))
            .collect(),
        4 + len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = encode_header([(&b"REQUEST_METHOD"[..], &b"GET"[..])]);
        assert_eq!(&h[..4], &[0, 0, 0, 19]);
        let (pairs, used) = decode_header(&h, 1000).unwrap().unwrap();
        assert_eq!(used, h.len());
        assert_eq!(pairs, vec![(b"REQUEST_METHOD".to_vec(), b"GET".to_vec())]);
        assert_eq!(decode_header(&h[..10], 1000), Ok(None));
        assert_eq!(
            decode_header(&h, 10),
            Err(SessionHeaderError::TooLarge { len: 19, limit: 10 })
        );
        assert_eq!(
            decode_header(b"\0\0\0\x05A\0B\0C", 10),
            Err(SessionHeaderError::BadPairs { offset: 8 })
        );
    }

    #[test]
    fn header_names() {
        assert_eq!(
            cgi_header_name(b"X-Forwarded-For").unwrap(),
            b"HTTP_X_FORWARDED_FOR"
        );
        assert_eq!(cgi_header_name(b"X_Forwarded_For"), None);
        assert_eq!(cgi_header_name(b""), None);
    }
}
