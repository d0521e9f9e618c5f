//! Command line and configuration file.
//!
//! The TOML file given with `--config` is the full source of settings: the
//! global ones at the top level (the same names as the flags, with `_` or
//! `-`), and one `[[target]]` table per shadow server, deserialized with
//! serde ([`FileConfig`], [`TargetTable`]). A target table may set any of
//! the per-target settings; what it leaves out comes from the global
//! settings.
//!
//! Precedence, for each setting: a `[[target]]` table's own value, then a
//! flag given on the command line, then the file's top level, then the
//! built-in default. `--target URL` flags *add* targets (with the global
//! settings) to the file's `[[target]]` tables.
//!
//! Durations are parsed by `humantime` (`250ms`, `5s`, `2m`; a bare number
//! is seconds), sizes by `bytesize` (`64MiB`, `1MB`, or a number of bytes).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use haproxy_spop::runtime::ListenAddr;
use http::header::{HeaderName, HeaderValue};
use http::Uri;
use serde::Deserialize;

/// Mirrors HTTP traffic that HAProxy reports over SPOP to shadow servers.
///
/// HAProxy's SPOE filter sends one `mirror` message per request (method,
/// URL, version, headers, body); spop-mirror answers at once and replays the
/// request to every target in the background, never slowing production
/// traffic. Answers from targets are read and discarded.
#[derive(Debug, Clone, Parser)]
#[command(version, about, long_about = None, args_override_self = true)]
pub struct Config {
    /// Where HAProxy connects: `host:port` or `unix:/path/to/socket`.
    #[arg(long, default_value = "127.0.0.1:12345", value_name = "ADDR")]
    pub listen: ListenAddr,

    /// A shadow server, `http://host:port` or `https://host:port` (may
    /// repeat; each gets the global settings). A path in the URL is put in
    /// front of mirrored paths. Added to the file's `[[target]]` tables.
    #[arg(long = "target", value_name = "URL", required = true, value_parser = parse_target)]
    pub targets: Vec<Uri>,

    /// Share of requests mirrored, in percent (0 to 100, decimals allowed,
    /// down to 0.0001).
    #[arg(long, default_value_t = 100.0, value_name = "PERCENT", value_parser = parse_percent)]
    pub sample: f64,

    /// Mirror only these methods (may repeat; default: all).
    #[arg(long = "method", value_name = "METHOD")]
    pub methods: Vec<String>,

    /// Mirror only paths starting with this prefix (may repeat; any matches).
    #[arg(long = "path-prefix", value_name = "PREFIX")]
    pub path_prefixes: Vec<String>,

    /// Mirror only paths (with query) matching this regular expression.
    #[arg(long = "path-regex", value_name = "REGEX")]
    pub path_regex: Option<regex::Regex>,

    /// Mirror only requests that have this header (may repeat; all must be present).
    #[arg(long = "header-present", value_name = "NAME", value_parser = parse_header_name)]
    pub header_present: Vec<HeaderName>,

    /// Mirror only requests without this header (may repeat).
    #[arg(long = "header-absent", value_name = "NAME", value_parser = parse_header_name)]
    pub header_absent: Vec<HeaderName>,

    /// Mirror only requests whose header matches a regular expression,
    /// `Name: regex` (may repeat; all must match; a missing header does not).
    #[arg(long = "header-match", value_name = "'NAME: REGEX'", value_parser = parse_header_match)]
    pub header_match: Vec<HeaderMatch>,

    /// Sample by a key instead of at random, so that a session is either
    /// wholly mirrored or not: `header:NAME`, `cookie:NAME`, or `src` (the
    /// client address, from the message's `--arg-src` argument). Requests
    /// without the key are sampled at random.
    #[arg(long, value_name = "header:NAME|cookie:NAME|src")]
    pub sticky: Option<StickyKey>,

    /// Requests per second mirrored at most, per target (token bucket);
    /// more are dropped as `rate_limited`. 0: no cap.
    #[arg(long, default_value_t = 0.0, value_name = "RPS")]
    pub rate_limit: f64,

    /// Requests let through at once above the rate (the bucket's size);
    /// 0: a tenth of a second's worth (at least 1).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub rate_burst: u32,

    /// Add a header to every mirrored request, `Name: value` (may repeat).
    #[arg(long = "add-header", value_name = "'NAME: VALUE'", value_parser = parse_header)]
    pub add_headers: Vec<(HeaderName, HeaderValue)>,

    /// Set a header (replacing the request's), `Name: value` (may repeat).
    #[arg(long = "set-header", value_name = "'NAME: VALUE'", value_parser = parse_header)]
    pub set_headers: Vec<(HeaderName, HeaderValue)>,

    /// Remove a header (may repeat).
    #[arg(long = "remove-header", value_name = "NAME", value_parser = parse_header_name)]
    pub remove_headers: Vec<HeaderName>,

