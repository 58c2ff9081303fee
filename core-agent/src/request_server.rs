//! The request server: accepts nginx's connections on the core socket, reads and checks the
//! SCGI header, and hands each request to the pool and a session. Each connection is its own
//! task; a bad one affects nobody else.

use crate::app_options::{self, AppOptions};
use crate::http_session;
use crate::memory;
use crate::pool::{CheckoutError, Pool, Process, Spawner};
use crate::response::{self, error_page};
use crate::session::{self, SessionError};
use crate::spawn_error_page;
use passenger_protocol::constant_time_eq;
use passenger_protocol::loader::SocketProtocol;
use passenger_protocol::options::CONNECT_PASSWORD;
use passenger_protocol::scgi::{self, DEFAULT_MAX_HEADER, ScgiHeader};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// How long nginx may take to send the whole SCGI header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(60);

pub struct RequestServer<S: Spawner> {
    pub password: String,
    pub pool: Arc<Pool<S>>,
    /// Keep-alive connections to Node.js apps.
    pub http: http_session::Connections,
    /// The options of recent requests, parsed.
    pub options: app_options::OptionsCache,
}

impl<S: Spawner> RequestServer<S> {
    /// Accepts connections until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, listener: UnixListener, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let server = self.clone();
                        tokio::spawn(async move { server.handle(stream).await });
                    }
                    Err(e) => {
                        // EMFILE and the like: back off a little rather than spin.
                        tracing::error!(
                            "Accepting a connection on the core socket failed: {e}; retrying in 100 ms \
                             (if this is 'too many open files', raise the core's file descriptor limit)"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        tracing::info!("Stopped accepting requests on the core socket");
    }

    async fn handle(&self, mut conn: UnixStream) {
        let (header, mut early_body) = match read_header(&mut conn).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(HeaderProblem::Malformed(e)) => {
                tracing::warn!(
                    "Rejected a request on the core socket with 400: {e}. Only the nginx module \
                     should connect to this socket"
                );
                let body = format!("Bad Request: {e}\n");
                let _ = conn.write_all(plain_response(400, &body).as_bytes()).await;
                let _ = conn.shutdown().await;
                return;
            }
            Err(HeaderProblem::Timeout) => {
                tracing::warn!(
                    "Dropped a connection on the core socket: the SCGI header did not arrive within {} s",
                    HEADER_TIMEOUT.as_secs()
                );
                let _ = conn
                    .write_all(
                        plain_response(408, "Request header not received in time\n").as_bytes(),
                    )
                    .await;
                return;
            }
        };

        let authorised = header
            .get(CONNECT_PASSWORD)
            .is_some_and(|p| constant_time_eq(p, self.password.as_bytes()));
        if !authorised {
            tracing::warn!(
                "Rejected a request on the core socket with 403: {} password. Only the nginx \
                 module started with this instance knows it; a stale nginx worker from before a \
                 restart may cause this",
                if header.get(CONNECT_PASSWORD).is_some() {
                    "wrong"
                } else {
                    "missing"
                }
            );
            let _ = conn
                .write_all(plain_response(403, "Forbidden\n").as_bytes())
                .await;
            let _ = conn.shutdown().await;
            return;
        }

        let powered_by = response::powered_by(app_options::show_version_in_header(&header));
        let describe = describe_request(&header);
        // OOBW is the core's own pseudo-request to a process (out-of-band work); a client
        // must not be able to trigger that work.
        if header.get_str("REQUEST_METHOD") == Some("OOBW") {
            tracing::warn!("Refused {describe} with 405: OOBW is reserved for the core");
            let page = error_page(
                405,
                "This request method is not allowed.",
                None,
                &powered_by,
            );
            let _ = conn.write_all(&page).await;
            return;
        }
        let options = match self.options.get(&header) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("Cannot serve {describe}: {e}");
                let page = error_page(
                    500,
                    &format!("This request cannot be served: {e}."),
                    None,
                    &powered_by,
                );
                let _ = conn.write_all(&page).await;
                return;
            }
        };

        let sticky = if options.pool.sticky_sessions {
            sticky_cookie(&header, &options.pool.sticky_sessions_cookie_name)
        } else {
            None
        };
        // A process can die between checkout and connect (it crashed, and the pool has not
        // seen its exit yet): then nothing was sent, and the request goes to another one.
        let mut attempts = 0;
        loop {
            attempts += 1;
            // While the request waits for a process, nginx may give up on it (the client went
            // away): then it leaves the queue. The body is read meanwhile, so that the end of
            // the connection can be told from body bytes arriving.
            let checkout = tokio::select! {
                c = self.pool.checkout_sticky(&options, sticky) => c,
                _ = client_gone(&mut conn, &mut early_body, header.content_length) => {
                    tracing::debug!("{describe} abandoned by nginx while it waited for a process");
                    return;
                }
            };
            let checkout = match checkout {
                Ok(c) => c,
                Err(CheckoutError::Spawn(e)) => {
                    // The spawner has logged the details.
                    let page = spawn_error_page::render(&options, &e, &powered_by);
                    let _ = conn.write_all(&page).await;
                    return;
                }
                Err(e) => {
                    let status = e.status();
                    tracing::warn!(
                        "Cannot serve {describe} for {}: {e}; answered {status}",
                        options.app_root
                    );
                    let page = error_page(
                        status,
                        &format!("The application is not available: {e}."),
                        None,
                        &powered_by,
                    );
                    let _ = conn.write_all(&page).await;
                    return;
                }
            };

            let process = checkout.process.clone();
            let relaying = session::Relaying {
                powered_by: &powered_by,
                high_watermark: options.pool.response_buffer_high_watermark as usize,
                progress: session::Progress::default(),
                abort_upgraded_on_shutdown: options.pool.abort_websockets_on_process_shutdown,
                set_cookie: (options.pool.sticky_sessions && sticky != Some(process.sticky_id))
                    .then(|| {
                        sticky_set_cookie(
                            &options.pool.sticky_sessions_cookie_name,
                            process.sticky_id,
                            &options.pool.sticky_sessions_cookie_attributes,
                        )
                    }),
            };
            let forwarded = {
                let forwarding = async {
                    match process.protocol {
                        SocketProtocol::HttpSession => {
                            http_session::forward(
                                &mut conn,
                                &header,
                                &early_body,
                                &process,
                                &self.http,
                                &relaying,
                            )
                            .await
                        }
                        _ => {
                            session::forward(&mut conn, &header, &early_body, &process, &relaying)
                                .await
                        }
                    }
                };
                within_max_request_time(forwarding, &relaying, options.pool.max_request_time).await
            };
            let Some(forwarded) = forwarded else {
                // The request ran too long: its process is killed (and replaced as a crashed
                // one would be).
                drop(checkout);
                self.pool.detach(&process);
                self.http.forget(&process);
                kill_process(process.pid);
                let limit = options.pool.max_request_time;
                if relaying.progress.head_sent() {
                    tracing::error!(
                        "App {} of group {:?} ran {describe} longer than passenger_max_request_time \
                         ({limit} s); killed the process (SIGKILL); the response was cut short",
                        process.pid,
                        options.group_name
                    );
                } else {
                    tracing::error!(
                        "App {} of group {:?} ran {describe} longer than passenger_max_request_time \
                         ({limit} s); killed the process (SIGKILL) and answered 504",
                        process.pid,
                        options.group_name
                    );
                    let page = error_page(
                        504,
                        "The web application took too long to answer.",
                        None,
                        &powered_by,
                    );
                    let _ = conn.write_all(&page).await;
                }
                let _ = conn.shutdown().await;
                return;
            };
            match forwarded {
                Ok(forwarded) => {
                    tracing::debug!("Served {describe} with app {}", process.pid);
                    // The app is done: its process is released before the rest of the
                    // response goes to a possibly slow client. Out-of-band work is asked for
                    // before the release, so that no other request slips in.
                    let oob_ready = if forwarded.oob_work {
                        self.pool.request_oob_work(&process)
                    } else {
                        None
                    };
                    self.enforce_memory_limit(&process, &options);
                    drop(checkout);
                    if let Err(e) = forwarded.backlog.write_to(&mut conn).await {
                        tracing::debug!(
                            "{describe}: nginx went away before the end of the response: {e}"
                        );
                    }
                    if let Some(ready) = oob_ready {
                        let _ = conn.shutdown().await;
                        drop(conn);
                        if ready.await.is_ok() {
                            session::out_of_band_work(&process).await;
                        }
                        self.pool.finish_oob_work(&process);
                        return;
                    }
                }
                Err(SessionError::ConnectFailed(message)) if attempts < MAX_ATTEMPTS => {
                    drop(checkout);
                    self.pool.detach(&process);
                    self.http.forget(&process);
                    tracing::warn!(
                        "{describe}: {message}; the process is taken out of the pool and the \
                         request goes to another one"
                    );
                    continue;
                }
                Err(SessionError::ConnectFailed(message)) => {
                    drop(checkout);
                    self.pool.detach(&process);
                    self.http.forget(&process);
                    tracing::error!("{describe} failed with 502: {message}, {attempts} times");
                    let page = error_page(
                        502,
                        "The web application could not be reached.",
                        None,
                        &powered_by,
                    );
                    let _ = conn.write_all(&page).await;
                }
                Err(SessionError::BadGateway { message, dead }) => {
                    drop(checkout);
                    if dead {
                        self.pool.detach(&process);
                        self.http.forget(&process);
                        tracing::error!(
                            "{describe} failed with 502: {message}; the process is taken out of \
                             the pool and the next request goes to another one"
                        );
                    } else {
                        tracing::error!(
                            "{describe} failed with 502: {message}; fix the app's response"
                        );
                    }
                    let page = error_page(
                        502,
                        "The web application did not send a valid response.",
                        None,
                        &powered_by,
                    );
                    let _ = conn.write_all(&page).await;
                }
                Err(SessionError::ClientGone(message)) => {
                    tracing::debug!("{describe} abandoned: {message}");
                }
            }
            // Dropping the connection closes it: nginx sees the end of the response (a
            // shutdown() first would only cost a system call).
            return;
        }
    }
}

