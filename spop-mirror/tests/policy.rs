//! The request-rebuilding policy (see `spop_mirror::request`), as a table:
//! one row per case, each the message's arguments and the expected outcome
//! (the rebuilt request, or the refusal kind).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::Instant;

use bytes::Bytes;
use haproxy_spop::{Headers, Notify};
use spop_mirror::request::{build, ArgNames, BadMessage, MirrorRequest};

type H = (&'static [u8], &'static [u8]);

/// What a row expects when the request is rebuilt.
#[derive(Debug)]
struct Want {
    path: &'static str,
    host: Option<&'static [u8]>,
    /// The headers sent, in order (Host and Content-Length apart).
    headers: &'static [H],
    /// `Some(n)`: a Content-Length of n is sent.
    content_length: Option<usize>,
    truncated: bool,
    reencoded: bool,
}

const fn ok(path: &'static str, headers: &'static [H]) -> Result<Want, BadMessage> {
    Ok(Want {
        path,
        host: Some(b"h"),
        headers,
        content_length: None,
        truncated: false,
        reencoded: false,
    })
}

struct Row {
    name: &'static str,
    method: &'static [u8],
    url: &'static [u8],
    headers: Vec<H>,
    body: &'static [u8],
    body_size: Option<i64>,
    want: Result<Want, BadMessage>,
}

fn row(
    name: &'static str,
    method: &'static [u8],
    url: &'static [u8],
    headers: &[H],
    body: &'static [u8],
    want: Result<Want, BadMessage>,
) -> Row {
    // Every row has a Host first, as HAProxy always passes one.
    let mut all: Vec<H> = vec![(b"host", b"h")];
    all.extend_from_slice(headers);
    Row {
        name,
        method,
        url,
        headers: all,
        body,
        body_size: None,
        want,
    }
}

fn message(
    method: &[u8],
    url: &[u8],
    headers: &[(&[u8], &[u8])],
    body: &[u8],
    body_size: Option<i64>,
) -> Notify {
    let mut b = Notify::builder()
        .message("mirror")
        .arg("arg_method", Bytes::copy_from_slice(method))
        .arg("arg_path", Bytes::copy_from_slice(url))
        .arg("arg_ver", "1.1")
        .arg("arg_hdrs", Headers::encode(headers.iter().copied()))
        .arg("arg_body", Bytes::copy_from_slice(body));
    if let Some(s) = body_size {
        b = b.arg("arg_body_size", s);
    }
    b.build().unwrap()
}

fn rebuild(n: &Notify) -> Result<MirrorRequest, BadMessage> {
    build(&n.message("mirror").unwrap(), &ArgNames::default())
}

