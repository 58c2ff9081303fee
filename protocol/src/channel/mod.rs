//! MessageChannel: the control messages the agents exchange (module ⇄ watchdog start-up
//! report, watchdog ⇄ core, preloader).
//!
//! An array message is a 2-byte big-endian length followed by items each terminated by NUL.
//! A scalar is a 4-byte big-endian length followed by raw bytes.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChannelError {
    #[error("array message of {0} bytes does not fit the 2-byte length prefix")]
    ArrayTooLarge(usize),
    #[error("array message item {0} contains a NUL byte")]
    NulInItem(usize),
    #[error("array message body does not end in NUL")]
    Unterminated,
    #[error("scalar message of {len} bytes exceeds the limit of {limit} bytes")]
    ScalarTooLarge { len: usize, limit: usize },
}

/// Encodes an array message.
pub fn encode_array<T: AsRef<[u8]>>(items: &[T]) -> Result<Vec<u8>, ChannelError> {
    let mut out = vec![0u8; 2];
    for (i, item) in items.iter().enumerate() {
        let item = item.as_ref();
        if item.contains(&0) {
            return Err(ChannelError::NulInItem(i));
        }
        out.extend_from_slice(item);
        out.push(0);
    }
    let len =
        u16::try_from(out.len() - 2).map_err(|_| ChannelError::ArrayTooLarge(out.len() - 2))?;
    out[..2].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Decodes an array message from the start of `buf`: `Ok(None)` when incomplete, else the
/// items and the number of bytes consumed.
pub fn decode_array(buf: &[u8]) -> Result<crate::Decoded<Vec<Vec<u8>>>, ChannelError> {
    let Some(len) = buf.get(..2) else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    let Some(body) = buf.get(2..2 + len) else {
        return Ok(None);
    };
    if body.last().is_some_and(|&b| b != 0) {
        return Err(ChannelError::Unterminated);
    }
    let items = body
        .split(|&b| b == 0)
        .take(body.iter().filter(|&&b| b == 0).count())
        .map(<[u8]>::to_vec)
        .collect();
    Ok(Some((items, 2 + len)))
}

/// Encodes a scalar message.
pub fn encode_scalar(data: &[u8]) -> Vec<u8> {
    let len = u32::try_from(data.len()).expect("scalar below 4 GiB");
    let mut out = Vec::with_capacity(4 + data.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Decodes a scalar from the start of `buf`, refusing one longer than `max` before it is
/// buffered: `Ok(None)` when incomplete, else the payload and the bytes consumed.
pub fn decode_scalar(buf: &[u8], max: usize) -> Result<crate::Decoded<&[u8]>, ChannelError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
    if len > max {
        return Err(ChannelError::ScalarTooLarge { len, limit: max });
    }
    Ok(buf.get(4..4 + len).map(|data| (data, 4 + len)))
}

/// Reads one array message from a blocking reader; `Ok(None)` on a clean EOF before it.
pub fn read_array(r: &mut impl std::io::Read) -> std::io::Result<Option<Vec<Vec<u8>>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = len.to_vec();
    buf.resize(2 + u16::from_be_bytes(len) as usize, 0);
    r.read_exact(&mut buf[2..])?;
    match decode_array(&buf) {
        Ok(Some((items, _))) => Ok(Some(items)),
        Ok(None) => unreachable!("the whole message was read"),
        Err(e) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_round_trip() {
        let msg = encode_array(&["ok", "", "/tmp/x"]).unwrap();
        assert_eq!(msg, b"\x00\x0bok\x00\x00/tmp/x\x00");
        let (items, used) = decode_array(&msg).unwrap().unwrap();
        assert_eq!(items, vec![b"ok".to_vec(), vec![], b"/tmp/x".to_vec()]);
        assert_eq!(used, msg.len());
        assert_eq!(decode_array(&msg[..5]), Ok(None));
        assert_eq!(read_array(&mut &msg[..]).unwrap().unwrap().len(), 3);
        assert_eq!(read_array(&mut &b""[..]).unwrap(), None);
    }

    #[test]
    fn array_errors() {
        assert_eq!(encode_array(&[b"a\0b"]), Err(ChannelError::NulInItem(0)));
        assert!(matches!(
            encode_array(&[vec![b'x'; 70000]]),
            Err(ChannelError::ArrayTooLarge(_))
        ));
        assert_eq!(decode_array(b"\x00\x02ab"), Err(ChannelError::Unterminated));
    }

    #[test]
    fn scalar_round_trip_and_limit() {
        let msg = encode_scalar(b"hello");
        assert_eq!(decode_scalar(&msg, 10).unwrap(), Some((&b"hello"[..], 9)));
        assert_eq!(decode_scalar(&msg[..6], 10).unwrap(), None);
        assert!(matches!(
            decode_scalar(&msg, 3),
            Err(ChannelError::ScalarTooLarge { .. })
        ));
    }
}
