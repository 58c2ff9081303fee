//! One request/response exchange with a Node.js app over http_session: plain HTTP/1.1 on the
//! app's unix socket (or, for a generic app, its localhost TCP port). The CGI environment
//! nginx sent becomes an HTTP request again (the `HTTP_*` keys its headers,
//! `X-Forwarded-For`/`-Proto` from the connection); the response is normalised like a
//! session-protocol one and streamed to nginx. Connections to an app are kept alive and
//! reused (hyper does the HTTP/1.1 framing).

use crate::pool::{AppAddress, Process};
use crate::relay::{self, Backlog, ChunkSource};
use crate::response::{self, HeaderLines, ResponseHead};
use crate::session::{self, Forwarded, Relaying, RequestBody, SessionError};
use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use passenger_protocol::scgi::ScgiHeader;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Request headers that belong to one hop, not to the request: nginx already de-chunked the
/// body and set its length.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-connection",
];

const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The request body, fed from nginx's connection through a channel (none for a request
/// without a body: most of them, and a channel costs allocations and wake-ups).
pub struct ChannelBody {
    rx: Option<mpsc::Receiver<Bytes>>,
    remaining: u64,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(rx) = &mut self.rx else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

impl crate::idle_connections::Reusable for SendRequest<ChannelBody> {
    fn is_closed(&self) -> bool {
        SendRequest::is_closed(self)
    }
}

/// Idle keep-alive connections to app processes.
pub type Connections = crate::idle_connections::IdleConnections<SendRequest<ChannelBody>>;

/// An idle connection to `process`, or a new one.
async fn checkout(
    connections: &Connections,
    process: &Process,
) -> Result<SendRequest<ChannelBody>, SessionError> {
    while let Some(mut sender) = connections.take(process) {
        if sender.ready().await.is_ok() {
            return Ok(sender);
        }
    }
    match &process.address {
        AppAddress::Unix(_) => open(process, session::connect(process).await?).await,
        AppAddress::Tcp(addr) => open(process, session::connect_tcp(process, *addr).await?).await,
    }
}

/// An HTTP/1.1 client connection on `stream` to `process`; hyper drives it in a task.
async fn open<S>(process: &Process, stream: S) -> Result<SendRequest<ChannelBody>, SessionError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SessionError::ConnectFailed(format!("app {}: {e}", process.pid)))?;
    let pid = process.pid;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!("A connection to app {pid} ended: {e}");
        }
    });
    Ok(sender)
}

/// Turns nginx's CGI environment back into an HTTP/1.1 request for the app. (The header map is
/// filled directly: hyper's request builder moves the whole request at every header.)
fn build_request(
    header: &ScgiHeader,
    body: ChannelBody,
) -> Result<hyper::Request<ChannelBody>, String> {
    let get = |k: &str| header.get_str(k).unwrap_or("");
    let method = match get("REQUEST_METHOD") {
        "" => "GET",
        m => m,
    };
    let uri = match get("REQUEST_URI") {
        "" => "/",
        u => u,
    };
    let client_headers = header
        .pairs()
        .filter(|(k, _)| k.starts_with(b"HTTP_"))
        .count();
    // The client's, and up to four of the core's.
    let mut headers = HeaderMap::with_capacity(client_headers + 4);
    let mut add = |name: HeaderName, value: &[u8]| -> Result<(), String> {
        let value = HeaderValue::from_bytes(value).map_err(|e| format!("{name}: {e}"))?;
        headers.append(name, value);
        Ok(())
    };
    // An upgrade (WebSocket) is the one hop-by-hop thing passed on: the app answers it.
    if let Some(upgrade) = header.get("HTTP_UPGRADE").filter(|v| !v.is_empty()) {
        add(header::CONNECTION, b"upgrade")?;
        add(header::UPGRADE, upgrade)?;
    }
    let mut name = Vec::new();
    for (key, value) in header.pairs() {
        let Some(cgi_name) = key.strip_prefix(b"HTTP_") else {
            continue;
        };
        // HTTP_X_REQUEST_ID -> x-request-id
        name.clear();
        name.extend(cgi_name.iter().map(|&b| match b {
            b'_' => b'-',
            b => b.to_ascii_lowercase(),
        }));
        let name = HeaderName::from_bytes(&name)
            .map_err(|e| format!("{}: {e}", String::from_utf8_lossy(key)))?;
        if HOP_BY_HOP.contains(&name.as_str())
            || name == header::CONTENT_LENGTH
            || name == FORWARDED_FOR
            || name == FORWARDED_PROTO
        {
            continue;
        }
        add(name, value)?;
    }
    if let Some(ct) = header.get("CONTENT_TYPE").filter(|v| !v.is_empty()) {
        add(header::CONTENT_TYPE, ct)?;
    }
    if header.content_length > 0 || matches!(method, "POST" | "PUT" | "PATCH") {
        add(
            header::CONTENT_LENGTH,
            header.content_length.to_string().as_bytes(),
        )?;
    }
    // The client as nginx saw it; what a client claims in these headers is not passed on.
    if let Some(addr) = header.get("REMOTE_ADDR").filter(|v| !v.is_empty()) {
        add(FORWARDED_FOR, addr)?;
    }
    let https = matches!(
        get("HTTPS").to_ascii_lowercase().as_str(),
        "on" | "1" | "true" | "yes"
    );
    add(FORWARDED_PROTO, if https { b"https" } else { b"http" })?;
    let mut request = hyper::Request::new(body);
    *request.method_mut() =
        hyper::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    *request.uri_mut() = uri
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| e.to_string())?;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Feeds the request body from nginx into the channel.
async fn feed_body<R: AsyncRead + Unpin>(
    client: &mut R,
    body: &mut RequestBody<'_>,
    tx: mpsc::Sender<Bytes>,
) -> Result<(), SessionError> {
    while let Some(piece) = body.next(client).await? {
        if tx.send(piece).await.is_err() {
            return Ok(()); // the app no longer reads the body
        }
    }
    Ok(())
}

