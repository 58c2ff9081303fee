//! Copying a response body from an app to nginx without letting a slow client hold the app:
//! the core reads the app as fast as it writes (up to a high watermark per response,
//! `passenger_response_buffer_high_watermark`, beyond which it stops reading) while writing
//! to nginx at the client's pace. When the app is done, what the client has not taken yet is
//! handed back as a [`Backlog`], so that the app's process can be released before the rest is
//! written.

use bytes::{Buf, Bytes};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most of one response held in the core for a slow client, by default
/// (`passenger_response_buffer_high_watermark` sets it per request).
#[cfg(test)]
const HIGH_WATERMARK: usize =
    passenger_protocol::options::DEFAULT_RESPONSE_BUFFER_HIGH_WATERMARK as usize;
const READ_CHUNK: usize = 64 * 1024;
/// Most chunks in one write to nginx (a slow client's backlog can hold many).
const WRITE_SLICES: usize = 64;
/// Up to this much, what the app has sent is gathered before it is written (see [`relay`]).
const GATHER: usize = 128 * 1024;

/// Where response body bytes come from. `next_chunk` must be cancel-safe: the relay drops it
/// when the client side is ready first.
pub trait ChunkSource {
    /// The next bytes; `Ok(None)` at the end of the body.
    fn next_chunk(&mut self) -> impl Future<Output = io::Result<Option<Bytes>>>;
}

/// The body of a session-protocol response: everything until the app closes the connection,
/// or, when the app delimited it, exactly its length.
pub struct ReadToEnd<'a, R> {
    reader: &'a mut R,
    /// Filled by read_buf (no zeroing) and handed out without a copy; it allocates on the
    /// first read, so a response that was whole with its head costs nothing here.
    buf: bytes::BytesMut,
    /// Body bytes still to hand out, when the length is known.
    left: Option<u64>,
    /// Bytes the app sent beyond the length, dropped.
    pub excess: u64,
}

impl<'a, R: AsyncRead + Unpin> ReadToEnd<'a, R> {
    pub fn new(reader: &'a mut R) -> Self {
        ReadToEnd {
            reader,
            buf: bytes::BytesMut::new(),
            left: None,
            excess: 0,
        }
    }

    /// Hands out `len` bytes and ends there: the app delimited its response (and may keep the
    /// connection for the next request); what it sent beyond in the same read is dropped.
    pub fn limited(reader: &'a mut R, len: u64) -> Self {
        ReadToEnd {
            left: Some(len),
            ..Self::new(reader)
        }
    }
}

impl<R: AsyncRead + Unpin> ChunkSource for ReadToEnd<'_, R> {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.left == Some(0) {
                return Ok(None);
            }
            if self.buf.capacity() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            // read_buf is cancel-safe: no bytes are lost if the future is dropped.
            let n = self.reader.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            let Some(left) = &mut self.left else {
                return Ok(Some(self.buf.split().freeze()));
            };
            let take = (*left).min(self.buf.len() as u64) as usize;
            *left -= take as u64;
            let chunk = self.buf.split_to(take).freeze();
            self.excess += self.buf.len() as u64;
            self.buf.clear();
            if take > 0 {
                return Ok(Some(chunk));
            }
        }
    }
}

/// The body of a hyper response (http_session).
pub struct HyperBody<'a>(pub &'a mut hyper::body::Incoming);

impl ChunkSource for HyperBody<'_> {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        use http_body::Body;
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut *self.0).poll_frame(cx)).await;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(io::Error::other(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers: nothing to pass on over HTTP/1.0-style framing.
                }
            }
        }
    }
}

/// A chunk read ahead of `rest` (or the end, or an error), handed out first.
pub struct Prefixed<S> {
    pub first: Option<io::Result<Option<Bytes>>>,
    pub rest: S,
}

impl<S: ChunkSource> ChunkSource for Prefixed<S> {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        match self.first.take() {
            Some(first) => first,
            None => self.rest.next_chunk().await,
        }
    }
}

/// Response bytes the client has not taken yet.
#[derive(Default)]
pub struct Backlog {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Backlog {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push_back(chunk);
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Writes as much of what is held as one system call takes: the first [`WRITE_SLICES`]
    /// chunks in one vectored write, rather than a write per chunk read from the app.
    async fn write_some<W: AsyncWrite + Unpin>(&self, client: &mut W) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
        let mut count = 0;
        for (slice, chunk) in slices.iter_mut().zip(&self.chunks) {
            *slice = IoSlice::new(chunk);
            count += 1;
        }
        client.write_vectored(&slices[..count]).await
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let front = self
                .chunks
                .front_mut()
                .expect("consumed more than was there");
            let take = n.min(front.len());
            front.advance(take);
            n -= take;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Writes what is left to the client.
    pub async fn write_to<W: AsyncWrite + Unpin>(mut self, client: &mut W) -> io::Result<()> {
        while !self.is_empty() {
            match self.write_some(client).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => self.consume(n),
            }
        }
        client.flush().await
    }
}

/// How a relay ended.
pub struct Relayed {
    /// What the client has not taken yet.
    pub backlog: Backlog,
    /// Bytes the source gave (written or in the backlog).
    pub received: u64,
    /// The source failed (the response is cut short).
    pub source_error: Option<io::Error>,
}

