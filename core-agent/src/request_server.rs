//! The request server: accepts nginx's connections on the core socket, reads and checks the
//! SCGI header, and hands each request to the pool and a session. Each connection is its own
//! task; a bad one affects nobody else.

use crate::app_options::{self, AppOptions};
use crate::http_session;
use crate::memory;
use crate::pool::{Checkout, CheckoutError, Pool, Process, Spawner};
use crate::response::{self, error_page};
use crate::session::{self, SessionError};
use crate::spawn_error_page;
use passenger_protocol::constant_time_eq;
use passenger_protocol::loader::SocketProtocol;
use passenger_protocol::options::CONNECT_PASSWORD;
use passenger_protocol::scgi::{self, DEFAULT_MAX_HEADER, ScgiHeader};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// How long nginx may take to send the whole SCGI header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection may wait for the first byte of its next request; then the rest of
/// the header has [`HEADER_TIMEOUT`]. nginx keeps idle connections to the core for reuse.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(600);
/// Most of a request body the app left unread that is read and dropped to keep the
/// connection; a longer rest closes it instead.
const MAX_DRAIN: u64 = 1024 * 1024;
/// How long that may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RequestServer<S: Spawner> {
    pub password: String,
    pub pool: Arc<Pool<S>>,
    /// Keep-alive connections to Node.js apps.
    pub http: http_session::Connections,
    /// Kept session-protocol connections to Ruby and Python apps.
    pub sessions: session::IdleSessions,
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
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move { server.handle(stream, shutdown).await });
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

    /// Serves the requests nginx sends on one connection, one after the other, for as long as
    /// each response is framed (see [`response::framed_length`]) and went through whole.
    /// An idle connection closes when the core shuts down.
    async fn handle(&self, mut conn: UnixStream, mut shutdown: watch::Receiver<bool>) {
        let mut idle = None;
        // Bytes read beyond a request body: the start of the next request.
        let mut pending = Vec::new();
        loop {
            let stopping = async {
                if shutdown.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let read = read_header(&mut conn, idle, stopping, std::mem::take(&mut pending));
            let (header, mut early_body) = match read.await {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(HeaderProblem::Idle) => {
                    tracing::debug!(
                        "Closed a connection on the core socket: no further request within {} s",
                        KEEPALIVE_IDLE.as_secs()
                    );
                    return;
                }
                Err(HeaderProblem::Stopping) => {
                    tracing::debug!("Closed an idle connection on the core socket: shutting down");
                    return;
                }
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
            if !self.serve_one(&mut conn, &header, &mut early_body).await {
                return;
            }
            pending = early_body.split_off(early_body.len().min(header.content_length as usize));
            idle = Some(KEEPALIVE_IDLE);
        }
    }

    /// Serves one request; true when the connection can carry the next one (its response was
    /// framed and written whole, and its body was read whole). Dropping the connection closes
    /// it: nginx sees the end of an unframed response.
    async fn serve_one(
        &self,
        conn: &mut UnixStream,
        header: &ScgiHeader,
        early_body: &mut Vec<u8>,
    ) -> bool {
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
            return false;
        }

        let powered_by = response::powered_by(app_options::show_version_in_header(header));
        let describe = DescribeRequest(header);
        let method = header.get_str("REQUEST_METHOD");
        // OOBW is the core's own pseudo-request to a process (out-of-band work); a client
        // must not be able to trigger that work.
        if method == Some("OOBW") {
            tracing::warn!("Refused {describe} with 405: OOBW is reserved for the core");
            let page = error_page(405, "This request method is not allowed.", None, powered_by);
            let _ = conn.write_all(&page).await;
            return false;
        }
        let options = match self.options.get(header) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("Cannot serve {describe}: {e}");
                let page = error_page(
                    500,
                    &format!("This request cannot be served: {e}."),
                    None,
                    powered_by,
                );
                let _ = conn.write_all(&page).await;
                return false;
            }
        };

        let sticky = if options.pool.sticky_sessions {
            sticky_cookie(header, &options.pool.sticky_sessions_cookie_name)
        } else {
            None
        };
        // A request without a body that only reads can be sent again if a process closes its
        // connection without answering: such a request may go ahead to a busy process.
        let replayable = header.content_length == 0 && matches!(method, Some("GET" | "HEAD"));
        // A process can die between checkout and connect (it crashed, and the pool has not
        // seen its exit yet): then nothing was sent, and the request goes to another one.
        let mut attempts = 0;
        loop {
            attempts += 1;
            // While the request waits for a process, nginx may give up on it (the client went
            // away): then it leaves the queue. The body is read meanwhile, so that the end of
            // the connection can be told from body bytes arriving.
            // Biased: a free process is taken without a read of the connection first (one that
            // would, as a rule, find nothing).
            let checkout = tokio::select! {
                biased;
                c = self.pool.checkout_for(&options, sticky, replayable) => c,
                _ = client_gone(conn, early_body, header.content_length) => {
                    tracing::debug!("{describe} abandoned by nginx while it waited for a process");
                    return false;
                }
            };
            let checkout = match checkout {
                Ok(c) => c,
                Err(CheckoutError::Spawn(e)) => {
                    // The spawner has logged the details.
                    let page = spawn_error_page::render(&options, &e, powered_by);
                    let _ = conn.write_all(&page).await;
                    return false;
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
                        powered_by,
                    );
                    let _ = conn.write_all(&page).await;
                    return false;
                }
            };

            let process = checkout.process.clone();
            let relaying = session::Relaying {
                powered_by,
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
                head_request: method == Some("HEAD"),
            };
            let forwarded = {
                let forwarding = async {
                    match process.protocol {
                        SocketProtocol::HttpSession => {
                            http_session::forward(
                                conn, header, early_body, &process, &self.http, &relaying,
                            )
                            .await
                        }
                        _ => {
                            session::forward(
                                conn,
                                header,
                                early_body,
                                &process,
                                &self.sessions,
                                &relaying,
                            )
                            .await
                        }
                    }
                };
                within_max_request_time(forwarding, &relaying, options.pool.max_request_time).await
            };
            let Some(forwarded) = forwarded else {
                // The request ran too long: its process is killed (and replaced as a crashed
                // one would be).
                self.take_out(checkout);
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
                        powered_by,
                    );
                    let _ = conn.write_all(&page).await;
                }
                let _ = conn.shutdown().await;
                return false;
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
                    if let Err(e) = forwarded.backlog.write_to(conn).await {
                        tracing::debug!(
                            "{describe}: nginx went away before the end of the response: {e}"
                        );
                        return false;
                    }
                    if let Some(ready) = oob_ready {
                        // The end of the response for nginx; the connection closes once the
                        // work is done.
                        let _ = conn.shutdown().await;
                        if ready.await.is_ok() {
                            // Its loader's threads must be free to accept the request for it.
                            self.sessions.forget(&process);
                            session::out_of_band_work(&process).await;
                        }
                        self.pool.finish_oob_work(&process);
                        return false;
                    }
                    return forwarded.framed_complete
                        && drain_body(conn, forwarded.body_unread).await;
                }
                Err(SessionError::ConnectFailed(message)) if attempts < MAX_ATTEMPTS => {
                    self.take_out(checkout);
                    tracing::warn!(
                        "{describe}: {message}; the process is taken out of the pool and the \
                         request goes to another one"
                    );
                    continue;
                }
                Err(SessionError::ConnectFailed(message)) => {
                    self.take_out(checkout);
                    tracing::error!("{describe} failed with 502: {message}, {attempts} times");
                    let page = error_page(
                        502,
                        "The web application could not be reached.",
                        None,
                        powered_by,
                    );
                    let _ = conn.write_all(&page).await;
                }
                // A request sent ahead whose process died (or closed its connection) before
                // answering goes to another one, as it would have from the queue: it may have
                // begun, but it only reads (nginx's proxy_next_upstream sends such a request
                // again too).
                Err(SessionError::BadGateway {
                    message,
                    dead: true,
                }) if checkout.prefetched
                    && replayable
                    && !relaying.progress.head_sent()
                    && attempts < MAX_ATTEMPTS =>
                {
                    self.take_out(checkout);
                    tracing::warn!(
                        "{describe}: {message}; it was sent ahead to that process, which is \
                         taken out of the pool, and goes to another one"
                    );
                    continue;
                }
                Err(SessionError::BadGateway { message, dead }) => {
                    if dead {
                        self.take_out(checkout);
                        tracing::error!(
                            "{describe} failed with 502: {message}; the process is taken out of \
                             the pool and the next request goes to another one"
                        );
                    } else {
                        drop(checkout);
                        tracing::error!(
                            "{describe} failed with 502: {message}; fix the app's response"
                        );
                    }
                    let page = error_page(
                        502,
                        "The web application did not send a valid response.",
                        None,
                        powered_by,
                    );
                    let _ = conn.write_all(&page).await;
                }
                Err(SessionError::ClientGone(message)) => {
                    tracing::debug!("{describe} abandoned: {message}");
                }
            }
            // The caller drops the connection: nginx sees the end of the response.
            return false;
        }
    }
}

