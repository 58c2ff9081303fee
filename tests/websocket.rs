//! A WebSocket through nginx, the module's upgrade handling, the core's tunnel and a Node.js
//! app, both ways, against Debian's nginx 1.22 and the bundled nginx.

#[macro_use]
mod common;

use common::websocket_frames::{client_frame, read_frame, websocket_handshake};
use common::*;
use std::io::{Read, Write};

for_both_nginx! {
    a_websocket_echo_works_both_ways,
}

fn a_websocket_echo_works_both_ways(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[Site::app("node-ws")]);
    // An ordinary request first: the app is up, and plain requests still work.
    let r = nginx.get("/");
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.passenger_log());
    let (mut s, head) = websocket_handshake(nginx.port());
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
