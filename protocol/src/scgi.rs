//! Modified SCGI, nginx module → core agent.
//!
//! `<len>:` then `KEY\0VALUE\0` pairs, then `,`, then the request body. `CONTENT_LENGTH` comes
//! first (as SCGI requires), the passenger options travel as `PASSENGER_*` keys and the core's
//! password as [`crate::options::CONNECT_PASSWORD`].

use thiserror::Error;

/// Default bound on the netstring header; a larger one is refused before it is buffered.
pub const DEFAULT_MAX_HEADER: usize = 128 * 1024;

/// Why a header was refused. Offsets count from the first byte of the netstring.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScgiError {
    #[error(
        "SCGI header length prefix is not a decimal number without leading zeros followed by ':' \
         (byte {offset})"
    )]
    BadLength { offset: usize },
    #[error("SCGI header of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("SCGI header is not terminated by ',' (found byte {found:#04x} at offset {offset})")]
    MissingComma { offset: usize, found: u8 },
    #[error(
        "SCGI header pairs are malformed at byte {offset}: every key and value must end in NUL"
    )]
    BadPairs { offset: usize },
    #[error("SCGI header must start with CONTENT_LENGTH, but starts with {found:?}")]
    ContentLengthNotFirst { found: String },
    #[error("SCGI CONTENT_LENGTH {value:?} is not a decimal number below 2^64")]
    BadContentLength { value: String },
    #[error("SCGI header has key {key:?} twice (second at byte {offset})")]
    DuplicateKey { key: String, offset: usize },
    #[error(
        "SCGI header key {key:?} at byte {offset} is empty or has bytes other than ASCII \
         letters, digits, '_' and '-'"
    )]
    BadKey { key: String, offset: usize },
}

/// A decoded SCGI request header: its bytes as received, and where each key and value is in
/// them (one allocation for the text and one for the index, rather than two per pair: the
/// header is decoded once per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScgiHeader {
    raw: Vec<u8>,
    /// Start and end of each key, then of its value, in `raw`.
    spans: Vec<[usize; 4]>,
    pub content_length: u64,
}

impl ScgiHeader {
    /// The pairs in the order received.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|&[ks, ke, vs, ve]| (&self.raw[ks..ke], &self.raw[vs..ve]))
    }

    /// The bytes of the pairs, as received.
    pub fn text_len(&self) -> usize {
        self.raw.len()
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| v)
    }

    /// The value of `key` as UTF-8 text, if present and valid.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// Whether `key` may appear in a header: ASCII letters, digits, `_` and `-`. Anything else
/// (spaces, `=`, control bytes) could smuggle odd names into the environment an app is given.
pub fn valid_key(key: &[u8]) -> bool {
    // Every byte looked up without an early exit: no branch per byte (keys are short, and
    // valid as a rule).
    !key.is_empty()
        && key
            .iter()
            .fold(true, |ok, &b| ok & KEY_BYTES[usize::from(b)])
}

/// The bytes [`valid_key`] allows, as a table: checking every key byte of every request
/// (a kilobyte and more) with comparisons was a fifth of decoding a header.
static KEY_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        b += 1;
    }
    table
};

/// Encodes a header. The caller puts `CONTENT_LENGTH` first and uses keys that pass
/// [`valid_key`]; a value ends at its first NUL (see [`HeaderBuilder::pair`]).
pub fn encode<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut header = HeaderBuilder::with_capacity(1024);
    for (k, v) in pairs {
        header.pair(k, v);
    }
    header.finish()
}

/// A header written pair by pair into one buffer, its length prefix filled in at the end: the
/// nginx module builds one per request, and collecting the pairs first cost allocations per
/// pair.
pub struct HeaderBuilder {
    /// [`PREFIX_ROOM`] bytes kept for the prefix, then the pairs.
    buf: Vec<u8>,
}

/// Room for the digits of any length and the `:`.
const PREFIX_ROOM: usize = 21;

