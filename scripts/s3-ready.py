#!/usr/bin/env python3
"""Waits until an S3-compatible server really serves S3, and makes the test bucket.

Used by start-s3-server.sh as its readiness check. Answering HTTP is not enough: Ceph
RGW listens long before its pools exist, and creates the data pool on the first object
write, which can take seconds. So "ready" here means: CreateBucket succeeded (or the
bucket is already ours), then a PUT and a DELETE of a probe object succeeded. Each step
is retried until the deadline, and the last error is printed if it never succeeds.

Standard library only (a hand-rolled SigV4 signer) so that it runs on the machine's
python3 before any venv exists and needs neither the aws CLI nor botocore.

Usage: s3-ready.py --endpoint http://127.0.0.1:PORT --bucket B --access-key AK
                   --secret-key SK [--region us-east-1] [--timeout SECONDS]
                   [--alive-pid PID ...]
       s3-ready.py --listen-only --endpoint http://127.0.0.1:PORT [--timeout ...]
Exits 0 when ready (or, with --listen-only, once the port accepts connections), 1 on
timeout or as soon as an --alive-pid process has died.
"""
import argparse
import datetime
import hashlib
import hmac
import http.client
import os
import socket
import sys
import time
import urllib.parse

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signed_request(a, method, path, body=b""):
    """One path-style request signed with SigV4; returns (status, body bytes)."""
    u = urllib.parse.urlsplit(a.endpoint)
    host = u.netloc
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [method, urllib.parse.quote(path), "", *[f"{k}:{headers[k]}" for k in sorted(headers)], "", signed, payload_hash]
    )
    scope = f"{day}/{a.region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + a.secret_key).encode(), day), a.region), "s3"), "aws4_request")
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {k: v for k, v in headers.items() if k != "host"}
    out["Authorization"] = f"AWS4-HMAC-SHA256 Credential={a.access_key}/{scope}, SignedHeaders={signed}, Signature={sig}"
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        c.request(method, path, body=body or None, headers=out)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def dead(pids):
    """The first of pids that is no longer running (or is a zombie), else None."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return pid
        except (FileNotFoundError, ProcessLookupError):
            return pid
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket")
    ap.add_argument("--access-key")
    ap.add_argument("--secret-key")
    ap.add_argument("--listen-only", action="store_true")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--alive-pid", type=int, action="append", default=[])
    a = ap.parse_args()
    if not a.listen_only and not (a.bucket and a.access_key and a.secret_key):
        ap.error("--bucket, --access-key and --secret-key are required without --listen-only")

    deadline = time.monotonic() + a.timeout
    if a.listen_only:
        u = urllib.parse.urlsplit(a.endpoint)
        while True:
            pid = dead(a.alive_pid)
            if pid is not None:
                print(f"s3-ready: server process {pid} exited before listening", file=sys.stderr)
                return 1
            try:
                socket.create_connection((u.hostname, u.port), timeout=5).close()
                return 0
            except OSError as e:
                if time.monotonic() > deadline:
                    print(f"s3-ready: nothing listens on {a.endpoint} after {a.timeout:.0f} s: {e}", file=sys.stderr)
                    return 1
            time.sleep(0.2)

    probe = f"/{a.bucket}/s3lead-start-probe-{os.getpid()}"
    steps = [
        # 409 BucketAlreadyOwnedByYou: a restarted or shared server already has it.
        ("CreateBucket", "PUT", f"/{a.bucket}", b"", (200, 409)),
        ("PutObject", "PUT", probe, b"probe", (200,)),
        ("DeleteObject", "DELETE", probe, b"", (200, 204)),
    ]
    last = "no attempt yet"
    for name, method, path, body, ok in steps:
        while True:
            pid = dead(a.alive_pid)
            if pid is not None:
                print(f"s3-ready: server process {pid} exited (last: {last})", file=sys.stderr)
                return 1
            try:
                status, data = signed_request(a, method, path, body)
                if status in ok and not (status == 409 and b"BucketAlreadyOwnedByYou" not in data):
                    break
                last = f"{name}: HTTP {status} {data[:300]!r}"
            except OSError as e:  # refused, reset, timeout: the server is still starting
                last = f"{name}: {type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                print(f"s3-ready: not ready after {a.timeout:.0f} s; last: {last}", file=sys.stderr)
                return 1
            time.sleep(0.25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
