#!/usr/bin/env python3
"""Captures SPOP frames from a real HAProxy into ../haproxy-<version>/.

    capture.py HAPROXY_BINARY [OUTDIR]

Runs HAProxy (haproxy.cfg and spoe.conf beside this file, on free loopback
ports) in front of the recording agent (agent.py), sends the requests below,
and keeps the frames HAProxy sent:

  mirror-01-haproxy-hello.bin   the HELLO (default tune.bufsize 16384)
  mirror-02..07-notify.bin      GET with query and cookie; POST form; HTTP/1.0;
                                chunked POST; 12 000-byte PUT; 100 000-byte PUT
                                (cut to what fits HAProxy's buffer)
  typed-01-notify.bin           one argument of every data type
  check-01-haproxy-hello.bin    the HELLO of `option spop-check`
  frag-NN-*.bin, frag.list      (2.x/3.0 engine only) tune.bufsize 131072, the
                                agent announcing fragmentation and 16380 bytes:
                                a 100 000-byte PUT in fragments
  nofrag-01-haproxy-disconnect.bin  (2.x/3.0 only) the same without the
                                fragmentation capability

then writes manifest.json with agent.py's own decoder. Standard library only.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import agent  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, what="", timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit("%s exited with %s" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("%s: nothing listens on %d" % (what, port))


def http(port, raw):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def requests(port):
    host = b"Host: 127.0.0.1:%d\r\nUser-Agent: spop-capture\r\nAccept: */*\r\n" % port
    close = b"Connection: close\r\n"
    big = b"z" * 100000
    return [
        b"GET /index.html?x=1&y=%20z HTTP/1.1\r\n" + host
        + b"X-Test: hello\r\nCookie: a=b; c=d\r\n" + close + b"\r\n",
        b"POST /submit HTTP/1.1\r\n" + host + b"Content-Length: 14\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n" + close + b"\r\nname=value&a=b",
        b"GET /v10 HTTP/1.0\r\n" + host + b"\r\n",
        b"POST /chunked HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked\r\n"
        b"Content-Type: text/plain\r\n" + close + b"\r\n6\r\nchunke\r\n6\r\nd-body\r\n0\r\n\r\n",
        b"PUT /b12k HTTP/1.1\r\n" + host + b"Content-Length: 12000\r\n"
        b"Content-Type: application/octet-stream\r\n" + close + b"\r\n" + bytes(range(256)) * 46 + b"x" * 224,
        b"PUT /b100k HTTP/1.1\r\n" + host + b"Content-Length: 100000\r\n"
        b"Content-Type: application/octet-stream\r\n" + close + b"\r\n" + big,
    ]


class Run:
    """HAProxy and the recording agent for one scenario."""

    def __init__(self, haproxy, work, name, bufsize, agent_args, check=False):
        self.dir = os.path.join(work, name)
        self.raw = os.path.join(self.dir, "raw")
        os.makedirs(self.raw)
        self.www, self.app, self.agent_port = free_port(), free_port(), free_port()
        self.agent = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "agent.py"), "serve", str(self.agent_port), self.raw]
            + agent_args)
        wait_port(self.agent_port, self.agent, "agent")
        values = {"BUFSIZE": str(bufsize), "WWW": str(self.www), "APP": str(self.app),
                  "AGENT": str(self.agent_port), "SPOE": os.path.join(HERE, "spoe.conf"),
                  "SPOPCHECK": "option spop-check" if check else "",
                  "CHECK": "check inter 200ms" if check else ""}
        cfg = open(os.path.join(HERE, "haproxy.cfg")).read()
        cfg = re.sub(r"@(\w+)@", lambda m: values[m.group(1)], cfg)
        cfg_path = os.path.join(self.dir, "haproxy.cfg")
        open(cfg_path, "w").write(cfg)
        self.log = open(os.path.join(self.dir, "haproxy.log"), "w")
        self.haproxy = subprocess.Popen([haproxy, "-f", cfg_path, "-db"], stdout=self.log,
                                        stderr=subprocess.STDOUT, cwd=self.dir)
        wait_port(self.www, self.haproxy, "haproxy")

    def frames(self):
        """(file, decoded head, payload) of the recorded frames, in order."""
        out = []
        for name in sorted(os.listdir(self.raw), key=lambda n: int(n.split("-")[2])):
            wire = open(os.path.join(self.raw, name), "rb").read()
            out.append((os.path.join(self.raw, name), agent.describe(wire[4:])))
        return out

    def stop(self):
        for p in (self.haproxy, self.agent):
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        self.log.close()


def arg(frame, name):
    for msg in frame.get("messages", []):
        for n, v in msg["args"]:
            if n == name:
                return v.get("value")
    return None


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    haproxy = sys.argv[1]
    banner = subprocess.run([haproxy, "-v"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"version (\d+\.\d+\.\d+)", banner)
    if not m:
        raise SystemExit("cannot read the version of %s: %r" % (haproxy, banner[:80]))
    version = m.group(1)
    line = tuple(int(x) for x in version.split(".")[:2])
    classic = line < (3, 1)
    out = sys.argv[2] if len(sys.argv) == 3 else os.path.join(HERE, "..", "haproxy-" + version)
    work = tempfile.mkdtemp(prefix="spop-capture-")
    keep = []  # (source file, final name)
    try:
        # mirror and typed: default buffers, the agent takes HAProxy's frame size.
        run = Run(haproxy, work, "mirror", 16384, ["--caps", "pipelining"])
        try:
            http(run.www, b"GET /warmup HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            for raw in requests(run.www):
                http(run.www, raw)
            http(run.www, b"GET /typed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            time.sleep(0.3)
        finally:
            run.stop()
        frames = run.frames()
        hellos = [f for f, d in frames if d["frame_type"] == 1]
        notifies = [(f, d) for f, d in frames if d["frame_type"] == 3]
        mirror = [f for f, d in notifies if arg(d, "arg_path") not in (None, "/warmup")]
        typed = [f for f, d in notifies if arg(d, "neg") is not None]
        if not hellos or len(mirror) != 6 or len(typed) != 1:
            raise SystemExit("mirror run: %d HELLO, %d mirror and %d typed NOTIFY (want >=1, 6, 1); see %s"
                             % (len(hellos), len(mirror), len(typed), run.dir))
        keep.append((hellos[0], "mirror-01-haproxy-hello.bin"))
        keep += [(f, "mirror-%02d-notify.bin" % (i + 2)) for i, f in enumerate(mirror)]
        keep.append((typed[0], "typed-01-notify.bin"))

        # The health check's HELLO.
        run = Run(haproxy, work, "check", 16384, ["--caps", "pipelining"], check=True)
        try:
            deadline = time.time() + 5
            checks = []
            while not checks and time.time() < deadline:
                time.sleep(0.2)
                checks = [f for f, d in run.frames()
                          if d["frame_type"] == 1 and d["kv"].get("healthcheck", {}).get("value")]
        finally:
            run.stop()
        if not checks:
            raise SystemExit("check run: no health-check HELLO; see %s" % run.dir)
        keep.append((checks[0], "check-01-haproxy-hello.bin"))

        frag_files = []
        if classic:
            big = requests(0)[-1].replace(b"127.0.0.1:0", b"127.0.0.1")
            run = Run(haproxy, work, "frag", 131072,
                      ["--caps", "pipelining,fragmentation", "--max-frame-size", "16380"])
            try:
                http(run.www, b"GET /warmup HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                http(run.www, big)
                time.sleep(0.3)
            finally:
                run.stop()
            series = [f for f, d in run.frames()
                      if d["frame_type"] == 0 or (d["frame_type"] == 3 and not d["fin"])]
            if len(series) < 2:
                raise SystemExit("frag run: no fragmented NOTIFY; see %s" % run.dir)
            for i, f in enumerate(series):
                kind = "notify" if i == 0 else "unset"
                frag_files.append("frag-%02d-%s.bin" % (i + 1, kind))
                keep.append((f, frag_files[-1]))

            run = Run(haproxy, work, "nofrag", 131072,
                      ["--caps", "pipelining", "--max-frame-size", "16380"])
            try:
                http(run.www, b"GET /warmup HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                try:
                    http(run.www, big)
                except OSError:
                    pass
                time.sleep(0.3)
            finally:
                run.stop()
            byes = [f for f, d in run.frames() if d["frame_type"] == 2]
            if not byes:
                raise SystemExit("nofrag run: no HAPROXY-DISCONNECT; see %s" % run.dir)
            keep.append((byes[0], "nofrag-01-haproxy-disconnect.bin"))

        os.makedirs(out, exist_ok=True)
        for old in os.listdir(out):
            if old.endswith(".bin") or old in ("frag.list", "manifest.json"):
                os.remove(os.path.join(out, old))
        for src, name in keep:
            shutil.copyfile(src, os.path.join(out, name))
        if frag_files:
            open(os.path.join(out, "frag.list"), "w").write("\n".join(frag_files) + "\n")
        agent.manifest(out, version)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
