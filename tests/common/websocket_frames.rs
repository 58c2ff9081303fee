//! WebSocket frames for the tests that talk to the node-ws app through nginx (RFC 6455,
//! short text payloads only).

use std::io::{Read, Write};
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

/// A WebSocket to the node-ws test app on nginx's `port` (RFC 6455's sample key), and the
/// head of the answer, which must be a 101.
pub fn websocket_handshake(port: u16) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(super::PATIENCE)).unwrap();
    s.write_all(
        b"GET /socket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap_or_else(|e| {
            panic!(
                "reading the 101 head ({} bytes so far: {:?}): {e}",
                head.len(),
                String::from_utf8_lossy(&head)
            )
        });
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    (s, head)
}

/// [`websocket_handshake`]'s connection, past the 101 head.
pub fn open_websocket(port: u16) -> TcpStream {
    websocket_handshake(port).0
}
