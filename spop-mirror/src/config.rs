//! Command line and configuration file.
//!
//! Every option is a command-line flag; a TOML file given with `--config`
//! carries the same settings under the same names (without the dashes in
//! front: `sample = 10`, `target = ["http://127.0.0.1:8080"]`). Flags given on
//! the command line override the file.

use std::ffi::OsString;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use haproxy_spop::runtime::ListenAddr;
use http::header::{HeaderName, HeaderValue};
use http::Uri;

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

    /// A shadow server, `http://host:port` (may repeat; every target gets
    /// every request). A path in the URL is put in front of mirrored paths.
    #[arg(long = "target", value_name = "URL", required = true, value_parser = parse_target)]
    pub targets: Vec<Uri>,

    /// Share of requests mirrored, in percent (0 to 100, decimals allowed).
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

    /// Add a header to every mirrored request, `Name: value` (may repeat).
    #[arg(long = "add-header", value_name = "'NAME: VALUE'", value_parser = parse_header)]
    pub add_headers: Vec<(HeaderName, HeaderValue)>,

    /// The Host header sent: `keep` the original, `target` (the target's
    /// host:port), or any other value to send as is.
    #[arg(long, default_value = "keep", value_name = "keep|target|HOST")]
    pub host: HostRewrite,

    /// Time to connect to a target.
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
    /// new requests are dropped (and counted).
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub max_queued_bytes: usize,

    /// Send bodies HAProxy cut short (Content-Length larger than what arrived)
    /// as they are, with their true length. By default they are skipped.
    #[arg(long)]
    pub send_truncated: bool,

    /// Speak HTTP/2 without TLS (h2c, prior knowledge) to the targets.
    #[arg(long)]
    pub http2: bool,

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

    /// Read settings from this TOML file (command-line flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

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

fn parse_target(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("bad target URL {s:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{s}: https targets are not supported (plain HTTP and h2c only)"
            ))
        }
        _ => return Err(format!("{s}: target must be an http:// URL")),
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

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s.split_once(':').ok_or("expected 'Name: value'")?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|e| format!("bad header name: {e}"))?;
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

/// `250ms`, `5s`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
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
    /// Parses the command line, reading `--config FILE` first when given.
    ///
    /// # Errors
    ///
    /// A bad flag or value, or an unreadable or invalid file.
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
        if cli.get_one::<std::path::PathBuf>("config").is_none() {
            // Parse again with every rule, for clap's own messages.
            let cli = Self::command()
                .try_get_matches_from(&args)
                .map_err(ConfigError::Cli)?;
            return Self::from_arg_matches(&cli).map_err(ConfigError::Cli);
        }
        let Some(path) = cli.get_one::<std::path::PathBuf>("config").cloned() else {
            return Self::from_arg_matches(&cli).map_err(ConfigError::Cli);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::File(format!("{}: {e}", path.display())))?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| ConfigError::File(format!("{}: {e}", path.display())))?;
        // The file's settings become flags placed before the command line's,
        // so that the command line wins; lists given on the command line
        // replace the file's.
        let mut merged: Vec<OsString> = vec![args
            .first()
            .cloned()
            .unwrap_or_else(|| "spop-mirror".into())];
        for (key, value) in &table {
            let id = Self::command()
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()))
                .map(|a| a.get_id().to_string())
                .ok_or_else(|| {
                    ConfigError::File(format!("{}: unknown setting {key:?}", path.display()))
                })?;
            if key == "config" {
                return Err(ConfigError::File(format!(
                    "{}: a config file cannot name another",
                    path.display()
                )));
            }
            let from_cli = cli.value_source(&id) == Some(clap::parser::ValueSource::CommandLine);
            let values: Vec<String> = match value {
                toml::Value::Array(items) => {
                    items.iter().map(toml_scalar).collect::<Result<_, _>>()
                }
                other => toml_scalar(other).map(|v| vec![v]),
            }
            .map_err(|e| ConfigError::File(format!("{}: {key}: {e}", path.display())))?;
            if from_cli && matches!(value, toml::Value::Array(_)) {
                continue;
            }
            for v in values {
                match value {
                    toml::Value::Boolean(true) => merged.push(format!("--{key}").into()),
                    toml::Value::Boolean(false) => {}
                    _ => merged.push(format!("--{key}={v}").into()),
                }
            }
        }
        merged.extend(args.into_iter().skip(1));
        let all = Self::command()
            .try_get_matches_from(&merged)
            .map_err(ConfigError::Cli)?;
        Self::from_arg_matches(&all).map_err(ConfigError::Cli)
    }
}

fn toml_scalar(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("unsupported value {other}")),
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
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
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
            vec!["--target", "https://x"],
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
        assert_eq!(c.targets.len(), 2);
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
        assert_eq!(
            c.targets.len(),
            1,
            "command-line targets replace the file's"
        );
        std::fs::write(&path, "nonsense = 1\n").unwrap();
        assert!(Config::load(["spop-mirror", "--config", p]).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