impl HeaderBuilder {
    /// `capacity`: about how many bytes the pairs take.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(PREFIX_ROOM + capacity + 1);
        buf.resize(PREFIX_ROOM, 0);
        HeaderBuilder { buf }
    }

    /// Adds a pair. The caller puts `CONTENT_LENGTH` first and uses keys that pass
    /// [`valid_key`]. The value ends at its first NUL (as in every pair this crate writes).
    pub fn pair(&mut self, key: &[u8], value: &[u8]) {
        crate::push_pair(&mut self.buf, key, [value]);
    }

    /// Adds a pair whose value is `parts` one after the other (ending at the first NUL, as in
    /// [`HeaderBuilder::pair`]).
    pub fn pair_from_parts<'a>(&mut self, key: &[u8], parts: impl IntoIterator<Item = &'a [u8]>) {
        crate::push_pair(&mut self.buf, key, parts);
    }

    /// The header: `<len>:`, the pairs, `,`.
    pub fn finish(mut self) -> Vec<u8> {
        let mut digits = [0u8; 20];
        let digits = crate::decimal((self.buf.len() - PREFIX_ROOM) as u64, &mut digits);
        let start = PREFIX_ROOM - 1 - digits.len();
        self.buf[start..PREFIX_ROOM - 1].copy_from_slice(digits);
        self.buf[PREFIX_ROOM - 1] = b':';
        self.buf.push(b',');
        self.buf.drain(..start);
        self.buf
    }
}

/// Tries to decode a header from the start of `buf`, which may hold only part of it.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((header, consumed)))` when complete
/// (the body starts at `buf[consumed..]`), or an error as soon as the input cannot be a valid
/// header of at most `max_header` bytes, without waiting for the rest.
pub fn decode(buf: &[u8], max_header: usize) -> Result<crate::Decoded<ScgiHeader>, ScgiError> {
    let Some((len, start)) = decode_length(buf, max_header)? else {
        return Ok(None);
    };
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
    let text = &buf[start..end];
    let spans = crate::pair_spans(text).map_err(|o| ScgiError::BadPairs { offset: start + o })?;
    let key = |i: usize| &text[spans[i][0]..spans[i][1]];
    let content_length = content_length(spans.first().map(|s| (key(0), &text[s[2]..s[3]])))?;
    // The first pair in order that is bad or repeats an earlier key is the one reported.
    let bad = (0..spans.len()).find(|&i| !valid_key(key(i)));
    let repeated = first_repeated_key(text, &spans);
    if let Some(i) = bad.into_iter().chain(repeated).min() {
        let k = key(i);
        let key = String::from_utf8_lossy(k).into_owned();
        let offset = start + spans[i][0];
        return Err(if Some(i) == bad {
            ScgiError::BadKey { key, offset }
        } else {
            ScgiError::DuplicateKey { key, offset }
        });
    }
    Ok(Some((
        ScgiHeader {
            raw: text.to_vec(),
            spans,
            content_length,
        },
        end + 1,
    )))
}

/// The index of the first pair whose key came before. Sorting rather than hashing: most keys
/// are client header names, so a fast unseeded hash could be fed collisions, and SipHash was a
/// tenth of decoding. What is sorted is a number per key (see [`fingerprint`]) and its index,
/// on the stack for up to 128 pairs: it sets nearly all keys apart. Keys that share the number
/// are then compared whole, sorted among themselves in place (so no input makes this
/// quadratic, and nothing is allocated).
fn first_repeated_key(text: &[u8], spans: &[[usize; 4]]) -> Option<usize> {
    // `o`: an entry of `order` below, whose low 32 bits are the pair's index.
    let key = |o: u128| {
        let [start, end, ..] = spans[o as u32 as usize];
        &text[start..end]
    };
    let mut on_stack = [0u128; 128];
    let mut on_heap = Vec::new();
    let order: &mut [u128] = if spans.len() <= on_stack.len() {
        &mut on_stack[..spans.len()]
    } else {
        on_heap.resize(spans.len(), 0);
        &mut on_heap
    };
    for (i, o) in order.iter_mut().enumerate() {
        *o = (u128::from(fingerprint(key(i as u128))) << 32) | i as u128;
    }
    order.sort_unstable();
    let mut first = None;
    for alike in order.chunk_by_mut(|a, b| a >> 32 == b >> 32) {
        if alike.len() < 2 {
            continue;
        }
        // Equal keys next to each other, each run in pair order (the index is the low bits).
        alike.sort_unstable_by(|&a, &b| key(a).cmp(key(b)).then(a.cmp(&b)));
        let repeats = alike.windows(2).filter(|w| key(w[0]) == key(w[1]));
        first = first
            .into_iter()
            .chain(repeats.map(|w| w[1] as u32 as usize))
            .min();
    }
    first
}

