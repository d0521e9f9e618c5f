//! HAPROXY-HELLO and AGENT-HELLO (SPOE.txt §3.2.4, §3.2.5).

use bytes::{BufMut, Bytes};

use super::Capabilities;
use crate::reader::Reader;
use crate::{varint, DecodeError, TypedData};

/// The handshake HAProxy opens each connection with.
///
/// Decoding requires `supported-versions`, `max-frame-size` and `capabilities`
/// (their absence or a wrong type gives [`DecodeError::MissingVersion`],
/// [`DecodeError::MissingMaxFrameSize`], [`DecodeError::MissingCapabilities`],
/// status codes 5, 6, 7); unknown keys are ignored. Encoding writes the keys in
/// HAProxy's order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct HaproxyHello {
    /// The comma list of versions HAProxy speaks, e.g. `"2.0"`.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::frame::arbitrary_bytes))]
    pub supported_versions: Bytes,
    /// The largest frame HAProxy accepts (`tune.bufsize` - 4).
    pub max_frame_size: u32,
    /// What HAProxy supports.
    pub capabilities: Capabilities,
    /// `true` on a health check (`option spop-check`).
    pub healthcheck: bool,
    /// A unique id of the HAProxy process (absent on health checks).
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::frame::arbitrary_opt_bytes))]
    pub engine_id: Option<Bytes>,
}

impl HaproxyHello {
    pub(crate) fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut versions = None;
        let mut max_frame_size = None;
        let mut capabilities = None;
        let mut healthcheck = false;
        let mut engine_id = None;
        let mut r = Reader::new(payload);
        while !r.is_empty() {
            let (key, value) = r.kv()?;
            match key {
                b"supported-versions" => versions = value.as_bytes().cloned(),
                b"max-frame-size" => max_frame_size = frame_size(&value)?,
                b"capabilities" => capabilities = value.as_bytes().map(|b| Capabilities::parse(b)),
                b"healthcheck" => healthcheck = value.as_bool().unwrap_or(false),
                b"engine-id" => engine_id = value.as_bytes().cloned(),
                _ => {}
            }
        }
        Ok(Self {
            supported_versions: versions.ok_or(DecodeError::MissingVersion)?,
            max_frame_size: max_frame_size.ok_or(DecodeError::MissingMaxFrameSize)?,
            capabilities: capabilities.ok_or(DecodeError::MissingCapabilities)?,
            healthcheck,
            engine_id,
        })
    }

    /// The versions listed in `supported-versions`, trimmed.
    pub fn versions(&self) -> impl Iterator<Item = &[u8]> {
        self.supported_versions
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|v| !v.is_empty())
    }

    /// `true` if HAProxy lists a 2.x version (the protocol this crate speaks).
    pub fn supports_v2(&self) -> bool {
        self.versions().any(|v| v == b"2" || v.starts_with(b"2."))
    }

    pub(crate) fn encoded_len(&self) -> usize {
        string_kv_len("supported-versions", self.supported_versions.len())
            + kv_len("max-frame-size", &TypedData::Uint32(self.max_frame_size))
            + string_kv_len("capabilities", self.capabilities.list_len())
            + if self.healthcheck {
                kv_len("healthcheck", &TypedData::Bool(true))
            } else {
                0
            }
            + self
                .engine_id
                .as_ref()
                .map_or(0, |id| string_kv_len("engine-id", id.len()))
    }

    pub(crate) fn encode(&self, buf: &mut impl BufMut) {
        put_kv(
            buf,
            "supported-versions",
            &TypedData::String(self.supported_versions.clone()),
        );
        put_kv(
            buf,
            "max-frame-size",
            &TypedData::Uint32(self.max_frame_size),
        );
        put_capabilities(buf, self.capabilities);
        if self.healthcheck {
            put_kv(buf, "healthcheck", &TypedData::Bool(true));
        }
        if let Some(id) = &self.engine_id {
            put_kv(buf, "engine-id", &TypedData::String(id.clone()));
        }
    }
}

