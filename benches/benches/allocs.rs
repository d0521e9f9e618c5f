//! Heap allocations per decoded frame: spop vs nbari's `spop` 0.13, on the
//! captured mirror NOTIFY frames. Prints a table; exits non-zero if spop
//! allocates at all.
//!
//! `cargo bench -p spop-benches --bench allocs`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use haproxy_spop::{Frame, FrameBody};

fn main() {
    let mut spop_total = 0;
    println!(
        "{:<28} {:>12} {:>12}",
        "frame (haproxy-2.6.12)", "spop allocs", "nbari allocs"
    );
    for file in [
        "mirror-02-notify.bin",
        "mirror-03-notify.bin",
        "mirror-06-notify.bin",
        "typed-01-notify.bin",
        "mirror-01-haproxy-hello.bin",
    ] {
        let path = format!(
            "{}/../spop/tests/vectors/haproxy-2.6.12/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let wire = Bytes::from(std::fs::read(&path).unwrap());
        let payload = wire.slice(4..);
        let _shared = payload.clone();
        let spop = allocation_counter::measure(|| {
            let frame = Frame::decode(payload.clone()).unwrap();
            if let FrameBody::Notify(n) = &frame.body {
                for m in n.messages() {
                    for (name, value) in m.args() {
                        std::hint::black_box((name, value));
                    }
                }
            }
            std::hint::black_box(frame);
        })
        .count_total;
        let nbari = allocation_counter::measure(|| {
            let parsed = nbari_spop::parser::parse_frame(&wire[..]).unwrap();
            std::hint::black_box(parsed);
        })
        .count_total;
        if file.contains("notify") {
            spop_total += spop;
        }
        println!("{file:<28} {spop:>12} {nbari:>12}");
    }
    if spop_total != 0 {
        eprintln!("spop allocated while decoding NOTIFY frames");
        std::process::exit(1);
    }
}
