//! MessageChannel over blocking readers and writers (pipes, std unix sockets).

use super::{decode_array, encode_array, encode_scalar, scalar_len};
use std::io::{self, ErrorKind, Read, Write};

/// Reads one array message; `Ok(None)` on a clean EOF before it. The 2-byte prefix bounds
/// what is buffered to 64 KiB.
pub fn read_array(r: &mut impl Read) -> io::Result<Option<Vec<Vec<u8>>>> {
    let Some(prefix) = read_prefix::<2>(r)? else {
        return Ok(None);
    };
    let mut buf = prefix.to_vec();
    buf.resize(2 + usize::from(u16::from_be_bytes(prefix)), 0);
    r.read_exact(&mut buf[2..])?;
    let (items, _) = decode_array(&buf)?.expect("the whole message was read");
    Ok(Some(items))
}

/// Writes one array message.
pub fn write_array<T: AsRef<[u8]>>(w: &mut impl Write, items: &[T]) -> io::Result<()> {
    w.write_all(&encode_array(items)?)
}

/// Reads one scalar of at most `max` bytes; `Ok(None)` on a clean EOF before it. A longer
/// declared length is refused before anything is allocated for it.
pub fn read_scalar(r: &mut impl Read, max: usize) -> io::Result<Option<Vec<u8>>> {
    let Some(prefix) = read_prefix::<4>(r)? else {
        return Ok(None);
    };
    let len = scalar_len(prefix, max)?;
    let mut data = Vec::new();
    // take() stops at the declared length; a short read means the peer went away mid-message.
    r.take(len as u64).read_to_end(&mut data)?;
    if data.len() != len {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(data))
}

/// Writes one scalar.
pub fn write_scalar(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    w.write_all(&encode_scalar(data)?)
}

/// Reads an N-byte length prefix: `None` on EOF before its first byte, an error on EOF inside it.
fn read_prefix<const N: usize>(r: &mut impl Read) -> io::Result<Option<[u8; N]>> {
    let mut prefix = [0u8; N];
    let mut got = 0;
    while got < N {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_and_scalar_over_a_stream() {
        let mut wire = Vec::new();
        write_array(&mut wire, &["ok", "", "/tmp/x"]).unwrap();
        write_scalar(&mut wire, b"payload").unwrap();
        let mut r = &wire[..];
        assert_eq!(read_array(&mut r).unwrap().unwrap().len(), 3);
        assert_eq!(read_scalar(&mut r, 100).unwrap().unwrap(), b"payload");
        assert_eq!(read_array(&mut r).unwrap(), None);
        assert_eq!(read_scalar(&mut r, 100).unwrap(), None);
    }

    #[test]
    fn truncated_and_oversized() {
        let kind = |e: io::Error| e.kind();
        assert_eq!(
            read_array(&mut &b"\x00"[..]).map_err(kind),
            Err(ErrorKind::UnexpectedEof)
        );
        assert_eq!(
            read_array(&mut &b"\x00\x05ab"[..]).map_err(kind),
            Err(ErrorKind::UnexpectedEof)
        );
        assert_eq!(
            read_scalar(&mut &b"\x00\x00\x00\x05ab"[..], 10).map_err(kind),
            Err(ErrorKind::UnexpectedEof)
        );
        // 4 GiB declared, 2 bytes sent: refused on the prefix alone.
        assert_eq!(
            read_scalar(&mut &b"\xff\xff\xff\xffab"[..], 1 << 20).map_err(kind),
            Err(ErrorKind::InvalidData)
        );
    }
}
