//! Raw payload → Frame::decode; whatever decodes must encode and decode back
//! to the same frame (the decode-encode-decode oracle), and every value of a
//! NOTIFY must be reachable without panicking, owned and borrowed alike.
#![no_main]

use bytes::Bytes;
use haproxy_spop::{Frame, FrameBody};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut out = Vec::new();
    frame.encode(&mut out);
    assert_eq!(out.len(), frame.encoded_len());
    let again = Frame::decode(Bytes::from(out.clone())).expect("re-encoded frame decodes");
    assert_eq!(again, frame);
    // NOTIFY payloads are kept as received: byte-identical.
    if let FrameBody::Notify(n) = &frame.body {
        assert!(data.ends_with(n.payload()));
        for msg in n.messages() {
            assert_eq!(msg.args().len(), msg.args_ref().len());
            for ((name, value), (name_ref, value_ref)) in msg.args().zip(msg.args_ref()) {
                let _ = value.as_str();
                // The borrowed view reads the same values as the owned one.
                assert_eq!(name, name_ref);
                assert_eq!(value_ref, value);
            }
            let _ = msg.headers("arg_hdrs").map(|h| h.iter().count());
        }
    }
});
