//! WebSocket frames for the tests that talk to the node-ws app through nginx (RFC 6455,
//! short text payloads only).

use std::io::Read;
use std::net::TcpStream;

/// A masked client text frame (short payloads only).
pub fn client_frame(text: &str) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut out = vec![0x81, 0x80 | text.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one unmasked server text frame (short payloads only).
pub fn read_frame(s: &mut TcpStream) -> String {
    let mut head = [0u8; 2];
    s.read_exact(&mut head)
        .expect("a frame header from the server");
    assert_eq!(head[0], 0x81, "a final text frame");
    let mut payload = vec![0u8; (head[1] & 0x7f) as usize];
    s.read_exact(&mut payload).unwrap();
    String::from_utf8(payload).unwrap()
}
