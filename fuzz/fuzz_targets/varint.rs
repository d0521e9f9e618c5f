//! Bytes → varint::decode_slice → encode gives back exactly the bytes used;
//! the Buf-based decoder agrees.
#![no_main]

use haproxy_spop::varint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let slice = varint::decode_slice(data);
    let mut buf = data;
    let via_buf = varint::decode(&mut buf);
    assert_eq!(slice.map(|(v, _)| v), via_buf);
    if let Ok((value, used)) = slice {
        assert!(used <= varint::MAX_LEN);
        assert_eq!(used, varint::encoded_len(value));
        let mut out = Vec::new();
        varint::encode(value, &mut out);
        assert_eq!(&out[..], &data[..used]);
        assert_eq!(data.len() - buf.len(), used);
    }
});