/// Writes `head` (the response head, with any body bytes read along with it), then copies
/// `source` to `client` until the source ends, holding at most `limit` bytes the client has
/// not taken; returns what is left. The head waits for nothing: it goes out with what the app
/// has already sent, or alone. An error writing to the client is returned as such: the
/// client is gone.
pub async fn relay<S: ChunkSource, W: AsyncWrite + Unpin>(
    head: Vec<u8>,
    source: &mut S,
    client: &mut W,
    limit: usize,
) -> io::Result<Relayed> {
    let mut backlog = Backlog::default();
    if !head.is_empty() {
        backlog.push(Bytes::from(head));
    }
    let mut received = 0;
    loop {
        // While little is held, what the app has already sent is read before anything is
        // written, so that it goes to nginx in one write (and wakes nginx once); beyond that,
        // writing comes first, and reading goes on only while the client is slower.
        let step = if backlog.len < GATHER.min(limit) {
            tokio::select! {
                biased;
                chunk = source.next_chunk() => Step::Read(chunk),
                // AsyncWrite::write_vectored is cancel-safe too.
                written = backlog.write_some(client), if !backlog.is_empty() => Step::Wrote(written),
            }
        } else {
            tokio::select! {
                biased;
                written = backlog.write_some(client), if !backlog.is_empty() => Step::Wrote(written),
                chunk = source.next_chunk(), if backlog.len < limit => Step::Read(chunk),
            }
        };
        match step {
            Step::Read(Ok(Some(chunk))) => {
                received += chunk.len() as u64;
                backlog.push(chunk);
            }
            Step::Read(Ok(None)) => {
                return Ok(Relayed {
                    backlog,
                    received,
                    source_error: None,
                });
            }
            Step::Read(Err(e)) => {
                return Ok(Relayed {
                    backlog,
                    received,
                    source_error: Some(e),
                });
            }
            Step::Wrote(written) => match written? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => backlog.consume(n),
            },
        }
    }
}

/// What one turn of the relay did.
enum Step {
    Read(io::Result<Option<Bytes>>),
    Wrote(io::Result<usize>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_that_does_not_read_does_not_hold_the_source() {
        // The "client" is a pipe nobody reads, with a small buffer: the whole body still gets
        // read from the source, and comes back as the backlog.
        let body: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let mut source: &[u8] = &body;
        let (mut client, mut reader) = tokio::io::duplex(4096);
        let relayed = relay(
            Vec::new(),
            &mut ReadToEnd::new(&mut source),
            &mut client,
            HIGH_WATERMARK,
        )
        .await
        .unwrap();
        assert!(relayed.source_error.is_none());
        assert!(relayed.backlog.len() >= body.len() - 4096);
        // Then the client reads it all, in order.
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            got
        });
        relayed.backlog.write_to(&mut client).await.unwrap();
        drop(client);
        assert!(reading.await.unwrap() == body);
    }

    #[tokio::test]
    async fn a_limited_body_hands_out_its_length_and_stops_there() {
        let body: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut source: &[u8] = &body;
        let mut limited = ReadToEnd::limited(&mut source, 150_000);
        let mut got = Vec::new();
        while let Some(chunk) = limited.next_chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        assert!(got == body[..150_000]);
        // What came beyond the length in the last read is dropped; the rest is not read (the
        // app may keep the connection for its next response).
        let excess = limited.excess;
        let unread = source.len() as u64;
        assert!(unread > 0, "stops reading at the length");
        assert_eq!(excess + unread, 50_000);

        // A short body is simply short: the caller sees fewer bytes than the length.
        let mut source: &[u8] = &body[..10];
        let (mut client, _reader) = tokio::io::duplex(1024);
        let relayed = relay(
            Vec::new(),
            &mut ReadToEnd::limited(&mut source, 20),
            &mut client,
            1 << 20,
        )
        .await
        .unwrap();
        assert_eq!(relayed.received, 10);
    }

    #[tokio::test]
    async fn the_watermark_bounds_what_is_held() {
        let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut source: &[u8] = &body;
        let (mut client, mut reader) = tokio::io::duplex(1024);
        let relaying = async {
            let relayed = relay(
                Vec::new(),
                &mut ReadToEnd::new(&mut source),
                &mut client,
                100_000,
            )
            .await
            .unwrap();
            // Never more than the limit plus one read is held.
            let held = relayed.backlog.len();
            relayed.backlog.write_to(&mut client).await.unwrap();
            drop(client);
            held
        };
        let reading = async {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            got
        };
        let (held, got) = tokio::join!(relaying, reading);
        assert!(held <= 100_000 + READ_CHUNK, "{held} bytes held");
        assert!(got == body, "the body arrives intact and in order");
    }

    /// A client that takes at most `max` bytes per write and counts its writes.
    struct CountingClient {
        got: Vec<u8>,
        writes: usize,
        max: usize,
    }

    impl AsyncWrite for CountingClient {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<io::Result<usize>> {
            self.writes += 1;
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(self.max - n);
                self.got.extend_from_slice(&buf[..take]);
                n += take;
            }
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn chunks_held_for_the_client_go_out_together() {
        let mut backlog = Backlog::default();
        for part in [
            &b"HTTP/1.1 200 OK\r\n\r\n"[..],
            b"first",
            b"second",
            b"third",
        ] {
            backlog.push(Bytes::copy_from_slice(part));
        }
        let mut client = CountingClient {
            got: Vec::new(),
            writes: 0,
            max: usize::MAX,
        };
        backlog.write_to(&mut client).await.unwrap();
        assert_eq!(client.got, b"HTTP/1.1 200 OK\r\n\r\nfirstsecondthird");
        assert_eq!(client.writes, 1, "one write for the four chunks");

        // A client that takes a few bytes at a time gets them all, in order, across chunks.
        let mut backlog = Backlog::default();
        for part in [&b"abc"[..], b"defghij", b"k", b"lmnopqrstu"] {
            backlog.push(Bytes::copy_from_slice(part));
        }
        let mut client = CountingClient {
            got: Vec::new(),
            writes: 0,
            max: 4,
        };
        backlog.write_to(&mut client).await.unwrap();
        assert_eq!(client.got, b"abcdefghijklmnopqrstu");
        assert_eq!(client.writes, 6);
    }
}
