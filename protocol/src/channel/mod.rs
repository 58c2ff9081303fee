//! MessageChannel: the control messages the agents exchange (module ⇄ watchdog start-up
//! report, watchdog ⇄ core, preloader).
//!
//! An array message is a 2-byte big-endian length followed by items each terminated by NUL.
//! A scalar is a 4-byte big-endian length followed by raw bytes.

use thiserror::Error;

mod blocking;
mod fds;
#[cfg(feature = "tokio")]
pub mod tokio_io;

pub use blocking::{read_array, read_scalar, write_array, write_scalar};
pub use fds::{MAX_FDS, recv_with_fds, send_with_fds};

/// The largest array message body: its length must fit the 2-byte prefix.
pub const MAX_ARRAY: usize = u16::MAX as usize;
/// The largest scalar the 4-byte prefix can announce.
pub const MAX_SCALAR: usize = u32::MAX as usize;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChannelError {
    #[error(
        "array message of {len} bytes does not fit the 2-byte length prefix (at most {MAX_ARRAY})"
    )]
    ArrayTooLarge { len: usize },
    #[error("array message item {index} contains a NUL byte")]
    NulInItem { index: usize },
    #[error("array message body of {len} bytes does not end in NUL (last byte at offset {})", .len + 1)]
    Unterminated { len: usize },
    #[error("scalar message of {len} bytes exceeds the limit of {limit} bytes")]
    ScalarTooLarge { len: usize, limit: usize },
}

impl From<ChannelError> for std::io::Error {
    fn from(e: ChannelError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Encodes an array message.
pub fn encode_array<T: AsRef<[u8]>>(items: &[T]) -> Result<Vec<u8>, ChannelError> {
    let mut out = vec![0u8; 2];
    for (index, item) in items.iter().enumerate() {
        let item = item.as_ref();
        if item.contains(&0) {
            return Err(ChannelError::NulInItem { index });
        }
        out.extend_from_slice(item);
        out.push(0);
        // Stop before a hostile caller's item list grows the buffer without bound.
        if out.len() - 2 > MAX_ARRAY {
            return Err(ChannelError::ArrayTooLarge { len: out.len() - 2 });
        }
    }
    let len = u16::try_from(out.len() - 2).expect("checked against MAX_ARRAY");
    out[..2].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Decodes an array message from the start of `buf`: `Ok(None)` when incomplete, else the
/// items and the number of bytes consumed. The 2-byte prefix bounds it to 64 KiB.
pub fn decode_array(buf: &[u8]) -> Result<crate::Decoded<Vec<Vec<u8>>>, ChannelError> {
    let Some(&[hi, lo]) = buf.get(..2) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let Some(body) = buf.get(2..2 + len) else {
        return Ok(None);
    };
    Ok(Some((split_items(body)?, 2 + len)))
}

/// Splits an array message body into its NUL-terminated items.
fn split_items(body: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
    let Some(items) = body.strip_suffix(&[0]) else {
        return match body.is_empty() {
            true => Ok(Vec::new()),
            false => Err(ChannelError::Unterminated { len: body.len() }),
        };
    };
    Ok(items.split(|&b| b == 0).map(<[u8]>::to_vec).collect())
}

/// Encodes a scalar message.
pub fn encode_scalar(data: &[u8]) -> Result<Vec<u8>, ChannelError> {
    let len = u32::try_from(data.len()).map_err(|_| ChannelError::ScalarTooLarge {
        len: data.len(),
        limit: MAX_SCALAR,
    })?;
    let mut out = Vec::with_capacity(4 + data.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

/// Reads a scalar's 4-byte prefix and checks it against `max`, so that callers refuse a huge
/// declared length before they buffer or allocate anything for it.
pub fn scalar_len(prefix: [u8; 4], max: usize) -> Result<usize, ChannelError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(ChannelError::ScalarTooLarge { len, limit: max });
    }
    Ok(len)
}

/// Decodes a scalar from the start of `buf`, refusing one longer than `max` before it is
/// buffered: `Ok(None)` when incomplete, else the payload and the bytes consumed.
pub fn decode_scalar(buf: &[u8], max: usize) -> Result<crate::Decoded<&[u8]>, ChannelError> {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Ok(None);
    };
    let len = scalar_len([a, b, c, d], max)?;
    Ok(buf.get(4..4 + len).map(|data| (data, 4 + len)))
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
    }

    #[test]
    fn array_errors() {
        assert_eq!(
            encode_array(&[b"a\0b"]),
            Err(ChannelError::NulInItem { index: 0 })
        );
        assert!(matches!(
            encode_array(&[vec![b'x'; 70000]]),
            Err(ChannelError::ArrayTooLarge { .. })
        ));
        assert_eq!(
            decode_array(b"\x00\x02ab"),
            Err(ChannelError::Unterminated { len: 2 })
        );
        assert_eq!(decode_array(b"\x00\x00"), Ok(Some((vec![], 2))));
    }

    #[test]
    fn scalar_round_trip_and_limit() {
        let msg = encode_scalar(b"hello").unwrap();
        assert_eq!(decode_scalar(&msg, 10).unwrap(), Some((&b"hello"[..], 9)));
        assert_eq!(decode_scalar(&msg[..6], 10).unwrap(), None);
        assert!(matches!(
            decode_scalar(&msg, 3),
            Err(ChannelError::ScalarTooLarge { .. })
        ));
    }
}
