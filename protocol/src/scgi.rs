//! Modified SCGI, nginx module → core agent.
//!
//! `<len>:` then `KEY\0VALUE\0` pairs, then `,`, then the request body. `CONTENT_LENGTH` comes
//! first (as SCGI requires), the passenger options travel as `PASSENGER_*` keys and the core's
//! password as [`crate::options::CONNECT_PASSWORD`].

use thiserror::Error;

/// Default bound on the netstring header; a larger one is refused before it is buffered.
pub const DEFAULT_MAX_HEADER: usize = 128 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScgiError {
    #[error("SCGI header length prefix is not a decimal number followed by ':' (at byte {0})")]
    BadLength(usize),
    #[error("SCGI header of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("SCGI header is not terminated by ',' (found byte {found:#04x} at offset {offset})")]
    MissingComma { offset: usize, found: u8 },
    #[error("SCGI header pairs are malformed at byte {0}: every key and value must end in NUL")]
    BadPairs(usize),
    #[error("SCGI header must start with CONTENT_LENGTH")]
    ContentLengthNotFirst,
    #[error("SCGI CONTENT_LENGTH {0:?} is not a decimal number")]
    BadContentLength(String),
    #[error("SCGI header has key {0:?} twice")]
    DuplicateKey(String),
    #[error("SCGI header key {0:?} has bytes outside the CGI range")]
    BadKey(String),
}

/// A decoded SCGI request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScgiHeader {
    pub pairs: crate::Pairs,
    pub content_length: u64,
}

impl ScgiHeader {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The value of `key` as UTF-8 text, if present and valid.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// Encodes a header. The caller puts `CONTENT_LENGTH` first.
pub fn encode<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut body = Vec::new();
    crate::join_pairs(&mut body, pairs);
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(&body);
    out.push(b',');
    out
}

/// Tries to decode a header from the start of `buf`, which may hold only part of it.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((header, consumed)))` when complete
/// (the body starts at `buf[consumed..]`), or an error as soon as the input cannot be a valid
/// header, without waiting for the rest.
pub fn decode(buf: &[u8], max_header: usize) -> Result<crate::Decoded<ScgiHeader>, ScgiError> {
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    // usize::MAX has 20 digits; anything longer is garbage or hostile.
    if digits > 20 || (digits == 0 && !buf.is_empty()) {
        return Err(ScgiError::BadLength(digits));
    }
    let Some(&sep) = buf.get(digits) else {
        return Ok(None);
    };
    if sep != b':' {
        return Err(ScgiError::BadLength(digits));
    }
    let len: usize = std::str::from_utf8(&buf[..digits])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ScgiError::BadLength(0))?;
    if len > max_header {
        return Err(ScgiError::TooLarge {
            len,
            limit: max_header,
        });
    }
    let start = digits + 1;
    let end = start + len;
    let Some(&comma) = buf.get(end) else {
        return Ok(None);
    };
    if comma != b',' {
        return Err(ScgiError::MissingComma {
            offset: end,
            found: comma,
        });
    }
    let raw = crate::split_pairs(&buf[start..end]).map_err(|o| ScgiError::BadPairs(start + o))?;
    let mut pairs: crate::Pairs = Vec::with_capacity(raw.len());
    for (i, (k, v)) in raw.iter().enumerate() {
        let key = String::from_utf8_lossy(k).into_owned();
        if k.is_empty()
            || !k
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ScgiError::BadKey(key));
        }
        if i == 0 && *k != b"CONTENT_LENGTH" {
            return Err(ScgiError::ContentLengthNotFirst);
        }
        if pairs.iter().any(|(seen, _)| seen == k) {
            return Err(ScgiError::DuplicateKey(key));
        }
        pairs.push((k.to_vec(), v.to_vec()));
    }
    let Some((_, cl)) = pairs.first() else {
        return Err(ScgiError::ContentLengthNotFirst);
    };
    let cl_text = String::from_utf8_lossy(cl).into_owned();
    if cl.is_empty() || cl.len() > 19 || !cl.iter().all(u8::is_ascii_digit) {
        return Err(ScgiError::BadContentLength(cl_text));
    }
    let content_length = cl_text
        .parse()
        .map_err(|_| ScgiError::BadContentLength(cl_text))?;
    Ok(Some((
        ScgiHeader {
            pairs,
            content_length,
        },
        end + 1,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode([
            (&b"CONTENT_LENGTH"[..], &b"5"[..]),
            (b"SCGI", b"1"),
            (b"REQUEST_METHOD", b"POST"),
        ])
    }

    #[test]
    fn round_trip() {
        let mut buf = sample();
        buf.extend_from_slice(b"hello");
        let (h, used) = decode(&buf, DEFAULT_MAX_HEADER).unwrap().unwrap();
        assert_eq!(h.content_length, 5);
        assert_eq!(h.get_str("REQUEST_METHOD"), Some("POST"));
        assert_eq!(&buf[used..], b"hello");
    }

    #[test]
    fn every_prefix_is_incomplete_not_an_error() {
        let buf = sample();
        for n in 0..buf.len() {
            assert_eq!(
                decode(&buf[..n], DEFAULT_MAX_HEADER),
                Ok(None),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            decode(b"GET / HTTP/1.1\r\n", 100),
            Err(ScgiError::BadLength(_))
        ));
        assert!(matches!(
            decode(b"4:A\x00b\x00;", 100),
            Err(ScgiError::MissingComma { .. })
        ));
        assert!(matches!(
            decode(b"999999:", 100),
            Err(ScgiError::TooLarge { .. })
        ));
        let no_cl = encode([(&b"SCGI"[..], &b"1"[..])]);
        assert_eq!(decode(&no_cl, 100), Err(ScgiError::ContentLengthNotFirst));
        let bad_cl = encode([(&b"CONTENT_LENGTH"[..], &b"-1"[..])]);
        assert!(matches!(
            decode(&bad_cl, 100),
            Err(ScgiError::BadContentLength(_))
        ));
        let dup = encode([
            (&b"CONTENT_LENGTH"[..], &b"0"[..]),
            (b"A", b"1"),
            (b"A", b"2"),
        ]);
        assert!(matches!(decode(&dup, 100), Err(ScgiError::DuplicateKey(_))));
        let bad_key = encode([(&b"CONTENT_LENGTH"[..], &b"0"[..]), (b"A\nB", b"1")]);
        assert!(matches!(decode(&bad_key, 100), Err(ScgiError::BadKey(_))));
    }
}