    /// Replace this header's value with `--redact-value` (may repeat);
    /// `credentials` stands for Authorization, Proxy-Authorization, Cookie,
    /// X-Api-Key, X-Auth-Token and X-Amz-Security-Token.
    #[arg(long = "redact", value_name = "NAME|credentials")]
    pub redact: Vec<String>,

    /// The value redacted headers get.
    #[arg(long, default_value = "REDACTED", value_name = "VALUE")]
    pub redact_value: String,

    /// The header marking mirrored requests, `Name: value`; a request that
    /// arrives with this header is not mirrored again (counted as `loop`).
    /// An empty value (`--loop-header ''`) disables both.
    #[arg(
        long,
        default_value = "X-Mirrored-By: spop-mirror",
        value_name = "'NAME: VALUE'"
    )]
    pub loop_header: String,

    /// The Host header sent: `keep` the original, `target` (the target's
    /// host:port), or any other value to send as is.
    #[arg(long, default_value = "keep", value_name = "keep|target|HOST")]
    pub host: HostRewrite,

    /// Time to connect to a target (TLS handshake included).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Time for a whole mirrored request, answer included.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Requests in flight at once per target.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_concurrency: usize,

    /// Requests waiting per target; when full, new requests are dropped (and counted).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub queue_size: usize,

    /// Bytes (headers and bodies) waiting, all targets together; past it,
    /// new requests are dropped (and counted). `64MiB`, `500kB`, or bytes.
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = parse_size)]
    pub max_queued_bytes: usize,

    /// Send bodies HAProxy cut short (Content-Length larger than what arrived)
    /// as they are, with their true length. By default they are skipped.
    #[arg(long)]
    pub send_truncated: bool,

    /// Speak HTTP/2 to the targets: h2c (prior knowledge) to `http://`
    /// ones; to `https://` ones, offer only `h2` by ALPN (by default they
    /// are offered `h2` and `http/1.1`, and the server picks).
    #[arg(long)]
    pub http2: bool,

    /// Speak only HTTP/1.1 to `https://` targets (ALPN `http/1.1`).
    #[arg(long, conflicts_with = "http2")]
    pub http1_only: bool,

    /// CA certificates (PEM) trusted for `https://` targets instead of the
    /// built-in Mozilla roots (webpki-roots).
    #[arg(long, value_name = "PATH")]
    pub tls_ca_file: Option<PathBuf>,

    /// Client certificate chain (PEM) presented to `https://` targets (mTLS).
    #[arg(long, value_name = "PATH", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,

    /// The name sent as SNI and verified in `https://` targets'
    /// certificates (default: the target URL's host).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Do not verify `https://` targets' certificates (a warning is logged
    /// at start-up). For test set-ups only.
    #[arg(long)]
    pub tls_insecure: bool,

    /// Serve SPOP over TLS with this certificate chain (PEM); HAProxy's
    /// `server ... ssl`. Needs `--tls-key`.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require HAProxy to present a client certificate signed by these CAs (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Serve Prometheus metrics on `http://ADDR/metrics`.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Connections to the metrics endpoint served at once; more are closed
    /// as they come.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub metrics_max_connections: usize,

    /// Time a metrics client has to send its request's headers; a
    /// connection silent (or idle) that long is closed.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub metrics_header_timeout: Duration,

    /// Log filter: error, warn, info, debug, trace (or a tracing directive).
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,

    /// Log format.
    #[arg(long, default_value = "text", value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// The SPOE message to mirror (`spoe-message <name>`).
    #[arg(long, default_value = "mirror", value_name = "NAME")]
    pub message: String,

    /// Argument carrying the method.
    #[arg(long, default_value = "arg_method", value_name = "NAME")]
    pub arg_method: String,

    /// Argument carrying the URL (`url`).
    #[arg(long, default_value = "arg_path", value_name = "NAME")]
    pub arg_path: String,

    /// Argument carrying the HTTP version (`req.ver`).
    #[arg(long, default_value = "arg_ver", value_name = "NAME")]
    pub arg_ver: String,

    /// Argument carrying the headers (`req.hdrs_bin`).
    #[arg(long, default_value = "arg_hdrs", value_name = "NAME")]
    pub arg_hdrs: String,

    /// Argument carrying the body (`req.body`).
    #[arg(long, default_value = "arg_body", value_name = "NAME")]
    pub arg_body: String,

    /// Argument carrying the client address (`src`), optional; used by
    /// `sticky = "src"`.
    #[arg(long, default_value = "arg_src", value_name = "NAME")]
    pub arg_src: String,

    /// Argument carrying the body's true size (`req.body_size`), optional:
    /// when the message has it, a body shorter than it was cut short by
    /// HAProxy (this is how truncated chunked bodies are seen). Without it,
    /// only a Content-Length larger than the body marks truncation.
    #[arg(long, default_value = "arg_body_size", value_name = "NAME")]
    pub arg_body_size: String,

    /// The largest SPOP frame accepted from HAProxy, in bytes. HAProxy
    /// proposes its `tune.bufsize` minus 4 and the smaller of the two is
    /// used; HAProxy 3.1+ drops a message larger than that, so this must
    /// cover the bodies to mirror. The default covers buffers up to 1 MiB;
    /// buffers only grow as bytes arrive.
    #[arg(long, default_value_t = 1_048_572, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(256..))]
    pub max_frame_size: u32,

    /// On SIGTERM/SIGINT, time given to queued and in-flight mirrored requests.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Worker threads (default: one per CPU). 1 runs everything on one
    /// thread, which is often best on a small machine shared with HAProxy.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// SPOP connections from HAProxy served at once.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,

    /// Read settings from this TOML file (see the module documentation for
    /// precedence). SIGHUP reads it again.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Also read the file again when its modification time changes
    /// (checked every second).
    #[arg(long, requires = "config")]
    pub watch_config: bool,

    /// The file's `[[target]]` tables (set by [`Config::load`]).
    #[arg(skip)]
    pub target_tables: Vec<TargetTable>,

    /// The command line [`Config::load`] was given (read again on reload).
    #[arg(skip)]
    pub args: Vec<OsString>,

    /// HTTP/1.1 pipelining: each connection to a target writes up to N
    /// queued requests at once (at most 64 KiB of them past the first) and
    /// reads their answers in order, with spop-mirror's own HTTP/1.1 writer
    /// (the same bytes as hyper's), under one --request-timeout per batch;
    /// up to --max-concurrency × N requests are then in flight per target.
    /// 0 (the default) sends one request at a time with hyper. Mirrored
    /// requests are never resent: those a target drops mid-pipeline are
    /// counted as errors. Ignored with --http2.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub pipeline: usize,

    /// Run the SPOP side on the mirroring runtime instead of a thread of its
    /// own: no thread wakes another per request (the least CPU per mirrored
    /// request), but mirroring then competes with reading NOTIFYs, and on a
    /// saturated machine it falls behind in bursts (drops counted as
    /// `queue_full`) and HAProxy's p99 grows. Best with `--threads 1` on a
    /// machine with CPU to spare.
    #[arg(long)]
    pub shared_runtime: bool,
}

