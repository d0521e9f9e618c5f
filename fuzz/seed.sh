#!/usr/bin/env bash
# Builds the seed corpora from the captured HAProxy frames in spop/tests/vectors
# (nothing under fuzz/corpus is committed). Needs only bash, dd and python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
vectors="$here/../spop/tests/vectors"
corpus="$here/corpus"
mkdir -p "$corpus"/{decode_frame,codec_stream,varint,hdrs_bin,reassembly,roundtrip,conn}
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
echo "seeded: $(for d in "$corpus"/*/; do printf '%s=%s ' "$(basename "$d")" "$(ls "$d" | wc -l)"; done)"
