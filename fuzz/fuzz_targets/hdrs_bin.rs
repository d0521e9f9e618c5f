//! Bytes → Headers::decode; a valid block iterates to its count and encodes
//! back to the same bytes.
#![no_main]

use bytes::Bytes;
use haproxy_spop::Headers;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(headers) = Headers::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let pairs: Vec<(Bytes, Bytes)> = headers.iter().collect();
    assert_eq!(pairs.len(), headers.len());
    assert!(pairs.iter().all(|(n, _)| !n.is_empty()));
    // Varints re-encode canonically, and the scheme has no other form.
    assert_eq!(&Headers::encode(pairs)[..], data);
});