/// How the Host header is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRewrite {
    /// The original Host.
    Keep,
    /// The target's `host:port`.
    Target,
    /// This value.
    Fixed(HeaderValue),
}

impl std::str::FromStr for HostRewrite {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keep" => Ok(Self::Keep),
            "target" => Ok(Self::Target),
            other => HeaderValue::from_str(other)
                .map(Self::Fixed)
                .map_err(|e| format!("bad Host value: {e}")),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The key sticky sampling hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value (from the Cookie header).
    Cookie(String),
    /// The client address (the message's `--arg-src` argument).
    Src,
}

impl std::str::FromStr for StickyKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "src" {
            return Ok(Self::Src);
        }
        match s.split_once(':') {
            Some(("header", name)) => parse_header_name(name.trim()).map(Self::Header),
            Some(("cookie", name)) if !name.trim().is_empty() => {
                Ok(Self::Cookie(name.trim().to_owned()))
            }
            _ => Err(format!(
                "bad sticky key {s:?}: header:NAME, cookie:NAME or src"
            )),
        }
    }
}

/// A header that must match a regular expression.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// The header.
    pub name: HeaderName,
    /// What its value must match.
    pub regex: regex::Regex,
}

fn parse_target(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("bad target URL {s:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{s}: target must be an http:// or https:// URL")),
    }
    if uri.authority().is_none() {
        return Err(format!("{s}: target needs a host"));
    }
    if uri.query().is_some() {
        return Err(format!("{s}: target must not have a query"));
    }
    Ok(uri)
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|e| format!("{e}"))?;
    check_percent(v)
}

fn check_percent(v: f64) -> Result<f64, String> {
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 100"))
    }
}

/// Headers `--add-header` may not set: spop-mirror sets Host (`--host`) and
/// Content-Length itself, and hop-by-hop headers belong to one connection.
pub const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// The headers `redact = "credentials"` stands for.
pub const CREDENTIAL_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-auth-token",
    "x-amz-security-token",
];

fn parse_header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.trim().as_bytes()).map_err(|e| format!("bad header name {s:?}: {e}"))
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s.split_once(':').ok_or("expected 'Name: value'")?;
    let name = parse_header_name(name)?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "{name} cannot be added: spop-mirror sets Host (see --host) and \
             Content-Length itself, and never forwards hop-by-hop headers \
             (Connection, Keep-Alive, Proxy-Connection, TE, Trailer, \
             Transfer-Encoding, Upgrade)"
        ));
    }
    let value =
        HeaderValue::from_str(value.trim()).map_err(|e| format!("bad header value: {e}"))?;
    Ok((name, value))
}

fn parse_header_match(s: &str) -> Result<HeaderMatch, String> {
    let (name, re) = s.split_once(':').ok_or("expected 'Name: regex'")?;
    Ok(HeaderMatch {
        name: parse_header_name(name)?,
        regex: regex::Regex::new(re.trim()).map_err(|e| format!("bad regex: {e}"))?,
    })
}