/// A number equal for equal keys and different for nearly all others: the length, the first
/// two bytes and the last four. (Names that differ share a prefix far more often than all
/// three: `PASSENGER_*`, `HTTP_*`; the CGI names `SCRIPT_NAME` and `SERVER_NAME`, or
/// `SERVER_PORT` and `REMOTE_PORT`, differ in their first bytes.)
fn fingerprint(key: &[u8]) -> u64 {
    let head = key.iter().take(2);
    let tail = key[key.len().saturating_sub(4)..].iter();
    head.chain(tail)
        .fold(key.len().min(0xffff) as u64, |f, &b| {
            (f << 8) | u64::from(b)
        })
}

/// Reads the `<len>:` prefix: `Ok(None)` while incomplete, else the length and where the
/// pairs start. The length is checked against the limit digit by digit, so a huge one is
/// refused before its `:` arrives and long before anything is buffered for it.
fn decode_length(buf: &[u8], max_header: usize) -> Result<Option<(usize, usize)>, ScgiError> {
    let mut len: usize = 0;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b':' if i > 0 => return Ok(Some((len, i + 1))),
            // Netstrings forbid leading zeros: "0:" is the only length starting with 0.
            b'0'..=b'9' if !(i == 1 && buf[0] == b'0') => {
                len = len
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(usize::from(b - b'0')))
                    .filter(|&l| l <= max_header)
                    .ok_or(ScgiError::TooLarge {
                        len: len.saturating_mul(10).saturating_add(usize::from(b - b'0')),
                        limit: max_header,
                    })?;
            }
            _ => return Err(ScgiError::BadLength { offset: i }),
        }
    }
    Ok(None)
}

