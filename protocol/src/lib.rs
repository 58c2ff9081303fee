//! Wire formats and shared names of passenger-rs.
//!
//! Every format that crosses a process boundary is encoded and decoded here and nowhere else:
//! the nginx module, the watchdog, the core agent and the CLI all depend on this crate. It does
//! no I/O of its own (no tokio), so it can live inside an nginx worker.

pub mod channel;
pub mod instance;
pub mod loader;
pub mod options;
pub mod pre_start;
pub mod scgi;
pub mod session;

/// The version reported in `X-Powered-By`, `properties.json` and the loader handshake.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Owned `KEY\0VALUE\0` pairs, in wire order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// What an incremental decoder returns: `None` while the input is incomplete, else the decoded
/// message and how many bytes of the input it used.
pub type Decoded<T> = Option<(T, usize)>;

/// Compares two secrets in time that depends only on their lengths, so that a client probing
/// the password byte by byte learns nothing from response times.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n` in decimal, written into `buf` (no allocation: headers are built per request).
pub fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = n;
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

/// Where each key and value of `KEY\0VALUE\0...` starts and ends in `data` (used by the SCGI
/// and session formats alike); the byte offset of the first malformed pair on error. (One
/// vectorised pass for the NULs: scanning a byte at a time was half of decoding a header.)
pub(crate) fn pair_spans(data: &[u8]) -> Result<Vec<[usize; 4]>, usize> {
    // A guess at the count (pairs average some 30 bytes), to spare most regrowing.
    let mut spans = Vec::with_capacity(data.len() / 24 + 1);
    let mut nuls = memchr::memchr_iter(0, data);
    let mut start = 0;
    while start < data.len() {
        let (Some(key_end), Some(value_end)) = (nuls.next(), nuls.next()) else {
            return Err(start);
        };
        spans.push([start, key_end, key_end + 1, value_end]);
        start = value_end + 1;
    }
    Ok(spans)
}

/// Appends `KEY\0VALUE\0` pairs to `out` (see [`push_pair`]).
pub(crate) fn join_pairs<'a>(
    out: &mut Vec<u8>,
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) {
    for (k, v) in pairs {
        push_pair(out, k, [v]);
    }
}

/// Appends one `KEY\0VALUE\0` pair whose value is `parts` one after the other. The value ends
/// at its first NUL: on the wire a NUL would end it there anyway, and make the rest of it a key.
pub(crate) fn push_pair<'a>(
    out: &mut Vec<u8>,
    key: &[u8],
    parts: impl IntoIterator<Item = &'a [u8]>,
) {
    out.extend_from_slice(key);
    out.push(0);
    for part in parts {
        if let Some(nul) = memchr::memchr(0, part) {
            out.extend_from_slice(&part[..nul]);
            break;
        }
        out.extend_from_slice(part);
    }
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(1398, &mut buf), b"1398");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }

    #[test]
    fn pairs_round_trip() {
        let mut out = Vec::new();
        join_pairs(&mut out, [(&b"A"[..], &b"1"[..]), (b"B", b"")]);
        assert_eq!(out, b"A\x001\x00B\x00\x00");
        assert_eq!(pair_spans(&out).unwrap(), vec![[0, 1, 2, 3], [4, 5, 6, 6]]);
    }

    #[test]
    fn pairs_reject_unterminated_value() {
        assert_eq!(pair_spans(b"A\x001\x00B\x00x"), Err(4));
        assert_eq!(pair_spans(b"A"), Err(0));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
