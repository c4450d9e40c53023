#!/usr/bin/env python3
"""ftvm fault-tolerance benchmark: a plain VM and an FT pair, same image, same run.

Everything runs in the scripts/netns.sh lab (docs/network.md) with the disk
served over NBD by `ftvm storage` in PREFIX-st, so the plain VM and the pair
use the same disk path:
  1. plain: `ftvm run` in PREFIX-h1; redis-benchmark -t set,get -n N -c 10
     --csv from PREFIX-c (throughput, p50/p99 latency), then one
     `ftvm-loadgen write` connection for a few seconds (serial SET latency);
  2. FT pair: `ftvm backup` in PREFIX-h2, `ftvm primary` in PREFIX-h1, the
     same workload; meanwhile `ftvm status --json` is sampled on both hosts
     every 0.5 s (log bandwidth, lag, throttling: mean and max);
  3. FT/plain ratios;
  4. failover gap: K fresh pairs; in each, one `ftvm-loadgen write`
     connection during which the primary gets SIGKILL; the report's
     max_gap_ms, whether the connection survived and whether `verify` found
     every acknowledged key;
  5. re-protection (--joins N): one fresh pair (every process with
     `--join-listen 10.78.0.I:7001`), one `ftvm-loadgen write` connection for
     the whole phase (optionally `redis-benchmark` SETs in the background,
     --join-dirty); N rounds of: SIGKILL the process running the guest,
     wait until the other is live and the client is served again, start
     `ftvm backup --join` on the host that died, wait until the survivor
     says `paired` with `joins` incremented. Per round: the survivor's
     `last_join_s` (request -> new pair) and `last_join_pause_ms` (guest
     paused), the time from starting the joiner to `paired`, and the
     client's longest gap between two acknowledged SETs during the join
     window and during the failover (from the loadgen's --ops-file).
  6. log bandwidth, shared vs non-shared disks (diskbw): two fresh pairs
     with a 256 MiB disk, one on vm0 over NBD from `ftvm storage` (the
     default), one with `--local-disks` (each host its own identical,
     zero-filled sparse `--drive file=` image); the guest runs (ftvm.run,
     started once the host sets a redis key) phases framed by console
     markers: idle 5 s; gen (--diskbw-mib MiB of /dev/urandom into tmpfs:
     CPU only); then --diskbw-rounds rounds of write (that file to /data,
     conv=fsync) and read (drop_caches, read it back). The primary's
     `ftvm status --json` is sampled every 0.25 s; per phase the report
     gives its log_bytes_sent (MB), Mbit/s over the phase's duration (guest
     uptime in the markers), and the shared/local ratio.
  7. TLS cost (tls-cost): steps 1-3 twice in the same run, once with every
     channel over TLS 1.3 and once on plain TCP (--insecure); the TLS cost is
     1 - (FT/plain with TLS) / (FT/plain without).
Every part runs over TLS (certificates from `ftvm certs init` in the
scratch dir) unless --insecure.
Prints a table and a markdown snippet for docs/benchmarks.md.

Needs root (network namespaces, TAP), redis-benchmark (redis-tools).
Usage: bench/ft.py [--requests N] [--kills K] [--joins N] [--diskbw-rounds N] [--only WHAT] [--insecure] [--ftvm PATH]
The ftvm binary: --ftvm, else $FTVM_BENCH_FTVM, else $CARGO_TARGET_DIR/release/ftvm
when CARGO_TARGET_DIR is set, else ROOT/target/release/ftvm; ftvm-loadgen is
taken from the same directory. FTVM_BENCH_NO_BUILD=1 skips `cargo build`.
"""
import argparse
import csv
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETNS = os.path.join(ROOT, "scripts/netns.sh")
GUEST_IP = "10.77.0.2"
REDIS = GUEST_IP + ":6379"
NBD = "10.79.0.1:10809"
ARBITER = "10.79.0.1:10810"
LOG_ADDR = "10.78.0.2:7000"
STATUS = "127.0.0.1:7100"
APPEND = "console=ttyS0 ftvm.ip=%s/24 ftvm.redis" % GUEST_IP
BOOT_TIMEOUT_S = 300


class BenchError(Exception):
    pass


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def default_ftvm():
    if os.environ.get("FTVM_BENCH_FTVM"):
        return os.environ["FTVM_BENCH_FTVM"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, "release/ftvm")


def guest_dir():
    d = os.environ.get("FTVM_GUEST_DIR")
    if d:
        return d
    out = sh([os.path.join(ROOT, "guest/build.sh")], stdout=subprocess.PIPE).stdout.decode()
    return out.strip().splitlines()[-1]


def tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


