//! One request/response exchange with an app process over the session protocol: the CGI
//! environment and body go to the app's unix socket, its response comes back, gets a
//! normalised head, and is streamed to nginx. A connection whose response the app delimited
//! is kept for the process's next request (the rules: `passenger_protocol::session`).

use crate::pool::{AppAddress, Process};
use crate::relay::{self, Backlog};
use crate::response::{self, MAX_HEAD, ResponseHead};
use bytes::Bytes;
use passenger_protocol::options::CONNECT_PASSWORD;
use passenger_protocol::scgi::ScgiHeader;
use passenger_protocol::session::{encode_header, encode_header_sized};
use std::sync::atomic::{AtomicU8, Ordering};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

const COPY_BUFFER: usize = 64 * 1024;
/// The first read of a response asks for this much: a typical head and a small body.
const HEAD_READ: usize = 8 * 1024;

#[derive(Debug, Error)]
pub enum SessionError {
    /// Nothing has been sent to nginx; answer 502. `dead` says the process looks gone.
    #[error("{message}")]
    BadGateway { message: String, dead: bool },
    /// The app's socket refused the connection: nothing was sent, the request can go to
    /// another process.
    #[error("{0}")]
    ConnectFailed(String),
    /// nginx went away or sent a short body; nothing more can be said to it.
    #[error("{0}")]
    ClientGone(String),
}

/// What happened to the request body on its way to the app.
enum Upload {
    Done,
    /// The app stopped reading; its response (if any) still counts.
    AppClosed,
}

/// Connects to the app's socket; a refusal means nothing was sent, so the request can go to
/// another process.
pub async fn connect(process: &Process) -> Result<UnixStream, SessionError> {
    let failed = |e: &dyn std::fmt::Display| {
        SessionError::ConnectFailed(format!(
            "could not connect to app {} on {}: {e}",
            process.pid, process.address
        ))
    };
    match &process.address {
        AppAddress::Unix(path) => UnixStream::connect(path).await.map_err(|e| failed(&e)),
        AppAddress::Tcp(_) => Err(failed(&"the session protocol needs a unix socket")),
    }
}

/// Connects to an app that listens on TCP (a generic app); a refusal, as with
/// [`connect`], means nothing was sent.
pub async fn connect_tcp(
    process: &Process,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpStream, SessionError> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
        SessionError::ConnectFailed(format!(
            "could not connect to app {} on {}: {e}",
            process.pid, process.address
        ))
    })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Session connections whose loader keeps them for the next request (see
/// [`crate::response::app_body_length`]).
pub type IdleSessions = crate::idle_connections::IdleConnections<UnixStream>;

/// Response header by which an app asks for out-of-band work after this request (Phusion
/// Passenger's name); it is never passed on to the client.
pub const OOB_WORK_HEADER: &str = "!~Request-OOB-Work";

/// What came of a forwarded request. The app is done with it; the `backlog` of its response
/// still has to be written to nginx (after the process has been released).
#[derive(Default)]
pub struct Forwarded {
    /// The app asked for out-of-band work.
    pub oob_work: bool,
    pub backlog: Backlog,
    /// The response was framed (its head has no `Connection: close`) and its whole body went
    /// through (once the backlog is written): the connection to nginx may carry another
    /// request.
    pub framed_complete: bool,
    /// Bytes of the request body still unread in the connection to nginx.
    pub body_unread: u64,
}

/// How a response is passed on to nginx, and how far that got.
pub struct Relaying<'a> {
    /// The `X-Powered-By` value.
    pub powered_by: &'a str,
    /// Bytes of the response held for a slow client before the core stops reading the app
    /// (`passenger_response_buffer_high_watermark`).
    pub high_watermark: usize,
    /// How far the response got (read by the request server when it gives up on a request).
    pub progress: Progress,
    /// A `Set-Cookie` value added to the response (the sticky session cookie).
    pub set_cookie: Option<String>,
    /// An upgraded connection closes when the pool shuts its process down.
    pub abort_upgraded_on_shutdown: bool,
    /// The request is a HEAD (its response never has a body, whatever its length says).
    pub head_request: bool,
}

