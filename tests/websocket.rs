//! A WebSocket through nginx, the module's upgrade handling, the core's tunnel and a Node.js
//! app, both ways, against Debian's nginx 1.22 and the bundled nginx.

#[macro_use]
mod common;

use common::websocket_frames::{client_frame, read_frame};
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;

for_both_nginx! {
    a_websocket_echo_works_both_ways,
}

fn a_websocket_echo_works_both_ways(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[Site::app("node-ws")]);
    // An ordinary request first: the app is up, and plain requests still work.
    let r = nginx.get("/");
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.passenger_log());
    let mut s = TcpStream::connect(("127.0.0.1", nginx.port())).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
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
                "reading the 101 head ({} bytes so far: {:?}): {e}\n{}",
                head.len(),
                String::from_utf8_lossy(&head),
                nginx.error_log()
            )
        });
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(lower.contains("connection: upgrade"), "{head}");
    // The accept value for RFC 6455's sample key.
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    for message in ["hello", "second message", "third"] {
        s.write_all(&client_frame(message)).unwrap();
        assert_eq!(read_frame(&mut s), format!("echo: {message}"));
    }
    // Close: the server answers with a close frame and the tunnel ends.
    s.write_all(&[0x88, 0x80, 0, 0, 0, 0]).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(
        rest,
        vec![0x88, 0],
        "a close frame, then the end of the connection"
    );
}