/// Checks that the first pair is a numeric `CONTENT_LENGTH` and returns its value.
fn content_length(first: Option<(&[u8], &[u8])>) -> Result<u64, ScgiError> {
    let v = match first {
        Some((k, v)) if k == b"CONTENT_LENGTH" => v,
        other => {
            return Err(ScgiError::ContentLengthNotFirst {
                found: String::from_utf8_lossy(other.map_or(&b""[..], |(k, _)| k)).into_owned(),
            });
        }
    };
    let bad = || ScgiError::BadContentLength {
        value: String::from_utf8_lossy(v).into_owned(),
    };
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // All ASCII digits, so valid UTF-8; parse refuses what overflows u64.
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)
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
    fn the_builder_writes_the_netstring_and_cuts_values_at_nul() {
        let mut header = HeaderBuilder::with_capacity(0);
        header.pair(b"CONTENT_LENGTH", b"0");
        header.pair_from_parts(b"HTTP_COOKIE", [&b"a=1"[..], b"; ", b"b=2"]);
        header.pair_from_parts(b"HTTP_X", [&b"1"[..], b"2\x003", b"4"]);
        assert_eq!(
            header.finish(),
            b"48:CONTENT_LENGTH\x000\x00HTTP_COOKIE\x00a=1; b=2\x00HTTP_X\x0012\x00,"
        );
        assert_eq!(HeaderBuilder::with_capacity(8).finish(), b"0:,");
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
            Err(ScgiError::BadLength { offset: 0 })
        ));
        assert_eq!(
            decode(b"012:", 100),
            Err(ScgiError::BadLength { offset: 1 })
        );
        assert_eq!(decode(b":", 100), Err(ScgiError::BadLength { offset: 0 }));
        assert!(matches!(
            decode(b"4:A\x00b\x00;", 100),
            Err(ScgiError::MissingComma { .. })
        ));
        // Refused as soon as the digits exceed the limit, before the ':' arrives.
        assert_eq!(
            decode(b"1000", 100),
            Err(ScgiError::TooLarge {
                len: 1000,
                limit: 100
            })
        );
        assert!(matches!(
            decode(b"99999999999999999999999999:", usize::MAX),
            Err(ScgiError::TooLarge { .. })
        ));
        let no_cl = encode([(&b"SCGI"[..], &b"1"[..])]);
        assert_eq!(
            decode(&no_cl, 100),
            Err(ScgiError::ContentLengthNotFirst {
                found: "SCGI".into()
            })
        );
        assert!(matches!(
            decode(b"0:,", 100),
            Err(ScgiError::ContentLengthNotFirst { .. })
        ));
        let bad_cl = encode([(&b"CONTENT_LENGTH"[..], &b"-1"[..])]);
        assert!(matches!(
            decode(&bad_cl, 100),
            Err(ScgiError::BadContentLength { .. })
        ));
        let dup = encode([
            (&b"CONTENT_LENGTH"[..], &b"0"[..]),
            (b"A", b"1"),
            (b"A", b"2"),
        ]);
        assert_eq!(
            decode(&dup, 100),
            Err(ScgiError::DuplicateKey {
                key: "A".into(),
                offset: 24
            })
        );
        let bad_key = encode([(&b"CONTENT_LENGTH"[..], &b"0"[..]), (b"A\nB", b"1")]);
        assert_eq!(
            decode(&bad_key, 100),
            Err(ScgiError::BadKey {
                key: "A\nB".into(),
                offset: 20
            })
        );
    }

    #[test]
    fn the_first_bad_or_repeated_key_in_order_is_reported() {
        let decoded = |keys: &[&str]| {
            let mut pairs = vec![(&b"CONTENT_LENGTH"[..], &b"0"[..])];
            pairs.extend(keys.iter().map(|k| (k.as_bytes(), &b"v"[..])));
            decode(&encode(pairs), 1000).unwrap_err()
        };
        // "NN:" then CONTENT_LENGTH NUL 0 NUL, then 4 bytes per one-letter key with value "v".
        let offset_of = |i: usize| 3 + "CONTENT_LENGTH".len() + 3 + i * 4;
        // B repeats before A does; a key repeated twice is reported at its second appearance.
        assert_eq!(
            decoded(&["A", "B", "B", "A", "A"]),
            ScgiError::DuplicateKey {
                key: "B".into(),
                offset: offset_of(2)
            }
        );
        assert_eq!(
            decoded(&["A", "A", "!"]),
            ScgiError::DuplicateKey {
                key: "A".into(),
                offset: offset_of(1)
            }
        );
        assert_eq!(
            decoded(&["A", "!", "A"]),
            ScgiError::BadKey {
                key: "!".into(),
                offset: offset_of(1)
            }
        );
        assert_eq!(
            decoded(&["!", "!"]),
            ScgiError::BadKey {
                key: "!".into(),
                offset: offset_of(0)
            }
        );
    }

    #[test]
    fn keys_alike_in_length_and_ends_are_told_apart() {
        let decoded = |keys: &[&str]| {
            let mut pairs = vec![(&b"CONTENT_LENGTH"[..], &b"0"[..])];
            pairs.extend(keys.iter().map(|k| (k.as_bytes(), &b"v"[..])));
            decode(&encode(pairs), 1000).map(|h| h.is_some())
        };
        let keys = ["K_A_TAIL", "K_B_TAIL", "K_C_TAIL"];
        assert!(
            keys.iter()
                .all(|k| fingerprint(k.as_bytes()) == fingerprint(b"K_A_TAIL"))
        );
        assert_eq!(decoded(&keys), Ok(true));
        let err = decoded(&["K_A_TAIL", "K_B_TAIL", "K_C_TAIL", "K_B_TAIL", "K_A_TAIL"]);
        assert!(
            matches!(&err, Err(ScgiError::DuplicateKey { key, .. }) if key == "K_B_TAIL"),
            "{err:?}"
        );
        for (a, b) in [
            ("HTTP_ACCEPT_ENCODING", "HTTP_ACCEPT_LANGUAGE"),
            ("SCRIPT_NAME", "SERVER_NAME"),
            ("SERVER_PORT", "REMOTE_PORT"),
            ("A", "B"),
        ] {
            assert_ne!(
                fingerprint(a.as_bytes()),
                fingerprint(b.as_bytes()),
                "{a} {b}"
            );
        }
    }

    #[test]
    fn a_repeat_is_found_among_more_pairs_than_are_sorted_on_the_stack() {
        for count in [127, 128, 129, 400] {
            let keys: Vec<String> = (0..count).map(|i| format!("K{i}")).collect();
            let mut pairs = vec![(&b"CONTENT_LENGTH"[..], &b"0"[..])];
            pairs.extend(keys.iter().map(|k| (k.as_bytes(), &b"v"[..])));
            let wire = encode(pairs.iter().copied());
            assert!(decode(&wire, 1 << 20).unwrap().is_some(), "{count}");
            pairs.push((b"K5", b"again"));
            let err = decode(&encode(pairs), 1 << 20).unwrap_err();
            assert!(
                matches!(&err, ScgiError::DuplicateKey { key, .. } if key == "K5"),
                "{count}: {err}"
            );
        }
    }
}