class Lab:
    """One scripts/netns.sh lab with its storage server, VMs and a scratch dir."""

    def __init__(self, bench, name, hosts):
        self.b = bench
        self.name = name
        self.prefix = bench.prefix
        self.dir = os.path.join(bench.scratch, name)
        os.makedirs(self.dir)
        self.procs = {}
        self.joinable = False  # every ftvm process gets --join-listen 10.78.0.I:7001
        self.local_disks = False  # each host its own --drive file=disk-hI.img, --local-disks
        self.disk_size = "64M"  # of vm0 on `ftvm storage` and of the local images
        self.append = APPEND
        self.tls = bench.tls  # every channel over TLS (bench.certs), else --insecure
        sh([NETNS, "up", self.prefix, str(hosts)], stdout=subprocess.DEVNULL)
        self.up = True

    def ns(self, node):
        return ["ip", "netns", "exec", "%s-%s" % (self.prefix, node)]

    def tls_opts(self, who):
        """The TLS options of identity `who` (storage, host-h1, operator-bench), or --insecure."""
        if not self.tls:
            return ["--insecure"]
        kind = "server" if who == "storage" else "client"
        d = os.path.join(self.b.certs, who)
        return ["--tls-cert", os.path.join(d, kind + "-cert.pem"), "--tls-key", os.path.join(d, kind + "-key.pem"),
                "--tls-ca", os.path.join(self.b.certs, "ca-cert.pem")]

    def path(self, name):
        return os.path.join(self.dir, name)

    def spawn(self, tag, node, cmd, stdin=subprocess.DEVNULL):
        p = subprocess.Popen(self.ns(node) + cmd, stdin=stdin, stdout=open(self.path(tag + ".out"), "wb"),
                             stderr=open(self.path(tag + ".log"), "wb"))
        self.procs[tag] = p
        return p

    def dump(self):
        s = ""
        for f in sorted(os.listdir(self.dir)):
            if f.endswith((".log", ".txt")):
                s += "\n--- %s/%s (last lines) ---\n%s" % (self.name, f, tail(self.path(f)))
        return s

    def fail(self, msg):
        raise BenchError("%s: %s%s" % (self.name, msg, self.dump()))

    def start_storage(self):
        st = self.path("storage")
        os.makedirs(st)
        self.spawn("storage", "st", [self.b.ftvm, "storage"] + self.tls_opts("storage") + ["--dir", st, "--nbd-listen", NBD,
                                     "--arbiter-listen", ARBITER, "--create", "vm0=" + self.disk_size])
        end = time.monotonic() + 20
        while time.monotonic() < end:
            r = subprocess.run(self.ns("h1") + [self.b.ftvm, "arbiter"] + self.tls_opts("operator-bench") + ["--arbiter", ARBITER, "query", "vm0"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            if self.procs["storage"].poll() is not None:
                self.fail("ftvm storage exited with %s" % self.procs["storage"].returncode)
            time.sleep(0.1)
        self.fail("ftvm storage did not answer on %s within 20 s" % ARBITER)

    def images(self, host):
        g = self.b.guest
        drive = "file=" + self.disk_image(host) if self.local_disks else "nbd://%s/vm0" % NBD
        return ["--bios", g + "/fw_jump.bin", "--kernel", g + "/Image", "--initrd", g + "/initrd.cpio.gz",
                "--drive", drive, "--net", "tap:tap0"]

    def disk_image(self, host):
        return self.path("disk-%s.img" % host)

    def create_local_disks(self):
        """Identical zero-filled (sparse) images, one per host, of disk_size."""
        n = int(self.disk_size[:-1]) << {"K": 10, "M": 20, "G": 30}[self.disk_size[-1]]
        for h in ("h1", "h2"):
            with open(self.disk_image(h), "wb") as f:
                f.truncate(n)

    def ft_opts(self, host):
        opts = ["--vm", "vm0", "--arbiter", ARBITER, "--status", STATUS, "--no-input"] + self.tls_opts("host-" + host)
        if self.b.args.failure_timeout_ms is not None:
            opts += ["--failure-timeout-ms", str(self.b.args.failure_timeout_ms)]
        if self.joinable:
            opts += ["--join-listen", join_addr(host)]
        if self.local_disks:
            opts += ["--local-disks"]
        return opts

    def start_plain(self):
        self.start_storage()
        self.t_spawn = time.monotonic()
        self.spawn("vm", "h1", [self.b.ftvm, "run", "--console", "file:" + self.path("console.txt"), "--no-input"]
                   + self.images("h1") + self.tls_opts("host-h1") + ["--append", self.append])
        return self.wait_redis()

    def start_pair(self):
        self.start_storage()
        self.t_spawn = time.monotonic()
        self.spawn("backup", "h2", [self.b.ftvm, "backup", "--listen", LOG_ADDR,
                                    "--console", "file:" + self.path("console-backup.txt")]
                   + self.images("h2") + self.ft_opts("h2"))
        self.spawn("primary", "h1", [self.b.ftvm, "primary", "--backup", LOG_ADDR,
                                     "--console", "file:" + self.path("console-primary.txt"),
                                     "--append", self.append] + self.images("h1") + self.ft_opts("h1"))
        ready = self.wait_redis()
        self.wait_phase("h2", "following", 60)
        return ready

    def spawn_joiner(self, tag, host, donor):
        """`ftvm backup --join` on `host`, listening on its logging address, joining `donor`'s join address."""
        return self.spawn(tag, host, [self.b.ftvm, "backup", "--listen", "10.78.0.%s:7000" % host[1:],
                                      "--join", join_addr(donor),
                                      "--console", "file:" + self.path("console-%s.txt" % tag)]
                          + self.images(host) + self.ft_opts(host))

    def wait_redis(self):
        """Waits for redis in the guest; returns seconds since the VM(s) were started."""
        r = subprocess.run(self.ns("c") + [self.b.loadgen, "ping", "--addr", REDIS, "--timeout-ms",
                                           str(BOOT_TIMEOUT_S * 1000)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            self.fail("redis in the guest never answered PING: %s" % r.stderr.decode().strip())
        for tag, p in self.procs.items():
            if p.poll() is not None:
                self.fail("%s exited with %s" % (tag, p.returncode))
        return time.monotonic() - self.t_spawn

    def status(self, host):
        r = subprocess.run(self.ns(host) + [self.b.ftvm, "status", "--json", STATUS],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def wait_phase(self, host, phase, timeout):
        return self.wait_status(host, lambda s: s.get("phase") == phase, "phase %r" % phase, timeout)[0]

    def wait_status(self, host, pred, what, timeout, watch=()):
        """Polls `host`'s status every 50 ms until pred(status); returns (seconds, status).
        Fails early when one of the processes tagged in `watch` exits."""
        t0 = time.monotonic()
        last = None
        while time.monotonic() - t0 < timeout:
            try:
                last = self.status(host)
            except subprocess.TimeoutExpired:
                last = None
            if last and pred(last):
                return time.monotonic() - t0, last
            for tag in watch:
                if self.procs[tag].poll() is not None:
                    self.fail("%s exited with %s while waiting for %s on %s (last status: %s)"
                              % (tag, self.procs[tag].returncode, what, host, last))
            time.sleep(0.05)
        self.fail("%s never reached %s in %d s (last status: %s)" % (host, what, timeout, last))

    def redis_benchmark(self, n):
        cmd = self.ns("c") + ["redis-benchmark", "-h", GUEST_IP, "-t", "set,get", "-n", str(n), "-c", "10", "--csv"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=1800)
        out = r.stdout.decode()
        rows = {}
        for row in csv.DictReader(io.StringIO(out)):
            if row.get("test") in ("SET", "GET"):
                rows[row["test"]] = {"rps": float(row["rps"]), "p50": float(row["p50_latency_ms"]),
                                     "p99": float(row["p99_latency_ms"]), "avg": float(row["avg_latency_ms"])}
        if r.returncode != 0 or set(rows) != {"SET", "GET"}:
            self.fail("redis-benchmark failed (exit %d): %r %r" % (r.returncode, out[-800:], r.stderr.decode()[-800:]))
        return rows

    def loadgen_write(self, tag, seconds, extra=()):
        """Starts one ftvm-loadgen write connection (unique keys, acked file, JSON report)."""
        return self.spawn("loadgen-" + tag, "c", [self.b.loadgen, "write", "--addr", REDIS, "--prefix", tag,
                                                  "--duration", str(seconds), "--acked-file",
                                                  self.path(tag + ".acked"), "--report", self.path(tag + ".json")]
                          + list(extra))

    def finish_write(self, tag, p):
        try:
            rc = p.wait(timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
            self.fail("ftvm-loadgen write %s did not finish" % tag)
        try:
            with open(self.path(tag + ".json")) as f:
                report = json.load(f)
        except (OSError, ValueError):
            self.fail("ftvm-loadgen write %s (exit %d) wrote no report: %s" % (tag, rc, tail(self.path("loadgen-%s.log" % tag))))
        report["exit"] = rc
        return report

    def verify(self, tag):
        r = subprocess.run(self.ns("c") + [self.b.loadgen, "verify", "--addr", REDIS, "--prefix", tag,
                                           "--acked-file", self.path(tag + ".acked")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        return r.returncode == 0, r.stdout.decode().strip()

    def arbiter_history(self):
        r = subprocess.run(self.ns("h1") + [self.b.ftvm, "arbiter"] + self.tls_opts("operator-bench") + ["--arbiter", ARBITER, "history", "vm0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        return [l for l in r.stdout.decode().splitlines() if l.strip()]

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.up:
            subprocess.run([NETNS, "down", self.prefix, "--kill"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.up = False


def join_addr(host):
    """The --join-listen address of an ftvm process on `host` (h1, h2)."""
    return "10.78.0.%s:7001" % host[1:]


def read_ops(path):
    """acked_us of every acknowledged write of an --ops-file, in order."""
    out = []
    with open(path) as f:
        next(f, None)
        for line in f:
            parts = line.strip().split(",")
            if len(parts) == 3:
                out.append(int(parts[2]))
    return out


def max_gap_in(acked_us, start_s, end_s):
    """Longest interval between consecutive acks that overlaps [start_s, end_s]
    (seconds on the loadgen's clock): (gap_ms, gap start s, gap end s) or None.
    An interval counts when it ends after start_s and begins before end_s; the
    last ack before start_s and the first after end_s bound it."""
    best = None
    for a, b in zip(acked_us, acked_us[1:]):
        if b / 1e6 <= start_s or a / 1e6 >= end_s:
            continue
        if best is None or b - a > best[0] * 1e3:
            best = ((b - a) / 1e3, a / 1e6, b / 1e6)
    return best


def proc_cpu_s(pid):
    """User + system CPU seconds of a process so far (None once it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine_busy():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


class CpuMeter:
    """CPU used by each of a lab's VM processes, and by the whole machine, over a span."""

    def __init__(self, lab):
        self.lab = lab
        self.t = time.monotonic()
        self.m = machine_busy()
        self.p = {tag: proc_cpu_s(p.pid) for tag, p in lab.procs.items() if not tag.startswith("loadgen")}

    def result(self):
        dt = time.monotonic() - self.t
        busy, total = machine_busy()
        out = {"wall_s": dt, "machine_busy": (busy - self.m[0]) / max(total - self.m[1], 1)}
        for tag, c0 in self.p.items():
            c1 = proc_cpu_s(self.lab.procs[tag].pid)
            if c0 is not None and c1 is not None:
                out[tag] = (c1 - c0) / dt  # cores
        return out


class Sampler(threading.Thread):
    """`ftvm status --json` on h1 and h2 every `interval` s until stopped."""

    def __init__(self, lab, interval=0.5):
        super().__init__(daemon=True)
        self.lab = lab
        self.interval = interval
        self.samples = {"h1": [], "h2": []}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            for h in ("h1", "h2"):
                try:
                    s = self.lab.status(h)
                except subprocess.TimeoutExpired:
                    s = None
                if s:
                    self.samples[h].append(s)
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def summary(self):
        out = {}
        for h, ss in self.samples.items():
            if not ss:
                continue
            d = {"n": len(ss), "phases": sorted({s.get("phase") for s in ss})}
            for key in ("log_mbit_s", "lag_ms", "lag_instructions", "mips"):
                vals = [s[key] for s in ss if s.get(key) is not None]
                if vals:
                    d[key] = (statistics.mean(vals), max(vals))
            th = [s["throttled_ms"] for s in ss if s.get("throttled_ms") is not None]
            if th:
                d["throttled_ms"] = th[-1] - th[0]
            d["log_bytes"] = (ss[-1]["log_bytes_sent"] + ss[-1]["log_bytes_received"]
                              - ss[0]["log_bytes_sent"] - ss[0]["log_bytes_received"])
            d["span_s"] = ss[-1]["uptime_s"] - ss[0]["uptime_s"]
            out[h] = d
        return out


class Bench:
    def __init__(self, args):
        self.args = args
        self.ftvm = os.path.abspath(args.ftvm)
        self.loadgen = os.path.join(os.path.dirname(self.ftvm), "ftvm-loadgen")
        self.prefix = "fft%d" % (os.getpid() % 100000)
        self.scratch = tempfile.mkdtemp(prefix="ftvm-bench-ft-")
        self.guest = None
        self.tls = not args.insecure
        self.certs = os.path.join(self.scratch, "certs")
        sh([self.ftvm, "certs", "init", self.certs, "--hosts", "h1,h2", "--vms", "vm0", "--operator", "bench"],
           stdout=subprocess.DEVNULL)

    def labelled(self, name):
        """A fresh lab name that says whether it runs over TLS (tls-cost runs both)."""
        base = name if self.tls else name + "-insecure"
        name, n = base, 1
        while os.path.exists(os.path.join(self.scratch, name)):
            n += 1
            name = "%s-%d" % (base, n)
        return name

    def workload(self, lab, sampler=None):
        res = {}
        cpu = CpuMeter(lab)
        if sampler:
            sampler.start()
        try:
            t = time.monotonic()
            res["rb"] = lab.redis_benchmark(self.args.requests)
            res["rb_s"] = time.monotonic() - t
            if sampler:
                res["hold_rb"] = (lab.status("h1") or {}).get("hold")
            p = lab.loadgen_write("serial", self.args.serial_seconds)
            w = lab.finish_write("serial", p)
            if sampler:
                res["hold_serial"] = (lab.status("h1") or {}).get("hold")
            if w["exit"] != 0:
                lab.fail("ftvm-loadgen write failed: %s" % w.get("error"))
            res["serial"] = w
            res["cpu"] = cpu.result()
        finally:
            if sampler:
                sampler.stop.set()
                sampler.join()
        if sampler:
            res["status"] = sampler.summary()
        return res

    def plain(self):
        lab = Lab(self, self.labelled("plain"), 1)
        try:
            ready = lab.start_plain()
            res = self.workload(lab)
            res["ready_s"] = ready
            return res
        finally:
            lab.close()

    def pair(self):
        lab = Lab(self, self.labelled("pair"), 2)
        try:
            ready = lab.start_pair()
            res = self.workload(lab, Sampler(lab))
            res["ready_s"] = ready
            s = lab.status("h1")
            if not s or s.get("phase") != "paired":
                lab.fail("the primary is not paired after the workload: %s" % s)
            return res
        finally:
            lab.close()

    def failover(self, k):
        lab = Lab(self, "kill%d" % k, 2)
        try:
            lab.start_pair()
            tag = "k%d" % k
            p = lab.loadgen_write(tag, self.args.load_seconds)
            t0 = time.monotonic()
            time.sleep(self.args.kill_after)
            lab.procs["primary"].send_signal(signal.SIGKILL)
            killed_at = time.monotonic() - t0
            live_after = lab.wait_phase("h2", "live", 60)
            w = lab.finish_write(tag, p)
            timeline = (lab.status("h2") or {}).get("failover")
            ok, msg = lab.verify(tag)
            wins = lab.arbiter_history()
            return {"max_gap_ms": w.get("max_gap_ms"), "max_gap_at_s": w.get("max_gap_at_s"),
                    "killed_at_s": killed_at, "live_after_s": live_after,
                    "survived": w["exit"] == 0 and not w.get("connection_broken"),
                    "error": w.get("error"), "acked": w.get("ops_acked"), "verify": ok, "verify_msg": msg,
                    "wins": wins, "top_gaps": w.get("top_gaps", [])[:3], "timeline": timeline}
        finally:
            lab.close()


    def joins(self):
        """Re-protection: N rounds of kill, go-live, join, under one client connection."""
        a = self.args
        lab = Lab(self, "joins", 2)
        lab.joinable = True
        try:
            lab.start_pair()
            stop = lab.path("stop-load")
            acked = lab.path("j.acked")
            p = lab.loadgen_write("j", 24 * 3600, ["--until-file", stop, "--ops-file", lab.path("j.ops.csv")])
            if a.join_dirty:
                # Random SETs of 256-byte values over 10 000 keys: the guest keeps dirtying memory
                # (values, the AOF's page cache) while its RAM is being copied.
                lab.spawn("dirty", "c", ["redis-benchmark", "-h", GUEST_IP, "-t", "set", "-r", "10000", "-d", "256",
                                         "-c", "2", "-n", "1000000000", "-q"])
            time.sleep(a.kill_after)
            # (host, process tag) of the process running the guest, and of the one following it.
            active, standby = ("h1", "primary"), ("h2", "backup")
            rounds = []
            for r in range(1, a.joins + 1):
                t_kill = time.time()
                lab.procs[active[1]].send_signal(signal.SIGKILL)
                lab.procs[active[1]].wait()
                live_after, _ = lab.wait_status(standby[0], lambda s: s.get("phase") == "live", "phase 'live'", 60,
                                                watch=(standby[1],))
                t_live = time.time()
                # Wait until the client is served again (its acked file, flushed every 100 ms, grows),
                # so that the failover gap does not run into the join window.
                size0 = os.path.getsize(acked)
                t0 = time.monotonic()
                while os.path.getsize(acked) <= size0:
                    if time.monotonic() - t0 > 30:
                        lab.fail("round %d: the client got no acknowledgement within 30 s of the go-live" % r)
                    time.sleep(0.02)
                t_served = time.time()
                s0 = lab.status(standby[0]) or {}
                joins0 = s0.get("joins", 0)
                host = active[0]
                tag = "joiner%d" % r
                t_spawn = time.time()
                lab.spawn_joiner(tag, host, standby[0])
                paired_after, s1 = lab.wait_status(
                    standby[0], lambda s: s.get("phase") == "paired" and s.get("joins", 0) > joins0,
                    "phase 'paired' with joins > %d" % joins0, a.join_timeout, watch=(standby[1], tag))
                t_paired = time.time()
                following_after, _ = lab.wait_status(host, lambda s: s.get("phase") == "following",
                                                     "phase 'following'", 60, watch=(tag,))
                rounds.append({"round": r, "killed": active[0], "survivor": standby[0], "t_kill": t_kill,
                               "t_live": t_live, "live_after_s": live_after, "t_served": t_served,
                               "served_after_s": t_served - t_kill, "t_spawn": t_spawn, "t_paired": t_paired,
                               "paired_after_s": paired_after, "following_after_s": following_after,
                               "last_join_s": s1.get("last_join_s"), "last_join_pause_ms": s1.get("last_join_pause_ms"),
                               "joins": s1.get("joins"), "generation": s1.get("generation")})
                print("join %d/%d: killed %s, %s live after %.2f s; joiner on %s: survivor paired %.2f s after the spawn, "
                      "last_join_s %s, last_join_pause_ms %s, generation %s" % (
                          r, a.joins, active[0], standby[0], live_after, host, paired_after,
                          s1.get("last_join_s"), s1.get("last_join_pause_ms"), s1.get("generation")), flush=True)
                active, standby = standby, (host, tag)
                time.sleep(a.join_settle)
            t_end = time.time()
            with open(stop, "w"):
                pass
            w = lab.finish_write("j", p)
            dirty = None
            if "dirty" in lab.procs:
                d = lab.procs["dirty"]
                dirty = "ran throughout" if d.poll() is None else "exited with %s" % d.returncode
                if d.poll() is None:
                    d.terminate()
            ok, msg = lab.verify("j")
            wins = lab.arbiter_history()
            acks = read_ops(lab.path("j.ops.csv"))
            t0 = w["started_unix_ms"] / 1000.0
            for rd in rounds:
                rd["clock"] = {k: rd[k] - t0 for k in ("t_kill", "t_live", "t_served", "t_spawn", "t_paired")}
                rd["failover_gap"] = max_gap_in(acks, rd["t_kill"] - t0, rd["t_served"] - t0)
                # The join window: from starting the joiner until the survivor was seen paired, plus
                # 0.5 s (the status is published every 250 ms, polled every 50 ms).
                rd["join_gap"] = max_gap_in(acks, rd["t_spawn"] - t0, rd["t_paired"] + 0.5 - t0)
            # For reference: the longest gap of the steady load before the first kill.
            base = max_gap_in(acks, 0.5, rounds[0]["t_kill"] - t0 - 0.05) if rounds else None
            return {"rounds": rounds, "report": w, "verify": ok, "verify_msg": msg, "wins": wins,
                    "survived": w["exit"] == 0 and not w.get("connection_broken"), "dirty": dirty,
                    "baseline_gap": base, "span_s": t_end - t0}
        finally:
            lab.close()

    def diskbw(self, mode):
        """One fresh pair, disks shared over NBD (mode "shared") or one image per host ("local"),
        running the guest script of diskbw_script(); returns the log bytes per phase."""
        a = self.args
        lab = Lab(self, "diskbw-" + mode, 2)
        lab.disk_size = "256M"
        lab.append = APPEND.replace("console=ttyS0", "console=ttyS0 quiet") + \
            ' ftvm.run="%s"' % diskbw_script(a.diskbw_rounds, a.diskbw_mib)
        if mode == "local":
            lab.local_disks = True
            lab.create_local_disks()
        sampler = StatusLog(lab, "h1")
        try:
            lab.start_pair()
            sampler.start()
            console = lab.path("console-primary.txt")
            # The guest waits for this key before its first phase, so that every marker is seen here.
            sh(lab.ns("c") + ["redis-cli", "-h", GUEST_IP, "set", "ftvm-bench-go", "1"], stdout=subprocess.DEVNULL)
            markers = []  # (host monotonic time first seen, "begin"/"end", phase)
            seen = 0
            t0 = time.monotonic()
            while True:
                with open(console, errors="replace") as f:
                    text = f.read()
                now = time.monotonic()
                found = DISKBW_MARKER.findall(text)
                for m in found[seen:]:
                    markers.append((now, m[0], m[1], float(m[2])))
                    if m[0] != "done":
                        print("diskbw %s: %s %s" % (mode, m[0], m[1]), flush=True)
                seen = len(found)
                if markers and markers[-1][1] == "done":
                    break
                for tag in ("primary", "backup"):
                    if lab.procs[tag].poll() is not None:
                        lab.fail("%s exited with %s during the disk workload" % (tag, lab.procs[tag].returncode))
                if now - t0 > a.diskbw_timeout:
                    lab.fail("the guest's disk workload did not finish in %d s" % a.diskbw_timeout)
                time.sleep(0.05)
            time.sleep(1)
            sampler.stop.set()
            sampler.join()
            s = lab.status("h1")
            if not s or s.get("phase") != "paired":
                lab.fail("the primary is not paired after the disk workload: %s" % s)
            phases = diskbw_phases(lab, mode, markers, sampler.samples)
            return {"mode": mode, "phases": phases, "log_bytes_total": s["log_bytes_sent"]}
        finally:
            sampler.stop.set()
            lab.close()


# The console markers of diskbw_script(): "ftvm-bench: begin write1 UPTIME", ..., "ftvm-bench: done UPTIME".
DISKBW_MARKER = re.compile(r"ftvm-bench: (begin|end|done) (\w*) ?([0-9.]+)")


def diskbw_script(rounds, mib):
    """The guest's ftvm.run command (no double quotes; the kernel command line is limited to 1024
    bytes). Every phase is framed by console markers carrying the guest's uptime (busybox dd
    prints no time), each followed by 2 s of sleep during which the host samples the primary's
    status: idle (5 s of nothing), gen (MIB MiB of /dev/urandom into
    /tmp, a tmpfs: CPU only, no disk), then per round write (the tmpfs file to /data/f, conv=fsync)
    and read (drop the page cache, read /data/f back)."""
    return ("until redis-cli get ftvm-bench-go | grep -q 1; do sleep 0.2; done; "
            "p(){ read u x < /proc/uptime; echo ftvm-bench: $* $u; sleep 2; }; "
            "p begin idle; sleep 5; p end idle; "
            "p begin gen; dd if=/dev/urandom of=/tmp/r bs=1M count=%d; p end gen; "
            "i=0; while [ $i -lt %d ]; do i=$((i+1)); "
            "p begin write$i; dd if=/tmp/r of=/data/f bs=1M conv=fsync; p end write$i; "
            "echo 3 > /proc/sys/vm/drop_caches; "
            "p begin read$i; dd if=/data/f of=/dev/null bs=1M; p end read$i; done; "
            "p done; sleep 1000000" % (mib, rounds))


def diskbw_phases(lab, mode, markers, samples):
    """Per phase: the primary's log_bytes_sent between a status sample taken during the 2 s sleep
    after the begin marker and one during the sleep after the end marker; the phase's own time
    (guest uptime at the end marker - at the begin marker - the 2 s sleep); the mean and max
    log_mbit_s of the samples in between."""

    def sample_after(t):
        for ts, st in samples:
            if ts >= t + 0.6:
                if ts > t + 1.7:
                    lab.fail("%s: no status sample within 1.7 s of a marker" % mode)
                return ts, st
        lab.fail("%s: no status sample after a marker" % mode)

    begins = {p: (t, u) for t, k, p, u in markers if k == "begin"}
    out = []
    for t_end, k, p, u_end in markers:
        if k != "end":
            continue
        t_begin, u_begin = begins[p]
        tb, sb = sample_after(t_begin)
        te, se = sample_after(t_end)
        inner = [st["log_mbit_s"] for ts, st in samples if tb < ts <= te]
        nbytes = se["log_bytes_sent"] - sb["log_bytes_sent"]
        span = se["uptime_s"] - sb["uptime_s"]
        out.append({"phase": p, "bytes": nbytes, "recv_bytes": se["log_bytes_received"] - sb["log_bytes_received"],
                    "span_s": span, "phase_s": u_end - u_begin - 2,
                    "host_s": t_end - t_begin - 2, "mbit_mean": statistics.mean(inner) if inner else None,
                    "mbit_max": max(inner) if inner else None, "throttled_ms": se["throttled_ms"] - sb["throttled_ms"]})
    return out


class StatusLog(threading.Thread):
    """(host monotonic time, `ftvm status --json`) of one host every `interval` s until stopped."""

    def __init__(self, lab, host, interval=0.25):
        super().__init__(daemon=True)
        self.lab, self.host, self.interval = lab, host, interval
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                s = self.lab.status(self.host)
            except subprocess.TimeoutExpired:
                s = None
            if s:
                self.samples.append((time.monotonic(), s))
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - t)))


def fmt_gap(g):
    return "%.0f ms (%.2f-%.2f s)" % g if g else "n/a"


def report_joins(args, j, load):
    rounds = j["rounds"]
    w = j["report"]
    print()
    print("# ftvm re-protection benchmark (%s), %s: %d rounds of kill / go-live / join, 256 MiB guest, one client "
          "connection%s" % (time.strftime("%Y-%m-%d"), time.strftime("%H:%M"), len(rounds),
                            " + redis-benchmark SETs in the background" if args.join_dirty else ""))
    print("load average at start %s, at end %s (%d CPUs); --failure-timeout-ms %s"
          % (load[0], load[1], os.cpu_count(), fto(args)))
    hdr = ("round", "kill->survivor", "live after", "join s", "pause ms", "spawn->paired", "join-window gap",
           "failover gap", "gen")
    fmt = "%-6s %-15s %10s %8s %9s %13s %24s %24s %4s"
    print(fmt % hdr)
    for r in rounds:
        print(fmt % (r["round"], "%s -> %s" % (r["killed"], r["survivor"]), "%.2f s" % r["live_after_s"],
                     "%.2f" % r["last_join_s"] if r["last_join_s"] is not None else "n/a",
                     "%.1f" % r["last_join_pause_ms"] if r["last_join_pause_ms"] is not None else "n/a",
                     "%.2f s" % r["paired_after_s"], fmt_gap(r["join_gap"]), fmt_gap(r["failover_gap"]),
                     r["generation"]))
    js = [r["last_join_s"] for r in rounds if r["last_join_s"] is not None]
    ps = [r["last_join_pause_ms"] for r in rounds if r["last_join_pause_ms"] is not None]
    gs = [r["join_gap"][0] for r in rounds if r["join_gap"]]
    if js and ps:
        print("join time max %.2f s (target < 5 s: %s); guest pause max %.1f ms (target < 100 ms: %s); "
              "client gap during joins max %s ms" % (max(js), "met" if max(js) < 5 else "NOT met", max(ps),
                                                      "met" if max(ps) < 100 else "NOT met",
                                                      "%.0f" % max(gs) if gs else "n/a"))
    print("client: %d writes acknowledged over %.0f s on one connection (local port %s), connection %s, verify %s; "
          "longest gap before the first kill %s; background redis-benchmark: %s"
          % (w.get("ops_acked"), w.get("duration_s", 0), w.get("local_port"),
             "survived" if j["survived"] else "BROKEN (%s)" % w.get("error"), "passed" if j["verify"] else
             "FAILED (%s)" % j["verify_msg"][-300:], fmt_gap(j["baseline_gap"]), j["dirty"] or "not used"))
    print("arbiter history: %s" % j["wins"])
    print("on the loadgen's clock (s): kill, live seen, client served again, joiner started, survivor seen paired:")
    for r in rounds:
        c = r["clock"]
        print("  round %d: %.2f, %.2f, %.2f, %.2f, %.2f; join request ~%.2f (paired seen - last_join_s, "
              "status published every 250 ms)" % (r["round"], c["t_kill"], c["t_live"], c["t_served"], c["t_spawn"],
                                                  c["t_paired"], c["t_paired"] - (r["last_join_s"] or 0)))
    print()
    print("| round | killed → survivor | survivor live after the kill | join (`last_join_s`) | guest pause "
          "(`last_join_pause_ms`) | joiner started → survivor `paired` | client's longest gap in the join window "
          "| client's failover gap |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rounds:
        print("| %d | %s → %s | %.2f s | %s | %s | %.2f s | %s | %s |" % (
            r["round"], r["killed"], r["survivor"], r["live_after_s"],
            "%.2f s" % r["last_join_s"] if r["last_join_s"] is not None else "n/a",
            "%.1f ms" % r["last_join_pause_ms"] if r["last_join_pause_ms"] is not None else "n/a",
            r["paired_after_s"], "%.0f ms" % r["join_gap"][0] if r["join_gap"] else "n/a",
            "%.0f ms" % r["failover_gap"][0] if r["failover_gap"] else "n/a"))


def report_diskbw(args, runs, load):
    by = {r["mode"]: {p["phase"]: p for p in r["phases"]} for r in runs}
    sh_, lo = by.get("shared", {}), by.get("local", {})
    names = [p["phase"] for p in runs[0]["phases"]]
    print()
    print("# ftvm log bandwidth, shared vs non-shared disks (%s), %s: FT pair, 256 MiB disk, %d MiB file, %d rounds"
          % (time.strftime("%Y-%m-%d"), time.strftime("%H:%M"), args.diskbw_mib, args.diskbw_rounds))
    print("load average at start %s, at end %s (%d CPUs)" % (load[0], load[1], os.cpu_count()))
    print("per phase: the primary's log_bytes_sent from a status sample ~0.6 s after the begin marker to one "
          "~0.6 s after the end marker (2 s of guest sleep included); time = the phase's own duration by the "
          "guest's uptime (host's view in brackets); Mbit/s = log bytes * 8 / that time")

    def rate(p):
        return p["bytes"] * 8 / max(p["phase_s"], 1e-6) / 1e6

    def cell(p):
        if not p:
            return "n/a"
        return "%.2f MB, %.2f Mbit/s, %.1f s (%.1f)" % (p["bytes"] / 1e6, rate(p), p["phase_s"], p["host_s"])

    def ratio(a, b):
        return "%.1f" % (a["bytes"] / b["bytes"]) if a and b and b["bytes"] else "n/a"

    fmt = "%-8s %-38s %-38s %10s"
    print(fmt % ("phase", "shared disk (NBD)", "local disks (--local-disks)", "shared/local"))
    for n in names:
        print(fmt % (n, cell(sh_.get(n)), cell(lo.get(n)), ratio(sh_.get(n), lo.get(n))))
    for r in runs:
        print("%s: log_mbit_s mean/max of the samples per phase: %s; throttled ms: %s; log bytes sent since boot %d"
              % (r["mode"], ", ".join("%s %s" % (p["phase"], fmt_pair((p["mbit_mean"], p["mbit_max"]))
                                                 if p["mbit_mean"] is not None else "n/a") for p in r["phases"]),
                 ", ".join("%s %d" % (p["phase"], p["throttled_ms"]) for p in r["phases"]), r["log_bytes_total"]))
    print()
    print("| phase | shared: log MB | shared: Mbit/s | shared: phase s | local: log MB | local: Mbit/s "
          "| local: phase s | log shared / local |")
    print("|---|---|---|---|---|---|---|---|")
    for n in names:
        row = [n]
        for p in (sh_.get(n), lo.get(n)):
            row += ["%.2f" % (p["bytes"] / 1e6), "%.2f" % rate(p), "%.1f" % p["phase_s"]] if p else ["n/a"] * 3
        row.append(ratio(sh_.get(n), lo.get(n)))
        print("| " + " | ".join(row) + " |")


def fto(args):
    """The failure timeout in use, for the report."""
    return str(args.failure_timeout_ms) if args.failure_timeout_ms is not None else "default (100)"


def fmt_hold(h):
    """An `ftvm status` hold report: hold p50 / p99 and the per-hop p50s, in microseconds."""
    if not h:
        return "n/a"
    return ("hold p50 %.0f / p99 %.0f us (produced->sent %.0f, sent->ack read %.0f / p99 %.0f, ack->released %.0f; "
            "%d outputs)" % (h["hold_us_p50"], h["hold_us_p99"], h["to_send_us_p50"], h["round_trip_us_p50"],
                             h["round_trip_us_p99"], h["to_release_us_p50"], h["samples"]))


def fmt_timeline(t):
    """A failover timeline from the survivor's status, relative to the last frame heard (ms)."""
    if not t:
        return "n/a"
    base = t.get("last_heard_ms") or t.get("suspected_ms") or 0
    parts = []
    for k, label in (("last_entry_ms", "last entry"), ("suspected_ms", "suspected"), ("drained_ms", "drained"),
                     ("arbiter_answer_ms", "arbiter"), ("took_over_ms", "live"), ("first_output_ms", "first output")):
        if t.get(k) is not None:
            parts.append("%s %+d" % (label, t[k] - base))
    return ", ".join(parts)


def fmt_pair(m):
    return "%.1f / %.1f" % m if m else "n/a"


def report(args, plain, ft, kills, load):
    if plain and ft:
        report_throughput(args, plain, ft, load)
    if kills:
        report_kills(args, kills, load, header=not (plain and ft))


def report_throughput(args, plain, ft, load):
    pr, fr = plain["rb"], ft["rb"]
    ps, fs = plain["serial"], ft["serial"]
    rows = []
    for op in ("SET", "GET"):
        rows.append(("redis-benchmark %s ops/s" % op, "%.0f" % pr[op]["rps"], "%.0f" % fr[op]["rps"],
                     "%.2f" % (fr[op]["rps"] / pr[op]["rps"])))
        rows.append(("redis-benchmark %s p50 / p99 ms" % op, "%.3f / %.3f" % (pr[op]["p50"], pr[op]["p99"]),
                     "%.3f / %.3f" % (fr[op]["p50"], fr[op]["p99"]),
                     "%.2f / %.2f" % (fr[op]["p50"] / pr[op]["p50"], fr[op]["p99"] / pr[op]["p99"])))

    def us(r, k):
        return (r.get(k) or 0) / 1000.0

    rows.append(("loadgen 1-conn SET ops/s (%ss)" % args.serial_seconds, "%.0f" % ps["throughput_ops_s"],
                 "%.0f" % fs["throughput_ops_s"], "%.2f" % (fs["throughput_ops_s"] / ps["throughput_ops_s"])))
    rows.append(("loadgen 1-conn SET p50 / p99 ms", "%.2f / %.2f" % (us(ps, "latency_p50_us"), us(ps, "latency_p99_us")),
                 "%.2f / %.2f" % (us(fs, "latency_p50_us"), us(fs, "latency_p99_us")),
                 "%.2f / %.2f" % (us(fs, "latency_p50_us") / max(us(ps, "latency_p50_us"), 1e-9),
                                  us(fs, "latency_p99_us") / max(us(ps, "latency_p99_us"), 1e-9))))
    rows.append(("loadgen 1-conn SET p50 overhead ms", "", "%+.3f" % (us(fs, "latency_p50_us") - us(ps, "latency_p50_us")),
                 ""))
    rows.append(("boot to redis ready s", "%.1f" % plain["ready_s"], "%.1f" % ft["ready_s"], ""))
    holds = [("output hold, redis-benchmark (last %d outputs)" % ((ft.get("hold_rb") or {}).get("samples", 0)),
              ft.get("hold_rb")),
             ("output hold, 1-conn loadgen (last %d outputs)" % ((ft.get("hold_serial") or {}).get("samples", 0)),
              ft.get("hold_serial"))]

    print()
    print("# ftvm FT benchmark (%s), %s: plain `ftvm run` vs FT pair, same image, NBD disk, netns lab"
          % (time.strftime("%Y-%m-%d"), time.strftime("%H:%M")))
    print("load average at start %s, at end %s (%d CPUs)" % (load[0], load[1], os.cpu_count()))
    print("%-36s %18s %18s %12s" % ("figure", "plain", "FT pair", "FT/plain"))
    for r in rows:
        print("%-36s %18s %18s %12s" % r)
    for label, h in holds:
        print("%s: %s" % (label, fmt_hold(h)))
    for label, r in (("plain", plain), ("FT pair", ft)):
        c = r["cpu"]
        print("CPU during the %s workload (%.0f s): machine %.0f%% busy of %d CPUs; %s" % (
            label, c["wall_s"], 100 * c["machine_busy"], os.cpu_count(),
            ", ".join("%s %.2f cores" % (k, v) for k, v in sorted(c.items()) if k not in ("wall_s", "machine_busy"))))
    st = ft.get("status", {})
    for h, role in (("h1", "primary"), ("h2", "backup")):
        d = st.get(h)
        if not d:
            print("status %s (%s): no samples" % (h, role))
            continue
        print("status %s (%s), %d samples over %.1f s, phases %s:" % (h, role, d["n"], d["span_s"], ",".join(d["phases"])))
        print("  log Mbit/s mean/max %s; lag ms mean/max %s; lag instructions mean/max %s; "
              "throttled %d ms; MIPS mean/max %s; log bytes %d (%.2f Mbit/s average)"
              % (fmt_pair(d.get("log_mbit_s")), fmt_pair(d.get("lag_ms")),
                 "%.0f / %.0f" % d["lag_instructions"] if d.get("lag_instructions") else "n/a",
                 d.get("throttled_ms", 0), fmt_pair(d.get("mips")), d["log_bytes"],
                 d["log_bytes"] * 8 / max(d["span_s"], 1e-6) / 1e6))
    # The markdown snippet.
    print()
    print("| figure | plain `ftvm run` | FT pair | FT / plain |")
    print("|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %s | %s |" % r)
    for label, h in holds:
        if h:
            print("| %s: hold p50 / p99 (us) | | %.0f / %.0f | |" % (label, h["hold_us_p50"], h["hold_us_p99"]))
            print("| %s: produced->sent / sent->ack read / ack->released p50 (us) | | %.0f / %.0f / %.0f | |" % (
                label, h["to_send_us_p50"], h["round_trip_us_p50"], h["to_release_us_p50"]))
    for h, role in (("h1", "primary"), ("h2", "backup")):
        d = st.get(h)
        if d:
            print("| %s: log bandwidth (Mbit/s) mean / max | | %s | |" % (role, fmt_pair(d.get("log_mbit_s"))))
            if d.get("lag_ms"):
                print("| %s: lag (ms) mean / max | | %s | |" % (role, fmt_pair(d.get("lag_ms"))))
            if d.get("lag_instructions"):
                print("| %s: lag (instructions) mean / max | | %.0f / %.0f | |" % ((role,) + d["lag_instructions"]))
            if role == "primary":
                print("| primary: throttled during the workload | | %d ms | |" % d.get("throttled_ms", 0))
    pc, fc = plain["cpu"], ft["cpu"]
    print("| CPU during the workload (cores; machine busy %%) | vm %.2f; machine %.0f %% | primary %.2f, backup %.2f, storage %.2f; machine %.0f %% | |" % (
        pc.get("vm", 0), 100 * pc["machine_busy"], fc.get("primary", 0), fc.get("backup", 0), fc.get("storage", 0),
        100 * fc["machine_busy"]))


def report_kills(args, kills, load, header):
    if header:
        print()
        print("# ftvm failover benchmark (%s), %s" % (time.strftime("%Y-%m-%d"), time.strftime("%H:%M")))
        print("load average at start %s, at end %s (%d CPUs)" % (load[0], load[1], os.cpu_count()))
    print("failover (SIGKILL of the primary %.1f s into a %.0f s single-connection ftvm-loadgen write, "
          "--failure-timeout-ms %s):" % (args.kill_after, args.load_seconds, fto(args)))
    for i, k in enumerate(kills):
        print("  kill %d: max_gap %s ms (at %s s; loadgen clock; kill at ~%.2f s), backup seen live %.2f s after the kill, "
              "connection %s, verify %s (%s acked), arbiter wins %s%s"
              % (i + 1, "%.1f" % k["max_gap_ms"] if k["max_gap_ms"] is not None else "n/a",
                 "%.2f" % k["max_gap_at_s"] if k["max_gap_at_s"] is not None else "n/a", k["killed_at_s"],
                 k["live_after_s"], "survived" if k["survived"] else "BROKEN",
                 "passed" if k["verify"] else "FAILED", k["acked"], k["wins"],
                 "" if k["verify"] else " (" + k["verify_msg"][-300:] + ")"))
        print("    timeline (survivor's clock, ms from the last frame heard): %s" % fmt_timeline(k.get("timeline")))

    print()
    print("| kill | max gap (ms) | backup seen live after kill (s) | connection | verify | timeline (ms after the last frame heard) |")
    print("|---|---|---|---|---|---|")
    for i, k in enumerate(kills):
        print("| %d | %s | %.2f | %s | %s | %s |" % (
            i + 1, "%.0f" % k["max_gap_ms"] if k["max_gap_ms"] is not None else "n/a", k["live_after_s"],
            "survived" if k["survived"] else "broken", "passed" if k["verify"] else "FAILED",
            fmt_timeline(k.get("timeline"))))


def run_throughput(b, args):
    print("plain: booting `ftvm run` and running redis-benchmark -n %d ..." % args.requests, flush=True)
    plain = b.plain()
    print("plain: SET %.0f GET %.0f ops/s" % (plain["rb"]["SET"]["rps"], plain["rb"]["GET"]["rps"]), flush=True)
    print("FT pair: booting and running the same workload ...", flush=True)
    ft = b.pair()
    print("FT pair: SET %.0f GET %.0f ops/s" % (ft["rb"]["SET"]["rps"], ft["rb"]["GET"]["rps"]), flush=True)
    return plain, ft


def run_tls_cost(b, args):
    """Plain and FT throughput with TLS and without (--insecure), in the same run, --tls-rounds times."""
    res = {True: [], False: []}
    for r in range(args.tls_rounds):
        for tls in (True, False):
            b.tls = tls
            mode = "TLS" if tls else "plain TCP"
            print("tls-cost %d/%d (%s): plain VM and FT pair, redis-benchmark -n %d ..."
                  % (r + 1, args.tls_rounds, mode, args.requests), flush=True)
            plain = b.plain()
            ft = b.pair()
            res[tls].append((plain, ft))
            print("tls-cost %d/%d (%s): plain SET %.0f GET %.0f, FT SET %.0f GET %.0f ops/s" % (
                r + 1, args.tls_rounds, mode, plain["rb"]["SET"]["rps"], plain["rb"]["GET"]["rps"],
                ft["rb"]["SET"]["rps"], ft["rb"]["GET"]["rps"]), flush=True)
    b.tls = not args.insecure
    return res


def pair_cpu_ms_per_kop(args, ft):
    """CPU the primary and the backup used per 1000 client operations (redis-benchmark + serial loadgen)."""
    c = ft.get("cpu", {})
    ops = 2 * args.requests + ft.get("serial", {}).get("ops_acked", 0)
    cores = c.get("primary", 0) + c.get("backup", 0)
    return 1e6 * cores * c.get("wall_s", 0) / max(ops, 1)


def report_tls_cost(args, res, load):
    print()
    print("TLS cost: redis-benchmark -n %d -c 10 and a %g s serial loadgen per VM, %d round(s), the same run "
          "(load average before/after: %s / %s)" % (args.requests, args.serial_seconds, args.tls_rounds, load[0], load[1]))
    print()
    print("| round | channels | plain SET/s | FT SET/s | FT/plain SET | plain GET/s | FT GET/s | FT/plain GET "
          "| primary+backup CPU ms per 1000 ops | log MB (h1, both ways) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    mean = {}
    for tls in (True, False):
        acc = {"SET": [], "GET": [], "ftSET": [], "ftGET": [], "cpu": []}
        for i, (plain, ft) in enumerate(res[tls]):
            r = {op: ft["rb"][op]["rps"] / plain["rb"][op]["rps"] for op in ("SET", "GET")}
            cpu = pair_cpu_ms_per_kop(args, ft)
            st = ft.get("status") or {}
            mb = (st.get("h1") or {}).get("log_bytes")
            for op in ("SET", "GET"):
                acc[op].append(r[op])
                acc["ft" + op].append(ft["rb"][op]["rps"])
            acc["cpu"].append(cpu)
            print("| %d | %s | %.0f | %.0f | %.3f | %.0f | %.0f | %.3f | %.0f | %s |" % (
                i + 1, "TLS 1.3" if tls else "plain TCP (--insecure)", plain["rb"]["SET"]["rps"],
                ft["rb"]["SET"]["rps"], r["SET"], plain["rb"]["GET"]["rps"], ft["rb"]["GET"]["rps"], r["GET"],
                cpu, "%.1f" % (mb / 1e6) if isinstance(mb, (int, float)) else "n/a"))
        mean[tls] = {k: statistics.mean(v) for k, v in acc.items()}
    for op in ("SET", "GET"):
        print("TLS cost on FT/plain %s throughput (means): %.1f %%; FT %s/s alone, TLS against plain TCP: %+.1f %% "
              "(target: TLS costs <= 2 %%)" % (
                  op, 100 * (1 - mean[True][op] / mean[False][op]), op,
                  100 * (mean[True]["ft" + op] / mean[False]["ft" + op] - 1)))
    print("primary+backup CPU per 1000 ops, TLS against plain TCP (means): %.0f vs %.0f ms (%+.1f %%)" % (
        mean[True]["cpu"], mean[False]["cpu"], 100 * (mean[True]["cpu"] / mean[False]["cpu"] - 1)))


def run_kills(b, args):
    kills = []
    for k in range(args.kills):
        print("failover %d/%d: fresh pair, SIGKILL the primary under load ..." % (k + 1, args.kills), flush=True)
        kills.append(b.failover(k + 1))
        print("failover %d/%d: max gap %s ms, connection %s, verify %s" % (
            k + 1, args.kills, kills[-1]["max_gap_ms"], "survived" if kills[-1]["survived"] else "broken",
            "passed" if kills[-1]["verify"] else "FAILED"), flush=True)
    return kills


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20000, help="redis-benchmark -n (default 20000)")
    ap.add_argument("--kills", type=int, default=3, help="failover runs, each with a fresh pair (default 3)")
    ap.add_argument("--ftvm", default=default_ftvm(), help="ftvm binary (ftvm-loadgen is taken from its directory)")
    ap.add_argument("--serial-seconds", type=float, default=5, help="single-connection loadgen run per VM (default 5)")
    ap.add_argument("--load-seconds", type=float, default=8, help="loadgen run per failover (default 8)")
    ap.add_argument("--kill-after", type=float, default=3, help="seconds into the load the primary is killed (default 3)")
    ap.add_argument("--failure-timeout-ms", type=int, default=None,
                    help="ftvm --failure-timeout-ms (default: ftvm's own, 100)")
    ap.add_argument("--joins", type=int, default=3,
                    help="re-protection rounds (kill, go-live, join), alternating hosts, one pair (default 3)")
    ap.add_argument("--join-dirty", action="store_true",
                    help="run redis-benchmark SETs (random keys, 256-byte values) in the background during the joins")
    ap.add_argument("--join-settle", type=float, default=3,
                    help="seconds the new pair runs before the next round's kill (default 3)")
    ap.add_argument("--join-timeout", type=float, default=120,
                    help="longest wait from starting a joiner to the survivor's `paired` (default 120)")
    ap.add_argument("--diskbw-rounds", type=int, default=2,
                    help="diskbw: write/read rounds per pair (default 2)")
    ap.add_argument("--diskbw-mib", type=int, default=64, help="diskbw: MiB written and read per round (default 64)")
    ap.add_argument("--diskbw-timeout", type=float, default=600,
                    help="diskbw: longest wait for the guest's workload per pair (default 600)")
    ap.add_argument("--only", choices=("throughput", "kills", "joins", "diskbw", "tls-cost"), action="append",
                    help="run only these parts (repeatable): throughput (plain vs FT pair), tls-cost (FT/plain "
                         "with TLS against without, same run), kills, joins, "
                         "diskbw (log bandwidth, shared vs non-shared disks)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, consoles, reports)")
    ap.add_argument("--tls-rounds", type=int, default=1,
                    help="tls-cost: rounds of (TLS, plain TCP) measurements, averaged (default 1)")
    ap.add_argument("--insecure", action="store_true",
                    help="run every part on plain TCP (--insecure) instead of TLS (tls-cost runs both anyway)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/ft.py needs root (network namespaces and TAP devices)")
    if not shutil.which("redis-benchmark"):
        sys.exit("bench/ft.py needs redis-benchmark (apt-get install redis-tools)")
    if not os.path.exists("/dev/net/tun"):
        sys.exit("bench/ft.py needs /dev/net/tun (modprobe tun)")
    if not os.environ.get("FTVM_BENCH_NO_BUILD"):  # set to measure an existing binary
        sh(["cargo", "build", "--release", "--quiet", "-p", "ftvm", "-p", "ftvm-loadgen"], cwd=ROOT)
    ftvm = os.path.abspath(args.ftvm)
    for exe in (ftvm, os.path.join(os.path.dirname(ftvm), "ftvm-loadgen")):
        if not os.access(exe, os.X_OK):
            sys.exit("bench/ft.py: %s is missing (build it, or pass --ftvm / set FTVM_BENCH_FTVM)" % exe)
    guest = guest_dir()
    b = Bench(args)
    b.guest = guest
    load0 = "%.2f %.2f %.2f" % os.getloadavg()
    print("ftvm %s, guest %s, scratch %s, load average %s" % (b.ftvm, b.guest, b.scratch, load0), flush=True)

    def on_term(sig, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    parts = set(args.only or ("throughput", "tls-cost", "kills", "joins", "diskbw"))
    ok = False
    try:
        plain = ft = None
        if "throughput" in parts:
            plain, ft = run_throughput(b, args)
        if "tls-cost" in parts:
            lt0 = "%.2f %.2f %.2f" % os.getloadavg()
            tc = run_tls_cost(b, args)
            report_tls_cost(args, tc, (lt0, "%.2f %.2f %.2f" % os.getloadavg()))
        kills = []
        if "kills" in parts:
            kills = run_kills(b, args)
        load1 = "%.2f %.2f %.2f" % os.getloadavg()
        report(args, plain, ft, kills, (load0, load1))
        if "joins" in parts and args.joins > 0:
            load2 = "%.2f %.2f %.2f" % os.getloadavg()
            print("re-protection: fresh pair, %d rounds of SIGKILL / go-live / join under load%s ..."
                  % (args.joins, " (+ background redis-benchmark)" if args.join_dirty else ""), flush=True)
            j = b.joins()
            load3 = "%.2f %.2f %.2f" % os.getloadavg()
            report_joins(args, j, (load2, load3))
        if "diskbw" in parts:
            load4 = "%.2f %.2f %.2f" % os.getloadavg()
            runs = []
            for mode in ("shared", "local"):
                print("diskbw: fresh pair, %s disk%s, %d x (write, read) of %d MiB ..."
                      % (mode, "s" if mode == "local" else "", args.diskbw_rounds, args.diskbw_mib), flush=True)
                runs.append(b.diskbw(mode))
            load5 = "%.2f %.2f %.2f" % os.getloadavg()
            report_diskbw(args, runs, (load4, load5))
        ok = True
    except BenchError as e:
        print("bench/ft.py: error: %s" % e, file=sys.stderr)
    except subprocess.CalledProcessError as e:
        print("bench/ft.py: error: %s failed with exit %d" % (" ".join(e.cmd), e.returncode), file=sys.stderr)
    except KeyboardInterrupt:
        print("bench/ft.py: interrupted", file=sys.stderr)
    finally:
        subprocess.run([NETNS, "down", b.prefix, "--kill"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args.keep or not ok:
            print("bench/ft.py: logs kept in %s" % b.scratch, file=sys.stderr)
        else:
            shutil.rmtree(b.scratch, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
