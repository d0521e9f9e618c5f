#!/usr/bin/env bash
# Builds the seed corpora from the captured HAProxy frames in spop/tests/vectors
# (nothing under fuzz/corpus is committed). Needs only bash, dd and python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
vectors="$here/../spop/tests/vectors"
corpus="$here/corpus"
mkdir -p "$corpus"/{decode_frame,codec_stream,varint,hdrs_bin,reassembly,roundtrip,conn,answers}
for f in "$vectors"/*/*.bin; do
    name="$(basename "$(dirname "$f")")-$(basename "$f" .bin)"
    # decode_frame: the payload after the 4-byte LENGTH.
    tail -c +5 "$f" > "$corpus/decode_frame/$name"
    # codec_stream: (chunk sizes, bytes) as arbitrary reads them: whole files work as seeds.
    cp "$f" "$corpus/codec_stream/$name"
done
# hdrs_bin: the req.hdrs_bin blocks carried by the mirror NOTIFY frames;
# varint: the HELLO's max-frame-size and a few boundary encodings.
python3 - "$vectors" "$corpus" <<'PY'
import json, os, sys
vectors, corpus = sys.argv[1], sys.argv[2]
n = 0
for version in sorted(os.listdir(vectors)):
    m = os.path.join(vectors, version, "manifest.json")
    if not os.path.exists(m):
        continue
    for frame in json.load(open(m))["frames"]:
        for msg in frame.get("messages", []):
            for name, value in msg["args"]:
                if name == "arg_hdrs" and "hex" in value:
                    with open(os.path.join(corpus, "hdrs_bin", f"{version}-{n}"), "wb") as out:
                        out.write(bytes.fromhex(value["hex"]))
                    n += 1
for i, hexs in enumerate(["ef", "f000", "ff7f", "f08000", "fcf006", "fff0fefefefefefefe0e"]):
    with open(os.path.join(corpus, "varint", f"boundary-{i}"), "wb") as out:
        out.write(bytes.fromhex(hexs))
PY
# answers: (requests, read size, close) then the answers, as
# fuzz_targets/answers.rs reads its input: three requests, the second kept
# (limit 4), the third a HEAD kept (limit 0x100), reads of 7 bytes, the
# target closing.
head='\x03\x00\x00\x00\x02\x04\x00\x03\x00\x01\x07\x00\x01'
printf "${head}HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 201 Created\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n4\r\ndefg\r\n0\r\nT: 1\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n" > "$corpus/answers/framings"
printf "${head}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n\r\nto the close" > "$corpus/answers/close"
echo "seeded: $(for d in "$corpus"/*/; do printf '%s=%s ' "$(basename "$d")" "$(ls "$d" | wc -l)"; done)"