impl<S: Spawner> RequestServer<S> {
    /// `passenger_memory_limit`: after a request, a process whose private memory exceeds the
    /// limit is recycled (it finishes its requests, then stops, and is replaced).
    fn enforce_memory_limit(&self, process: &Process, options: &AppOptions) {
        let limit = options.pool.memory_limit;
        if limit == 0 {
            return;
        }
        let Some(bytes) = memory::private_bytes(process.pid) else {
            return;
        };
        if memory::over_limit(bytes, limit) && self.pool.recycle(process) {
            tracing::warn!(
                "App {} of group {:?} uses {} MB of private memory, more than \
                 passenger_memory_limit ({limit} MB); shutting it down gracefully, a new process \
                 replaces it",
                process.pid,
                options.group_name,
                bytes / (1024 * 1024)
            );
        }
    }
}

/// The sticky session id in the request's `name` cookie (the first one that is a number).
fn sticky_cookie(header: &ScgiHeader, name: &str) -> Option<u32> {
    header
        .get_str("HTTP_COOKIE")?
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .find_map(|(_, v)| v.trim().trim_matches('"').parse().ok())
}

/// The Set-Cookie value that binds a client to process `id`.
fn sticky_set_cookie(name: &str, id: u32, attributes: &str) -> String {
    match attributes.trim() {
        "" => format!("{name}={id}"),
        a => format!("{name}={id}; {a}"),
    }
}