impl Relaying<'_> {
    /// The body length when the response is framed (see [`response::framed_length`]).
    pub fn framed_length(&self, head: &ResponseHead) -> Option<u64> {
        response::framed_length(head.status, &head.headers, self.head_request)
    }

    /// The head as it goes to nginx; from now on the response has begun. An unframed
    /// response says `Connection: close`: it ends when the core closes the connection.
    pub fn render_head(&self, head: &ResponseHead, framed: bool) -> Vec<u8> {
        self.progress.0.store(
            if head.status == 101 {
                Progress::UPGRADED
            } else {
                Progress::HEAD_SENT
            },
            Ordering::SeqCst,
        );
        let mut out = response::render_head(head, self.powered_by);
        // Additions go before the blank line that ends the head.
        out.truncate(out.len() - 2);
        if let Some(cookie) = &self.set_cookie {
            out.extend_from_slice(b"Set-Cookie: ");
            out.extend_from_slice(cookie.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !framed {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// How far a response got: nothing sent yet, its head sent, or upgraded (a tunnel).
#[derive(Default)]
pub struct Progress(AtomicU8);

impl Progress {
    const HEAD_SENT: u8 = 1;
    const UPGRADED: u8 = 2;

    /// Something of the response went to nginx: it can no longer be answered otherwise.
    pub fn head_sent(&self) -> bool {
        self.0.load(Ordering::SeqCst) >= Self::HEAD_SENT
    }

    /// The app switched protocols: the exchange is a tunnel now, not a request.
    pub fn upgraded(&self) -> bool {
        self.0.load(Ordering::SeqCst) == Self::UPGRADED
    }
}

/// Forwards one request to `process` and its response back to `client`. `early_body` holds the
/// body bytes that arrived with the SCGI header. A `101 Switching Protocols` answer (an app
/// that took over the connection, like a WebSocket server) turns the exchange into a tunnel:
/// bytes are copied both ways until either side closes.
pub async fn forward(
    client: &mut UnixStream,
    header: &ScgiHeader,
    early_body: &[u8],
    process: &Process,
    idle: &IdleSessions,
    relaying: &Relaying<'_>,
) -> Result<Forwarded, SessionError> {
    // Encoded before connecting: the loader reads the header as soon as it accepts.
    let pairs = header
        .pairs()
        .filter(|(k, _)| !k.starts_with(b"PASSENGER_"))
        .chain(std::iter::once((
            CONNECT_PASSWORD.as_bytes(),
            process.password.as_bytes(),
        )));
    // (Without the `PASSENGER_*` pairs it is smaller than the SCGI header: one allocation.)
    let session_header = encode_header_sized(header.text_len(), pairs);
    let reused = if process.keep_alive {
        idle.take(process)
    } else {
        None
    };
    // (A closure cannot lend out `client` for each call.)
    macro_rules! exchange_on {
        ($app:expr) => {
            exchange(
                client,
                $app,
                &session_header,
                early_body,
                header.content_length,
                process.pid,
                relaying,
            )
        };
    }
    let (mut app, relayed, body_unread) = match reused {
        Some(app) => match exchange_on!(app).await {
            // The loader closed the kept connection before it answered (it is stopping, or
            // exited): the request goes again on a new connection, if all of it can.
            Err(SessionError::BadGateway { dead: true, .. })
                if header.content_length <= early_body.len() as u64
                    && !relaying.progress.head_sent() =>
            {
                exchange_on!(connect(process).await?).await?
            }
            done => done?,
        },
        None => exchange_on!(connect(process).await?).await?,
    };
    if relayed.app_reusable && process.keep_alive {
        idle.put(process, app);
    } else if relayed.upgraded {
        tunnel(
            client,
            &mut app,
            process,
            relaying.abort_upgraded_on_shutdown,
        )
        .await;
    }
    Ok(Forwarded {
        oob_work: relayed.oob_work,
        backlog: relayed.backlog,
        framed_complete: relayed.framed_complete,
        body_unread,
    })
}

/// Sends the request on `app` and relays the response head and body to `client`; gives the
/// connection back with what was relayed and how much of the request body nginx still has.
async fn exchange(
    client: &mut UnixStream,
    mut app: UnixStream,
    session_header: &[u8],
    early_body: &[u8],
    content_length: u64,
    pid: u32,
    relaying: &Relaying<'_>,
) -> Result<(UnixStream, Relayed, u64), SessionError> {
    let mut body = RequestBody::new(early_body, content_length);
    let relayed = {
        let (mut app_r, mut app_w) = app.split();
        let (mut client_r, mut client_w) = client.split();
        let upload = send_request(&mut app_w, &mut client_r, session_header, &mut body);
        let download = relay_response(&mut app_r, &mut client_w, pid, relaying);
        tokio::pin!(upload, download);
        let mut uploading = true;
        let mut uploaded = false;
        loop {
            // Biased: an upload that is done counts before the response that followed it.
            tokio::select! {
                biased;
                r = &mut upload, if uploading => match r {
                    Ok(Upload::Done) => (uploading, uploaded) = (false, true),
                    Ok(Upload::AppClosed) => uploading = false,
                    Err(e) => return Err(e),
                },
                r = &mut download => {
                    let r = r?;
                    // A loader reads the whole body before it answers; one that answered
                    // early may still be reading it: not a connection for another request.
                    break Relayed { app_reusable: r.app_reusable && uploaded, ..r };
                }
            }
        }
    };
    let unread = body.unread();
    Ok((app, relayed, unread))
}

/// How long an app may take for its out-of-band work before it takes requests again anyway.
const OOB_WORK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Asks the (idle) process to do its out-of-band work: a pseudo-request with method `OOBW`,
/// answered when the work is done.
pub async fn out_of_band_work(process: &Process) {
    let pid = process.pid;
    let exchange = async {
        let AppAddress::Unix(path) = &process.address else {
            return Err(std::io::Error::other(
                "out-of-band work needs a unix socket",
            ));
        };
        let mut app = UnixStream::connect(path).await?;
        let pairs: [(&[u8], &[u8]); 6] = [
            (b"REQUEST_METHOD", b"OOBW"),
            (b"REQUEST_URI", b"/"),
            (b"PATH_INFO", b"/"),
            (b"QUERY_STRING", b""),
            (b"CONTENT_LENGTH", b"0"),
            (CONNECT_PASSWORD.as_bytes(), process.password.as_bytes()),
        ];
        app.write_all(&encode_header(pairs)).await?;
        let mut answer = Vec::new();
        app.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let started = std::time::Instant::now();
    match tokio::time::timeout(OOB_WORK_TIMEOUT, exchange).await {
        Ok(Ok(answer)) if answer.starts_with(b"HTTP/1.1 200") => tracing::info!(
            "App {pid} did its out-of-band work in {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        ),
        Ok(Ok(answer)) => tracing::warn!(
            "App {pid} answered its out-of-band work request with {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(80)])
        ),
        Ok(Err(e)) => tracing::warn!("Out-of-band work of app {pid} failed: {e}"),
        Err(_) => tracing::warn!(
            "App {pid} took longer than {} s for its out-of-band work; it takes requests again",
            OOB_WORK_TIMEOUT.as_secs()
        ),
    }
}

/// After a `101 Switching Protocols`: raw bytes both ways until either side is done, or (with
/// `abort_on_shutdown`) until the pool shuts the process down. A tunnel opened on a process
/// that is shutting down already (e.g. the request that reached its max_requests) runs on.
pub async fn tunnel<A, B>(client: &mut A, app: &mut B, process: &Process, abort_on_shutdown: bool)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let pid = process.pid;
    let mut retirement = process.retirement();
    let watch_retirement = abort_on_shutdown && !*retirement.borrow_and_update();
    let copied = tokio::select! {
        copied = tokio::io::copy_bidirectional(client, app) => copied,
        _ = async {
            let _ = retirement.wait_for(|retired| *retired).await;
        }, if watch_retirement => {
            tracing::info!(
                "Closed an upgraded connection to app {pid}: the process is shutting down \
                 (passenger_abort_websockets_on_process_shutdown on)"
            );
            return;
        }
    };
    match copied {
        Ok((up, down)) => tracing::debug!(
            "Upgraded connection to app {pid} closed: {up} bytes to the app, {down} from it"
        ),
        Err(e) => tracing::debug!("Upgraded connection to app {pid} ended: {e}"),
    }
}

/// What the response relay saw.
struct Relayed {
    upgraded: bool,
    oob_work: bool,
    backlog: Backlog,
    /// Framed, and exactly its length went through.
    framed_complete: bool,
    /// The app delimited the response and kept the connection: it takes the next request.
    app_reusable: bool,
}

/// The request body as nginx sends it: the bytes that arrived with the SCGI header, then the
/// rest of CONTENT_LENGTH from the connection, in pieces.
pub struct RequestBody<'a> {
    early: &'a [u8],
    remaining: u64,
}

impl<'a> RequestBody<'a> {
    pub fn new(early_body: &'a [u8], content_length: u64) -> Self {
        let early = &early_body[..early_body.len().min(content_length as usize)];
        RequestBody {
            early,
            remaining: content_length - early.len() as u64,
        }
    }

    /// Bytes of the body not read from the connection yet.
    pub fn unread(&self) -> u64 {
        self.remaining
    }

    /// The next piece; `None` once CONTENT_LENGTH bytes went by.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        client: &mut R,
    ) -> Result<Option<Bytes>, SessionError> {
        if !self.early.is_empty() {
            return Ok(Some(Bytes::copy_from_slice(std::mem::take(
                &mut self.early,
            ))));
        }
        if self.remaining == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; COPY_BUFFER.min(self.remaining as usize)];
        let n = client.read(&mut buf).await.map_err(|e| {
            SessionError::ClientGone(format!("reading the request body from nginx failed: {e}"))
        })?;
        if n == 0 {
            return Err(SessionError::ClientGone(format!(
                "nginx closed the connection with {} bytes of the request body still to come",
                self.remaining
            )));
        }
        self.remaining -= n as u64;
        buf.truncate(n);
        Ok(Some(Bytes::from(buf)))
    }
}

/// Writes the session header and the body, streamed from nginx.
async fn send_request<W, R>(
    app: &mut W,
    client: &mut R,
    session_header: &[u8],
    body: &mut RequestBody<'_>,
) -> Result<Upload, SessionError>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    if app.write_all(session_header).await.is_err() {
        return Ok(Upload::AppClosed);
    }
    while let Some(piece) = body.next(client).await? {
        if app.write_all(&piece).await.is_err() {
            return Ok(Upload::AppClosed);
        }
    }
    let _ = app.flush().await;
    Ok(Upload::Done)
}

/// Reads the app's response head, writes the normalised head, then copies the body: as much
/// as the app delimited it to (see [`response::app_body_length`]), else until the app closes
/// the connection. After a 101 it returns, so that the caller can open the tunnel.
async fn relay_response<R, W>(
    app: &mut R,
    client: &mut W,
    pid: u32,
    relaying: &Relaying<'_>,
) -> Result<Relayed, SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Filled by read_buf, which does not zero the memory first.
    let mut buf: Vec<u8> = Vec::with_capacity(HEAD_READ);
    let (mut head, used) = loop {
        if buf.len() == buf.capacity() {
            // Doubling; a head is refused at MAX_HEAD bytes anyway.
            buf.reserve(buf.len().max(HEAD_READ));
        }
        let n = app
            .read_buf(&mut buf)
            .await
            .map_err(|e| SessionError::BadGateway {
                message: format!("reading the response of app {pid} failed: {e}"),
                dead: true,
            })?;
        let filled = buf.len();
        if n == 0 {
            return Err(SessionError::BadGateway {
                message: format!(
                    "app {pid} closed the connection {}",
                    if filled == 0 {
                        "without sending a response".to_string()
                    } else {
                        format!("after {filled} bytes, before its response head was complete")
                    }
                ),
                dead: filled == 0,
            });
        }
        match response::parse_head(&buf) {
            Ok(Some(done)) => break done,
            Ok(None) if filled >= MAX_HEAD => {
                return Err(SessionError::BadGateway {
                    message: format!("app {pid} sent a response head larger than {MAX_HEAD} bytes"),
                    dead: false,
                });
            }
            Ok(None) => continue,
            Err(e) => {
                return Err(SessionError::BadGateway {
                    message: format!("app {pid} sent an invalid response: {e}"),
                    dead: false,
                });
            }
        }
    };
    let gone = |e: std::io::Error| {
        SessionError::ClientGone(format!("writing the response to nginx failed: {e}"))
    };
    let oob_work = head.headers.remove_named(OOB_WORK_HEADER);
    let mut relayed = Relayed {
        upgraded: head.status == 101,
        oob_work,
        backlog: Backlog::default(),
        framed_complete: false,
        app_reusable: false,
    };
    // After out-of-band work the connection closes anyway (see the request server).
    let framed = relaying.framed_length(&head).filter(|_| !relayed.oob_work);
    // Where the app's response ends: at its length when it gave one, else where it closes.
    // (Framed for nginx implies this length; HEAD and bodiless statuses have 0.)
    let app_length = response::app_body_length(head.status, &head.headers, relaying.head_request);
    let early = &buf[used..];
    let early = match app_length {
        Some(len) => &early[..early.len().min(len as usize)],
        None => early,
    };
    let mut excess = (buf.len() - used - early.len()) as u64;
    let mut out = relaying.render_head(&head, framed.is_some());
    out.extend_from_slice(early);
    if relayed.upgraded {
        client.write_all(&out).await.map_err(gone)?;
        client.flush().await.map_err(gone)?;
        return Ok(relayed);
    }
    let mut source = match app_length {
        Some(len) => relay::ReadToEnd::limited(app, len - early.len() as u64),
        None => relay::ReadToEnd::new(app),
    };
    let pumped = relay::relay(out, &mut source, client, relaying.high_watermark)
        .await
        .map_err(gone)?;
    excess += source.excess;
    if let Some(e) = &pumped.source_error {
        // The head has gone out or is held for nginx; all that can be done is cut the response
        // short.
        tracing::warn!(
            "Reading the response body of app {pid} failed: {e}; the response is cut short"
        );
    }
    let sent = early.len() as u64 + pumped.received;
    relayed.app_reusable = app_length == Some(sent)
        && pumped.source_error.is_none()
        && !head.connection_close
        && !relayed.oob_work;
    if let Some(len) = framed {
        if excess > 0 {
            tracing::warn!(
                "App {pid} sent {excess} bytes beyond its Content-Length ({len}); they were dropped"
            );
        }
        if sent < len && pumped.source_error.is_none() {
            tracing::warn!(
                "App {pid} closed after {sent} of the {len} body bytes its Content-Length \
                 announced; the response is cut short"
            );
        }
        relayed.framed_complete = sent == len;
    }
    relayed.backlog = pumped.backlog;
    Ok(relayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relaying(head_request: bool, set_cookie: Option<&str>) -> Relaying<'static> {
        Relaying {
            powered_by: "P",
            high_watermark: 1 << 20,
            progress: Progress::default(),
            set_cookie: set_cookie.map(str::to_string),
            abort_upgraded_on_shutdown: false,
            head_request,
        }
    }

    /// What nginx gets for `app_sends`, and whether the response was framed and whole.
    async fn relayed(app_sends: &[u8], relaying: &Relaying<'_>) -> (String, bool) {
        let mut app = app_sends;
        let mut out = Vec::new();
        let relayed = relay_response(&mut app, &mut out, 1, relaying)
            .await
            .unwrap();
        relayed.backlog.write_to(&mut out).await.unwrap();
        (String::from_utf8(out).unwrap(), relayed.framed_complete)
    }

    #[tokio::test]
    async fn a_framed_response_has_no_connection_header_and_exactly_its_length() {
        let r = relaying(false, Some("route=1"));
        let (out, complete) = relayed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more",
            &r,
        )
        .await;
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Powered-By: P\r\nSet-Cookie: route=1\r\n\r\nhello"
        );
        assert!(complete);
        assert!(r.progress.head_sent());
    }

    #[tokio::test]
    async fn a_short_framed_response_is_not_complete() {
        let r = relaying(false, None);
        let (out, complete) =
            relayed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello", &r).await;
        assert!(out.ends_with("X-Powered-By: P\r\n\r\nhello"), "{out}");
        assert!(!complete);
    }

    #[tokio::test]
    async fn unframed_responses_say_connection_close() {
        let r = relaying(false, None);
        let (out, complete) = relayed(b"Status: 200\r\n\r\nuntil the end", &r).await;
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nX-Powered-By: P\r\nConnection: close\r\n\r\nuntil the end"
        );
        assert!(!complete);
        // A HEAD's response, and one with out-of-band work, are never framed.
        let (out, complete) = relayed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            &relaying(true, None),
        )
        .await;
        assert!(
            out.ends_with("\r\nConnection: close\r\n\r\n") && !complete,
            "{out}"
        );
        let (out, complete) = relayed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n!~Request-OOB-Work: true\r\n\r\nok",
            &r,
        )
        .await;
        assert!(
            out.ends_with("\r\nConnection: close\r\n\r\nok") && !complete,
            "{out}"
        );
        assert!(!out.contains("OOB"));
    }
}