/// The loop marker, from `--loop-header` (`None`: disabled).
///
/// # Errors
///
/// Not `Name: value`, or a reserved header.
pub fn parse_loop_header(s: &str) -> Result<Option<(HeaderName, HeaderValue)>, String> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    parse_header(s).map(Some)
}

/// `250ms`, `5s`, `2m`, `1h 30m` (humantime), or a bare number of seconds.
///
/// # Errors
///
/// Anything else.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// `64MiB`, `500kB`, `1 GB` (bytesize), or a number of bytes.
///
/// # Errors
///
/// Anything else.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let b: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e| format!("bad size {s:?}: {e}"))?;
    usize::try_from(b.as_u64()).map_err(|_| format!("size {s:?} too large"))
}

fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| format!("bad regex: {e}"))
}

/// A size in the file: a number of bytes or a string (`"64MiB"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileSize {
    /// Bytes.
    Bytes(u64),
    /// `64MiB`...
    Text(String),
}

/// A duration in the file: a string (`"250ms"`) or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileDuration {
    /// Seconds.
    Secs(f64),
    /// `250ms`...
    Text(String),
}

impl FileDuration {
    fn get(&self) -> Result<Duration, String> {
        match self {
            Self::Secs(s) => {
                Duration::try_from_secs_f64(*s).map_err(|e| format!("bad duration {s}: {e}"))
            }
            Self::Text(t) => parse_duration(t),
        }
    }
}

/// The settings a `[[target]]` table may set (also allowed at the top level
/// of the file, as every target's default). Every field is optional; see
/// the flags of the same names for meanings and defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[allow(missing_docs)]
pub struct TargetSettings {
    pub sample: Option<f64>,
    pub sticky: Option<String>,
    pub rate_limit: Option<f64>,
    pub rate_burst: Option<u32>,
    #[serde(alias = "method")]
    pub methods: Option<Vec<String>>,
    #[serde(alias = "path_prefix")]
    pub path_prefixes: Option<Vec<String>>,
    pub path_regex: Option<String>,
    pub header_present: Option<Vec<String>>,
    pub header_absent: Option<Vec<String>>,
    pub header_match: Option<Vec<String>>,
    #[serde(alias = "add_header")]
    pub add_headers: Option<Vec<String>>,
    #[serde(alias = "set_header")]
    pub set_headers: Option<Vec<String>>,
    #[serde(alias = "remove_header")]
    pub remove_headers: Option<Vec<String>>,
    pub redact: Option<Redact>,
    pub redact_value: Option<String>,
    pub host: Option<String>,
    pub connect_timeout: Option<FileDuration>,
    pub request_timeout: Option<FileDuration>,
    pub max_concurrency: Option<usize>,
    pub queue_size: Option<usize>,
    pub http2: Option<bool>,
    pub http1_only: Option<bool>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_client_cert: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    #[serde(alias = "insecure")]
    pub tls_insecure: Option<bool>,
}