/// Forwards one request to a Node.js `process` and its response back to `client`.
pub async fn forward(
    client: &mut UnixStream,
    header: &ScgiHeader,
    early_body: &[u8],
    process: &Process,
    connections: &Connections,
    relaying: &Relaying<'_>,
) -> Result<Forwarded, SessionError> {
    let sender = checkout(connections, process).await?;
    let (tx, rx) = match header.content_length {
        0 => (None, None),
        _ => {
            let (tx, rx) = mpsc::channel(4);
            (Some(tx), Some(rx))
        }
    };
    let body = ChannelBody {
        rx,
        remaining: header.content_length,
    };
    let request = build_request(header, body).map_err(|e| SessionError::BadGateway {
        message: format!("the request cannot be expressed as HTTP/1.1: {e}"),
        dead: false,
    })?;
    let mut body = RequestBody::new(early_body, header.content_length);
    let (mut client_r, mut client_w) = client.split();
    let feeding = tx.is_some();
    let feed = async {
        match tx {
            Some(tx) => feed_body(&mut client_r, &mut body, tx).await,
            None => Ok(()),
        }
    };
    let exchange = async {
        let mut sender = sender;
        let pid = process.pid;
        let mut response =
            sender
                .send_request(request)
                .await
                .map_err(|e| SessionError::BadGateway {
                    message: format!("app {pid} did not answer: {e}"),
                    dead: e.is_closed() || e.is_incomplete_message(),
                })?;
        // hyper de-chunks the body (the header is dropped below): such a response is not framed.
        let chunked = response
            .headers()
            .contains_key(hyper::header::TRANSFER_ENCODING);
        let mut headers = HeaderLines::with_capacity(response.headers().len(), 256);
        for (name, value) in response.headers() {
            if !matches!(
                name.as_str(),
                "connection" | "keep-alive" | "transfer-encoding"
            ) {
                headers.push(name.as_str().as_bytes(), value.as_bytes());
            }
        }
        let head = ResponseHead {
            status: response.status().as_u16(),
            reason: std::borrow::Cow::Borrowed(
                response
                    .status()
                    .canonical_reason()
                    .unwrap_or_else(|| response::canonical_reason(response.status().as_u16())),
            ),
            headers,
            // hyper keeps or closes the connection to the app itself.
            connection_close: false,
        };
        let gone = |e: std::io::Error| {
            SessionError::ClientGone(format!("writing the response to nginx failed: {e}"))
        };
        let framed = relaying.framed_length(&head).filter(|_| !chunked);
        let out = relaying.render_head(&head, framed.is_some());
        let mut body = relay::HyperBody(response.body_mut());
        // A body of known length goes out in one write with the head, as the session
        // protocol's does: hyper hands over the body separately (its first bytes a moment
        // after the head), and two writes cost a system call and a wake-up of nginx more per
        // response. (nginx could do nothing with the head alone but pass it on; the body is
        // due right behind it.)
        let first = match framed {
            Some(len) if len > 0 => Some(body.next_chunk().await),
            _ => None,
        };
        if head.status == 101 {
            client_w.write_all(&out).await.map_err(gone)?;
            client_w.flush().await.map_err(gone)?;
            return Ok(Exchange::Upgraded(response));
        }
        let pumped = relay::relay(
            out,
            &mut relay::Prefixed { first, rest: body },
            &mut client_w,
            relaying.high_watermark,
        )
        .await
        .map_err(gone)?;
        let complete = match pumped.source_error {
            None => true,
            Some(e) => {
                tracing::warn!(
                    "Reading the response body of app {pid} failed: {e}; the response is cut short"
                );
                false
            }
        };
        // hyper reads exactly Content-Length bytes, or fails.
        let framed_complete = complete && framed == Some(pumped.received);
        let backlog = pumped.backlog;
        Ok(Exchange::Done {
            complete,
            framed_complete,
            sender,
            backlog,
        })
    };
    let exchanged = {
        tokio::pin!(feed, exchange);
        let mut feeding = feeding;
        loop {
            tokio::select! {
                r = &mut feed, if feeding => {
                    feeding = false;
                    r?;
                }
                r = &mut exchange => break (r?, feeding),
            }
        }
    };
    match exchanged {
        // The connection is reused once the whole exchange went through.
        (
            Exchange::Done {
                complete,
                framed_complete,
                sender,
                backlog,
            },
            still_feeding,
        ) => {
            if complete && !still_feeding {
                connections.put(process, sender);
            }
            return Ok(Forwarded {
                oob_work: false,
                backlog,
                framed_complete,
                body_unread: body.unread(),
            });
        }
        (Exchange::Upgraded(response), _) => match hyper::upgrade::on(response).await {
            Ok(upgraded) => {
                let mut app = TokioIo::new(upgraded);
                session::tunnel(
                    client,
                    &mut app,
                    process,
                    relaying.abort_upgraded_on_shutdown,
                )
                .await;
            }
            Err(e) => tracing::warn!(
                "App {} answered 101 but the connection could not be taken over: {e}",
                process.pid
            ),
        },
    }
    // A tunnel ends the connection.
    Ok(Forwarded::default())
}

