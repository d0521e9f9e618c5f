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
/// traffic. Answers from targets are read and discarded, except those of
/// targets with a comparison role (`--compare`), compared with production's.
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

    /// Requests in flight at once per target: so many connections, one
    /// request at a time each; with --pipeline N, up to max-concurrency / N
    /// connections (at least one) of up to N requests each, filled in
    /// order (the next opens only while those before it are full).
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

    /// HTTP/1.1 pipelining: each connection to a target keeps up to N
    /// requests in flight, writes the queued ones together (at most 64 KiB
    /// of them past the first) without waiting for earlier answers, and
    /// reads the answers in order, with spop-mirror's own HTTP/1.1 writer
    /// (the same bytes as hyper's); each request has --request-timeout from
    /// when it is written. Answers are read when the connection next writes,
    /// or every millisecond while requests are in flight, so the latency
    /// histogram of a pipelined target is up to 1 ms coarse. Pipelined
    /// connections run on the SPOP thread, one task per target (they never
    /// wait). A target has up to --max-concurrency / N of them (at least
    /// one), so up to --max-concurrency requests (N if more) are in flight;
    /// requests fill its first connection, and the next opens only while
    /// those before it have N in flight: a target that keeps up gets every
    /// request on one connection. An HTTP/1.1 server answers a
    /// connection's requests one after the other, so a slow target needs
    /// more connections (a higher --max-concurrency). 0 (the
    /// default) sends one request at a time with hyper. Mirrored requests
    /// are never resent: those a target drops mid-pipeline are counted as
    /// errors. A target with a comparison role has the answers of compared
    /// requests kept, as on the hyper path. Plain http:// targets only;
    /// ignored with --http2. Also a per-target setting (`pipeline` in a
    /// `[[target]]` table).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub pipeline: usize,

    /// Share of requests whose answers are compared, in percent (0 to 100,
    /// decimals allowed), drawn independently of `--sample`: a request is
    /// compared when it is chosen here and queued to at least one target
    /// with `role = "candidate"`. Comparing costs HAProxy a second message
    /// and a buffered response, so it is usually a small share. 0: off.
    #[arg(long, default_value_t = 0.0, value_name = "PERCENT", value_parser = parse_percent)]
    pub compare: f64,

    /// The SPOE message carrying production's response
    /// (`spoe-message <name>`, sent from `http-response` rules).
    #[arg(long, default_value = "compare", value_name = "NAME")]
    pub compare_message: String,

    /// Argument carrying the request's `unique-id`, in the mirror message
    /// and in the compare message (both need it to meet).
    #[arg(long, default_value = "id", value_name = "NAME")]
    pub arg_id: String,

    /// The compare message's argument carrying the status (`status`).
    #[arg(long, default_value = "status", value_name = "NAME")]
    pub compare_arg_status: String,

    /// The compare message's argument carrying the headers (`res.hdrs_bin`).
    #[arg(long, default_value = "hdrs", value_name = "NAME")]
    pub compare_arg_hdrs: String,

    /// The compare message's argument carrying the body (`res.body`).
    #[arg(long, default_value = "body", value_name = "NAME")]
    pub compare_arg_body: String,

    /// The compare message's argument carrying the body's true size
    /// (`res.body_size`), optional: a body shorter than it was cut short by
    /// HAProxy (marked truncated). Without it, only a Content-Length larger
    /// than the body marks truncation.
    #[arg(long, default_value = "body_size", value_name = "NAME")]
    pub compare_arg_body_size: String,

    /// The transaction variable set in the ACK of a request chosen for
    /// comparison (HAProxy names it `txn.<var-prefix>.<name>`); the
    /// `http-response` rules send the compare message only when it is set.
    #[arg(long, default_value = "compare", value_name = "NAME")]
    pub compare_var: String,

    /// The value (an integer, 1 or more) put in `--compare-var`: this
    /// instance's number, when several spop-mirror instances serve one
    /// HAProxy.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub instance: u32,

    /// Time the answers of a compared request are awaited (production's
    /// and every target's), from the request's arrival; past it the entry
    /// is dropped and counted as expired.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub compare_deadline: Duration,

    /// Compared requests awaiting their answers, at most; past it the
    /// oldest is dropped (counted as evicted).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub compare_max_entries: usize,

    /// Bytes of answers kept while awaiting the other half, at most; past
    /// it the oldest entries are dropped (counted as evicted).
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = parse_size)]
    pub compare_max_bytes: usize,

    /// Bytes of a body kept for comparison (production's and the
    /// targets'); the rest is read and discarded, and the answers are
    /// compared by what was kept (marked truncated).
    #[arg(long, default_value = "64KiB", value_name = "SIZE", value_parser = parse_size)]
    pub compare_body_limit: usize,

    /// A response header left out of comparisons (may repeat, or a comma
    /// list; a trailing `*` matches a prefix: `x-request-*`). Replaces the
    /// built-in list; `default` stands for it (Date, Server, request and
    /// trace ids, Age, Expires, Last-Modified, ETag, Content-Length,
    /// hop-by-hop headers...), so `default,x-build` adds one.
    #[arg(
        long = "compare-ignore-header",
        visible_alias = "compare-ignore-headers",
        default_value = "default",
        value_delimiter = ',',
        value_name = "NAME",
        value_parser = parse_ignore_header
    )]
    pub compare_ignore_headers: Vec<String>,

    /// A JSON path left out of body comparisons (may repeat), e.g.
    /// `$.meta.generated_at`; `[*]` matches any index: `$.items[*].ts`.
    #[arg(
        long = "compare-ignore-path",
        visible_alias = "compare-ignore-paths",
        value_name = "PATH",
        value_parser = parse_json_path
    )]
    pub compare_ignore_paths: Vec<String>,

    /// Compare JSON bodies structurally (a difference is named by its JSON
    /// path); bodies that do not both parse are compared by digest.
    /// `--compare-json false`: always by digest.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub compare_json: bool,

    /// Write the differences found, one JSON object per line, to this file
    /// (`-`: standard output). Default: not written (metrics only).
    #[arg(long, value_name = "PATH|-")]
    pub compare_log: Option<String>,

    /// The difference log's size at most; past it the file is rotated
    /// (`file` becomes `file.1`, and so on).
    #[arg(long, default_value = "100MB", value_name = "SIZE", value_parser = parse_size)]
    pub compare_log_max_bytes: usize,

    /// Rotated difference logs kept (`file.1` to `file.N`).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub compare_log_keep: usize,

    /// Share (0 to 1) of the requests with differences that are logged.
    #[arg(long, default_value_t = 1.0, value_name = "FRACTION", value_parser = parse_fraction)]
    pub compare_log_sample: f64,

    /// Difference log lines written per second at most.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub compare_log_per_second: u32,

    /// The target's part in comparisons (set per `[[target]]` table by
    /// `role`; see [`Role`]).
    #[arg(skip)]
    pub role: Option<Role>,

    /// The baseline paired with a candidate target (its `baseline` key: a
    /// target name).
    #[arg(skip)]
    pub baseline: Option<String>,

    /// Run the SPOP side on the mirroring runtime instead of a thread of its
    /// own: no thread wakes another per request (the least CPU per mirrored
    /// request), but mirroring then competes with reading NOTIFYs, and on a
    /// saturated machine it falls behind in bursts (drops counted as
    /// `queue_full`) and HAProxy's p99 grows. Best with `--threads 1` on a
    /// machine with CPU to spare. Pipelined targets (`--pipeline`) gain
    /// nothing: their connections run on the SPOP thread anyway.
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

