//! Property tests: every decoder fed random, truncated or oversized input answers with an
//! error or "incomplete", never a panic, and never claims more bytes than it was given.

use passenger_protocol::channel::{self, ChannelError};
use passenger_protocol::instance::StartupReport;
use passenger_protocol::loader;
use passenger_protocol::scgi::{self, ScgiError};
use passenger_protocol::session::{self, SessionHeaderError};
use proptest::collection::vec;
use proptest::prelude::*;

/// Random bytes, and the same after a plausible prefix so that decoders get past their first
/// check more often than pure noise would.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    const PREFIXES: [&[u8]; 6] = [
        b"",
        b"14:CONTENT_LENGTH\0",
        b"30:CONTENT_LENGTH\x000\0",
        b"\x00\x10",
        b"\x00\x00\x00\x08",
        b"!> ",
    ];
    (
        prop::sample::select(&PREFIXES[..]),
        vec(any::<u8>(), 0..512),
    )
        .prop_map(|(p, rest)| {
            let mut v = p.to_vec();
            v.extend(rest);
            v
        })
}

fn fits<T>(decoded: &Option<(T, usize)>, input: &[u8]) -> bool {
    decoded
        .as_ref()
        .is_none_or(|(_, used)| *used <= input.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn scgi_random(input in noise(), limit in prop_oneof![Just(0usize), 0..256usize, Just(usize::MAX)]) {
        if let Ok(d) = scgi::decode(&input, limit) {
            prop_assert!(fits(&d, &input));
        }
    }

    #[test]
    fn channel_random(input in noise(), max in 0..1024usize) {
        if let Ok(d) = channel::decode_array(&input) {
            prop_assert!(fits(&d, &input));
            if let Some((items, _)) = d {
                let _ = StartupReport::from_items(&items);
            }
        }
        if let Ok(d) = channel::decode_scalar(&input, max) {
            prop_assert!(fits(&d, &input));
        }
        if let Ok(Some(data)) = channel::read_scalar(&mut &input[..], max) {
            prop_assert!(data.len() <= max);
        }
        let _ = channel::read_array(&mut &input[..]);
        if let Ok(d) = session::decode_header(&input, max) {
            prop_assert!(fits(&d, &input));
        }
    }

    #[test]
    fn loader_random(input in noise()) {
        let text = String::from_utf8_lossy(&input);
        for line in text.split('\n') {
            let _ = loader::parse_line(line);
        }
        if let Ok(Some((_, used))) = loader::decode_options(&text) {
            prop_assert!(used <= text.len());
        }
    }

    /// Valid messages cut short anywhere are "incomplete" (or, read from a stream, an EOF).
    #[test]
    fn truncated(items in vec(vec(1u8..=255, 0..8), 1..8), cut in any::<prop::sample::Index>()) {
        let array = channel::encode_array(&items).unwrap();
        let short = &array[..cut.index(array.len())];
        prop_assert_eq!(channel::decode_array(short), Ok(None));
        if !short.is_empty() {
            prop_assert!(channel::read_array(&mut &short[..]).is_err());
        }
        let pairs: Vec<_> = items.iter().map(|i| (&b"K"[..], &i[..])).collect();
        let header = session::encode_header(pairs.iter().copied());
        prop_assert_eq!(session::decode_header(&header[..cut.index(header.len())], 1 << 16), Ok(None));
    }
}

/// How reading a scalar (limit 1 MiB) from `input` fails.
fn read_scalar_error(input: &[u8]) -> std::io::ErrorKind {
    let mut r = input;
    channel::read_scalar(&mut r, 1 << 20).unwrap_err().kind()
}

#[test]
fn huge_declared_lengths_with_tiny_input_are_refused() {
    assert!(matches!(
        scgi::decode(b"18446744073709551615:", scgi::DEFAULT_MAX_HEADER),
        Err(ScgiError::TooLarge { .. })
    ));
    assert!(matches!(
        scgi::decode(b"99999999999999999999999999999", usize::MAX),
        Err(ScgiError::TooLarge { .. })
    ));
    assert_eq!(
        channel::decode_scalar(b"\xff\xff\xff\xffab", 1 << 20),
        Err(ChannelError::ScalarTooLarge {
            len: u32::MAX as usize,
            limit: 1 << 20
        })
    );
    assert_eq!(
        read_scalar_error(b"\xff\xff\xff\xffab"),
        std::io::ErrorKind::InvalidData
    );
    assert_eq!(
        session::decode_header(b"\xff\xff\xff\xffab", 1 << 20),
        Err(SessionHeaderError::TooLarge {
            len: u32::MAX as usize,
            limit: 1 << 20
        })
    );
    // Within the limit but short: incomplete, and a stream that ends there is an EOF.
    assert_eq!(
        channel::decode_scalar(b"\x00\x01\x00\x00ab", 1 << 20),
        Ok(None)
    );
    assert_eq!(
        read_scalar_error(b"\x00\x01\x00\x00ab"),
        std::io::ErrorKind::UnexpectedEof
    );
}

#[test]
fn many_tiny_scgi_pairs_decode_quickly() {
    // The most pairs a default-sized header can hold; duplicate detection must not be
    // quadratic in them.
    let keys: Vec<String> = (0..30_000).map(|i| format!("K{i}")).collect();
    let mut pairs = vec![(&b"CONTENT_LENGTH"[..], &b"0"[..])];
    pairs.extend(keys.iter().map(|k| (k.as_bytes(), &b""[..])));
    let wire = scgi::encode(pairs);
    let (header, _) = scgi::decode(&wire, wire.len()).unwrap().unwrap();
    assert_eq!(header.len(), 30_001);
}
