//! MessageChannel decoders (array, scalar, session header, start-up report) on arbitrary
//! bytes: no panic, no allocation past the declared limit (libFuzzer's -malloc_limit_mb), and
//! an accepted array message re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passenger_protocol::{channel, instance::StartupReport, session};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((items, used))) = channel::decode_array(data) {
        assert_eq!(channel::encode_array(&items).unwrap(), data[..used]);
        let _ = StartupReport::from_items(&items);
    }
    let _ = channel::decode_scalar(data, 4096);
    let _ = channel::read_scalar(&mut &data[..], 4096);
    let _ = channel::read_array(&mut &data[..]);
    let _ = session::decode_header(data, 4096);
});