/// A target's part in comparisons (`role` in a `[[target]]` table); a
/// target without one is a plain mirror (its answers are read and
/// discarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Its answers are compared with production's; differences are
    /// reported against it.
    Candidate,
    /// It runs the same version as production: a field that differs
    /// between production and it is noise, not reported against the
    /// candidate paired with it (`baseline = "<name>"`).
    Baseline,
}

impl Role {
    /// The role's name, as written in the file.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Baseline => "baseline",
        }
    }
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

/// An ignored response header: a name, `name*` (a prefix), or `default`
/// (the built-in list); lowercased. An empty one is ignored.
fn parse_ignore_header(s: &str) -> Result<String, String> {
    let h = s.trim().to_ascii_lowercase();
    let name = h.strip_suffix('*').unwrap_or(&h);
    if !name.is_empty() && h != "default" {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("bad header name {s:?}: {e}"))?;
    }
    Ok(h)
}

/// An ignored JSON path pattern (`$.items[*].ts`, `$["odd key"].*`).
fn parse_json_path(s: &str) -> Result<String, String> {
    let p = s.trim();
    crate::compare::json::PathPattern::parse(p)
        .map(|_| p.to_owned())
        .map_err(|e| format!("{s:?} is not a JSON path such as `$.items[*].ts`: {e}"))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    check_fraction(v)
}