/// Runs `forwarding` (one request in a process) within `max_request_time` seconds (0 = no
/// limit); `None` when it ran longer. An upgraded connection (a tunnel) is a conversation, not a
/// request: once the app switched protocols the limit no longer applies.
async fn within_max_request_time<T>(
    forwarding: impl Future<Output = T>,
    relaying: &session::Relaying<'_>,
    max_request_time: u64,
) -> Option<T> {
    if max_request_time == 0 {
        return Some(forwarding.await);
    }
    tokio::pin!(forwarding);
    tokio::select! {
        done = &mut forwarding => return Some(done),
        _ = tokio::time::sleep(Duration::from_secs(max_request_time)) => {}
    }
    if relaying.progress.upgraded() {
        Some(forwarding.await)
    } else {
        None
    }
}

/// SIGKILL to an app process and its process group (each app process leads its own).
fn kill_process(pid: u32) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(pid as i32);
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = kill(pid, Signal::SIGKILL);
}

/// Processes a request tries when their sockets refuse connections.
const MAX_ATTEMPTS: u32 = 3;

/// Most of a request body kept in memory while the request waits for a process; beyond it the
/// rest stays in the socket (and a client leaving is not noticed until the request is served).
const MAX_WAITING_BODY: usize = 8 * 1024 * 1024;

