#!/usr/bin/env python3
"""The measurements of bench/run.sh; prints the one table. Standard library only.

run.sh installs and starts everything (LocalStack, etcd) and passes it in the
environment; this file only measures, and stops every process it started itself.

    S3LEAD            the s3lead binary (release build); BENCH_S3LEAD overrides it
    BENCH_COUNT_PROXY the test binary that holds the counting proxy (tests/harness.rs);
                      needed only by the sections `requests` and `fleet`
    BENCH_TMP         a private temp dir (run.sh removes it)
    BENCH_S3_*        ENDPOINT ACCESS_KEY SECRET_KEY REGION BUCKET of LocalStack
    BENCH_ETCD_ENDPOINT or BENCH_ETCD_UNAVAILABLE (the reason)
    BENCH_N (50), BENCH_IDLE_SECS (60), BENCH_FAILOVER_TRIALS (5), BENCH_FLEET (1,10,50),
    BENCH_LOCKS (200), BENCH_ONLY (comma-separated sections of SECTIONS, default all)
"""
import datetime
import math
import os
import platform
import re
import resource
import select
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
S3LEAD_OVERRIDE = os.environ.get("BENCH_S3LEAD", "")
S3LEAD = S3LEAD_OVERRIDE or os.environ["S3LEAD"]
COUNT_PROXY = os.environ.get("BENCH_COUNT_PROXY", "")
TMP = os.environ["BENCH_TMP"]
N = int(os.environ.get("BENCH_N", "50"))
IDLE_SECS = float(os.environ.get("BENCH_IDLE_SECS", "60"))
TRIALS = int(os.environ.get("BENCH_FAILOVER_TRIALS", "5"))
LOCKS = int(os.environ.get("BENCH_LOCKS", "200"))
# The parts of the run, in the order they run; BENCH_ONLY picks some (run.sh builds the
# counting proxy only for `requests` and `fleet`).
SECTIONS = ["latency", "requests", "fleet", "failover", "memory", "locks"]
ONLY = [x.strip() for x in os.environ.get("BENCH_ONLY", "").split(",") if x.strip()] or SECTIONS
if set(ONLY) - set(SECTIONS):
    sys.exit(f"bench: BENCH_ONLY: unknown section(s) {', '.join(sorted(set(ONLY) - set(SECTIONS)))}; "
             f"known: {','.join(SECTIONS)}")
if {"requests", "fleet"} & set(ONLY) and not COUNT_PROXY:
    sys.exit("bench: the sections requests and fleet need BENCH_COUNT_PROXY (run.sh builds it)")
S3_ENDPOINT = os.environ["BENCH_S3_ENDPOINT"]
BUCKET = os.environ["BENCH_S3_BUCKET"]
ETCD = os.environ.get("BENCH_ETCD_ENDPOINT", "")
ETCD_WHY = os.environ.get("BENCH_ETCD_UNAVAILABLE", "etcd not started")

# AWS S3 Standard list prices (us-east-1), per request.
PRICE_PUT = 0.005 / 1000  # PUT, COPY, POST, LIST
PRICE_GET = 0.0004 / 1000  # GET, SELECT, HEAD and the rest
MINUTES_PER_MONTH = 30 * 24 * 60

# The short timings of the failover trials (the brief's), for s3lead leader and follower.
# 1 s + 250 ms + 500 ms + the default margin (1 s for clock rates + 250 ms kill latency) = 3 s.
FAST = ["--lease-duration", "3s", "--renew-every", "1s", "--retry-period", "250ms", "--kill-after", "500ms"]
FAST_TTL = "3"  # etcdctl --ttl matching s3lead's 3 s lease

# The leader's command says its pid (sh execs into sleep, keeping it), so the trial can
# tell whether it still runs when the follower starts; the follower's just says it started.
LEADER_CMD = ["sh", "-c", "echo started $$; exec sleep 600"]
FOLLOWER_CMD = ["sh", "-c", "echo started $$"]