fn check_fraction(v: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
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

impl FileSize {
    fn get(&self) -> Result<usize, String> {
        match self {
            Self::Bytes(b) => usize::try_from(*b).map_err(|e| e.to_string()),
            Self::Text(t) => parse_size(t),
        }
    }
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
    pub pipeline: Option<usize>,
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
            pipeline,
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
    /// Its part in comparisons (default: none, a plain mirror).
    pub role: Option<Role>,
    /// On a candidate: the name of its baseline target (which must have
    /// `role = "baseline"`).
    pub baseline: Option<String>,
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
    pub shared_runtime: Option<bool>,
    pub compare: Option<f64>,
    pub compare_message: Option<String>,
    pub arg_id: Option<String>,
    pub compare_arg_status: Option<String>,
    pub compare_arg_hdrs: Option<String>,
    pub compare_arg_body: Option<String>,
    pub compare_arg_body_size: Option<String>,
    pub compare_var: Option<String>,
    pub instance: Option<u32>,
    pub compare_deadline: Option<FileDuration>,
    pub compare_max_entries: Option<usize>,
    pub compare_max_bytes: Option<FileSize>,
    pub compare_body_limit: Option<FileSize>,
    #[serde(alias = "compare_ignore_header")]
    pub compare_ignore_headers: Option<Vec<String>>,
    #[serde(alias = "compare_ignore_path")]
    pub compare_ignore_paths: Option<Vec<String>>,
    pub compare_json: Option<bool>,
    pub compare_log: Option<String>,
    pub compare_log_max_bytes: Option<FileSize>,
    pub compare_log_keep: Option<usize>,
    pub compare_log_sample: Option<f64>,
    pub compare_log_per_second: Option<u32>,
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
                        role: None,
                        baseline: None,
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
            max_queued_bytes => FileSize::get,
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
            shared_runtime,
            compare => |v: &f64| check_percent(*v),
            compare_message,
            arg_id,
            compare_arg_status,
            compare_arg_hdrs,
            compare_arg_body,
            compare_arg_body_size,
            compare_var,
            instance => |v: &u32| if *v >= 1 { Ok(*v) } else { Err("at least 1".to_owned()) },
            compare_deadline => FileDuration::get,
            compare_max_entries,
            compare_max_bytes => FileSize::get,
            compare_body_limit => FileSize::get,
            compare_ignore_headers => |v: &Vec<String>| each(v, parse_ignore_header),
            compare_ignore_paths => |v: &Vec<String>| each(v, parse_json_path),
            compare_json,
            compare_log => |v: &String| Ok(Some(v.clone())),
            compare_log_max_bytes => FileSize::get,
            compare_log_keep,
            compare_log_sample => |v: &f64| check_fraction(*v),
            compare_log_per_second,
        );
        self.settings.apply(c, skip)
    }
}

