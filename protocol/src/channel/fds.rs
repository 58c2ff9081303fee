//! File descriptors alongside MessageChannel bytes, with `SCM_RIGHTS` (the preloader hands a
//! forked child's pipes back this way).

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{self, ErrorKind, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most descriptors one message may carry; the receive buffer is sized for this many.
pub const MAX_FDS: usize = 16;

/// Sends `data` (at least one byte: stream sockets carry no ancillary data without it) with
/// `fds` attached. Returns how many bytes of `data` went out; the descriptors go with the first.
pub fn send_with_fds(sock: impl AsFd, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if data.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "passing {} descriptors with {} bytes: at most {MAX_FDS} descriptors go with at least one byte",
                fds.len(),
                data.len()
            ),
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs: &[ControlMessage] = if raw.is_empty() {
        &[]
    } else {
        &[ControlMessage::ScmRights(&raw)]
    };
    let sent = sendmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &[IoSlice::new(data)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(sent)
}

/// Receives up to `buf.len()` bytes and any descriptors sent with them (close-on-exec).
/// `Ok((0, []))` is EOF. More than [`MAX_FDS`] descriptors is an error (the kernel drops the
/// ones that did not fit).
pub fn recv_with_fds(sock: impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    let cmsgs = msg.cmsgs().map_err(|_| {
        io::Error::new(
            ErrorKind::InvalidData,
            format!("a message carried more than {MAX_FDS} file descriptors"),
        )
    })?;
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: the kernel just installed these descriptors for us; nothing else owns them.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn passes_a_pipe() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        assert_eq!(send_with_fds(&a, b"x", &[r.as_fd(), w.as_fd()]).unwrap(), 1);
        drop((r, w));
        let mut buf = [0u8; 8];
        let (n, mut fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!((n, buf[0], fds.len()), (1, b'x', 2));
        let w = std::fs::File::from(fds.pop().unwrap());
        let r = std::fs::File::from(fds.pop().unwrap());
        (&w).write_all(b"hi").unwrap();
        drop(w);
        let mut got = String::new();
        (&r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi");
    }

    #[test]
    fn refuses_empty_data_and_too_many_fds() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(send_with_fds(&a, b"", &[a.as_fd()]).is_err());
        let many = vec![a.as_fd(); MAX_FDS + 1];
        assert!(send_with_fds(&a, b"x", &many).is_err());
    }

    #[test]
    fn eof_and_plain_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(b"ab").unwrap();
        drop(a);
        let mut buf = [0u8; 8];
        assert_eq!(recv_with_fds(&b, &mut buf).unwrap().0, 2);
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!((n, fds.len()), (0, 0));
    }
}