impl<S: Spawner> RequestServer<S> {
    /// Ends a session whose process turned out unusable (it crashed, refused the connection, or
    /// ran a request too long): the process leaves the pool and is asked to stop, and the kept
    /// connections to it are closed.
    fn take_out(&self, checkout: Checkout) {
        let process = checkout.process.clone();
        drop(checkout);
        self.pool.detach(&process);
        self.http.forget(&process);
        self.sessions.forget(&process);
    }

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
/// request body into `body` meanwhile (and what comes after it); never completes while the
/// body is larger than [`MAX_WAITING_BODY`].
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
            // Bytes beyond the body would start the next request (nginx sends none before the
            // response is complete): kept for it, within reason. Read to see EOF, into a small
            // buffer here: as a rule nothing comes, and most requests wait a little.
            let beyond = body.len() - content_length as usize;
            if beyond >= HEADER_READ {
                return std::future::pending().await;
            }
            let mut chunk = [0u8; 512];
            let want = chunk.len().min(HEADER_READ - beyond);
            let read = conn.read(&mut chunk[..want]).await;
            if let Ok(n) = read {
                body.extend_from_slice(&chunk[..n]);
            }
            read
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
    /// No byte of a next request within the idle time.
    Idle,
    /// The core shuts down while the connection waits for a next request.
    Stopping,
}

