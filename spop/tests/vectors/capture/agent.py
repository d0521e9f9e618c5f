#!/usr/bin/env python3
"""A recording SPOP agent, and an SPOP decoder independent of the Rust crate.

Used by capture.sh to capture frames from a real HAProxy:

    agent.py serve PORT OUTDIR [--caps LIST] [--max-frame-size N] [--no-ack]

records every frame HAProxy sends, byte for byte (LENGTH included), to
OUTDIR/raw-<conn>-<seq>-<type>.bin, answers HAPROXY-HELLO with AGENT-HELLO,
ACKs every complete NOTIFY with no action (never, with --no-ack: to see how
many frames HAProxy keeps in flight), and answers HAPROXY-DISCONNECT.
Stops on SIGTERM.

    agent.py manifest DIR VERSION

decodes every DIR/*.bin (and the fragment series named in DIR/frag.list)
into DIR/manifest.json: what this decoder read in each frame. The Rust
tests check the crate against that manifest, so this decoder shares no code
with it (written from HAProxy's doc/SPOE.txt and what HAProxy sends).
Standard library only.
"""
import asyncio
import hashlib
import json
import os
import signal
import struct
import sys

TYPES = {0: "UNSET", 1: "HAPROXY-HELLO", 2: "HAPROXY-DISCONNECT", 3: "NOTIFY",
         101: "AGENT-HELLO", 102: "AGENT-DISCONNECT", 103: "ACK"}
DATA = {0: "NULL", 1: "BOOL", 2: "INT32", 3: "UINT32", 4: "INT64", 5: "UINT64",
        6: "IPV4", 7: "IPV6", 8: "STRING", 9: "BINARY"}


class Short(Exception):
    pass


def varint(buf, pos):
    """HAProxy's varint: < 240 in one byte; else 4 bits then 7 bits a byte."""
    if pos >= len(buf):
        raise Short("varint")
    v = buf[pos]
    pos += 1
    if v < 240:
        return v, pos
    shift = 4
    while True:
        if pos >= len(buf) or shift > 70:
            raise Short("varint")
        c = buf[pos]
        pos += 1
        v += c << shift
        shift += 7
        if c < 128:
            break
    if v >= 1 << 64:
        raise Short("varint overflow")
    return v, pos


def put_varint(v):
    if v < 240:
        return bytes([v])
    out = [(v & 0xFF) | 0xF0]
    v = (v - 240) >> 4
    while v >= 128:
        out.append((v & 0xFF) | 0x80)
        v = (v - 128) >> 7
    out.append(v)
    return bytes(out)


def string(buf, pos):
    n, pos = varint(buf, pos)
    if pos + n > len(buf):
        raise Short("string")
    return buf[pos:pos + n], pos + n


def signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def typed(buf, pos):
    if pos >= len(buf):
        raise Short("type")
    b = buf[pos]
    pos += 1
    t, flags = b & 0x0F, b >> 4
    name = DATA.get(t)
    if name is None:
        raise Short("unknown type %d" % t)
    if t == 0:
        return {"type": name, "value": None}, pos
    if t == 1:
        return {"type": name, "value": bool(flags & 1)}, pos
    if t in (2, 4):
        v, pos = varint(buf, pos)
        v = signed(v)
        if t == 2:
            v = (v + (1 << 31)) % (1 << 32) - (1 << 31)
        return {"type": name, "value": v}, pos
    if t in (3, 5):
        v, pos = varint(buf, pos)
        return {"type": name, "value": v}, pos
    if t == 6:
        if pos + 4 > len(buf):
            raise Short("ipv4")
        return {"type": name, "value": ".".join(str(x) for x in buf[pos:pos + 4])}, pos + 4
    if t == 7:
        if pos + 16 > len(buf):
            raise Short("ipv6")
        return {"type": name, "value": buf[pos:pos + 16].hex()}, pos + 16
    data, pos = string(buf, pos)
    if t == 8:
        return {"type": name, "value": data.decode("latin-1")}, pos
    out = {"type": name, "len": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if len(data) <= 4096:
        out["hex"] = data.hex()
    return out, pos


def headers(block):
    """req.hdrs_bin: <str name><str value> pairs ended by two empty strings."""
    out, pos = [], 0
    while True:
        name, pos = string(block, pos)
        value, pos = string(block, pos)
        if not name and not value:
            return out
        out.append([name.decode("latin-1"), value.decode("latin-1")])


def head(frame):
    """(type, flags, stream_id, frame_id, payload) of a frame after LENGTH."""
    if len(frame) < 5:
        raise Short("head")
    t = frame[0]
    flags = struct.unpack(">I", frame[1:5])[0]
    sid, pos = varint(frame, 5)
    fid, pos = varint(frame, pos)
    return t, flags, sid, fid, frame[pos:]


def kv_list(payload):
    out, pos = {}, 0
    while pos < len(payload):
        name, pos = string(payload, pos)
        value, pos = typed(payload, pos)
        out[name.decode("latin-1")] = value
    return out


def messages(payload, raw_values):
    out, pos = [], 0
    while pos < len(payload):
        name, pos = string(payload, pos)
        if pos >= len(payload):
            raise Short("nb-args")
        nargs = payload[pos]
        pos += 1
        args, hdrs = [], None
        for _ in range(nargs):
            aname, pos = string(payload, pos)
            start = pos
            value, pos = typed(payload, pos)
            args.append([aname.decode("latin-1"), value])
            if value["type"] == "BINARY" and aname.endswith(b"hdrs"):
                # the bytes after the type byte and length varint
                _, vstart = varint(payload, start + 1)
                hdrs = headers(payload[vstart:pos])
        msg = {"name": name.decode("latin-1"), "args": args}
        if hdrs is not None:
            msg["headers"] = hdrs
        out.append(msg)
    return out


def describe(frame):
    t, flags, sid, fid, payload = head(frame)
    d = {"frame_type": t, "frame_type_name": TYPES.get(t, "?"), "flags": flags,
         "fin": bool(flags & 1), "abort": bool(flags & 2), "stream_id": sid,
         "frame_id": fid, "length": len(frame)}
    if t in (1, 2):
        d["kv"] = kv_list(payload)
    elif t == 3 and flags & 1:
        d["messages"] = messages(payload, False)
    return d


def manifest(directory, version):
    frames = []
    names = sorted(f for f in os.listdir(directory) if f.endswith(".bin"))
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            wire = f.read()
        (length,) = struct.unpack(">I", wire[:4])
        if length != len(wire) - 4:
            raise SystemExit("%s: LENGTH %d but %d bytes follow" % (name, length, len(wire) - 4))
        d = describe(wire[4:])
        d["file"] = name
        frames.append(d)
    series = os.path.join(directory, "frag.list")
    if os.path.exists(series):
        files = open(series).read().split()
        payload = b""
        for i, name in enumerate(files):
            with open(os.path.join(directory, name), "rb") as f:
                t, flags, sid, fid, part = head(f.read()[4:])
            payload += part
        frames.append({"file": files, "frame_type": 3, "frame_type_name": "NOTIFY (reassembled)",
                       "fin": True, "stream_id": sid, "frame_id": fid, "length": len(payload),
                       "messages": messages(payload, False)})
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump({"haproxy_version": version, "frames": frames}, f, indent=1)
        f.write("\n")
    print("%s: %d frames described" % (directory, len(frames)))


# --- the recording agent -------------------------------------------------

def frame_bytes(t, flags, sid, fid, payload):
    body = bytes([t]) + struct.pack(">I", flags) + put_varint(sid) + put_varint(fid) + payload
    return struct.pack(">I", len(body)) + body


def kv_str(name, value):
    return put_varint(len(name)) + name + bytes([8]) + put_varint(len(value)) + value


def kv_u32(name, value):
    return put_varint(len(name)) + name + bytes([3]) + put_varint(value)


class Recorder:
    def __init__(self, outdir, caps, max_frame, ack=True):
        self.outdir, self.caps, self.max_frame, self.ack = outdir, caps, max_frame, ack
        self.conn = 0
        self.seq = 0

    def save(self, conn, wire):
        self.seq += 1
        t = wire[4]
        name = "raw-%03d-%05d-%s.bin" % (conn, self.seq, TYPES.get(t, str(t)).lower())
        with open(os.path.join(self.outdir, name), "wb") as f:
            f.write(wire)

    async def serve(self, reader, writer):
        self.conn += 1
        conn = self.conn
        frame_size = 16380
        try:
            while True:
                lenb = await reader.readexactly(4)
                (n,) = struct.unpack(">I", lenb)
                if n > 16 << 20:
                    return
                frame = await reader.readexactly(n)
                self.save(conn, lenb + frame)
                t, flags, sid, fid, payload = head(frame)
                if t == 1:
                    hello = kv_list(payload)
                    offered = hello.get("max-frame-size", {}).get("value", 16380)
                    frame_size = min(offered, self.max_frame or offered)
                    answer = (kv_str(b"version", b"2.0") + kv_u32(b"max-frame-size", frame_size)
                              + kv_str(b"capabilities", self.caps.encode()))
                    writer.write(frame_bytes(101, 1, 0, 0, answer))
                elif t == 2:
                    bye = kv_u32(b"status-code", 0) + kv_str(b"message", b"bye")
                    writer.write(frame_bytes(102, 1, 0, 0, bye))
                    await writer.drain()
                    return
                elif t in (0, 3) and flags & 1 and self.ack:
                    writer.write(frame_bytes(103, 1, sid, fid, b""))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, Short):
            pass
        finally:
            writer.close()


async def serve(port, outdir, caps, max_frame, ack):
    rec = Recorder(outdir, caps, max_frame, ack)
    server = await asyncio.start_server(rec.serve, "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main(argv):
    if len(argv) >= 4 and argv[1] == "serve":
        caps, max_frame, ack = "pipelining", 0, True
        rest = argv[4:]
        while rest:
            opt = rest.pop(0)
            if opt == "--caps":
                caps = rest.pop(0)
            elif opt == "--max-frame-size":
                max_frame = int(rest.pop(0))
            elif opt == "--no-ack":
                ack = False
            else:
                raise SystemExit("unknown option " + opt)
        os.makedirs(argv[3], exist_ok=True)
        asyncio.run(serve(int(argv[2]), argv[3], caps, max_frame, ack))
    elif len(argv) == 4 and argv[1] == "manifest":
        manifest(argv[2], argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
