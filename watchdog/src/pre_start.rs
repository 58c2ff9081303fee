//! `passenger_pre_start`: once the core is up, each URL is requested (through nginx, which
//! routes it to its app like any request), so the app spawns before the first visitor. nginx
//! has its listening sockets open before it starts the watchdog, so a connection is accepted
//! into the backlog at once and answered when the workers run.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use passenger_protocol::pre_start::{PreStartUrl, parse_url};

use crate::log;

/// How long a URL is retried while nothing listens yet.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// How long the app may take to answer (a cold spawn included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(180);

/// Requests every URL, each in its own thread; returns at once.
pub fn request_all(urls: Vec<String>) {
    for url in urls {
        let spawned = std::thread::Builder::new()
            .name("pre-start".into())
            .spawn(move || match parse_url(url.as_bytes()) {
                Ok(parsed) => match request(&parsed) {
                    Ok(status) => log::info(&format!("pre-start {url}: {status}")),
                    Err(e) => log::error(&format!("pre-start {url} failed: {e}")),
                },
                Err(e) => log::error(&format!("pre-start {url}: invalid URL: {e}")),
            });
        if let Err(e) = spawned {
            log::error(&format!("pre-start: cannot start a thread: {e}"));
        }
    }
}

/// Sends the GET and returns the response's status line.
fn request(url: &PreStartUrl) -> Result<String, String> {
    let deadline = Instant::now() + CONNECT_DEADLINE;
    let mut delay = Duration::from_millis(50);
    let mut stream = loop {
        let attempt = url
            .address
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", url.address))
            .and_then(|mut addrs| {
                let addr = addrs
                    .next()
                    .ok_or_else(|| format!("{} has no address", url.address))?;
                TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .map_err(|e| format!("cannot connect to {}: {e}", url.address))
            });
        match attempt {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    };
    stream
        .set_read_timeout(Some(RESPONSE_TIMEOUT))
        .and_then(|_| stream.write_all(url.request().as_bytes()))
        .map_err(|e| format!("cannot send the request: {e}"))?;
    // Read the whole response so nginx and the app finish it normally.
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("no response: {e}"))?;
    let head = String::from_utf8_lossy(&response);
    head.lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .map(str::to_string)
        .ok_or_else(|| "the response has no status line".to_string())
}
