//! The core's SCGI header decoder on arbitrary bytes, as any process able to connect to the
//! core socket could send them. Besides not panicking: a header it accepts re-encodes to the
//! same bytes, and every shorter prefix of it is "incomplete", never an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passenger_protocol::scgi;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a limit, so that small limits get exercised too.
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let limit = match pick % 4 {
        0 => scgi::DEFAULT_MAX_HEADER,
        1 => 0,
        2 => usize::from(pick),
        _ => usize::MAX,
    };
    if let Ok(Some((header, used))) = scgi::decode(input, limit) {
        let pairs = header.pairs();
        assert_eq!(scgi::encode(pairs), input[..used]);
        assert_eq!(scgi::decode(&input[..used - 1], limit), Ok(None));
    }
});
