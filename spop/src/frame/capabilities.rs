//! The `capabilities` comma list of HELLO frames (SPOE.txt §3.2.1).

use std::fmt;

use bytes::{BufMut, Bytes};

/// A set of SPOP capabilities, parsed from and written as the comma list.
///
/// Unknown names are ignored when parsing (a newer HAProxy may announce more);
/// the known ones are written in the order HAProxy writes them.
///
/// # Examples
///
/// ```
/// use haproxy_spop::Capabilities;
/// let caps = Capabilities::parse(b"pipelining, async");
/// assert!(caps.contains(Capabilities::PIPELINING));
/// assert!(!caps.contains(Capabilities::FRAGMENTATION));
/// assert_eq!(caps.to_string(), "pipelining,async");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u8);

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Capabilities {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        // Only the known capabilities can be written.
        Ok(Self(u.arbitrary::<u8>()? & 0b111))
    }
}

const NAMES: [(Capabilities, &str); 3] = [
    (Capabilities::PIPELINING, "pipelining"),
    (Capabilities::ASYNC, "async"),
    (Capabilities::FRAGMENTATION, "fragmentation"),
];

impl Capabilities {
    /// No capability.
    pub const NONE: Self = Self(0);
    /// Several NOTIFY in flight on one connection, ACKs in any order.
    pub const PIPELINING: Self = Self(1);
    /// ACKs may come back on another connection of the same engine (HAProxy 2.x).
    pub const ASYNC: Self = Self(2);
    /// NOTIFY frames may be split into fragments (HAProxy 2.x).
    pub const FRAGMENTATION: Self = Self(4);

    /// Parses a comma list; spaces around names are ignored, unknown names too.
    pub fn parse(list: &[u8]) -> Self {
        let mut caps = Self::NONE;
        for name in list.split(|&b| b == b',') {
            let name = name.trim_ascii();
            for (cap, known) in NAMES {
                if name == known.as_bytes() {
                    caps = caps | cap;
                }
            }
        }
        caps
    }

    /// `true` if every capability of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The capabilities both sets hold.
    #[must_use]
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// `true` if no capability is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn names(self) -> impl Iterator<Item = &'static str> {
        NAMES
            .into_iter()
            .filter(move |(cap, _)| self.contains(*cap))
            .map(|(_, name)| name)
    }

    /// The length of the comma list.
    pub(crate) fn list_len(self) -> usize {
        let (count, len) = self.names().fold((0, 0), |(c, l), n| (c + 1, l + n.len()));
        len + count.max(1) - 1
    }

    /// Writes the comma list.
    pub(crate) fn put_list(self, buf: &mut impl BufMut) {
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            buf.put_slice(name.as_bytes());
        }
    }

    /// The comma list as bytes.
    pub fn to_bytes(self) -> Bytes {
        let mut out = Vec::with_capacity(self.list_len());
        self.put_list(&mut out);
        Bytes::from(out)
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities({self})")
    }
}
