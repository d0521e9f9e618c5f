//! HAProxy's variable-length integers (SPOE.txt §3.1).
//!
//! A value below 240 is one byte. Larger values put their low 4 bits in a first
//! byte marked `0xf0`, then 7 bits a byte, each byte but the last with its high
//! bit set, every step after subtracting what the previous byte already counts.
//! A `u64` takes 1 to 10 bytes; the scheme is a bijection, so the only
//! non-canonical input is one longer than 10 bytes or one that overflows.
//! Signed values (INT32, INT64) travel as their two's complement in 64 bits.
//!
//! ```
//! use haproxy_spop::varint;
//! let mut buf = Vec::new();
//! varint::encode(2288, &mut buf);
//! assert_eq!(buf, [0xf0, 0x80, 0x00]);
//! assert_eq!(varint::decode_slice(&buf), Ok((2288, 3)));
//! ```

use bytes::{Buf, BufMut};

use crate::DecodeError;

/// The longest encoding, that of `u64::MAX`.
pub const MAX_LEN: usize = 10;

/// The number of bytes `value` takes on the wire.
///
/// # Examples
///
/// ```
/// assert_eq!(haproxy_spop::varint::encoded_len(239), 1);
/// assert_eq!(haproxy_spop::varint::encoded_len(240), 2);
/// assert_eq!(haproxy_spop::varint::encoded_len(u64::MAX), 10);
/// ```
pub const fn encoded_len(value: u64) -> usize {
    if value < 240 {
        return 1;
    }
    let mut v = (value - 240) >> 4;
    let mut len = 2;
    while v >= 128 {
        v = (v - 128) >> 7;
        len += 1;
    }
    len
}

/// Writes `value` to `buf`.
///
/// # Panics
///
/// Panics if `buf` has less than [`encoded_len`]`(value)` bytes of room (never for
/// a growable buffer such as `Vec<u8>` or `BytesMut`).
///
/// # Examples
///
/// ```
/// let mut buf = Vec::new();
/// haproxy_spop::varint::encode(16380, &mut buf);
/// assert_eq!(buf, [0xfc, 0xf0, 0x06]);
/// ```
pub fn encode(value: u64, buf: &mut impl BufMut) {
    if value < 240 {
        buf.put_u8(value as u8);
        return;
    }
    let mut v = value;
    // The first byte keeps the low 4 bits and the 0xf0 marker.
    buf.put_u8((v as u8) | 0xf0);
    v = (v - 240) >> 4;
    while v >= 128 {
        buf.put_u8((v as u8) | 0x80);
        v = (v - 128) >> 7;
    }
    buf.put_u8(v as u8);
}

/// Writes a signed value as its 64-bit two's complement (INT32 and INT64).
///
/// # Examples
///
/// ```
/// let mut buf = Vec::new();
/// haproxy_spop::varint::encode_signed(-42, &mut buf);
/// assert_eq!(buf.len(), 10);
/// ```
pub fn encode_signed(value: i64, buf: &mut impl BufMut) {
    encode(value as u64, buf);
}

/// Reads a varint at the start of `src`, returning the value and the bytes used.
///
/// # Errors
///
/// [`DecodeError::Truncated`] if `src` ends inside the varint,
/// [`DecodeError::VarintTooLong`] past 10 bytes, [`DecodeError::VarintOverflow`]
/// if the value does not fit in a `u64`.
///
/// # Examples
///
/// ```
/// use haproxy_spop::{varint, DecodeError};
/// assert_eq!(varint::decode_slice(&[0xef, 0x00]), Ok((239, 1)));
/// assert!(matches!(varint::decode_slice(&[0xf0]), Err(DecodeError::Truncated { .. })));
/// ```
#[inline]
pub fn decode_slice(src: &[u8]) -> Result<(u64, usize), DecodeError> {
    let Some(&first) = src.first() else {
        return Err(DecodeError::Truncated { what: "varint" });
    };
    if first < 240 {
        return Ok((u64::from(first), 1));
    }
    let mut value = u128::from(first);
    let mut shift = 4u32;
    for (i, &byte) in src.iter().enumerate().skip(1).take(MAX_LEN - 1) {
        value += u128::from(byte) << shift;
        if byte < 128 {
            return u64::try_from(value)
                .map(|v| (v, i + 1))
                .map_err(|_| DecodeError::VarintOverflow);
        }
        shift += 7;
    }
    if src.len() >= MAX_LEN {
        Err(DecodeError::VarintTooLong { max: MAX_LEN })
    } else {
        Err(DecodeError::Truncated { what: "varint" })
    }
}