/// The rules of `role` and `baseline` (targets from
/// [`Config::resolved_targets`], in order, the file's tables first).
fn check_roles(targets: &[(String, Uri, Config)]) -> Result<(), String> {
    for (i, (name, _, c)) in targets.iter().enumerate() {
        let at = format!("target {} ({name})", i + 1);
        let Some(baseline) = &c.baseline else {
            continue;
        };
        if c.role != Some(Role::Candidate) {
            return Err(format!(
                "{at}: baseline: only a target with role = \"candidate\" has a baseline"
            ));
        }
        match targets.iter().find(|(n, _, _)| n == baseline) {
            None => {
                return Err(format!(
                    "{at}: baseline: no target named {baseline:?} (targets are named by `name`, or by their URL)"
                ))
            }
            Some((_, _, b)) if b.role != Some(Role::Baseline) => {
                return Err(format!(
                    "{at}: baseline: target {baseline:?} does not have role = \"baseline\""
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
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
            ("compare_message", self.compare_message.clone()),
            ("arg_id", self.arg_id.clone()),
            ("compare_arg_status", self.compare_arg_status.clone()),
            ("compare_arg_hdrs", self.compare_arg_hdrs.clone()),
            ("compare_arg_body", self.compare_arg_body.clone()),
            ("compare_arg_body_size", self.compare_arg_body_size.clone()),
            ("compare_var", self.compare_var.clone()),
            ("instance", self.instance.to_string()),
            ("compare_deadline", format!("{:?}", self.compare_deadline)),
            ("compare_max_entries", self.compare_max_entries.to_string()),
            ("compare_max_bytes", self.compare_max_bytes.to_string()),
            ("compare_body_limit", self.compare_body_limit.to_string()),
            ("compare_log", format!("{:?}", self.compare_log)),
            (
                "compare_log_max_bytes",
                self.compare_log_max_bytes.to_string(),
            ),
            ("compare_log_keep", self.compare_log_keep.to_string()),
            ("compare_log_sample", self.compare_log_sample.to_string()),
            (
                "compare_log_per_second",
                self.compare_log_per_second.to_string(),
            ),
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
            c.role = t.role;
            c.baseline.clone_from(&t.baseline);
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
        check_roles(&out)?;
        Ok(out)
    }

    /// The comparison settings (ignore lists, JSON), for the comparison
    /// engine ([`crate::compare`]): `default` in the ignored headers stands
    /// for the built-in list.
    pub fn compare_settings(&self) -> crate::compare::Settings {
        let defaults = crate::compare::Settings::default();
        let mut ignore_headers: Vec<String> = Vec::new();
        for h in &self.compare_ignore_headers {
            if h == "default" {
                ignore_headers.extend(defaults.ignore_headers.iter().cloned());
            } else if !h.is_empty() {
                ignore_headers.push(h.clone());
            }
        }
        let mut seen = std::collections::HashSet::new();
        ignore_headers.retain(|h| seen.insert(h.clone()));
        crate::compare::Settings {
            ignore_headers,
            ignore_paths: self.compare_ignore_paths.clone(),
            json: self.compare_json,
            ..defaults
        }
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
        assert_eq!(t[0].2.pipeline, 0, "pipelining is off by default");
        // Pipelining per target: a table's value wins over the flag and the
        // file's top level, which other targets take.
        let c = from_file(
            "pipe-per-target",
            "pipeline = 2\n[[target]]\nurl = \"http://127.0.0.1:1\"\npipeline = 16\n\
             [[target]]\nurl = \"http://127.0.0.1:2\"\n[[target]]\nurl = \"http://127.0.0.1:3\"\npipeline = 0\n",
            &["--target", "http://127.0.0.1:4"],
        )
        .unwrap();
        let t = c.resolved_targets().unwrap();
        let depths: Vec<usize> = t.iter().map(|t| t.2.pipeline).collect();
        assert_eq!(depths, [16, 2, 0, 2]);
        let c = from_file(
            "pipe-flag",
            "pipeline = 2\n[[target]]\nurl = \"http://127.0.0.1:1\"\npipeline = 16\n\
             [[target]]\nurl = \"http://127.0.0.1:2\"\n",
            &["--pipeline", "8"],
        )
        .unwrap();
        let depths: Vec<usize> = c
            .resolved_targets()
            .unwrap()
            .iter()
            .map(|t| t.2.pipeline)
            .collect();
        assert_eq!(
            depths,
            [16, 8],
            "table, then flag, then the file's top level"
        );
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

    #[test]
    fn compare_defaults() {
        let c = Config::load(["spop-mirror", "--target", "http://x"]).unwrap();
        assert_eq!(c.compare, 0.0);
        assert_eq!(c.compare_message, "compare");
        assert_eq!(c.arg_id, "id");
        assert_eq!(
            (
                c.compare_arg_status.as_str(),
                c.compare_arg_hdrs.as_str(),
                c.compare_arg_body.as_str(),
                c.compare_arg_body_size.as_str()
            ),
            ("status", "hdrs", "body", "body_size")
        );
        assert_eq!(c.compare_var, "compare");
        assert_eq!(c.instance, 1);
        assert_eq!(c.compare_deadline, Duration::from_secs(5));
        assert_eq!(c.compare_max_entries, 10_000);
        assert_eq!(c.compare_max_bytes, 64 << 20);
        assert_eq!(c.compare_body_limit, 64 << 10);
        assert_eq!(c.compare_ignore_headers, ["default"]);
        assert!(c.compare_ignore_paths.is_empty());
        assert!(c.compare_json);
        assert_eq!(c.compare_log, None);
        assert_eq!(c.compare_log_max_bytes, 100_000_000);
        assert_eq!(c.compare_log_keep, 3);
        assert_eq!(c.compare_log_sample, 1.0);
        assert_eq!(c.compare_log_per_second, 100);
        assert_eq!(c.role, None);
        let s = c.compare_settings();
        assert_eq!(s, crate::compare::Settings::default());
        let set = crate::policy::TargetSet::build(&c, 1).unwrap();
        assert_eq!(set.compare_threshold, None);
        assert!(!set.compares(0));
        assert!(!set.has_roles());
    }

    #[test]
    fn compare_flags() {
        let c = Config::load([
            "spop-mirror",
            "--target",
            "http://x",
            "--compare",
            "12.5",
            "--compare-message",
            "cmp",
            "--arg-id",
            "uid",
            "--compare-arg-status",
            "st",
            "--compare-arg-hdrs",
            "h",
            "--compare-arg-body",
            "b",
            "--compare-arg-body-size",
            "",
            "--compare-var",
            "cmpvar",
            "--instance",
            "3",
            "--compare-deadline",
            "1500ms",
            "--compare-max-entries",
            "50",
            "--compare-max-bytes",
            "1MiB",
            "--compare-body-limit",
            "1kB",
            "--compare-ignore-headers",
            "default,X-Build",
            "--compare-ignore-header",
            "x-trace-*",
            "--compare-ignore-path",
            "$.items[*].ts",
            "--compare-ignore-paths",
            "$.meta",
            "--compare-json",
            "false",
            "--compare-log",
            "-",
            "--compare-log-max-bytes",
            "1MB",
            "--compare-log-keep",
            "0",
            "--compare-log-sample",
            "0.25",
            "--compare-log-per-second",
            "7",
        ])
        .unwrap();
        assert_eq!(c.compare, 12.5);
        assert_eq!(c.compare_message, "cmp");
        assert_eq!(c.arg_id, "uid");
        assert_eq!(c.compare_arg_status, "st");
        assert_eq!(c.compare_arg_hdrs, "h");
        assert_eq!(c.compare_arg_body, "b");
        assert_eq!(c.compare_arg_body_size, "");
        assert_eq!(c.compare_var, "cmpvar");
        assert_eq!(c.instance, 3);
        assert_eq!(c.compare_deadline, Duration::from_millis(1500));
        assert_eq!(c.compare_max_entries, 50);
        assert_eq!(c.compare_max_bytes, 1 << 20);
        assert_eq!(c.compare_body_limit, 1000);
        assert_eq!(
            c.compare_ignore_headers,
            ["default", "x-build", "x-trace-*"]
        );
        assert_eq!(c.compare_ignore_paths, ["$.items[*].ts", "$.meta"]);
        assert!(!c.compare_json);
        assert_eq!(c.compare_log.as_deref(), Some("-"));
        assert_eq!(c.compare_log_max_bytes, 1_000_000);
        assert_eq!(c.compare_log_keep, 0);
        assert_eq!(c.compare_log_sample, 0.25);
        assert_eq!(c.compare_log_per_second, 7);
        let s = c.compare_settings();
        assert!(s.ignore_headers.iter().any(|h| h == "date"), "default kept");
        assert!(s
            .ignore_headers
            .ends_with(&["x-build".into(), "x-trace-*".into()]));
        assert!(!s.json);
        // No target with a role: nothing is compared.
        let set = crate::policy::TargetSet::build(&c, 1).unwrap();
        assert_eq!(set.compare_threshold, None);
        assert!(!set.compares(0));
        // 100 % compares every draw; replacing the list drops the defaults.
        let c = Config::load([
            "spop-mirror",
            "--target",
            "http://x",
            "--compare",
            "100",
            "--compare-ignore-header",
            "x-only",
        ])
        .unwrap();
        assert_eq!(c.compare_settings().ignore_headers, ["x-only"]);
        for bad in [
            vec!["--compare", "101"],
            vec!["--compare", "-1"],
            vec!["--instance", "0"],
            vec!["--instance", "x"],
            vec!["--compare-log-sample", "1.5"],
            vec!["--compare-ignore-header", "bad name"],
            vec!["--compare-ignore-path", "items.ts"],
            vec!["--compare-ignore-path", "$.a["],
            vec!["--compare-json", "maybe"],
            vec!["--compare-deadline", "soon"],
            vec!["--compare-body-limit", "big"],
        ] {
            let args = ["spop-mirror", "--target", "http://x"]
                .into_iter()
                .chain(bad.iter().copied());
            assert!(Config::load(args).is_err(), "{bad:?}");
        }
    }

    const ROLES: &str = r#"
compare = 10
[[target]]
url = "http://127.0.0.1:1"
name = "prod-copy"
role = "baseline"

[[target]]
url = "http://127.0.0.1:2"
name = "next"
role = "candidate"
baseline = "prod-copy"

[[target]]
url = "http://127.0.0.1:3"
name = "lone"
role = "candidate"

[[target]]
url = "http://127.0.0.1:4"
name = "plain"
"#;

    #[test]
    fn compare_file_keys_and_roles() {
        let c = from_file(
            "cmpkeys",
            r#"
compare = 2.5
compare-message = "cmp"
arg_id = "uid"
compare_arg_status = "st"
compare_arg_hdrs = "h"
compare_arg_body = "b"
compare_arg_body_size = "bs"
compare_var = "v"
instance = 2
compare_deadline = "2s"
compare_max_entries = 9
compare_max_bytes = "2MiB"
compare_body_limit = 4096
compare_ignore_headers = ["default", "X-Build"]
compare_ignore_paths = ["$.ts"]
compare_json = false
compare_log = "/tmp/diffs.ndjson"
compare_log_max_bytes = "10MB"
compare_log_keep = 5
compare_log_sample = 0.5
compare_log_per_second = 20
[[target]]
url = "http://127.0.0.1:1"
"#,
            &["--compare", "3", "--instance", "4"],
        )
        .unwrap();
        assert_eq!(c.compare, 3.0, "the flag wins over the file");
        assert_eq!(c.instance, 4, "the flag wins over the file");
        assert_eq!(c.compare_message, "cmp");
        assert_eq!(c.arg_id, "uid");
        assert_eq!(c.compare_arg_status, "st");
        assert_eq!(c.compare_arg_hdrs, "h");
        assert_eq!(c.compare_arg_body, "b");
        assert_eq!(c.compare_arg_body_size, "bs");
        assert_eq!(c.compare_var, "v");
        assert_eq!(c.compare_deadline, Duration::from_secs(2));
        assert_eq!(c.compare_max_entries, 9);
        assert_eq!(c.compare_max_bytes, 2 << 20);
        assert_eq!(c.compare_body_limit, 4096);
        assert_eq!(c.compare_ignore_headers, ["default", "x-build"]);
        assert_eq!(c.compare_ignore_paths, ["$.ts"]);
        assert!(!c.compare_json);
        assert_eq!(c.compare_log.as_deref(), Some("/tmp/diffs.ndjson"));
        assert_eq!(c.compare_log_max_bytes, 10_000_000);
        assert_eq!(c.compare_log_keep, 5);
        assert_eq!(c.compare_log_sample, 0.5);
        assert_eq!(c.compare_log_per_second, 20);

        let c = from_file("roles", ROLES, &[]).unwrap();
        let t = c.resolved_targets().unwrap();
        let roles: Vec<_> = t
            .iter()
            .map(|(n, _, c)| (n.as_str(), c.role, c.baseline.as_deref()))
            .collect();
        assert_eq!(
            roles,
            [
                ("prod-copy", Some(Role::Baseline), None),
                ("next", Some(Role::Candidate), Some("prod-copy")),
                ("lone", Some(Role::Candidate), None),
                ("plain", None, None),
            ]
        );
        let set = crate::policy::TargetSet::build(&c, 1).unwrap();
        assert!(set.has_roles());
        // 10 %.
        assert!(set.compares(0));
        assert!(set.compares(u64::MAX / 10 - 1000));
        assert!(!set.compares(u64::MAX / 10 + 1000));
        assert_eq!(set.targets[1].role, Some(Role::Candidate));
        assert_eq!(set.targets[1].baseline.as_deref(), Some("prod-copy"));
        assert_eq!(set.targets[3].role, None);
        // A --target flag is a plain mirror.
        let c = from_file("roles2", ROLES, &["--target", "http://127.0.0.1:5"]).unwrap();
        assert_eq!(c.resolved_targets().unwrap()[4].2.role, None);
        // Role targets may be pipelined (their answers are kept there too).
        let c = from_file("roles3", &format!("pipeline = 2\n{ROLES}"), &[]).unwrap();
        let t = c.resolved_targets().unwrap();
        assert_eq!(t[1].2.role, Some(Role::Candidate));
        assert_eq!(t[1].2.pipeline, 2);
    }

    #[test]
    fn bad_roles_are_refused_naming_the_key() {
        let with = |extra: &str| format!("{ROLES}{extra}");
        for (text, extra, want) in [
            (
                with("\n[[target]]\nurl = \"http://127.0.0.1:6\"\nrole = \"candidate\"\nbaseline = \"nope\"\n"),
                vec![],
                "target 5 (http://127.0.0.1:6/): baseline: no target named \"nope\"",
            ),
            (
                with("\n[[target]]\nurl = \"http://127.0.0.1:6\"\nrole = \"candidate\"\nbaseline = \"plain\"\n"),
                vec![],
                "baseline: target \"plain\" does not have role = \"baseline\"",
            ),
            (
                with("\n[[target]]\nurl = \"http://127.0.0.1:6\"\nrole = \"candidate\"\nbaseline = \"lone\"\n"),
                vec![],
                "baseline: target \"lone\" does not have role = \"baseline\"",
            ),
            (
                with("\n[[target]]\nurl = \"http://127.0.0.1:6\"\nbaseline = \"prod-copy\"\n"),
                vec![],
                "baseline: only a target with role = \"candidate\" has a baseline",
            ),
            (
                with("\n[[target]]\nurl = \"http://127.0.0.1:6\"\nrole = \"baseline\"\nbaseline = \"prod-copy\"\n"),
                vec![],
                "baseline: only a target with role = \"candidate\" has a baseline",
            ),
            (
                with("\n[[target]]\nurl = \"http://127.0.0.1:6\"\nrole = \"shadow\"\n"),
                vec![],
                "role:",
            ),
            ("compare = 150\n[[target]]\nurl = \"http://x\"\n".to_owned(), vec![], "compare:"),
            ("instance = 0\n[[target]]\nurl = \"http://x\"\n".to_owned(), vec![], "instance:"),
            (
                "compare_log_sample = 2\n[[target]]\nurl = \"http://x\"\n".to_owned(),
                vec![],
                "compare_log_sample:",
            ),
            (
                "compare_ignore_headers = [\"a b\"]\n[[target]]\nurl = \"http://x\"\n".to_owned(),
                vec![],
                "compare_ignore_headers:",
            ),
            (
                "compare_ignore_paths = [\"a.b\"]\n[[target]]\nurl = \"http://x\"\n".to_owned(),
                vec![],
                "compare_ignore_paths:",
            ),
            (
                "compare_deadline = \"later\"\n[[target]]\nurl = \"http://x\"\n".to_owned(),
                vec![],
                "compare_deadline:",
            ),
            (
                "compare_max_bytes = \"lots\"\n[[target]]\nurl = \"http://x\"\n".to_owned(),
                vec![],
                "compare_max_bytes:",
            ),
            (
                "compare_json = \"yes\"\n[[target]]\nurl = \"http://x\"\n".to_owned(),
                vec![],
                "compare_json",
            ),
        ] {
            let e = from_file("badroles", &text, &extra).unwrap_err();
            assert!(e.contains(want), "{text:?} {extra:?}: {e}");
        }
        // Pipelining without roles is fine.
        from_file(
            "pipe",
            "pipeline = 4\n[[target]]\nurl = \"http://x\"\n",
            &[],
        )
        .unwrap();
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