/// `redact = "credentials"` or `redact = ["cookie", "x-token"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Redact {
    /// One name (or `credentials`).
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Redact {
    fn list(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

fn each<T>(v: &[String], f: fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    v.iter().map(|s| f(s)).collect()
}

/// Sets `$dst.$f` from `$src.$f` when that is `Some` and `$skip("f")` is false.
macro_rules! apply {
    ($src:expr, $dst:expr, $skip:expr; $($f:ident $(=> $conv:expr)?),* $(,)?) => {
        $(
            if let Some(v) = &$src.$f {
                if !$skip(stringify!($f)) {
                    $dst.$f = apply!(@conv v $(, $conv)?)
                        .map_err(|e: String| format!("{}: {e}", stringify!($f)))?;
                }
            }
        )*
    };
    (@conv $v:ident) => { Ok::<_, String>($v.clone()) };
    (@conv $v:ident, $conv:expr) => { ($conv)($v) };
}

impl TargetSettings {
    /// Puts the settings given into `c`, except those `skip` names.
    ///
    /// # Errors
    ///
    /// A bad value, named.
    pub fn apply(&self, c: &mut Config, skip: &dyn Fn(&str) -> bool) -> Result<(), String> {
        apply!(self, c, skip;
            sample => |v: &f64| check_percent(*v),
            sticky => |v: &String| if v.is_empty() || v == "none" { Ok(None) } else { v.parse().map(Some) },
            rate_limit => |v: &f64| if *v >= 0.0 { Ok(*v) } else { Err("negative".to_owned()) },
            rate_burst,
            methods,
            path_prefixes,
            path_regex => |v: &String| parse_regex(v).map(Some),
            header_present => |v: &Vec<String>| each(v, parse_header_name),
            header_absent => |v: &Vec<String>| each(v, parse_header_name),
            header_match => |v: &Vec<String>| each(v, parse_header_match),
            add_headers => |v: &Vec<String>| each(v, parse_header),
            set_headers => |v: &Vec<String>| each(v, parse_header),
            remove_headers => |v: &Vec<String>| each(v, parse_header_name),
            redact => |v: &Redact| Ok(v.list()),
            redact_value,
            host => |v: &String| v.parse(),
            connect_timeout => FileDuration::get,
            request_timeout => FileDuration::get,
            max_concurrency,
            queue_size,
            http2,
            http1_only,
            tls_ca_file => |v: &PathBuf| Ok(Some(v.clone())),
            tls_client_cert => |v: &PathBuf| Ok(Some(v.clone())),
            tls_client_key => |v: &PathBuf| Ok(Some(v.clone())),
            tls_server_name => |v: &String| Ok(Some(v.clone())),
            tls_insecure,
        );
        Ok(())
    }
}

/// One `[[target]]` table.
#[derive(Debug, Clone, Deserialize)]
pub struct TargetTable {
    /// The target's URL (required).
    pub url: String,
    /// Its name in metrics labels and logs (default: the URL).
    pub name: Option<String>,
    /// Its own settings.
    #[serde(flatten)]
    pub settings: TargetSettings,
    #[serde(flatten)]
    unknown: toml::Table,
}

/// The file: global settings, and the targets.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub metrics: Option<std::net::SocketAddr>,
    pub metrics_max_connections: Option<usize>,
    pub metrics_header_timeout: Option<FileDuration>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub message: Option<String>,
    pub arg_method: Option<String>,
    pub arg_path: Option<String>,
    pub arg_ver: Option<String>,
    pub arg_hdrs: Option<String>,
    pub arg_body: Option<String>,
    pub arg_body_size: Option<String>,
    pub arg_src: Option<String>,
    pub max_frame_size: Option<u32>,
    pub drain_timeout: Option<FileDuration>,
    pub threads: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_queued_bytes: Option<FileSize>,
    pub send_truncated: Option<bool>,
    pub loop_header: Option<LoopHeader>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub watch_config: Option<bool>,
    pub pipeline: Option<usize>,
    pub shared_runtime: Option<bool>,
    /// `[[target]]` tables, or (the older form) a list of URLs.
    pub target: Option<toml::Value>,
    /// Every target's defaults.
    #[serde(flatten)]
    pub settings: TargetSettings,
    #[serde(flatten)]
    unknown: toml::Table,
}

/// `loop_header = "X-Mirrored-By: spop-mirror"`, or `false` to disable.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LoopHeader {
    /// `Name: value` (empty: disabled).
    Header(String),
    /// `false`: disabled (`true`: the default).
    Enabled(bool),
}

/// `-` and `_` are the same in keys (`send-truncated` = `send_truncated`).
fn normalize_keys(t: &mut toml::Table) {
    let old = std::mem::take(t);
    for (k, mut v) in old {
        if let toml::Value::Array(items) = &mut v {
            for item in items {
                if let toml::Value::Table(inner) = item {
                    normalize_keys(inner);
                }
            }
        }
        t.insert(k.replace('-', "_"), v);
    }
}

/// Names the key behind a deserialization error (serde's `flatten` loses
/// it): the first key of `table` that fails alone (with `base`'s keys).
fn explain<T: serde::de::DeserializeOwned>(
    table: &toml::Table,
    base: &[&str],
    err: String,
) -> String {
    for (k, v) in table {
        if base.contains(&k.as_str()) {
            continue;
        }
        let mut one: toml::Table = table
            .iter()
            .filter(|(b, _)| base.contains(&b.as_str()))
            .map(|(b, v)| (b.clone(), v.clone()))
            .collect();
        one.insert(k.clone(), v.clone());
        if let Err(e) = T::deserialize(toml::Value::Table(one)) {
            return format!("{k}: {e}");
        }
    }
    err
}

fn refuse_unknown(unknown: &toml::Table, at: &str) -> Result<(), String> {
    match unknown.keys().next() {
        Some(k) => Err(format!("{at}unknown setting {k:?}")),
        None => Ok(()),
    }
}