/// Reads the SCGI header incrementally. `Ok(None)`: nginx closed before sending a whole header.
/// With `idle` (a request after the first on the connection), the header may start that late;
/// then the whole of it has [`HEADER_TIMEOUT`]; until it starts, `stopping` ends the wait.
/// `buf` holds what was already read of it.
async fn read_header(
    conn: &mut UnixStream,
    idle: Option<Duration>,
    stopping: impl Future<Output = ()>,
    mut buf: Vec<u8>,
) -> Result<Option<(ScgiHeader, Vec<u8>)>, HeaderProblem> {
    if let Some(idle) = idle.filter(|_| buf.is_empty()) {
        // The buffer is allocated once bytes are there: an idle connection holds none.
        let deadline = tokio::time::Instant::now() + idle;
        tokio::pin!(stopping);
        tokio::select! {
            read = tokio::time::timeout_at(deadline, read_when_ready(conn, &mut buf)) => match read {
                Err(_) => return Err(HeaderProblem::Idle),
                Ok(Ok(0) | Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            },
            _ = &mut stopping => return Err(HeaderProblem::Stopping),
        }
    }
    let read = async {
        loop {
            if !buf.is_empty() {
                match scgi::decode(&buf, DEFAULT_MAX_HEADER) {
                    Ok(Some((header, used))) => return Ok(Some((header, buf.split_off(used)))),
                    Ok(None) => {}
                    Err(e) => return Err(HeaderProblem::Malformed(e)),
                }
            }
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
        }
    };
    tokio::time::timeout(HEADER_TIMEOUT, read)
        .await
        .unwrap_or(Err(HeaderProblem::Timeout))
}

/// Reads the next bytes of `conn` into `buf`, which gets room for them only once they are
/// there: a connection waiting for its next request holds no buffer. The read goes through
/// `AsyncRead`, whose short read tells tokio the socket is drained; a `try_read` would leave
/// the readiness set, and the next wait would start with a read that finds nothing.
async fn read_when_ready(conn: &mut UnixStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::task::Poll;
    std::future::poll_fn(|cx| {
        std::task::ready!(conn.poll_read_ready(cx))?;
        buf.reserve(HEADER_READ);
        let mut spare = tokio::io::ReadBuf::uninit(buf.spare_capacity_mut());
        match std::pin::Pin::new(&mut *conn).poll_read(cx, &mut spare) {
            Poll::Ready(Ok(())) => {
                let n = spare.filled().len();
                // SAFETY: poll_read initialised the first `n` spare bytes.
                unsafe { buf.set_len(buf.len() + n) };
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Readiness left set (by a read that filled its buffer) found nothing: wait on,
            // without the room reserved for nothing (only when it held nothing before).
            Poll::Pending => {
                if buf.is_empty() {
                    *buf = Vec::new();
                }
                Poll::Pending
            }
        }
    })
    .await
}

/// Reads and drops the `unread` rest of a request body the app did not read; false when the
/// connection cannot carry another request (too much left, too slow, or closed).
async fn drain_body(conn: &mut UnixStream, unread: u64) -> bool {
    if unread == 0 {
        return true;
    }
    if unread > MAX_DRAIN {
        return false;
    }
    let (mut rest, mut sink) = ((&mut *conn).take(unread), tokio::io::sink());
    let drain = tokio::io::copy(&mut rest, &mut sink);
    matches!(
        tokio::time::timeout(DRAIN_TIMEOUT, drain).await,
        Ok(Ok(n)) if n == unread
    )
}

/// `request GET /path` for log lines; formatted only when a line is written.
struct DescribeRequest<'a>(&'a ScgiHeader);

impl std::fmt::Display for DescribeRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = self.0;
        let method = h.get_str("REQUEST_METHOD").unwrap_or("?");
        let uri = h
            .get_str("REQUEST_URI")
            .or_else(|| h.get_str("PATH_INFO"))
            .unwrap_or("?");
        write!(f, "request {method} {uri}")
    }
}

