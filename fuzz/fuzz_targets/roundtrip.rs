//! An arbitrary Frame encodes, and decodes back to itself.
#![no_main]

use bytes::Bytes;
use haproxy_spop::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: Frame| {
    let mut out = Vec::new();
    frame.encode(&mut out);
    assert_eq!(out.len(), frame.encoded_len());
    assert_eq!(Frame::decode(Bytes::from(out)).expect("decodes"), frame);
});