COLS = ["flock", "s3lead file", "s3lead S3", "etcdctl lock"]
STARTED_AT = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def progress(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def clean_env(**extra):
    """The environment of every tool: no AWS_* or S3LEAD_* from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3LEAD_", "ETCDCTL_"))}
    env.update(
        AWS_ACCESS_KEY_ID=os.environ["BENCH_S3_ACCESS_KEY"],
        AWS_SECRET_ACCESS_KEY=os.environ["BENCH_S3_SECRET_KEY"],
        AWS_REGION=os.environ["BENCH_S3_REGION"],
        AWS_EC2_METADATA_DISABLED="true",  # static keys: never probe an instance role
        AWS_ENDPOINT_URL=S3_ENDPOINT,
        ETCDCTL_API="3",
    )
    env.update(extra)
    return env


ENV = clean_env()


def s3lead(lock, *opts):
    return [S3LEAD, "run", "-q", *opts, lock, "--"]


def etcdctl(name, ttl=None):
    # "--": etcdctl parses flags after the lock name too (sh -c would be its -c).
    return ["etcdctl", f"--endpoints={ETCD}", "lock", *([f"--ttl={ttl}"] if ttl else []), name, "--"]


# --- processes we start ------------------------------------------------------------------
# Every long-lived process gets its own session (so a terminal's ^C reaches only us, and
# we decide how each is stopped) and is registered here; cleanup() SIGKILLs whatever of
# them is left, by pid, plus any leader command a trial left orphaned and any s3lead guard
# seen (a guard is s3lead's child, so it is not in STARTED).
STARTED = []
ORPHANS = set()
GUARDS = set()
GUARD_COMM = "s3lead-guard"


def spawn(argv, env=ENV, stdout=subprocess.PIPE, stderr_name=None):
    err = open(os.path.join(TMP, stderr_name), "ab") if stderr_name else subprocess.DEVNULL
    try:
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err,
                             start_new_session=True)
    finally:
        if stderr_name:
            err.close()  # the child has its own copy; `locks` starts hundreds
    STARTED.append(p)
    return p


def alive(pid):
    """Whether pid runs (a zombie does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop(p, sig=signal.SIGTERM, timeout=15):
    """sig to p, SIGKILL after timeout, reaped."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p.stdout:
        p.stdout.close()


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def cleanup():
    for p in STARTED:
        if p.poll() is None:
            p.kill()
            p.wait()
    for pid in ORPHANS:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    for pid in GUARDS:  # by name too: a guard's pid could have been reused since
        if alive(pid) and comm(pid) == GUARD_COMM:
            os.kill(pid, signal.SIGKILL)


def stop_all(procs, group=False, leftovers=(), timeout=15):
    """SIGTERM to every one of procs (to its process group if group: flock and etcdctl do
    not pass it on to their command), then one wait for all of them, SIGKILL to whatever
    is left after timeout, reaped. leftovers: (pid, comm) of the processes they were seen
    with (s3lead's guards, the commands), which must then be gone within 5 s: those still
    there (with that name: pids are reused) are SIGKILLed and named on stderr."""
    for p in procs:
        try:
            if group:
                os.killpg(p.pid, signal.SIGTERM)
            elif p.poll() is None:
                p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            progress(f"pid {p.pid} ({os.path.basename(p.args[0])}) still ran {timeout} s after SIGTERM: SIGKILL")
            p.kill()
            p.wait()
        if p.stdout:
            p.stdout.close()
    left = lambda: [(pid, c) for pid, c in leftovers if alive(pid) and comm(pid) == c]  # noqa: E731
    deadline = time.monotonic() + 5
    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, c in left():
        progress(f"pid {pid} ({c}) outlived the process that started it: SIGKILL")
        os.kill(pid, signal.SIGKILL)
    for pid, _ in leftovers:
        GUARDS.discard(pid)
        ORPHANS.discard(pid)


def read_line(p, timeout):
    """(time the line arrived, line) from p's stdout, or (None, why) on EOF or timeout."""
    fd, buf, deadline = p.stdout.fileno(), b"", time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None, f"no output within {timeout:g} s"
        chunk = os.read(fd, 4096)
        if not chunk:
            return None, f"exited with status {p.wait()} before its command started"
        buf += chunk
    return time.monotonic(), buf.split(b"\n")[0].decode()


def has_output(p):
    return bool(select.select([p.stdout.fileno()], [], [], 0)[0])


# --- statistics and formatting -----------------------------------------------------------
def median(xs):
    return statistics.median(xs)


def p90(xs):
    s = sorted(xs)
    return s[math.ceil(0.9 * len(s)) - 1]


def ms(x):
    return f"{x * 1000:.1f}" if x < 0.1 else f"{x * 1000:.0f}"


def secs(xs):
    """median [min–max] of failover times."""
    return f"{median(xs):.3f} s [{min(xs):.3f}–{max(xs):.3f}]"


def etcdctl_default_ttl():
    """etcdctl lock's own --ttl default, from its help (10 s in 3.4)."""
    m = re.search(r"--ttl=(\d+)", first_line_matching(["etcdctl", "lock", "--help"], "--ttl"))
    return m.group(1) if m else "?"


# --- 1. acquire–run–release latency, CPU, peak RSS ---------------------------------------
def cycles():
    """The one-cycle command lines, per column; None where a tool is missing."""
    return {
        "flock": ["flock", f"{TMP}/flock.lock", "true"],
        "s3lead file": s3lead(f"{TMP}/s3lead.lock") + ["true"],
        "s3lead S3": s3lead(f"s3://{BUCKET}/bench-latency") + ["true"],
        "etcdctl lock": etcdctl("bench-latency") + ["true"] if ETCD else None,
    }


def run_once(argv):
    """Wall time and the CPU time (user+sys) of argv and the descendants it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.decode().strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def latency():
    progress(f"latency: {N} acquire-run-release cycles per tool, interleaved")
    cmds = {k: v for k, v in cycles().items() if v}
    walls = {k: [] for k in cmds}
    cpus = {k: [] for k in cmds}
    for k, argv in cmds.items():  # warm-up: page cache, first S3 object, etcd connection
        for _ in range(3):
            run_once(argv)
    # Round-robin rather than tool after tool: the machine's noise (other jobs, LocalStack's
    # and etcd's own background work) then falls on every tool alike.
    for _ in range(N):
        for k, argv in cmds.items():
            w, c = run_once(argv)
            walls[k].append(w)
            cpus[k].append(c)
    return walls, cpus


def peak_rss():
    """/usr/bin/time -f %M: the largest resident set of any process of the tree, KiB."""
    progress("peak RSS: 5 runs per tool under /usr/bin/time -f %M")
    out = {}
    for k, argv in cycles().items():
        if not argv:
            continue
        vals = []
        for _ in range(5):
            f = os.path.join(TMP, "rss")
            subprocess.run(["/usr/bin/time", "-f", "%M", "-o", f, *argv], env=ENV, check=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(f) as fh:
                vals.append(int(fh.read().split()[-1]))
        out[k] = median(vals)
    return out


# --- 2. S3 requests per cycle and per idle minute ----------------------------------------
class Proxy:
    """The test kit's counting HTTP proxy (`count_proxy` in tests/harness.rs) in front of
    LocalStack; requests are read back by time window."""

    def __init__(self, name):
        self.log = os.path.join(TMP, f"proxy-{name}.log")
        env = dict(os.environ, S3LEAD_COUNT_PROXY_UPSTREAM=S3_ENDPOINT, S3LEAD_COUNT_PROXY_LOG=self.log)
        self.p = spawn([COUNT_PROXY, "--exact", "count_proxy", "--nocapture", "--test-threads=1"],
                       env=env, stderr_name=f"proxy-{name}.err")
        # The test harness prints words of its own first, on the same line too
        # ("running 1 test", "test count_proxy ... ").
        fd, buf, deadline = self.p.stdout.fileno(), b"", time.monotonic() + 10
        while not (m := re.search(rb"count-proxy-port (\d+)\n", buf)):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError(f"count proxy: no port within 10 s: {buf!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"count proxy: exited with status {self.p.wait()}: {buf!r}")
            buf += chunk
        port = int(m.group(1))
        self.env = clean_env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")

    def requests(self, t0, t1):
        """[(method, status)] answered within [t0, t1] (monotonic seconds)."""
        out = []
        with open(self.log) as f:
            for line in f:
                t, method, status, _ = line.split(" ", 3)
                if t0 <= float(t) <= t1:
                    out.append((method, status))
        return out


def by_method(reqs):
    c = {"GET": 0, "PUT": 0, "HEAD": 0, "other": 0}
    for method, _ in reqs:
        c[method if method in c else "other"] += 1
    return c


def cost(c, factor):
    """Dollars for request counts c (a by_method dict) times factor."""
    return factor * ((c["PUT"] + c["other"]) * PRICE_PUT + (c["GET"] + c["HEAD"]) * PRICE_GET)


def describe(c, per=None):
    """'1 GET, 2 PUT' for counts; '6.0 PUT' for rates (counts / per, one decimal)."""
    parts = [(f"{v / per:.1f}" if per else f"{round(v, 1):g}") + f" {k}" for k, v in c.items() if v]
    return ", ".join(parts) or "0"


def requests_per_cycle(proxy):
    progress("S3 requests: one cycle on a fresh key, then 5 on the existing (released) key")
    key = f"s3://{BUCKET}/bench-cycle-{os.getpid()}"
    out = []
    for n in (1, 5):
        t0 = time.monotonic()
        for _ in range(n):
            subprocess.run(s3lead(key) + ["true"], env=proxy.env, check=True, stdin=subprocess.DEVNULL)
        time.sleep(0.2)  # the proxy logs a request once its answer is relayed
        out.append((by_method(proxy.requests(t0, time.monotonic())), n))
    return out


def idle_rates(proxy_l, proxy_f):
    progress(f"S3 requests: a leader holding and a follower waiting, {IDLE_SECS:g} s, default timings")
    key = f"s3://{BUCKET}/bench-idle"
    leader = spawn(s3lead(key) + LEADER_CMD, env=proxy_l.env, stderr_name="idle-leader.err")
    try:
        t, line = read_line(leader, 30)
        if t is None:
            raise RuntimeError(f"idle leader: {line}")
        ORPHANS.add(int(line.split()[1]))
        follower = spawn(s3lead(key) + FOLLOWER_CMD, env=proxy_f.env, stderr_name="idle-follower.err")
        time.sleep(1)  # past the follower's first read and the leader's start-up requests
        t0 = time.monotonic()
        time.sleep(IDLE_SECS)
        t1 = time.monotonic()
        if has_output(follower):
            raise RuntimeError("the follower's command ran while the leader held the lease")
        # Follower first: a TERM while waiting ends the wait; then the leader releases.
        stop(follower)
        stop(leader)
    finally:
        stop(leader, signal.SIGKILL)
    minutes = (t1 - t0) / 60
    lc = by_method(proxy_l.requests(t0, t1))
    fc_reqs = proxy_f.requests(t0, t1)
    fc = by_method(fc_reqs)
    not_modified = sum(1 for m, s in fc_reqs if m == "GET" and s == "304")
    return (lc, fc, not_modified, minutes)


FLEET_SIZES = [int(n) for n in os.environ.get("BENCH_FLEET", "1,10,50").split(",")]


def free_port():
    """A TCP port free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fleet_rates(proxy, followers, peer=False):
    """Requests per lock-hour of a leader with `followers` followers at default timings,
    all through one counting proxy, measured over IDLE_SECS after start-up and
    extrapolated: {method: requests per hour}, and the share of GETs answered 304 (None
    without a GET). With `peer`, the leader serves its endpoint and advertises it in the
    record; the followers, with no option of their own, find it there and long-poll it
    instead of reading the store (peer mode, docs/design.md §3)."""
    mode = "peer mode" if peer else "no peer mode"
    progress(f"S3 requests per lock-hour: a leader and {followers} followers, {mode}, {IDLE_SECS:g} s, default timings")
    name = f"fleet-{'peer-' if peer else ''}{followers}"
    key = f"s3://{BUCKET}/bench-{name}"
    opts = []
    if peer:
        port = free_port()
        opts = ["--peer-listen", f"127.0.0.1:{port}", "--advertise", f"http://127.0.0.1:{port}"]
    leader = spawn(s3lead(key, *opts) + LEADER_CMD, env=proxy.env, stderr_name=f"{name}-leader.err")
    procs = []
    try:
        t, line = read_line(leader, 30)
        if t is None:
            raise RuntimeError(f"fleet leader: {line}")
        ORPHANS.add(int(line.split()[1]))
        procs = [spawn(s3lead(key) + FOLLOWER_CMD, env=proxy.env, stderr_name=f"{name}-{i}.err")
                 for i in range(followers)]
        time.sleep(2)  # past every follower's first read
        t0 = time.monotonic()
        time.sleep(IDLE_SECS)
        t1 = time.monotonic()
        if any(has_output(p) for p in procs):
            raise RuntimeError("a follower's command ran while the leader held the lease")
        for p in procs:
            stop(p)
        stop(leader)
    finally:
        for p in procs:
            stop(p, signal.SIGKILL)
        stop(leader, signal.SIGKILL)
    reqs = proxy.requests(t0, t1)
    hours = (t1 - t0) / 3600
    per_hour = {m: v / hours for m, v in by_method(reqs).items()}
    not_modified = sum(1 for m, st in reqs if m == "GET" and st == "304")
    gets = sum(1 for m, _ in reqs if m == "GET")
    return per_hour, (not_modified / gets if gets else None)


def seed_per_hour(renew_s, poll_s, followers):
    """A seed library's requests per lock-hour from its published intervals, assuming
    one PUT per renewal and one GET per follower poll."""
    return {"GET": followers * 3600 / poll_s, "PUT": 3600 / renew_s, "HEAD": 0, "other": 0}


# --- 3. failover ---------------------------------------------------------------------------
def failover(leader_argv, follower_argv, how, stderr_name):
    """One trial: seconds from stopping the leader to the follower's command starting, and
    whether the leader's command still ran at that moment.

    how: "kill9" (SIGKILL to the leader process only), "kill9-group" (SIGKILL to the
    leader's process group: flock's command holds flock's lock), "term" (SIGTERM to the
    leader process), "term-group" (SIGTERM to its process group: flock and etcdctl do not
    forward signals to their command).
    """
    leader = spawn(leader_argv + LEADER_CMD, stderr_name=stderr_name)
    follower = None
    try:
        t, line = read_line(leader, 30)
        if t is None:
            raise RuntimeError(f"leader: {line}")
        cmd_pid = int(line.split()[1])
        ORPHANS.add(cmd_pid)
        follower = spawn(follower_argv + FOLLOWER_CMD, stderr_name=stderr_name)
        time.sleep(1)  # the follower has read the lock (or queued its etcd waiter)
        if has_output(follower):
            raise RuntimeError("the follower's command ran while the leader held the lock")
        sig = signal.SIGKILL if how.startswith("kill9") else signal.SIGTERM
        t0 = time.monotonic()
        if how.endswith("group"):
            os.killpg(leader.pid, sig)
        else:
            leader.send_signal(sig)
        t1, line = read_line(follower, 120)
        if t1 is None:
            raise RuntimeError(f"follower: {line}")
        return t1 - t0, alive(cmd_pid)
    finally:
        for p in (follower, leader):
            if p:
                stop(p, timeout=10)
        for pid in list(ORPHANS):  # etcdctl's command outlives a kill -9 of etcdctl
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
                ORPHANS.discard(pid)


def failover_trials(label, leader_argv, follower_argv, how, trials=None):
    trials = trials or TRIALS
    progress(f"failover: {label}, {trials} trials")
    times, overlap = [], 0
    for i in range(trials):
        dt, old_alive = failover(leader_argv, follower_argv, how, f"failover-{label.replace(' ', '-')}.err")
        times.append(dt)
        overlap += old_alive
    return times, overlap


def failovers():
    fl = f"{TMP}/flock-failover.lock"
    fs = f"{TMP}/s3lead-failover.lock"
    s3 = f"s3://{BUCKET}/bench-failover"
    res = {"kill": {}, "term": {}, "kill_default": None, "kill_default_s3lead": None}
    scen = {
        "flock": (["flock", fl], ["flock", fl], "kill9-group", "term-group"),
        "s3lead file": (s3lead(fs, *FAST), s3lead(fs, *FAST), "kill9", "term"),
        "s3lead S3": (s3lead(s3, *FAST), s3lead(s3, *FAST), "kill9", "term"),
    }
    if ETCD:
        scen["etcdctl lock"] = (etcdctl("bench-failover", FAST_TTL), etcdctl("bench-failover", FAST_TTL),
                                "kill9", "term-group")
    for k, (la, fa, kill, term) in scen.items():
        res["kill"][k] = failover_trials(f"{k} kill -9", la, fa, kill)
        res["term"][k] = failover_trials(f"{k} SIGTERM", la, fa, term)
    # At the default 30 s lease (and the default 10 s slow poll): bounded by 40 s.
    res["kill_default_s3lead"] = failover_trials("s3lead S3 kill -9 default timings", s3lead(s3 + "-dflt"),
                                                 s3lead(s3 + "-dflt"), "kill9", trials=3)
    if ETCD:
        res["kill_default"] = failover_trials("etcdctl kill -9 default ttl",
                                              etcdctl("bench-failover-dflt"), etcdctl("bench-failover-dflt"), "kill9")
    return res


# --- 5. memory of an idle leader and follower ----------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def children_by_ppid():
    """{ppid: [(pid, comm)]} of every process now, from /proc/*/stat."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue  # gone meanwhile
        name = st[st.index("(") + 1:st.rindex(")")]
        out.setdefault(int(st.rsplit(")", 1)[1].split()[1]), []).append((int(d), name))
    return out


def tool_pids(tool, p, kids):
    """The processes one run of a tool consists of, without its command: for s3lead the
    s3lead process and its guard (its child named s3lead-guard, forked at start; the
    guard's child is the command); for flock and etcdctl the one process (its child is
    the command)."""
    if not tool.startswith("s3lead"):
        return [p.pid]
    guards = [pid for pid, name in kids.get(p.pid, []) if name == GUARD_COMM]
    GUARDS.update(guards)
    return [p.pid, *guards]


def guards_of(procs):
    """(pid, comm) of the guards of those of procs that are s3lead runs, for stop_all."""
    kids = children_by_ppid()
    return [(pid, GUARD_COMM) for p in procs for pid in tool_pids("s3lead", p, kids)[1:]]


def memory_kib(pid):
    """{"VmRSS", "RssAnon", "Pss"} of pid, KiB: /proc/PID/status and /proc/PID/smaps_rollup."""
    m = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                m[k] = int(v.split()[0])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        m["Pss"] = next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    return m


def memory_sum_of(mems):
    return {k: sum(m[k] for m in mems) for k in ("VmRSS", "Pss", "RssAnon")}


def memory_sum(pids):
    return memory_sum_of([memory_kib(pid) for pid in pids])


def cpu_secs(pid):
    """User + system CPU of pid (all its threads, not its children), /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def lock_argvs(name):
    """Per column, the command line that takes lock `name` (its own file or key)."""
    return {
        "flock": ["flock", f"{TMP}/{name}.flock"],
        "s3lead file": s3lead(f"{TMP}/{name}.lock"),
        "s3lead S3": s3lead(f"s3://{BUCKET}/{name}"),
        "etcdctl lock": etcdctl(name) if ETCD else None,
    }


# The tools measured at once, in `memory` and `locks`. The s3lead file runs share the
# binary's pages with the S3 runs: they get windows of their own, so that Pss divides
# those pages among the runs of one column only. flock and etcdctl share nothing with
# s3lead and go with the first window.
WINDOWS = [["flock", "s3lead file", "etcdctl lock"], ["s3lead S3"]]


def idle_memory():
    """Per column, {"leader": [memory of each process], "follower": [...]} of a leader
    holding (command: sleep) and a follower waiting, IDLE_SECS after the follower started,
    at default timings."""
    out = {}
    for window in WINDOWS:
        argvs = {k: v for k, v in lock_argvs(f"bench-idle-memory-{os.getpid()}").items() if k in window and v}
        progress(f"memory: an idle leader and follower of {', '.join(argvs)}, {IDLE_SECS:g} s")
        leaders, followers, leftovers = {}, {}, []
        try:
            for k, argv in argvs.items():
                err = f"idle-memory-{k.replace(' ', '-')}.err"
                leaders[k] = spawn(argv + LEADER_CMD, stderr_name=err)
                t, line = read_line(leaders[k], 30)
                if t is None:
                    raise RuntimeError(f"idle {k} leader: {line}")
                ORPHANS.add(int(line.split()[1]))
                leftovers.append((int(line.split()[1]), "sleep"))
                followers[k] = spawn(argv + FOLLOWER_CMD, stderr_name=err)
            time.sleep(IDLE_SECS)
            kids = children_by_ppid()
            for k in argvs:
                for role, p in (("leader", leaders[k]), ("follower", followers[k])):
                    if p.poll() is not None:
                        raise RuntimeError(f"idle {k} {role} exited with status {p.returncode}")
                if has_output(followers[k]):
                    raise RuntimeError(f"idle {k}: the follower's command ran while the leader held the lock")
                out[k] = {}
                for role, p in (("leader", leaders[k]), ("follower", followers[k])):
                    out[k][role] = [memory_kib(pid) for pid in tool_pids(k, p, kids)]
        finally:
            leftovers += guards_of([*leaders.values(), *followers.values()])
            # Followers first (a TERM ends their wait), then the leaders release.
            stop_all(list(followers.values()))
            stop_all([p for k, p in leaders.items() if k.startswith("s3lead")])
            stop_all([p for k, p in leaders.items() if not k.startswith("s3lead")], group=True, leftovers=leftovers)
    return out


# --- 6. many locks held at once on one host ----------------------------------------------------
def first_lines(procs, timeout):
    """{index in procs: first stdout line} of those that printed one within timeout."""
    sel = selectors.DefaultSelector()  # epoll: hundreds of pipes, past select()'s 1024 fds
    bufs = {}
    for i, p in enumerate(procs):
        sel.register(p.stdout, selectors.EVENT_READ, i)
        bufs[i] = b""
    lines, deadline = {}, time.monotonic() + timeout
    try:
        while len(sel.get_map()) and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                i = key.data
                chunk = os.read(key.fileobj.fileno(), 4096)
                bufs[i] += chunk
                if not chunk or b"\n" in bufs[i]:
                    sel.unregister(key.fileobj)
                    if chunk:
                        lines[i] = bufs[i].split(b"\n")[0].decode()
    finally:
        sel.close()
    return lines


def many_locks():
    """Per column, LOCKS runs each holding its own lock at once (command: sleep, default
    timings): {"mem": totals of every process (s3lead + guard), "cpu": user+sys seconds
    of them over "secs" after all were leaders, "guards": how many guards were found},
    or {"skipped": why}; either with "stderr": (lines the runs wrote, the first)."""
    out = {}
    for window in WINDOWS:
        window = [k for k, v in lock_argvs("bench-locks").items() if k in window and v]
        progress(f"locks: {LOCKS} held at once per tool, {', '.join(window)}, {IDLE_SECS:g} s window")
        runs, leftovers = {}, []
        errs = {k: f"locks-{k.replace(' ', '-')}.err" for k in window}
        try:
            for k in window:
                runs[k] = []
                for i in range(LOCKS):
                    runs[k].append(spawn(lock_argvs(f"bench-locks-{os.getpid()}-{i}")[k] + LEADER_CMD,
                                         stderr_name=errs[k]))
            # Every run takes a free lock: it should lead within seconds, even with LOCKS
            # processes starting at once on a busy machine.
            limit = 60 + 0.5 * LOCKS * len(window)
            everyone = [p for k in window for p in runs[k]]
            lines = first_lines(everyone, limit)
            kids = children_by_ppid()
            cmds, pids, base = {}, {}, 0
            for k in window:
                got = [lines[i] for i in range(base, base + LOCKS) if i in lines]
                base += LOCKS
                cmds[k] = [int(line.split()[1]) for line in got]
                ORPHANS.update(cmds[k])
                leftovers += [(pid, "sleep") for pid in cmds[k]]
                pids[k] = [pid for p in runs[k] for pid in tool_pids(k, p, kids)]
                if len(got) < LOCKS:
                    out[k] = {"skipped": f"only {len(got)} of {LOCKS} became leaders within {limit:g} s"}
            measured = [k for k in window if k not in out]
            if measured:
                time.sleep(1)  # the last ones' start-up done
                cpu0 = {k: sum(map(cpu_secs, pids[k])) for k in measured}
                t0 = time.monotonic()
                time.sleep(IDLE_SECS)
                t1 = time.monotonic()
                for k in measured:
                    lost = sum(1 for p, cmd in zip(runs[k], cmds[k]) if p.poll() is not None or not alive(cmd))
                    if lost:
                        out[k] = {"skipped": f"{lost} of {LOCKS} stopped holding during the window"}
                        continue
                    try:
                        cpu, mem = sum(map(cpu_secs, pids[k])) - cpu0[k], memory_sum(pids[k])
                    except OSError as e:  # a guard gone, its s3lead still there
                        out[k] = {"skipped": f"a process was gone at the end of the window: {e}"}
                        continue
                    out[k] = {"mem": mem, "cpu": cpu, "secs": t1 - t0,
                              "guards": len(pids[k]) - LOCKS if k.startswith("s3lead") else 0}
            for k in window:  # before the stop, whose lines are no news (etcdctl: "signal: terminated")
                with open(os.path.join(TMP, errs[k]), "rb") as f:
                    err_lines = f.read().decode(errors="replace").splitlines()
                out[k]["stderr"] = (len(err_lines), err_lines[0] if err_lines else "")
        finally:
            leftovers += guards_of([p for k in runs for p in runs[k]])
            stop_all([p for k in runs if k.startswith("s3lead") for p in runs[k]])
            stop_all([p for k in runs if not k.startswith("s3lead") for p in runs[k]], group=True,
                     leftovers=leftovers)
    return out


# --- the header and the table ----------------------------------------------------------------
def first_line_matching(argv, needle):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, env=ENV).stdout
    except OSError:
        return ""
    return next((line for line in out.splitlines() if needle in line), "")


def first_line(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=ENV).stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        return "?"


def header():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        with urllib.request.urlopen(f"{S3_ENDPOINT}/_localstack/health", timeout=5) as r:
            ls = re.search(r'"version":\s*"([^"]+)"', r.read().decode()).group(1)
    except Exception:  # noqa: BLE001 - a version is decoration
        ls = "?"
    rev = first_line(["git", "-C", os.path.dirname(HERE), "describe", "--always", "--dirty"])
    build = f"BENCH_S3LEAD={S3LEAD}, not built by this run" if S3LEAD_OVERRIDE else f"release build, git {rev}"
    etcd = (f"{first_line(['etcd', '--version'])}, {first_line(['etcdctl', 'version'])} (single node, "
            "127.0.0.1, default fsync)" if ETCD else f"etcd not available: {ETCD_WHY}")
    return [
        f"s3lead benchmark, started {STARTED_AT}",
        f"machine:  {os.cpu_count()} cores (nproc {first_line(['nproc'])}), {cpu}, "
        f"Linux {platform.release()}, {platform.freedesktop_os_release().get('PRETTY_NAME', '?')}",
        "          a shared, noisy machine: compare columns of one run, not runs with each other",
        f"versions: {first_line([S3LEAD, '--version'])} ({build}); {first_line(['flock', '--version'])};",
        f"          {etcd}; LocalStack {ls} (127.0.0.1)",
        f"settings: BENCH_N={N} BENCH_IDLE_SECS={IDLE_SECS:g} BENCH_FAILOVER_TRIALS={TRIALS} "
        f"BENCH_FLEET={','.join(map(str, FLEET_SIZES))} BENCH_LOCKS={LOCKS}"
        + ("" if ONLY == SECTIONS else f" BENCH_ONLY={','.join(ONLY)}"),
    ]


def table(rows, head=("measurement", *COLS)):
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, rows)]