/// Completes when nginx closes the connection (the client went away). Reads the rest of the
/// request body into `body` meanwhile; never completes while the body is larger than
/// [`MAX_WAITING_BODY`].
async fn client_gone(conn: &mut UnixStream, body: &mut Vec<u8>, content_length: u64) {
    use bytes::BufMut;
    loop {
        let missing = content_length.saturating_sub(body.len() as u64) as usize;
        if missing > 0 && body.len() >= MAX_WAITING_BODY {
            return std::future::pending().await;
        }
        // Straight into the body (read_buf is cancel-safe, and does not zero memory first).
        let read = if missing > 0 {
            body.reserve(missing.min(WAITING_READ));
            let spare = body.capacity() - body.len();
            conn.read_buf(&mut (&mut *body).limit(missing.min(spare)))
                .await
        } else {
            // Bytes beyond the body: nothing nginx should send; read to see EOF, ignored.
            let mut scratch = [0u8; 256];
            conn.read(&mut scratch).await
        };
        if matches!(read, Ok(0) | Err(_)) {
            return;
        }
    }
}

/// The most read at once while a request waits.
const WAITING_READ: usize = 64 * 1024;

/// What a read of the SCGI header asks for at once (a typical header is 1 to 3 KiB).
const HEADER_READ: usize = 8 * 1024;

enum HeaderProblem {
    Malformed(scgi::ScgiError),
    Timeout,
}

/// Reads the SCGI header incrementally. `Ok(None)`: nginx closed before sending a whole header.
async fn read_header(
    conn: &mut UnixStream,
) -> Result<Option<(ScgiHeader, Vec<u8>)>, HeaderProblem> {
    let read = async {
        let mut buf = Vec::with_capacity(HEADER_READ);
        loop {
            if buf.capacity() - buf.len() < HEADER_READ / 2 {
                buf.reserve(HEADER_READ);
            }
            match conn.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    if !buf.is_empty() {
                        tracing::debug!(
                            "A connection on the core socket closed after {} bytes, before its SCGI header was complete",
                            buf.len()
                        );
                    }
                    return Ok(None);
                }
                Ok(_) => {}
            }
            match scgi::decode(&buf, DEFAULT_MAX_HEADER) {
                Ok(Some((header, used))) => return Ok(Some((header, buf.split_off(used)))),
                Ok(None) => continue,
                Err(e) => return Err(HeaderProblem::Malformed(e)),
            }
        }
    };
    tokio::time::timeout(HEADER_TIMEOUT, read)
        .await
        .unwrap_or(Err(HeaderProblem::Timeout))
}

/// `GET /path` for log lines.
fn describe_request(h: &ScgiHeader) -> String {
    let method = h.get_str("REQUEST_METHOD").unwrap_or("?");
    let uri = h
        .get_str("REQUEST_URI")
        .or_else(|| h.get_str("PATH_INFO"))
        .unwrap_or("?");
    format!("request {method} {uri}")
}

fn plain_response(status: u16, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        response::canonical_reason(status),
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_session_cookies() {
        let raw = scgi::encode(
            [
                ("CONTENT_LENGTH", "0"),
                (
                    "HTTP_COOKIE",
                    "a=1; _passenger_route=x; _passenger_route=42; b=2",
                ),
            ]
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        );
        let header = scgi::decode(&raw, DEFAULT_MAX_HEADER).unwrap().unwrap().0;
        assert_eq!(sticky_cookie(&header, "_passenger_route"), Some(42));
        assert_eq!(sticky_cookie(&header, "b"), Some(2));
        assert_eq!(sticky_cookie(&header, "route"), None);
        assert_eq!(
            sticky_set_cookie("_passenger_route", 7, "SameSite=Lax; Secure;"),
            "_passenger_route=7; SameSite=Lax; Secure;"
        );
        assert_eq!(sticky_set_cookie("r", 7, ""), "r=7");
    }
}