impl FileConfig {
    /// Parses a file's text.
    ///
    /// # Errors
    ///
    /// Bad TOML, an unknown setting or a value of the wrong type.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        if table.contains_key("config") {
            return Err("a config file cannot name another".to_owned());
        }
        normalize_keys(&mut table);
        let file = Self::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| explain::<Self>(&table, &[], e.to_string()))?;
        refuse_unknown(&file.unknown, "")?;
        Ok(file)
    }

    /// The target tables (a plain URL list becomes tables with only `url`).
    ///
    /// # Errors
    ///
    /// A bad table.
    pub fn targets(&self) -> Result<Vec<TargetTable>, String> {
        let Some(v) = &self.target else {
            return Ok(Vec::new());
        };
        let items = match v {
            toml::Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let t = match item {
                    toml::Value::String(url) => TargetTable {
                        url,
                        name: None,
                        settings: TargetSettings::default(),
                        unknown: toml::Table::new(),
                    },
                    toml::Value::Table(t) => {
                        TargetTable::deserialize(toml::Value::Table(t.clone())).map_err(|e| {
                            let e = explain::<TargetTable>(&t, &["url"], e.to_string());
                            format!("target {}: {e}", i + 1)
                        })?
                    }
                    other => {
                        return Err(format!(
                            "target {}: expected a table or a URL, not {other}",
                            i + 1
                        ))
                    }
                };
                refuse_unknown(&t.unknown, &format!("target {}: ", i + 1))?;
                parse_target(&t.url).map_err(|e| format!("target {}: {e}", i + 1))?;
                Ok(t)
            })
            .collect()
    }

    /// Puts the file's global settings into `c`, except those `skip` names.
    fn apply(&self, c: &mut Config, skip: &dyn Fn(&str) -> bool) -> Result<(), String> {
        apply!(self, c, skip;
            listen => |v: &String| v.parse().map_err(|e| format!("{e}")),
            metrics => |v: &std::net::SocketAddr| Ok(Some(*v)),
            metrics_max_connections,
            metrics_header_timeout => FileDuration::get,
            log_level,
            log_format => |v: &String| LogFormat::from_str(v, true),
            message,
            arg_method,
            arg_path,
            arg_ver,
            arg_hdrs,
            arg_body,
            arg_body_size,
            arg_src,
            max_frame_size => |v: &u32| if *v >= 256 { Ok(*v) } else { Err("at least 256".to_owned()) },
            drain_timeout => FileDuration::get,
            threads => |v: &usize| Ok(Some(*v)),
            max_connections,
            max_queued_bytes => |v: &FileSize| match v {
                FileSize::Bytes(b) => usize::try_from(*b).map_err(|e| e.to_string()),
                FileSize::Text(t) => parse_size(t),
            },
            send_truncated,
            loop_header => |v: &LoopHeader| match v {
                LoopHeader::Header(h) => parse_loop_header(h).map(|_| h.clone()),
                LoopHeader::Enabled(true) => Ok("X-Mirrored-By: spop-mirror".to_owned()),
                LoopHeader::Enabled(false) => Ok(String::new()),
            },
            tls_cert => |v: &PathBuf| Ok(Some(v.clone())),
            tls_key => |v: &PathBuf| Ok(Some(v.clone())),
            tls_client_ca => |v: &PathBuf| Ok(Some(v.clone())),
            watch_config,
            pipeline,
            shared_runtime,
        );
        self.settings.apply(c, skip)
    }
}

/// Why the configuration could not be read.
#[derive(Debug)]
pub enum ConfigError {
    /// A clap error (bad flag or value); `exit()` prints it.
    Cli(clap::Error),
    /// The file could not be read or parsed.
    File(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cli(e) => write!(f, "{e}"),
            Self::File(e) => f.write_str(e),
        }
    }
}

impl Config {
    /// Parses the command line, reading `--config FILE` when given (see the
    /// module documentation for precedence). Called again, with the same
    /// arguments, on reload.
    ///
    /// # Errors
    ///
    /// A bad flag or value, an unreadable or invalid file, or no target.
    pub fn load<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        // Targets may come from the file: not required on this first pass.
        let cli = Self::command()
            .mut_arg("targets", |a| a.required(false))
            .try_get_matches_from(&args)
            .map_err(ConfigError::Cli)?;
        let Some(path) = cli.get_one::<PathBuf>("config").cloned() else {
            // Parse again with every rule, for clap's own messages.
            let cli = Self::command()
                .try_get_matches_from(&args)
                .map_err(ConfigError::Cli)?;
            let mut c = Self::from_arg_matches(&cli).map_err(ConfigError::Cli)?;
            c.args = args;
            return Ok(c);
        };
        let mut c = Self::from_arg_matches(&cli).map_err(ConfigError::Cli)?;
        c.args = args.clone();
        let at = |e: String| ConfigError::File(format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(&path).map_err(|e| at(e.to_string()))?;
        let file = FileConfig::parse(&text).map_err(at)?;
        let from_cli = |id: &str| cli.value_source(id) == Some(ValueSource::CommandLine);
        file.apply(&mut c, &from_cli).map_err(at)?;
        c.target_tables = file.targets().map_err(at)?;
        if c.targets.is_empty() && c.target_tables.is_empty() {
            return Err(at("no target: add [[target]] tables or --target".to_owned()));
        }
        // Every table's values, checked now rather than at start.
        c.resolved_targets().map_err(at)?;
        if c.tls_cert.is_some() != c.tls_key.is_some()
            || (c.tls_client_ca.is_some() && c.tls_cert.is_none())
        {
            return Err(at(
                "tls_cert and tls_key go together, and tls_client_ca needs them".to_owned(),
            ));
        }
        Ok(c)
    }