def paragraph(text):
    """A note of its own: '- ' and the text wrapped as the other notes are."""
    return textwrap.fill(text, 94, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False)


def kib3(m):
    return f"{m['VmRSS']} / {m['Pss']} / {m['RssAnon']}"


def main():
    for sig in (signal.SIGTERM, signal.SIGHUP):  # run finally: cleanup() on these too
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    # `locks` holds a pipe per run: lift the soft limit on open files to the hard one.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    na = "n/a"
    no_etcd = f"not available: {ETCD_WHY}"
    try:
        if "latency" in ONLY:
            walls, cpus = latency()
            rss = peak_rss()
        if "requests" in ONLY:
            proxy_c, proxy_l, proxy_f = Proxy("cycle"), Proxy("leader"), Proxy("follower")
            (fresh, _), (steady, n_steady) = requests_per_cycle(proxy_c)
            lc, fc, not_modified, minutes = idle_rates(proxy_l, proxy_f)
        if "fleet" in ONLY:
            proxy_fleet = Proxy("fleet")
            fleet = {n: fleet_rates(proxy_fleet, n) for n in FLEET_SIZES}
            fleet_peer = {n: fleet_rates(proxy_fleet, n, peer=True) for n in FLEET_SIZES}
        if "failover" in ONLY:
            fo = failovers()
        if "memory" in ONLY:
            idle = idle_memory()
        if "locks" in ONLY and LOCKS > 0:
            many = many_locks()
    finally:
        cleanup()

    rows, notes, fleet_table = [], [], []
    if "latency" in ONLY:
        def per_col(f, missing="-"):
            return [f(k) if k in walls else (no_etcd if k == "etcdctl lock" else missing) for k in COLS]

        rows += [
            ["acquire-run-release `true`, median ms", *per_col(lambda k: ms(median(walls[k])))],
            ["  same, p90 ms", *per_col(lambda k: ms(p90(walls[k])))],
            ["  CPU user+sys per cycle, median ms", *per_col(lambda k: ms(median(cpus[k])))],
            ["peak RSS (/usr/bin/time %M), KiB", *per_col(lambda k: str(round(rss[k])))],
        ]
        notes += [
            "- latency: the whole CLI invocation (process start, acquire, run `true`, release, exit),",
            f"  wall clock; {N} runs per tool, round-robin, after 3 warm-up runs each. s3lead S3 talks to",
            "  LocalStack directly (no proxy). etcd fsyncs its WAL on every write, as in production.",
            "- CPU, RSS: rusage of the process and the descendants it waited for (RSS: the largest one).",
        ]
    if "requests" in ONLY:
        steady_per = {m: v / n_steady for m, v in steady.items()}
        lc_min = {m: v / minutes for m, v in lc.items()}
        fc_min = {m: v / minutes for m, v in fc.items()}
        rows += [
            ["S3 requests per cycle: fresh key", na, na, describe(fresh), na],
            ["  existing key (mean of 5)", na, na,
             f"{describe(steady_per)} = ${cost(steady_per, 1e6):.2f} per 1M cycles", na],
            ["S3 requests/min, leader holding", na, na,
             f"{describe(lc, minutes)} = ${cost(lc_min, MINUTES_PER_MONTH):.2f}/month", na],
            ["S3 requests/min, follower waiting", na, na,
             f"{describe(fc, minutes)} ({not_modified} of {fc['GET']} were 304) "
             f"= ${cost(fc_min, MINUTES_PER_MONTH):.2f}/month", na],
        ]
        seen = {m: fresh[m] + steady[m] + lc[m] + fc[m] for m in fresh}
        notes += [
            "- S3 requests: counted by method (GET/PUT/HEAD/other; seen here: "
            + ", ".join(f"{k} {v}" for k, v in seen.items()) + ")",
            "  by an HTTP-aware proxy (tests/e2e/http_fault.rs) between s3lead and LocalStack. Idle rates:",
            f"  {minutes * 60:.0f} s at default timings (renew every 10 s, follower reads every 10 s), after",
            "  start-up. Cost at AWS S3 Standard list prices: PUT $0.005, GET/HEAD $0.0004 per 1,000",
            "  requests (other methods at the PUT price), 30-day month, every request billed (304 too),",
            "  per lock; no storage or transfer.",
        ]
    if "failover" in ONLY:
        def fo_row(kind, k):
            if k not in fo[kind]:
                return no_etcd
            times, overlap = fo[kind][k]
            return secs(times) + (f"; old command alive {overlap}/{len(times)}" if kind == "kill" else "")

        kd = fo["kill_default"]
        rows += [
            ["failover after kill -9 of the leader", *[fo_row("kill", k) for k in COLS]],
            ["  same, etcdctl default --ttl" + (f" ({etcdctl_default_ttl()} s)" if kd else ""), "-", "-", "-",
             (secs(kd[0]) + f"; old command alive {kd[1]}/{len(kd[0])}") if kd else no_etcd],
            ["handover after SIGTERM to the leader", *[fo_row("term", k) for k in COLS]],
            ["failover after kill -9, default timings (30 s lease, 10 s slow poll; bound 40 s)", "-", "-",
             secs(fo["kill_default_s3lead"][0]), "-"],
        ]
        notes += [
            f"- failover: {TRIALS} trials each, median [min–max] from the signal to the follower's",
            "  command printing its first line. s3lead leader and follower: " + " ".join(FAST[:4]),
            f"  {' '.join(FAST[4:])}; etcdctl --ttl={FAST_TTL} for both. kill -9 goes to the s3lead or",
            "  etcdctl process only, for flock to its process group (flock's command holds its lock).",
            "  SIGTERM goes to s3lead only (it forwards it, and releases once the command exits), for",
            "  flock and etcdctl to the process group (they do not forward signals to the command).",
            "  'old command alive n/m': in n of m trials the old leader's command still ran when the",
            "  follower's started (etcdctl does not kill its command when it dies).",
        ]
    if "memory" in ONLY:
        def idle_cell(k, role, guard_only=False):
            if k not in idle:
                return no_etcd if k == "etcdctl lock" else "-"
            procs = idle[k][role]
            if guard_only:
                return kib3(memory_sum_of(procs[1:])) if k.startswith("s3lead") and len(procs) > 1 else "-"
            return kib3(memory_sum_of(procs)) + (f" ({len(procs)} processes)" if k.startswith("s3lead") else "")

        rows += [
            [f"idle leader after {IDLE_SECS:g} s, KiB: VmRSS / Pss / RssAnon", *[idle_cell(k, "leader") for k in COLS]],
            ["  of which the guard", *[idle_cell(k, "leader", True) for k in COLS]],
            [f"idle follower after {IDLE_SECS:g} s, same", *[idle_cell(k, "follower") for k in COLS]],
            ["  of which the guard", *[idle_cell(k, "follower", True) for k in COLS]],
        ]
        notes.append(paragraph(
            f"idle memory: one leader (command `sleep`) and one follower per tool at default timings, "
            f"sampled {IDLE_SECS:g} s after the follower started; flock, s3lead file and etcdctl in one "
            "window, s3lead S3 in a second one. An s3lead run is two processes, s3lead and its guard "
            "(s3lead-guard, forked at start; its child, the command, is not counted), both summed; "
            "flock and etcdctl are one process each (their child, the command, is not counted). "
            "VmRSS and RssAnon from /proc/PID/status, Pss from /proc/PID/smaps_rollup. Most of "
            "s3lead's VmRSS is the binary's file-backed pages, shared by every s3lead on the host, and "
            "the guard shares its parent's pages copy-on-write: Pss charges each shared page in equal "
            "parts to the processes that map it (here the leader, the follower and their guards); "
            "RssAnon is the heap and stack, pages still shared with the guard counted in both."))
    if "locks" in ONLY and LOCKS > 0:
        def locks_cell(k, what):
            if k not in many:
                return no_etcd if k == "etcdctl lock" else "-"
            r = many[k]
            if "skipped" in r:
                return f"skipped: {r['skipped']}"
            if what == "mem":
                m = r["mem"]
                return (f"{m['VmRSS'] / 1024:.0f} / {m['Pss'] / 1024:.0f} / {m['RssAnon'] / 1024:.0f} MiB; "
                        f"per lock {m['VmRSS'] / LOCKS:.0f} / {m['Pss'] / LOCKS:.0f} / {m['RssAnon'] / LOCKS:.0f} KiB")
            per_h = r["cpu"] / r["secs"] * 3600
            return f"{per_h:.1f} s ({per_h / LOCKS * 1000:.0f} ms per lock, {per_h / 36:.2f} % of a core)"

        rows += [
            [f"{LOCKS} locks held at once: total VmRSS / Pss / RssAnon", *[locks_cell(k, "mem") for k in COLS]],
            ["  same, CPU user+sys per hour", *[locks_cell(k, "cpu") for k in COLS]],
        ]
        found = ", ".join(f"{k}: {LOCKS} s3lead and {many[k]['guards']} guards" for k in COLS
                          if k.startswith("s3lead") and "guards" in many.get(k, {}))
        wrote = [f"{k} {n} lines, the first: {first[:120]}" for k in COLS if k in many
                 for n, first in [many[k].get("stderr", (0, ""))] if n]
        notes.append(paragraph(
            f"{LOCKS} locks: {LOCKS} runs per tool on one host, each holding a lock of its own (command "
            "`sleep`, default timings: an S3 leader renews every 10 s), flock, s3lead file and etcdctl "
            "in one window, s3lead S3 in a second one; measured once every run's command had started. "
            "s3lead: its s3lead and guard processes summed, as above" + (f" ({found})" if found else "")
            + f". Memory sampled at the end of the window (Pss: the binary's pages are charged once "
            f"across the {LOCKS} runs). CPU: utime+stime of those processes from /proc/PID/stat "
            f"({1000 // CLK_TCK} ms ticks, truncated per process) over {IDLE_SECS:g} s, times "
            f"3600/{IDLE_SECS:g}; the stores' own CPU (LocalStack, etcd) not included. While they held, "
            + ("they wrote to stderr: " + "; ".join(wrote) if wrote else "none wrote to stderr") + "."
            + "".join(f" Skipped: {k}, {many[k]['skipped']}." for k in COLS if "skipped" in many.get(k, {}))))

    if "fleet" in ONLY:
        fleet_rows = []
        for n in FLEET_SIZES:
            for label, (ph, share_304) in ((f"leader + {n} followers, without peer mode", fleet[n]),
                                           ("  same, with peer mode", fleet_peer[n])):
                seeds = ([f"{describe(seed_per_hour(5, 5, n))} = ${cost(seed_per_hour(5, 5, n), 24 * 30):.2f}",
                          f"{describe(seed_per_hour(10, 10, n))} = "
                          f"${cost(seed_per_hour(10, 10, n), 24 * 30):.2f}"]
                         if label.startswith("leader") else ["-", "-"])
                share = "no GET" if share_304 is None else f"{share_304:.0%} of GETs 304"
                fleet_rows.append([label, f"{describe(ph)} ({share})",
                                   f"{ph['GET'] / max(n, 1):.0f}", f"${cost(ph, 24 * 30):.2f}", *seeds])
        fhead = ["per lock-hour, default timings", "s3lead S3, measured", "GETs/h per follower",
                 "s3lead $/month", "S3lect defaults (5 s), computed", "LeaderElection.S3 (10 s), computed"]
        fleet_table = table(fleet_rows, fhead) + [""]
        notes += [
            f"- per lock-hour: one leader and N followers through one counting proxy for {IDLE_SECS:g} s",
            "  after start-up, extrapolated to an hour; $/month is 720 such hours. The seed libraries'",
            "  columns are computed from their published defaults (S3lect: 5 s interval; LeaderElection.S3:",
            "  30 s lease, 10 s renew), assuming one PUT per renewal and one GET per follower poll.",
            "  With peer mode the leader also runs --peer-listen 127.0.0.1:PORT --advertise",
            "  http://127.0.0.1:PORT; the followers are started as without it, find the URL in the",
            "  record and long-poll it, reading the store only when the leader does not answer.",
        ]
    out = header() + [""] + (table(rows) + [""] if rows else []) + fleet_table + ["Notes:"] + notes
    print("\n".join(out))


if __name__ == "__main__":
    main()
