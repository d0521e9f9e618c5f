//! Reads raw SPOP frames (4-byte LENGTH included) from the files named on the
//! command line and prints what they hold.
//!
//! `cargo run -p spop-examples --example decode_vectors -- spop/tests/vectors/haproxy-2.6.12/*.bin`

use bytes::Bytes;
use haproxy_spop::{Frame, FrameBody, TypedData};

fn main() {
    let mut failed = false;
    for path in std::env::args().skip(1) {
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            Err(err) => {
                eprintln!("{path}: {err}");
                failed = true;
                continue;
            }
        };
        let wire = Bytes::from(raw);
        let Some(payload) = wire.get(4..).map(|_| wire.slice(4..)) else {
            eprintln!("{path}: shorter than a LENGTH");
            failed = true;
            continue;
        };
        match Frame::decode(payload) {
            Ok(frame) => print_frame(&path, &frame),
            Err(err) => {
                eprintln!("{path}: {err} (status {})", err.status());
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}

fn print_frame(path: &str, frame: &Frame) {
    println!("{path}: {} {:?}", frame.frame_type(), frame.metadata);
    match &frame.body {
        FrameBody::Notify(notify) => {
            for msg in notify.messages() {
                println!("  message {}", String::from_utf8_lossy(msg.name()));
                for (name, value) in msg.args() {
                    let name = String::from_utf8_lossy(name);
                    match value {
                        TypedData::String(s) => {
                            println!("    {name} = {:?}", String::from_utf8_lossy(&s))
                        }
                        other => println!("    {name} = {other:?}"),
                    }
                }
            }
        }
        other => println!("  {other:?}"),
    }
}