/// How the exchange with the app ended.
enum Exchange {
    Done {
        /// The whole response body was read (the connection can be reused).
        complete: bool,
        /// The response was framed and its whole length went through.
        framed_complete: bool,
        sender: SendRequest<ChannelBody>,
        /// What nginx has not taken yet.
        backlog: Backlog,
    },
    /// The app switched protocols: the rest is a tunnel.
    Upgraded(hyper::Response<hyper::body::Incoming>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use passenger_protocol::scgi;

    fn request(pairs: &[(&str, &str)]) -> Result<hyper::Request<ChannelBody>, String> {
        let raw = scgi::encode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        let header = scgi::decode(&raw, scgi::DEFAULT_MAX_HEADER)
            .unwrap()
            .unwrap()
            .0;
        let body = ChannelBody {
            rx: None,
            remaining: header.content_length,
        };
        build_request(&header, body)
    }

    #[test]
    fn the_cgi_environment_becomes_an_http_request() {
        let r = request(&[
            ("CONTENT_LENGTH", "3"),
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", "/a/b?c=d"),
            ("CONTENT_TYPE", "text/plain"),
            ("REMOTE_ADDR", "10.0.0.7"),
            ("HTTPS", "on"),
            ("HTTP_HOST", "example.org"),
            ("HTTP_X_REQUEST_ID", "r1"),
            ("HTTP_ACCEPT", "a, b"),
            ("HTTP_CONNECTION", "keep-alive"),
            ("HTTP_TRANSFER_ENCODING", "chunked"),
            ("HTTP_CONTENT_LENGTH", "999"),
            ("HTTP_X_FORWARDED_FOR", "6.6.6.6"),
            ("HTTP_X_FORWARDED_PROTO", "gopher"),
            ("PASSENGER_APP_ROOT", "/srv/app"),
        ])
        .unwrap();
        assert_eq!(r.method(), "POST");
        assert_eq!(r.uri(), "/a/b?c=d");
        let h = r.headers();
        let all = |name: &str| -> Vec<&str> {
            h.get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("host"), ["example.org"]);
        assert_eq!(all("x-request-id"), ["r1"]);
        assert_eq!(all("accept"), ["a, b"]);
        assert_eq!(all("content-type"), ["text/plain"]);
        assert_eq!(all("content-length"), ["3"]);
        // Hop-by-hop headers and what the client claims about the connection do not pass.
        assert_eq!(all("x-forwarded-for"), ["10.0.0.7"]);
        assert_eq!(all("x-forwarded-proto"), ["https"]);
        assert!(all("connection").is_empty() && all("transfer-encoding").is_empty());
        assert_eq!(h.len(), 7, "{h:?}");
    }

    #[test]
    fn an_upgrade_is_passed_on_and_a_bad_header_is_an_error() {
        let r = request(&[
            ("CONTENT_LENGTH", "0"),
            ("HTTP_CONNECTION", "Upgrade"),
            ("HTTP_UPGRADE", "websocket"),
        ])
        .unwrap();
        assert_eq!(r.method(), "GET");
        assert_eq!(r.uri(), "/");
        assert_eq!(r.headers()["connection"], "upgrade");
        assert_eq!(r.headers()["upgrade"], "websocket");
        assert_eq!(r.headers()["x-forwarded-proto"], "http");
        assert!(r.headers().get("content-length").is_none());
        let bad = request(&[("CONTENT_LENGTH", "0"), ("HTTP_X_BAD", "a\nb")]);
        assert!(bad.is_err());
        // (A bad key is refused earlier, by the SCGI decoder.)
    }
}