fn table() -> Vec<Row> {
    use BadMessage::{BadFraming, BadHeaders, BadMethod, BadUri};
    let mut rows = vec![
        row(
            "plain GET",
            b"GET",
            b"/a?b=c",
            &[(b"accept", b"*/*")],
            b"",
            ok("/a?b=c", &[(b"accept", b"*/*")]),
        ),
        row("extension method", b"PURGE", b"/", &[], b"", ok("/", &[])),
        // Method.
        row("CR in method", b"GE\rT", b"/", &[], b"", Err(BadMethod)),
        row("LF in method", b"GE\nT", b"/", &[], b"", Err(BadMethod)),
        row("NUL in method", b"GE\0T", b"/", &[], b"", Err(BadMethod)),
        row("space in method", b"G T", b"/", &[], b"", Err(BadMethod)),
        row("empty method", b"", b"/", &[], b"", Err(BadMethod)),
        // Request target.
        row("CR in path", b"GET", b"/a\rb", &[], b"", Err(BadUri)),
        row("LF in path", b"GET", b"/a\nb", &[], b"", Err(BadUri)),
        row("NUL in path", b"GET", b"/a\0b", &[], b"", Err(BadUri)),
        row("DEL in path", b"GET", b"/a\x7fb", &[], b"", Err(BadUri)),
        row("relative path", b"GET", b"a/b", &[], b"", Err(BadUri)),
        row("empty path", b"GET", b"", &[], b"", Err(BadUri)),
        row(
            "authority-form",
            b"CONNECT",
            b"evil.example:443",
            &[],
            b"",
            Err(BadUri),
        ),
        row(
            "other scheme",
            b"GET",
            b"ftp://evil.example/x",
            &[],
            b"",
            Err(BadUri),
        ),
        row(
            "absolute-form: authority dropped",
            b"GET",
            b"http://evil.example:81/p?q=1",
            &[],
            b"",
            ok("/p?q=1", &[]),
        ),
        row(
            "absolute-form https, no path",
            b"GET",
            b"HTTPS://evil.example",
            &[],
            b"",
            ok("/", &[]),
        ),
        row(
            "absolute-form, query only",
            b"GET",
            b"http://evil.example?x",
            &[],
            b"",
            ok("/?x", &[]),
        ),
        row("asterisk", b"OPTIONS", b"*", &[], b"", ok("*", &[])),
        row(
            "space, obs-text and # percent-encoded",
            b"GET",
            b"/a b\xff#f",
            &[],
            b"",
            Ok(Want {
                reencoded: true,
                ..ok("/a%20b%FF%23f", &[]).unwrap()
            }),
        ),
        // Header names.
        row(
            "CR in name",
            b"GET",
            b"/",
            &[(b"x\ry", b"1")],
            b"",
            Err(BadHeaders),
        ),
        row(
            "LF in name",
            b"GET",
            b"/",
            &[(b"x\ny", b"1")],
            b"",
            Err(BadHeaders),
        ),
        row(
            "NUL in name",
            b"GET",
            b"/",
            &[(b"x\0y", b"1")],
            b"",
            Err(BadHeaders),
        ),
        row(
            "space in name",
            b"GET",
            b"/",
            &[(b"x y", b"1")],
            b"",
            Err(BadHeaders),
        ),
        row(
            "colon in name",
            b"GET",
            b"/",
            &[(b"x:y", b"1")],
            b"",
            Err(BadHeaders),
        ),
        row(
            "obs-text in name",
            b"GET",
            b"/",
            &[(b"x\xe9", b"1")],
            b"",
            Err(BadHeaders),
        ),
        row(
            "upper case name kept",
            b"GET",
            b"/",
            &[(b"X-Up", b"1")],
            b"",
            ok("/", &[(b"X-Up", b"1")]),
        ),
        // Header values.
        row(
            "CR in value",
            b"GET",
            b"/",
            &[(b"x", b"a\rb")],
            b"",
            Err(BadHeaders),
        ),
        row(
            "LF in value",
            b"GET",
            b"/",
            &[(b"x", b"a\nb")],
            b"",
            Err(BadHeaders),
        ),
        row(
            "NUL in value",
            b"GET",
            b"/",
            &[(b"x", b"a\0b")],
            b"",
            Err(BadHeaders),
        ),
        row(
            "DEL in value",
            b"GET",
            b"/",
            &[(b"x", b"a\x7fb")],
            b"",
            Err(BadHeaders),
        ),
        row(
            "CR in Host",
            b"GET",
            b"/",
            &[(b"host", b"a\rb")],
            b"",
            Err(BadHeaders),
        ),
        row(
            "obs-text value kept as is",
            b"GET",
            b"/",
            &[(b"x", b"caf\xe9")],
            b"",
            ok("/", &[(b"x", b"caf\xe9")]),
        ),
        row(
            "HTAB in value kept",
            b"GET",
            b"/",
            &[(b"x", b"a\tb")],
            b"",
            ok("/", &[(b"x", b"a\tb")]),
        ),
        row(
            "empty value kept",
            b"GET",
            b"/",
            &[(b"x", b"")],
            b"",
            ok("/", &[(b"x", b"")]),
        ),
        // Content-Length.
        row(
            "Content-Length recomputed",
            b"POST",
            b"/",
            &[(b"content-length", b"5")],
            b"hello",
            Ok(Want {
                content_length: Some(5),
                ..ok("/", &[]).unwrap()
            }),
        ),
        row(
            "Content-Length 0",
            b"POST",
            b"/",
            &[(b"content-length", b"0")],
            b"",
            Ok(Want {
                content_length: Some(0),
                ..ok("/", &[]).unwrap()
            }),
        ),
        row(
            "duplicate equal Content-Length",
            b"POST",
            b"/",
            &[(b"content-length", b"5"), (b"content-length", b"5")],
            b"hello",
            Ok(Want {
                content_length: Some(5),
                ..ok("/", &[]).unwrap()
            }),
        ),
        row(
            "Content-Length list of equal values",
            b"POST",
            b"/",
            &[(b"content-length", b"5, 5")],
            b"hello",
            Ok(Want {
                content_length: Some(5),
                ..ok("/", &[]).unwrap()
            }),
        ),
        row(
            "conflicting Content-Length",
            b"POST",
            b"/",
            &[(b"content-length", b"5"), (b"content-length", b"6")],
            b"hello",
            Err(BadFraming),
        ),
        row(
            "conflicting Content-Length list",
            b"POST",
            b"/",
            &[(b"content-length", b"5, 6")],
            b"hello",
            Err(BadFraming),
        ),
        row(
            "negative Content-Length",
            b"POST",
            b"/",
            &[(b"content-length", b"-1")],
            b"",
            Err(BadFraming),
        ),
        row(
            "signed Content-Length",
            b"POST",
            b"/",
            &[(b"content-length", b"+5")],
            b"hello",
            Err(BadFraming),
        ),
        row(
            "empty Content-Length",
            b"POST",
            b"/",
            &[(b"content-length", b"")],
            b"",
            Err(BadFraming),
        ),
        row(
            "huge Content-Length",
            b"POST",
            b"/",
            &[(b"content-length", b"99999999999999999999")],
            b"",
            Err(BadFraming),
        ),
        row(
            "Content-Length larger than the body: truncated",
            b"POST",
            b"/",
            &[(b"content-length", b"100000")],
            b"hello",
            Ok(Want {
                content_length: Some(5),
                truncated: true,
                ..ok("/", &[]).unwrap()
            }),
        ),
        // Transfer-Encoding.
        row(
            "chunked body sent with a Content-Length",
            b"POST",
            b"/",
            &[(b"transfer-encoding", b"chunked"), (b"x", b"1")],
            b"hello",
            Ok(Want {
                content_length: Some(5),
                ..ok("/", &[(b"x", b"1")]).unwrap()
            }),
        ),
        row(
            "chunked, empty body",
            b"POST",
            b"/",
            &[(b"transfer-encoding", b"Chunked")],
            b"",
            Ok(Want {
                content_length: Some(0),
                ..ok("/", &[]).unwrap()
            }),
        ),
        row(
            "Transfer-Encoding wins over Content-Length",
            b"POST",
            b"/",
            &[
                (b"content-length", b"100"),
                (b"transfer-encoding", b"chunked"),
            ],
            b"hello",
            Ok(Want {
                content_length: Some(5),
                ..ok("/", &[]).unwrap()
            }),
        ),
        row(
            "gzip, chunked refused",
            b"POST",
            b"/",
            &[(b"transfer-encoding", b"gzip, chunked")],
            b"hello",
            Err(BadFraming),
        ),
        row(
            "chunked twice refused",
            b"POST",
            b"/",
            &[
                (b"transfer-encoding", b"chunked"),
                (b"transfer-encoding", b"chunked"),
            ],
            b"hello",
            Err(BadFraming),
        ),
        // Hop-by-hop and Connection.
        row(
            "hop-by-hop headers dropped",
            b"GET",
            b"/",
            &[
                (b"connection", b"close"),
                (b"keep-alive", b"timeout=5"),
                (b"proxy-connection", b"keep-alive"),
                (b"te", b"trailers"),
                (b"trailer", b"x-t"),
                (b"upgrade", b"h2c"),
                (b"x", b"1"),
            ],
            b"",
            ok("/", &[(b"x", b"1")]),
        ),
        row(
            "headers named by Connection dropped",
            b"GET",
            b"/",
            &[
                (b"x-a", b"1"),
                (b"connection", b"X-A, , x-b ,keep-alive"),
                (b"x-b", b"2"),
                (b"x-c", b"3"),
            ],
            b"",
            ok("/", &[(b"x-c", b"3")]),
        ),
        row(
            "names matched whatever their case and length",
            b"GET",
            b"/",
            &[
                (b"X-B", b"1"),
                (
                    b"connection",
                    b"x-b, x-a-name-longer-than-sixty-four-bytes-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                ),
                (
                    b"X-A-Name-Longer-Than-Sixty-Four-Bytes-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                    b"2",
                ),
                (b"X-C", b"3"),
            ],
            b"",
            ok("/", &[(b"X-C", b"3")]),
        ),
        row(
            "Connection cannot remove Host or Content-Length",
            b"POST",
            b"/",
            &[
                (b"connection", b"host, content-length"),
                (b"content-length", b"2"),
            ],
            b"hi",
            Ok(Want {
                content_length: Some(2),
                ..ok("/", &[]).unwrap()
            }),
        ),
        // Host and the rest.
        row(
            "second Host dropped",
            b"GET",
            b"/",
            &[(b"host", b"other")],
            b"",
            ok("/", &[]),
        ),
        row(
            "duplicates kept in order",
            b"GET",
            b"/",
            &[(b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2")],
            b"",
            ok(
                "/",
                &[(b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2")],
            ),
        ),
    ];
    // Without a Host.
    rows.push(Row {
        name: "no Host",
        method: b"GET",
        url: b"/",
        headers: vec![],
        body: b"",
        body_size: None,
        want: Ok(Want {
            host: None,
            ..ok("/", &[]).unwrap()
        }),
    });
    // req.body_size (chunked bodies have no Content-Length to compare).
    for (name, size, truncated) in [
        ("body_size larger than the body: truncated", 100_000, true),
        ("body_size equal to the body", 5, false),
        ("negative body_size ignored", -1, false),
    ] {
        let mut r = row(
            name,
            b"POST",
            b"/",
            &[(b"transfer-encoding", b"chunked")],
            b"hello",
            Ok(Want {
                content_length: Some(5),
                truncated,
                ..ok("/", &[]).unwrap()
            }),
        );
        r.body_size = Some(size);
        rows.push(r);
    }
    rows
}

#[test]
fn the_policy_table() {
    let mut failures = Vec::new();
    let rows = table();
    for r in &rows {
        let n = message(r.method, r.url, &r.headers, r.body, r.body_size);
        let got = rebuild(&n);
        let same = match (&got, &r.want) {
            (Err(g), Err(w)) => g == w,
            (Ok(g), Ok(w)) => {
                g.method().as_bytes() == r.method
                    && g.path() == w.path
                    && g.host() == w.host
                    && g.headers().eq(w.headers.iter().copied())
                    && g.body().as_ref() == r.body
                    && (g.has_body_framing() || !g.body().is_empty()).then_some(g.body_len())
                        == w.content_length
                    && g.truncated() == w.truncated
                    && g.uri_reencoded() == w.reencoded
            }
            _ => false,
        };
        if !same {
            failures.push(format!("{}: got {got:?}, want {:?}", r.name, r.want));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn without_the_body_size_argument_name_it_is_ignored() {
    let n = message(
        b"POST",
        b"/",
        &[(b"transfer-encoding", b"chunked")],
        b"hello",
        Some(100_000),
    );
    let names = ArgNames {
        body_size: None,
        ..ArgNames::default()
    };
    let r = build(&n.message("mirror").unwrap(), &names).unwrap();
    assert!(!r.truncated());
}

/// `HeaderMap::with_capacity` panicked past 24 576 headers: 30 000 are
/// refused as `too_many_headers`, 24 000 are rebuilt (the send-time
/// conversion is tested in `mirror`).
#[test]
fn thirty_thousand_headers_do_not_panic() {
    for (count, want) in [
        (30_000, Err(BadMessage::TooManyHeaders)),
        (24_001, Err(BadMessage::TooManyHeaders)),
        (24_000, Ok(24_000)),
    ] {
        let names: Vec<String> = (0..count).map(|i| format!("x-h{i}")).collect();
        let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", b"h"), (b"connection", b"close")];
        headers.extend(names.iter().map(|n| (n.as_bytes(), &b"v"[..])));
        let n = message(b"GET", b"/", &headers, b"", None);
        let got = rebuild(&n).map(|r| r.header_count());
        assert_eq!(got, want, "{count}");
    }
}

/// A Connection header of 10 000 tokens naming half of 10 000 headers:
/// completes (one pass and a hash set: linear) and drops exactly those.
#[test]
fn a_long_connection_header_is_linear_and_correct() {
    let names: Vec<String> = (0..10_000).map(|i| format!("x-h{i}")).collect();
    let tokens: Vec<String> = (0..10_000)
        .map(|i| {
            if i % 2 == 0 {
                format!("X-H{i}")
            } else {
                format!("x-other{i}")
            }
        })
        .collect();
    let connection = tokens.join(", ");
    let mut headers: Vec<(&[u8], &[u8])> =
        vec![(b"host", b"h"), (b"connection", connection.as_bytes())];
    headers.extend(names.iter().map(|n| (n.as_bytes(), &b"v"[..])));
    let n = message(b"GET", b"/", &headers, b"", None);
    let start = Instant::now();
    let r = rebuild(&n).unwrap();
    eprintln!(
        "10 000 Connection tokens x 10 000 headers: rebuilt in {:?}",
        start.elapsed()
    );
    let kept: Vec<&[u8]> = r.headers().map(|(n, _)| n).collect();
    assert_eq!(kept.len(), 5_000);
    assert!(kept
        .iter()
        .zip((1..10_000).step_by(2))
        .all(|(n, i)| *n == format!("x-h{i}").as_bytes()));
}
