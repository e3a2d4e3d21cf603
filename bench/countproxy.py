#!/usr/bin/env python3
"""A counting HTTP/1.1 relay for the benchmark: every request s3lead sends goes through it.

    countproxy.py UPSTREAM_HOST:PORT LOGFILE

Listens on a free port of 127.0.0.1, prints that port on stdout (one line), and relays
each client connection to UPSTREAM over its own upstream connection. It parses message
framing only (Content-Length, chunked, 1xx, HEAD/204/304 without a body), never bodies,
and appends one line per answered request to LOGFILE:

    <CLOCK_MONOTONIC seconds> <METHOD> <STATUS> <PATH>

CLOCK_MONOTONIC is system-wide, so bench.py counts requests in a time window it measured
itself. A request whose answer never came (connection closed) is logged with status 000.
Standard library only. Runs until killed.
"""
import collections
import socket
import sys
import threading
import time

CHUNK = 64 * 1024


class Closed(Exception):
    pass


def read_head(rf):
    """Start line and header lines of one message (raw bytes, CRLF kept)."""
    lines = []
    line = rf.readline(CHUNK)
    while line in (b"\r\n", b"\n"):  # tolerate stray blank lines between messages
        line = rf.readline(CHUNK)
    if not line:
        raise Closed
    lines.append(line)
    while True:
        line = rf.readline(CHUNK)
        if not line:
            raise Closed
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return lines


def headers_of(lines):
    h = {}
    for line in lines[1:-1]:
        k, _, v = line.decode("latin-1").partition(":")
        h.setdefault(k.strip().lower(), []).append(v.strip())
    return h


def relay_exact(rf, out, n):
    while n > 0:
        b = rf.read(min(n, CHUNK))
        if not b:
            raise Closed
        out.sendall(b)
        n -= len(b)


def relay_chunked(rf, out):
    while True:
        size_line = rf.readline(CHUNK)
        if not size_line:
            raise Closed
        out.sendall(size_line)
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            # trailers, up to the blank line
            while True:
                t = rf.readline(CHUNK)
                if not t:
                    raise Closed
                out.sendall(t)
                if t in (b"\r\n", b"\n"):
                    return
        relay_exact(rf, out, size + 2)  # data and its CRLF


def relay_body(rf, out, h, until_eof):
    if "chunked" in ",".join(h.get("transfer-encoding", [])).lower():
        relay_chunked(rf, out)
    elif "content-length" in h:
        relay_exact(rf, out, int(h["content-length"][0]))
    elif until_eof:
        while True:
            b = rf.read1(CHUNK)
            if not b:
                return
            out.sendall(b)


class Conn:
    def __init__(self, client, upstream, log):
        self.client, self.log = client, log
        self.up = socket.create_connection(upstream)
        self.pending = collections.deque()  # (method, path) of requests awaiting answers
        self.cv = threading.Condition()
        self.requests_done = False

    def requests(self):
        rf = self.client.makefile("rb")
        try:
            while True:
                lines = read_head(rf)
                method, path, _ = lines[0].decode("latin-1").split(" ", 2)
                with self.cv:
                    self.pending.append((method, path))
                    self.cv.notify()
                self.up.sendall(b"".join(lines))
                relay_body(rf, self.up, headers_of(lines), until_eof=False)
        except (Closed, OSError, ValueError):
            pass
        finally:
            with self.cv:
                self.requests_done = True
                self.cv.notify()
            try:
                self.up.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def responses(self):
        rf = self.up.makefile("rb")
        try:
            while True:
                with self.cv:
                    while not self.pending and not self.requests_done:
                        self.cv.wait()
                    if not self.pending:
                        return
                    method, path = self.pending[0]
                lines = read_head(rf)
                status = int(lines[0].split()[1])
                self.client.sendall(b"".join(lines))
                if 100 <= status < 200:
                    continue  # interim (100 Continue): the final answer follows
                h = headers_of(lines)
                if method != "HEAD" and status not in (204, 304):
                    relay_body(rf, self.client, h, until_eof=True)
                with self.cv:
                    self.pending.popleft()
                self.log(method, status, path)
        except (Closed, OSError, ValueError, IndexError):
            pass
        finally:
            with self.cv:
                for method, path in self.pending:
                    self.log(method, 0, path)
                self.pending.clear()
            for s in (self.client, self.up):
                try:
                    s.close()
                except OSError:
                    pass


def main():
    host, _, port = sys.argv[1].rpartition(":")
    upstream = (host, int(port))
    logf = open(sys.argv[2], "a", buffering=1)
    log_lock = threading.Lock()

    def log(method, status, path):
        with log_lock:
            logf.write(f"{time.monotonic():.6f} {method} {status:03d} {path}\n")

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    print(srv.getsockname()[1], flush=True)
    while True:
        client, _ = srv.accept()
        try:
            conn = Conn(client, upstream, log)
        except OSError:
            client.close()
            continue
        for target in (conn.requests, conn.responses):
            threading.Thread(target=target, daemon=True).start()


if __name__ == "__main__":
    main()
