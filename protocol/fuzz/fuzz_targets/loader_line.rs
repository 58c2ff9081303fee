//! The spawner's parser of the loader's stdout lines, and the loader's parser of the options
//! block, on arbitrary text: no panic, and a classified line, printed again, reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passenger_protocol::loader;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.split('\n') {
        let parsed = loader::parse_line(line);
        // One trailing CR is the line ending's; a text that ends in another cannot be printed
        // as a line again.
        if !line.strip_suffix('\r').unwrap_or(line).ends_with('\r') {
            assert_eq!(loader::parse_line(&loader::encode_line(&parsed)), parsed);
        }
    }
    let _ = loader::decode_options(&text);
});