    /// The settings read at start-up only, by name: a reload that changes
    /// one of them logs that it needs a restart.
    pub fn restart_only(&self) -> Vec<(&'static str, String)> {
        vec![
            ("listen", self.listen.to_string()),
            ("metrics", format!("{:?}", self.metrics)),
            (
                "metrics_max_connections",
                self.metrics_max_connections.to_string(),
            ),
            (
                "metrics_header_timeout",
                format!("{:?}", self.metrics_header_timeout),
            ),
            ("log_level", self.log_level.clone()),
            ("log_format", format!("{:?}", self.log_format)),
            ("message", self.message.clone()),
            ("arg_method", self.arg_method.clone()),
            ("arg_path", self.arg_path.clone()),
            ("arg_ver", self.arg_ver.clone()),
            ("arg_hdrs", self.arg_hdrs.clone()),
            ("arg_body", self.arg_body.clone()),
            ("arg_body_size", self.arg_body_size.clone()),
            ("arg_src", self.arg_src.clone()),
            ("max_frame_size", self.max_frame_size.to_string()),
            ("drain_timeout", format!("{:?}", self.drain_timeout)),
            ("threads", format!("{:?}", self.threads)),
            ("max_connections", self.max_connections.to_string()),
            ("tls_cert", format!("{:?}", self.tls_cert)),
            ("tls_key", format!("{:?}", self.tls_key)),
            ("tls_client_ca", format!("{:?}", self.tls_client_ca)),
            ("watch_config", self.watch_config.to_string()),
            ("shared_runtime", self.shared_runtime.to_string()),
        ]
    }