/// A response of the core's own, after which it closes the connection.
fn plain_response(status: u16, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        response::canonical_reason(status),
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{AppAddress, SpawnError, SpawnedProcess};
    use passenger_protocol::options;
    use std::path::PathBuf;
    use tokio::sync::oneshot;

    fn scgi_request(pairs: &[(&str, &str)], body: &str) -> Vec<u8> {
        let length = body.len().to_string();
        let mut out = scgi::encode(
            [("CONTENT_LENGTH", length.as_str())]
                .iter()
                .chain(pairs)
                .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        );
        out.extend_from_slice(body.as_bytes());
        out
    }

    async fn never() {
        std::future::pending().await
    }

    #[tokio::test]
    async fn requests_back_to_back_are_read_one_after_the_other() {
        let (mut core, mut nginx) = UnixStream::pair().unwrap();
        let mut both = scgi_request(&[("REQUEST_URI", "/1")], "abc");
        both.extend(scgi_request(&[("REQUEST_URI", "/2")], ""));
        nginx.write_all(&both).await.unwrap();

        let (h, mut early) = read_header(&mut core, None, never(), Vec::new())
            .await
            .ok()
            .unwrap()
            .unwrap();
        assert_eq!(h.get_str("REQUEST_URI"), Some("/1"));
        let next = early.split_off(h.content_length as usize);
        assert_eq!(early, b"abc");
        let idle = Some(Duration::from_secs(5));
        let (h, early) = read_header(&mut core, idle, never(), next)
            .await
            .ok()
            .unwrap()
            .unwrap();
        assert_eq!(h.get_str("REQUEST_URI"), Some("/2"));
        assert!(early.is_empty());

        // A third one comes later, in pieces.
        let third = scgi_request(&[("REQUEST_URI", "/3")], "");
        let (a, b) = third.split_at(5);
        let (a, b) = (a.to_vec(), b.to_vec());
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            nginx.write_all(&a).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            nginx.write_all(&b).await.unwrap();
            nginx
        });
        let (h, _) = read_header(&mut core, idle, never(), Vec::new())
            .await
            .ok()
            .unwrap()
            .unwrap();
        assert_eq!(h.get_str("REQUEST_URI"), Some("/3"));

        // Then nginx closes the idle connection: a quiet end.
        drop(writer.await.unwrap());
        assert!(matches!(
            read_header(&mut core, idle, never(), Vec::new()).await,
            Ok(None)
        ));
    }

    #[tokio::test]
    async fn an_idle_connection_ends_after_the_idle_time_or_at_shutdown() {
        let (mut core, _nginx) = UnixStream::pair().unwrap();
        let idle = Some(Duration::from_millis(30));
        assert!(matches!(
            read_header(&mut core, idle, never(), Vec::new()).await,
            Err(HeaderProblem::Idle)
        ));
        assert!(matches!(
            read_header(&mut core, Some(KEEPALIVE_IDLE), async {}, Vec::new()).await,
            Err(HeaderProblem::Stopping)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_request_has_the_header_timeout_and_no_idle_wait() {
        let (mut core, nginx) = UnixStream::pair().unwrap();
        // `stopping` does not apply to the first request either.
        assert!(matches!(
            read_header(&mut core, None, async {}, Vec::new()).await,
            Err(HeaderProblem::Timeout)
        ));
        drop(nginx);
        assert!(matches!(
            read_header(&mut core, None, never(), Vec::new()).await,
            Ok(None)
        ));
    }

    /// "Spawns" an app played by a task on a unix socket: it answers each session with the
    /// request URI and body, framed unless the URI is `/unframed`, and keeps each connection
    /// for the next request after a framed response, as the loaders do. It counts the
    /// connections it accepted.
    struct FakeApp(PathBuf, Arc<std::sync::atomic::AtomicUsize>);

    impl Spawner for FakeApp {
        async fn spawn(&self, _: &AppOptions, _: u64) -> Result<SpawnedProcess, SpawnError> {
            let path = self.0.join("app.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let accepted = self.1.clone();
            tokio::spawn(async move {
                while let Ok((s, _)) = listener.accept().await {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::spawn(serve_fake_sessions(s));
                }
            });
            let (stop, _) = oneshot::channel();
            let (_exit, exited) = oneshot::channel();
            // Kept forever: the process never exits.
            std::mem::forget(_exit);
            Ok(SpawnedProcess {
                pid: 1_000_000,
                address: AppAddress::Unix(path),
                protocol: SocketProtocol::Session,
                concurrency: 1,
                prefetch: 0,
                password: "app-pw".into(),
                stop,
                exited,
            })
        }
    }

    async fn serve_fake_sessions(mut s: UnixStream) {
        let mut buf = Vec::new();
        // After `/drop-next`, the next request on the connection is read and not answered: the
        // connection closes under it (as when a loader stops).
        let mut drop_next = false;
        loop {
            let (pairs, used) = loop {
                if let Some(done) =
                    passenger_protocol::session::decode_header(&buf, 1 << 20).unwrap()
                {
                    break done;
                }
                if s.read_buf(&mut buf).await.unwrap() == 0 {
                    return;
                }
            };
            let get = |k: &[u8]| {
                let v = &pairs.iter().find(|(n, _)| n == k).unwrap().1;
                String::from_utf8(v.clone()).unwrap()
            };
            let mut body = buf.split_off(used);
            let length: usize = get(b"CONTENT_LENGTH").parse().unwrap();
            while body.len() < length {
                s.read_buf(&mut body).await.unwrap();
            }
            buf = body.split_off(length);
            if drop_next {
                return;
            }
            drop_next = get(b"REQUEST_URI") == "/drop-next";
            let text = format!("{} {}", get(b"REQUEST_URI"), String::from_utf8_lossy(&body));
            if get(b"REQUEST_URI") == "/unframed" {
                let response = format!("Status: 200\r\nConnection: close\r\n\r\n{text}");
                s.write_all(response.as_bytes()).await.unwrap();
                return;
            }
            let shown = if get(b"REQUEST_METHOD") == "HEAD" {
                ""
            } else {
                &text
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{shown}",
                text.len()
            );
            s.write_all(response.as_bytes()).await.unwrap();
        }
    }

    /// Reads one response of nginx's: its head, and the body by its Content-Length, or to EOF.
    async fn response(nginx: &mut UnixStream) -> (String, String) {
        let mut buf = Vec::new();
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map(|l| l.parse::<usize>().unwrap());
                if length.is_some_and(|l| body.len() >= l) {
                    return (head.to_string(), body.to_string());
                }
            }
            if nginx.read_buf(&mut buf).await.unwrap() == 0 {
                let text = String::from_utf8(buf).unwrap();
                let (head, body) = text.split_once("\r\n\r\n").unwrap();
                return (head.to_string(), body.to_string());
            }
        }
    }

    /// nginx's end of a new connection to `server`, and the task serving it.
    fn connection_to(
        server: &Arc<RequestServer<FakeApp>>,
    ) -> (UnixStream, tokio::task::JoinHandle<()>) {
        let (core, nginx) = UnixStream::pair().unwrap();
        let server = server.clone();
        let serving = tokio::spawn(async move {
            // The sender lives as long as the connection: the core is not shutting down.
            let (_shutdown_tx, shutdown) = watch::channel(false);
            server.handle(core, shutdown).await
        });
        (nginx, serving)
    }

    #[tokio::test]
    async fn one_connection_carries_requests_until_a_response_is_unframed() {
        let dir = std::env::temp_dir().join(format!("request-server-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server = Arc::new(RequestServer {
            password: "core-pw".into(),
            pool: Pool::new(FakeApp(dir.clone(), accepted.clone())),
            http: http_session::Connections::default(),
            sessions: session::IdleSessions::default(),
            options: app_options::OptionsCache::default(),
        });
        let (mut nginx, serving) = connection_to(&server);
        let request = |uri: &str, method: &str, body: &str| {
            scgi_request(
                &[
                    (CONNECT_PASSWORD, "core-pw"),
                    (options::APP_ROOT, "/nonexistent/app"),
                    (options::APP_TYPE, "rack"),
                    ("REQUEST_METHOD", method),
                    ("REQUEST_URI", uri),
                ],
                body,
            )
        };

        nginx
            .write_all(&request("/1", "POST", "one"))
            .await
            .unwrap();
        let (head, body) = response(&mut nginx).await;
        assert!(!head.contains("Connection"), "{head}");
        assert_eq!(body, "/1 one");
        nginx.write_all(&request("/2", "GET", "")).await.unwrap();
        let (head, body) = response(&mut nginx).await;
        assert!(!head.contains("Connection"), "{head}");
        assert_eq!(body, "/2 ");
        // A HEAD's response is not framed: the connection closes after it.
        nginx.write_all(&request("/3", "HEAD", "")).await.unwrap();
        let (head, _) = response(&mut nginx).await;
        assert!(head.ends_with("\r\nConnection: close"), "{head}");
        serving.await.unwrap();

        // Nor is a response without a length; and a wrong password is refused on a reused
        // connection too.
        let (mut nginx, serving) = connection_to(&server);
        nginx
            .write_all(&request("/unframed", "GET", ""))
            .await
            .unwrap();
        let (head, body) = response(&mut nginx).await;
        assert!(head.ends_with("\r\nConnection: close"), "{head}");
        assert_eq!(body, "/unframed ");
        serving.await.unwrap();

        let (mut nginx, serving) = connection_to(&server);
        nginx.write_all(&request("/4", "GET", "")).await.unwrap();
        assert_eq!(response(&mut nginx).await.1, "/4 ");
        let mut bad = request("/5", "GET", "");
        let at = bad.windows(7).position(|w| w == b"core-pw").unwrap();
        bad[at] = b'X';
        nginx.write_all(&bad).await.unwrap();
        let (head, _) = response(&mut nginx).await;
        assert!(head.starts_with("HTTP/1.1 403 ") && head.ends_with("\r\nConnection: close"));
        serving.await.unwrap();
        // The app's side: /1, /2, HEAD /3 and /unframed went over one connection, which the
        // app closed after the unframed response; /4 opened the second.
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);

        // A kept connection that closes under a request: the request goes again on a new one.
        let (mut nginx, serving) = connection_to(&server);
        for uri in ["/drop-next", "/6", "/7"] {
            nginx.write_all(&request(uri, "GET", "")).await.unwrap();
            let (head, body) = response(&mut nginx).await;
            assert!(head.starts_with("HTTP/1.1 200 "), "{uri}: {head}");
            assert_eq!(body, format!("{uri} "));
        }
        drop(nginx);
        serving.await.unwrap();
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

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