/// The agent's answer to [`HaproxyHello`].
///
/// # Examples
///
/// ```
/// use haproxy_spop::{AgentHello, Capabilities};
/// let hello = AgentHello::new(16380, Capabilities::PIPELINING);
/// assert_eq!(&hello.version[..], b"2.0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AgentHello {
    /// The version chosen, `"2.0"`.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::frame::arbitrary_bytes))]
    pub version: Bytes,
    /// The largest frame the agent accepts, at most HAProxy's.
    pub max_frame_size: u32,
    /// The capabilities the agent uses, a subset of HAProxy's.
    pub capabilities: Capabilities,
}

impl AgentHello {
    /// Version "2.0" with the given limit and capabilities.
    pub const fn new(max_frame_size: u32, capabilities: Capabilities) -> Self {
        Self {
            version: Bytes::from_static(b"2.0"),
            max_frame_size,
            capabilities,
        }
    }

    /// The answer to `hello` from an agent that accepts frames up to
    /// `max_frame_size` and supports `capabilities`: the smaller limit, the
    /// capabilities both sides have, and `fragmentation` if the agent has it
    /// (HAProxy 2.x uses it without listing it). Checks nothing; see
    /// [`negotiate`](crate::negotiate) for the checks a server makes.
    pub fn answering(
        hello: &HaproxyHello,
        max_frame_size: u32,
        capabilities: Capabilities,
    ) -> Self {
        // fragmentation says what the agent can *receive*: HAProxy 2.x
        // fragments when the agent announces it, although its own HELLO does
        // not list it, so it is kept whenever the agent supports it.
        let receive_only = capabilities.intersection(Capabilities::FRAGMENTATION);
        Self::new(
            hello.max_frame_size.min(max_frame_size),
            hello.capabilities.intersection(capabilities) | receive_only,
        )
    }

    pub(crate) fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut version = None;
        let mut max_frame_size = None;
        let mut capabilities = None;
        let mut r = Reader::new(payload);
        while !r.is_empty() {
            let (key, value) = r.kv()?;
            match key {
                b"version" => version = value.as_bytes().cloned(),
                b"max-frame-size" => max_frame_size = frame_size(&value)?,
                b"capabilities" => capabilities = value.as_bytes().map(|b| Capabilities::parse(b)),
                _ => {}
            }
        }
        Ok(Self {
            version: version.ok_or(DecodeError::MissingVersion)?,
            max_frame_size: max_frame_size.ok_or(DecodeError::MissingMaxFrameSize)?,
            capabilities: capabilities.ok_or(DecodeError::MissingCapabilities)?,
        })
    }

    pub(crate) fn encoded_len(&self) -> usize {
        string_kv_len("version", self.version.len())
            + kv_len("max-frame-size", &TypedData::Uint32(self.max_frame_size))
            + string_kv_len("capabilities", self.capabilities.list_len())
    }

    pub(crate) fn encode(&self, buf: &mut impl BufMut) {
        put_kv(buf, "version", &TypedData::String(self.version.clone()));
        put_kv(
            buf,
            "max-frame-size",
            &TypedData::Uint32(self.max_frame_size),
        );
        put_capabilities(buf, self.capabilities);
    }
}

/// `max-frame-size`: any integer type that fits a `u32`; another type counts as absent.
fn frame_size(value: &TypedData) -> Result<Option<u32>, DecodeError> {
    match value.as_u64() {
        Some(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| DecodeError::InvalidValue {
                what: "max-frame-size",
            }),
        None if value.as_i64().is_some() => Err(DecodeError::InvalidValue {
            what: "max-frame-size",
        }),
        None => Ok(None),
    }
}

pub(crate) fn kv_len(key: &str, value: &TypedData) -> usize {
    varint::encoded_len(key.len() as u64) + key.len() + value.encoded_len()
}

fn string_kv_len(key: &str, len: usize) -> usize {
    varint::encoded_len(key.len() as u64) + key.len() + 1 + varint::encoded_len(len as u64) + len
}

pub(crate) fn put_kv(buf: &mut impl BufMut, key: &str, value: &TypedData) {
    varint::encode(key.len() as u64, buf);
    buf.put_slice(key.as_bytes());
    value.encode(buf);
}

fn put_capabilities(buf: &mut impl BufMut, caps: Capabilities) {
    let key = "capabilities";
    varint::encode(key.len() as u64, buf);
    buf.put_slice(key.as_bytes());
    buf.put_u8(crate::DataType::STRING.0);
    varint::encode(caps.list_len() as u64, buf);
    caps.put_list(buf);
}
