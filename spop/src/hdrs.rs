//! `req.hdrs_bin` / `res.hdrs_bin` blocks: HAProxy's binary header lists.
//!
//! ```text
//! <varint len><name><varint len><value> ... <0x00><0x00>
//! ```
//! Names arrive lower-cased; repeated headers stay separate; two empty strings end the block.

use std::fmt;

use bytes::{BufMut, Bytes};

use crate::reader::Reader;
use crate::{varint, DecodeError};

/// A validated header block; iterating yields `(name, value)` views into it.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use haproxy_spop::Headers;
/// let block = Headers::encode([("host", "example.com"), ("accept", "*/*")]);
/// let headers = Headers::decode(block).unwrap();
/// assert_eq!(headers.len(), 2);
/// assert_eq!(headers.get("Host").as_deref(), Some(&b"example.com"[..]));
/// let names: Vec<Bytes> = headers.iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["host", "accept"]);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Headers {
    block: Bytes,
    count: usize,
}

fn invalid(what: &'static str) -> DecodeError {
    DecodeError::InvalidHeaderBlock { what }
}

impl Headers {
    /// Validates a block.
    ///
    /// # Errors
    ///
    /// [`DecodeError::InvalidHeaderBlock`] if a length runs past the end, a
    /// header has an empty name and a value, the end marker is missing, or
    /// bytes follow it.
    pub fn decode(block: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&block);
        let mut count = 0;
        loop {
            if r.is_empty() {
                return Err(invalid("no end marker"));
            }
            let name = r
                .string_ref("header name")
                .map_err(|_| invalid("truncated name"))?;
            let value = r
                .string_ref("header value")
                .map_err(|_| invalid("truncated value"))?;
            if name.is_empty() {
                if !value.is_empty() {
                    return Err(invalid("empty header name"));
                }
                if !r.is_empty() {
                    return Err(invalid("bytes after the end marker"));
                }
                return Ok(Self { block, count });
            }
            count += 1;
        }
    }

    /// A block the builder made: valid by construction.
    pub(crate) const fn from_validated(block: Bytes, count: usize) -> Self {
        Self { block, count }
    }

    /// Builds a block from `(name, value)` pairs, with its end marker.
    ///
    /// Nothing is checked (an empty name ends the block early); see
    /// [`HeadersBuilder`](crate::HeadersBuilder) for blocks handed to HAProxy.
    pub fn encode<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> Bytes {
        let mut out = Vec::new();
        for (name, value) in headers {
            let (name, value) = (name.as_ref(), value.as_ref());
            varint::encode(name.len() as u64, &mut out);
            out.put_slice(name);
            varint::encode(value.len() as u64, &mut out);
            out.put_slice(value);
        }
        out.put_slice(&[0, 0]);
        Bytes::from(out)
    }

    /// The headers in order.
    pub fn iter(&self) -> HeaderIter<'_> {
        HeaderIter {
            reader: Reader::new(&self.block),
            left: self.count,
        }
    }

    /// The headers in order, borrowed: like [`Headers::iter`], with names
    /// and values as slices of the block (no reference count per header),
    /// for looking at every header as cheaply as possible.
    pub fn iter_ref(&self) -> HeaderRefIter<'_> {
        HeaderRefIter(self.iter())
    }

    /// The value of the first header with this name (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<Bytes> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// How many headers the block holds.
    pub const fn len(&self) -> usize {
        self.count
    }

    /// `true` if the block holds no header.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The raw block, end marker included.
    pub const fn as_bytes(&self) -> &Bytes {
        &self.block
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: values may hold credentials.
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(n, _)| String::from_utf8_lossy(&n).into_owned()),
            )
            .finish()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (Bytes, Bytes);
    type IntoIter = HeaderIter<'a>;
    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// Iterator over the `(name, value)` pairs of a [`Headers`] block.
#[derive(Clone)]
pub struct HeaderIter<'a> {
    reader: Reader<'a>,
    left: usize,
}

impl fmt::Debug for HeaderIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderIter")
            .field("left", &self.left)
            .finish()
    }
}

impl<'a> HeaderIter<'a> {
    /// The next pair, each part read with `read`.
    fn next_with<T>(
        &mut self,
        read: impl Fn(&mut Reader<'a>, &'static str) -> Result<T, DecodeError>,
    ) -> Option<(T, T)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let name = read(&mut self.reader, "header name").ok()?;
        let value = read(&mut self.reader, "header value").ok()?;
        Some((name, value))
    }
}

impl Iterator for HeaderIter<'_> {
    type Item = (Bytes, Bytes);

    fn next(&mut self) -> Option<(Bytes, Bytes)> {
        self.next_with(Reader::string)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for HeaderIter<'_> {}

/// Iterator over the borrowed `(name, value)` pairs of a [`Headers`] block
/// ([`Headers::iter_ref`]).
#[derive(Clone, Debug)]
pub struct HeaderRefIter<'a>(HeaderIter<'a>);

impl<'a> Iterator for HeaderRefIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        self.0.next_with(Reader::string_ref)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for HeaderRefIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(block: &'static [u8]) -> DecodeError {
        Headers::decode(Bytes::from_static(block)).unwrap_err()
    }

    #[test]
    fn malformed_blocks() {
        assert_eq!(err(b""), invalid("no end marker"));
        assert_eq!(err(b"\x01a\x01b"), invalid("no end marker"));
        assert_eq!(err(b"\x05ab"), invalid("truncated name"));
        assert_eq!(err(b"\x01a\x05b"), invalid("truncated value"));
        assert_eq!(err(b"\x00\x01x\x00\x00"), invalid("empty header name"));
        assert_eq!(err(b"\x00\x00\x00"), invalid("bytes after the end marker"));
        assert_eq!(err(b"\x01a\x01b\x00"), invalid("truncated value"));
    }

    #[test]
    fn empty_block_and_repeats() {
        let h = Headers::decode(Bytes::from_static(b"\x00\x00")).unwrap();
        assert!(h.is_empty());
        let h = Headers::decode(Headers::encode([("a", "1"), ("a", "2"), ("b", "")])).unwrap();
        let all: Vec<_> = h.iter().collect();
        assert_eq!(
            all,
            [
                ("a".into(), "1".into()),
                ("a".into(), "2".into()),
                ("b".into(), "".into())
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn roundtrip(pairs: Vec<(Vec<u8>, Vec<u8>)>) {
            let pairs: Vec<_> = pairs.into_iter().map(|(mut n, v)| { n.push(b'x'); (n, v) }).collect();
            let h = Headers::decode(Headers::encode(pairs.iter().map(|(n, v)| (n, v)))).unwrap();
            let back: Vec<(Vec<u8>, Vec<u8>)> = h.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
            proptest::prop_assert_eq!(&back, &pairs);
            let borrowed: Vec<(Vec<u8>, Vec<u8>)> = h.iter_ref().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
            proptest::prop_assert_eq!(borrowed, pairs);
        }

        #[test]
        fn never_panics(block: Vec<u8>) {
            if let Ok(h) = Headers::decode(Bytes::from(block)) {
                proptest::prop_assert_eq!(h.iter().count(), h.len());
                proptest::prop_assert_eq!(h.iter_ref().count(), h.len());
            }
        }
    }
}