    /// Every target with its own settings: the file's tables first, then
    /// the `--target` flags (with the global settings).
    ///
    /// # Errors
    ///
    /// A bad value in a target table.
    pub fn resolved_targets(&self) -> Result<Vec<(String, Uri, Self)>, String> {
        let mut out = Vec::new();
        for (i, t) in self.target_tables.iter().enumerate() {
            let uri = parse_target(&t.url).map_err(|e| format!("target {}: {e}", i + 1))?;
            let mut c = self.clone();
            c.target_tables = Vec::new();
            t.settings
                .apply(&mut c, &|_| false)
                .map_err(|e| format!("target {} ({}): {e}", i + 1, t.url))?;
            out.push((t.name.clone().unwrap_or_else(|| uri.to_string()), uri, c));
        }
        for uri in &self.targets {
            let mut c = self.clone();
            c.target_tables = Vec::new();
            out.push((uri.to_string(), uri.clone(), c));
        }
        let mut seen = std::collections::HashSet::new();
        for (name, _, _) in &out {
            if !seen.insert(name.clone()) {
                return Err(format!("two targets named {name:?}: give one a `name`"));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn command_line() {
        let c = Config::load([
            "spop-mirror",
            "--listen",
            "unix:/tmp/m.sock",
            "--target",
            "http://127.0.0.1:8080",
            "--target",
            "http://127.0.0.1:8081/shadow",
            "--sample",
            "12.5",
            "--method",
            "GET",
            "--add-header",
            "X-Mirror: 1",
            "--host",
            "target",
            "--connect-timeout",
            "200ms",
        ])
        .unwrap();
        assert_eq!(c.listen, ListenAddr::Unix("/tmp/m.sock".into()));
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.sample, 12.5);
        assert_eq!(c.methods, ["GET"]);
        assert_eq!(c.add_headers[0].0, "x-mirror");
        assert_eq!(c.host, HostRewrite::Target);
        assert_eq!(c.connect_timeout, Duration::from_millis(200));
        assert_eq!(c.message, "mirror");
        assert_eq!(c.max_frame_size, 1_048_572);
        assert_eq!(c.arg_body_size, "arg_body_size");
    }

    #[test]
    fn reserved_headers_are_refused_with_a_reason() {
        let Err(ConfigError::Cli(e)) = Config::load([
            "spop-mirror",
            "--target",
            "http://x",
            "--add-header",
            "Host: a",
        ]) else {
            panic!("accepted")
        };
        let text = e.to_string();
        assert!(text.contains("host cannot be added"), "{text}");
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            vec!["--target", "http://x", "--sample", "101"],
            vec!["--target", "http://x", "--add-header", "nocolon"],
            vec!["--target", "ftp://x"],
            vec!["--target", "http://x", "--add-header", "Host: a"],
            vec!["--target", "http://x", "--add-header", "content-length: 1"],
            vec![
                "--target",
                "http://x",
                "--add-header",
                "Transfer-Encoding: chunked",
            ],
            vec!["--target", "http://x", "--add-header", "Connection: close"],
            vec!["--target", "http://x", "--add-header", "Keep-Alive: 1"],
            vec!["--target", "http://x", "--add-header", "Upgrade: h2c"],
            vec!["--target", "http://x", "--add-header", "TE: trailers"],
            vec!["--target", "http://x", "--add-header", "Trailer: x"],
            vec![
                "--target",
                "http://x",
                "--add-header",
                "Proxy-Connection: x",
            ],
            vec!["--target", "http://x", "--max-frame-size", "10"],
            vec![],
        ] {
            let args = std::iter::once("spop-mirror").chain(bad.iter().copied());
            assert!(Config::load(args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_settings_and_cli_override() {
        let dir = std::env::temp_dir().join(format!("spop-mirror-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\ntarget = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\n\
             sample = 50\nsend-truncated = true\nadd-header = [\"X-A: 1\"]\nmessage = \"m2\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = Config::load(["spop-mirror", "--config", p]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(c.target_tables.len(), 2);
        assert_eq!(c.sample, 50.0);
        assert!(c.send_truncated);
        assert_eq!(c.message, "m2");
        let c = Config::load([
            "spop-mirror",
            "--config",
            p,
            "--sample",
            "5",
            "--target",
            "http://127.0.0.1:3",
        ])
        .unwrap();
        assert_eq!(c.sample, 5.0);
        assert_eq!(c.targets.len(), 1, "command-line targets add to the file's");
        assert_eq!(c.resolved_targets().unwrap().len(), 3);
        std::fs::write(&path, "nonsense = 1\n").unwrap();
        assert!(Config::load(["spop-mirror", "--config", p]).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    fn from_file(name: &str, text: &str, extra: &[&str]) -> Result<Config, String> {
        let dir =
            std::env::temp_dir().join(format!("spop-mirror-cfg-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        std::fs::write(&path, text).unwrap();
        let mut args = vec!["spop-mirror", "--config", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let c = Config::load(args).map_err(|e| e.to_string());
        std::fs::remove_dir_all(&dir).ok();
        c
    }

    #[test]
    fn target_tables_inherit_and_override() {
        let c = from_file(
            "tables",
            r#"
sample = 50
request_timeout = "2s"
max_queued_bytes = "1MiB"
redact = "credentials"
loop_header = false

[[target]]
url = "http://127.0.0.1:1"
name = "canary"
sample = 100

[[target]]
url = "https://127.0.0.1:2/v2"
sample = 0.0001
sticky = "cookie:sid"
rate_limit = 50
path_prefixes = ["/api/v2"]
header_match = ["x-tenant: ^acme"]
set_header = ["X-Env: load-test"]
connect-timeout = "250ms"
tls_insecure = true
"#,
            &["--request-timeout", "3s"],
        )
        .unwrap();
        assert_eq!(c.max_queued_bytes, 1 << 20);
        assert_eq!(c.loop_header, "");
        let t = c.resolved_targets().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].0, "canary");
        assert_eq!(t[0].2.sample, 100.0);
        assert_eq!(
            t[0].2.request_timeout,
            Duration::from_secs(3),
            "the flag wins over the file"
        );
        assert_eq!(t[0].2.redact, ["credentials"]);
        assert_eq!(t[1].0, "https://127.0.0.1:2/v2");
        assert_eq!(t[1].2.sample, 0.0001);
        assert_eq!(t[1].2.sticky, Some(StickyKey::Cookie("sid".into())));
        assert_eq!(t[1].2.rate_limit, 50.0);
        assert_eq!(t[1].2.path_prefixes, ["/api/v2"]);
        assert_eq!(t[1].2.set_headers[0].0, "x-env");
        assert_eq!(t[1].2.connect_timeout, Duration::from_millis(250));
        assert!(t[1].2.tls_insecure);
        // Bad files, each refused with its reason.
        for (text, want) in [
            ("[[target]]\nurl = \"http://x\"\nsampel = 5\n", "sampel"),
            ("[[target]]\nurl = \"ftp://x\"\n", "ftp://x"),
            ("[[target]]\nname = \"x\"\n", "url"),
            ("[[target]]\nurl = \"http://x\"\nsample = 200\n", "sample"),
            (
                "[[target]]\nurl = \"http://x\"\nsticky = \"nope\"\n",
                "sticky",
            ),
            (
                "[[target]]\nurl = \"http://x\"\nrequest_timeout = \"soon\"\n",
                "request_timeout",
            ),
            ("sample = 1\n", "no target"),
            (
                "[[target]]\nurl = \"http://x\"\nrate_limit = \"fast\"\n",
                "rate_limit:",
            ),
            (
                "sample = \"lots\"\n[[target]]\nurl = \"http://x\"\n",
                "sample:",
            ),
            (
                "threads = \"many\"\n[[target]]\nurl = \"http://x\"\n",
                "threads",
            ),
            ("[[target]\n", "TOML"),
        ] {
            let e = from_file("bad", text, &[]).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    /// The example file documents every setting at its default: loading it
    /// gives the same global settings as no file at all.
    #[test]
    fn the_example_file_is_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/spop-mirror.toml");
        let c = Config::load(["spop-mirror", "--config", path]).unwrap();
        let d = Config::load(["spop-mirror", "--target", "http://x"]).unwrap();
        let globals = |c: &Config| {
            let mut c = c.clone();
            c.targets = Vec::new();
            c.target_tables = Vec::new();
            c.args = Vec::new();
            c.config = None;
            format!("{c:?}")
        };
        assert_eq!(globals(&c), globals(&d));
        let names: Vec<String> = c
            .resolved_targets()
            .unwrap()
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(names, ["canary", "loadtest", "api-v2"]);
        crate::policy::TargetSet::build(&c, 1).unwrap();
    }
}
