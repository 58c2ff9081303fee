//! MessageChannel over tokio streams, for the agents (feature `tokio`; the nginx module does
//! without it). Same formats and limits as the blocking functions.

use super::{decode_array, encode_array, encode_scalar, scalar_len};
use std::io::{self, ErrorKind};
use std::os::fd::{BorrowedFd, OwnedFd};
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// Reads one array message; `Ok(None)` on a clean EOF before it.
pub async fn read_array(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Vec<Vec<u8>>>> {
    let Some(prefix) = read_prefix::<2>(r).await? else {
        return Ok(None);
    };
    let mut buf = prefix.to_vec();
    buf.resize(2 + usize::from(u16::from_be_bytes(prefix)), 0);
    r.read_exact(&mut buf[2..]).await?;
    let (items, _) = decode_array(&buf)?.expect("the whole message was read");
    Ok(Some(items))
}

/// Writes one array message.
pub async fn write_array<T: AsRef<[u8]>>(
    w: &mut (impl AsyncWrite + Unpin),
    items: &[T],
) -> io::Result<()> {
    w.write_all(&encode_array(items)?).await
}

/// Reads one scalar of at most `max` bytes; `Ok(None)` on a clean EOF before it. A longer
/// declared length is refused before anything is allocated for it.
pub async fn read_scalar(
    r: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    let Some(prefix) = read_prefix::<4>(r).await? else {
        return Ok(None);
    };
    let len = scalar_len(prefix, max)?;
    let mut data = Vec::new();
    r.take(len as u64).read_to_end(&mut data).await?;
    if data.len() != len {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(data))
}

/// Writes one scalar.
pub async fn write_scalar(w: &mut (impl AsyncWrite + Unpin), data: &[u8]) -> io::Result<()> {
    w.write_all(&encode_scalar(data)?).await
}

/// [`super::send_with_fds`] on a tokio socket, waiting until it is writable.
pub async fn send_with_fds(
    sock: &UnixStream,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    sock.async_io(Interest::WRITABLE, || super::send_with_fds(sock, data, fds))
        .await
}

/// [`super::recv_with_fds`] on a tokio socket, waiting until it is readable.
pub async fn recv_with_fds(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    sock.async_io(Interest::READABLE, || super::recv_with_fds(sock, buf))
        .await
}

/// Reads an N-byte length prefix: `None` on EOF before its first byte, an error inside it.
async fn read_prefix<const N: usize>(
    r: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<[u8; N]>> {
    let mut prefix = [0u8; N];
    let mut got = 0;
    while got < N {
        match r.read(&mut prefix[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(Some(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_and_fds_over_a_socket_pair() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        write_array(&mut a, &["spawn", "x"]).await.unwrap();
        write_scalar(&mut a, b"data").await.unwrap();
        assert_eq!(
            read_array(&mut b).await.unwrap().unwrap(),
            vec![b"spawn".to_vec(), b"x".to_vec()]
        );
        assert_eq!(read_scalar(&mut b, 4).await.unwrap().unwrap(), b"data");

        let (r, _w) = nix::unistd::pipe().unwrap();
        use std::os::fd::AsFd;
        send_with_fds(&a, b"!", &[r.as_fd()]).await.unwrap();
        let mut buf = [0u8; 4];
        let (n, fds) = recv_with_fds(&b, &mut buf).await.unwrap();
        assert_eq!((n, fds.len()), (1, 1));

        write_scalar(&mut a, b"too long").await.unwrap();
        let err = read_scalar(&mut b, 4).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        drop(a);
    }
}