/// Reads a varint from `buf`, advancing it past the bytes used.
///
/// # Errors
///
/// As [`decode_slice`]; on error `buf` may have been partly consumed.
///
/// # Examples
///
/// ```
/// let mut buf: &[u8] = &[0xff, 0x7f, 0x01];
/// assert_eq!(haproxy_spop::varint::decode(&mut buf), Ok(2287));
/// assert_eq!(buf, &[0x01]);
/// ```
pub fn decode(buf: &mut impl Buf) -> Result<u64, DecodeError> {
    let chunk = buf.chunk();
    if chunk.len() >= MAX_LEN || chunk.len() == buf.remaining() {
        let (value, used) = decode_slice(chunk)?;
        buf.advance(used);
        return Ok(value);
    }
    // The varint may straddle chunks: gather its bytes one at a time.
    let mut tmp = [0u8; MAX_LEN];
    let mut len = 0;
    while let Some(slot) = tmp.get_mut(len) {
        let Ok(byte) = buf.try_get_u8() else { break };
        *slot = byte;
        len += 1;
        if (len == 1 && byte < 240) || (len > 1 && byte < 128) {
            break;
        }
    }
    decode_slice(tmp.get(..len).unwrap_or_default()).map(|(value, _)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (value, wire bytes) pairs, checked in both directions.
    const TABLE: &[(u64, &[u8])] = &[
        (0, &[0x00]),
        (1, &[0x01]),
        (239, &[0xef]),
        (240, &[0xf0, 0x00]),
        (241, &[0xf1, 0x00]),
        (255, &[0xff, 0x00]),
        (256, &[0xf0, 0x01]),
        (2287, &[0xff, 0x7f]),
        (2288, &[0xf0, 0x80, 0x00]),
        (16380, &[0xfc, 0xf0, 0x06]),
        (264431, &[0xff, 0xff, 0x7f]),
        (264432, &[0xf0, 0x80, 0x80, 0x00]),
        (
            u64::MAX,
            &[0xff, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0e],
        ),
    ];

    #[test]
    fn table_both_ways() {
        for &(value, wire) in TABLE {
            let mut buf = Vec::new();
            encode(value, &mut buf);
            assert_eq!(buf, wire, "encode {value}");
            assert_eq!(encoded_len(value), wire.len(), "encoded_len {value}");
            assert_eq!(
                decode_slice(wire),
                Ok((value, wire.len())),
                "decode {value}"
            );
            let mut b = wire;
            assert_eq!(decode(&mut b), Ok(value));
            assert!(b.is_empty());
        }
    }

    #[test]
    fn length_boundaries() {
        assert_eq!(encoded_len(239), 1);
        assert_eq!(encoded_len(240), 2);
        assert_eq!(encoded_len(2287), 2);
        assert_eq!(encoded_len(2288), 3);
        assert_eq!(encoded_len(264431), 3);
        assert_eq!(encoded_len(264432), 4);
    }

    #[test]
    fn truncated() {
        for &(_, wire) in TABLE {
            for cut in 0..wire.len() {
                assert_eq!(
                    decode_slice(&wire[..cut]),
                    Err(DecodeError::Truncated { what: "varint" }),
                    "{wire:x?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn too_long_and_overflow() {
        let long = [0xffu8; 11];
        assert_eq!(
            decode_slice(&long),
            Err(DecodeError::VarintTooLong { max: MAX_LEN })
        );
        let mut over = [0xff, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0f];
        assert_eq!(decode_slice(&over), Err(DecodeError::VarintOverflow));
        over[9] = 0x7f;
        assert_eq!(decode_slice(&over), Err(DecodeError::VarintOverflow));
    }

    #[test]
    fn multi_chunk_buf() {
        let wire = [0xf0u8, 0x80, 0x80, 0x00];
        let mut chain = (&wire[..2]).chain(&wire[2..]);
        assert_eq!(decode(&mut chain), Ok(264432));
        assert!(!chain.has_remaining());
    }

    proptest::proptest! {
        #[test]
        fn roundtrip(v: u64) {
            let mut buf = Vec::new();
            encode(v, &mut buf);
            proptest::prop_assert_eq!(buf.len(), encoded_len(v));
            proptest::prop_assert_eq!(decode_slice(&buf), Ok((v, buf.len())));
        }

        #[test]
        fn signed_roundtrip(v: i64) {
            let mut buf = Vec::new();
            encode_signed(v, &mut buf);
            let (u, _) = decode_slice(&buf).unwrap();
            proptest::prop_assert_eq!(u as i64, v);
        }

        #[test]
        fn never_panics(bytes: Vec<u8>) {
            let _ = decode_slice(&bytes);
        }
    }
}
