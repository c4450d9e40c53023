#!/usr/bin/env python3
"""ftvm disks-and-network benchmarks, side by side with QEMU.

Both VMs boot the same guest image in the same network-namespace topology
(scripts/netns.sh: the VM's TAP on a bridge, the client in its own
namespace) with a fresh data disk, start redis inside the guest, and are
measured in the same run:
  * redis-benchmark -t set,get -n N -c 10 (plain and -P 16) from the client;
  * sequential disk write and read MB/s from dd inside the guest.
With --record, ftvm runs under `ftvm record` and the log bandwidth of the
redis and dd workloads is printed too.

Needs root (network namespaces, TAP). Usage: bench/net.py [--requests N] [--record]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FTVM = os.path.join(ROOT, "target/release/ftvm")
NETNS = os.path.join(ROOT, "scripts/netns.sh")
GUEST_IP = "10.77.0.2"
APPEND = "console=ttyS0 quiet ftvm.ip=%s/24 ftvm.redis" % GUEST_IP


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def guest_dir():
    d = os.environ.get("FTVM_GUEST_DIR")
    if d:
        return d
    return sh([os.path.join(ROOT, "guest/build.sh")], stdout=subprocess.PIPE).stdout.decode().strip().splitlines()[-1]


class Console:
    """A VM whose serial console is its stdin/stdout."""

    def __init__(self, cmd):
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.set_blocking(self.p.stdout.fileno(), False)
        self.buf = b""

    def expect(self, pat, timeout):
        pat = pat.encode()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            c = self.p.stdout.read(65536)
            if c:
                self.buf += c
            i = self.buf.find(pat)
            if i >= 0:
                before, self.buf = self.buf[:i], self.buf[i + len(pat):]
                return before.decode(errors="replace")
            if not c:
                if self.p.poll() is not None:
                    raise RuntimeError("VM exited: %s" % self.p.stderr.read().decode()[-2000:])
                time.sleep(0.01)
        raise RuntimeError("timed out waiting for %r; console tail: %r" % (pat, self.buf[-1500:]))

    def sh(self, cmd, timeout=300):
        self.p.stdin.write(("echo '<'O'>'; %s; echo '<'E'>'\n" % cmd).encode())
        self.p.stdin.flush()
        self.expect("<O>", 60)
        return self.expect("<E>", timeout)

    def poweroff(self):
        self.p.stdin.write(b"poweroff\n")
        self.p.stdin.flush()
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            self.p.kill()
        return self.p.stderr.read().decode()


def redis_bench(prefix, n, pipeline):
    cmd = ["ip", "netns", "exec", prefix + "-c", "redis-benchmark", "-h", GUEST_IP, "-t", "set,get",
           "-n", str(n), "-c", "10", "--csv"]
    if pipeline > 1:
        cmd += ["-P", str(pipeline)]
    out = sh(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900).stdout.decode()
    res = {}
    for line in out.splitlines():
        f = [x.strip('"') for x in line.split(",")]
        if len(f) >= 3 and f[0] in ("SET", "GET"):
            res[f[0]] = (float(f[1]), float(f[3]) if len(f) > 3 else 0.0)  # rps, avg latency (ms)
    if "SET" not in res or "GET" not in res:
        raise RuntimeError("unexpected redis-benchmark output: %r" % out)
    return res


def dd_rates(vm):
    """Sequential write (with fsync) and read of 64 MiB on /data, timed by the
    guest's own clock (/proc/uptime), which tracks real time on both VMs."""
    def timed(cmd):
        out = vm.sh("a=$(cut -d' ' -f1 /proc/uptime); %s; b=$(cut -d' ' -f1 /proc/uptime); echo T $a $b" % cmd, 600)
        m = re.search(r"T ([0-9.]+) ([0-9.]+)", out)
        if not m:
            raise RuntimeError("unexpected output: %r" % out)
        return 64.0 / max(float(m.group(2)) - float(m.group(1)), 0.01)

    w = timed("dd if=/dev/zero of=/data/dd.bin bs=1M count=64 conv=fsync 2>/dev/null")
    vm.sh("sync; echo 3 > /proc/sys/vm/drop_caches")
    r = timed("dd if=/data/dd.bin of=/dev/null bs=1M 2>/dev/null")
    return w, r


def vm_command(kind, g, prefix, disk, append, sub=("run",)):
    """The command line of the lab's VM in host namespace PREFIX-h1: `ftvm
    SUB...` or QEMU's virt board, same image, data disk, TAP and RNG."""
    ns = ["ip", "netns", "exec", prefix + "-h1"]
    if kind == "ftvm":
        return ns + [FTVM] + list(sub) + ["--bios", g + "/fw_jump.bin", "--kernel", g + "/Image", "--initrd",
                                          g + "/initrd.cpio.gz", "--drive", "file=" + disk, "--net", "tap:tap0",
                                          "--append", append]
    return ns + ["qemu-system-riscv64", "-M", "virt", "-m", "256M", "-nographic", "-monitor", "none",
                 "-bios", g + "/fw_jump.bin", "-kernel", g + "/Image", "-initrd", g + "/initrd.cpio.gz",
                 "-append", append,
                 "-drive", "file=%s,format=raw,if=none,id=d0" % disk, "-device", "virtio-blk-device,drive=d0",
                 "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
                 "-device", "virtio-net-device,netdev=n0,mac=52:54:00:12:34:56",
                 "-object", "rng-random,id=r0,filename=/dev/urandom", "-device", "virtio-rng-device,rng=r0"]


def measure(kind, g, prefix, n, record_log):
    disk = tempfile.mktemp(prefix="ftvm-bench-", suffix=".img")
    sh(["truncate", "-s", "256M", disk])
    sub = ["record", "--log", record_log] if record_log else ["run"]
    cmd = vm_command(kind, g, prefix, disk, APPEND, sub)
    t0 = time.monotonic()
    vm = Console(cmd)
    try:
        vm.expect("ftvm-guest: redis ready", 300)
        vm.expect("ftvm-guest: ready", 120)
        ready = time.monotonic() - t0
        res = {"ready_s": ready}
        tr = time.monotonic()
        res["plain"] = redis_bench(prefix, n, 1)
        res["p16"] = redis_bench(prefix, n * 4, 16)
        res["redis_s"] = time.monotonic() - tr
        res["log_after_redis"] = os.path.getsize(record_log) if record_log else 0
        td = time.monotonic()
        res["dd"] = dd_rates(vm)
        res["dd_s"] = time.monotonic() - td
        res["log_after_dd"] = os.path.getsize(record_log) if record_log else 0
    finally:
        vm.poweroff()
        os.unlink(disk)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--record", action="store_true", help="run ftvm under `ftvm record` and report log bandwidth")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/net.py needs root (network namespaces and TAP devices)")
    if not os.environ.get("FTVM_BENCH_NO_BUILD"):  # set to measure an existing binary
        sh(["cargo", "build", "--release", "--quiet", "-p", "ftvm"], cwd=ROOT)
    g = guest_dir()
    prefix = "fb%d" % (os.getpid() % 10000)
    results = {}
    log = tempfile.mktemp(prefix="ftvm-bench-", suffix=".log") if args.record else None
    for kind in ("ftvm", "qemu"):
        sh([NETNS, "up", prefix, "1"], stdout=subprocess.DEVNULL)
        try:
            results[kind] = measure(kind, g, prefix, args.requests, log if kind == "ftvm" else None)
        finally:
            sh([NETNS, "down", prefix, "--kill"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    f, q = results["ftvm"], results["qemu"]
    print("# ftvm disks-and-network benchmarks (%s), same image and netns topology, same run" % time.strftime("%Y-%m-%d"))
    print("boot to redis ready:       ftvm %.2f s   qemu %.2f s" % (f["ready_s"], q["ready_s"]))
    for label, key in (("redis-benchmark -n %d -c 10" % args.requests, "plain"),
                       ("redis-benchmark -n %d -c 10 -P 16" % (args.requests * 4), "p16")):
        for op in ("SET", "GET"):
            fr, qr = f[key][op][0], q[key][op][0]
            print("%-38s %s: ftvm %8.0f ops/s  qemu %8.0f ops/s  ratio %.2f" % (label, op, fr, qr, fr / qr))
    print("dd write 64 MiB (conv=fsync): ftvm %.1f MB/s  qemu %.1f MB/s  ratio %.2f" %
          (f["dd"][0], q["dd"][0], f["dd"][0] / q["dd"][0]))
    print("dd read 64 MiB:               ftvm %.1f MB/s  qemu %.1f MB/s  ratio %.2f" %
          (f["dd"][1], q["dd"][1], f["dd"][1] / q["dd"][1]))
    if log:
        redis_bytes = f["log_after_redis"]
        dd_bytes = f["log_after_dd"] - f["log_after_redis"]
        print("log bandwidth while recording: redis-benchmark %.0f kB/s, dd %.0f kB/s (total log %d bytes)" %
              (redis_bytes / f["redis_s"] / 1000, dd_bytes / f["dd_s"] / 1000, os.path.getsize(log)))
        r = subprocess.run([FTVM, "replay", "--log", log, "--console", "null", "--stats"], stderr=subprocess.PIPE)
        print("replay of that recording: exit %d: %s" % (r.returncode, r.stderr.decode().strip().splitlines()[-1]))
        os.unlink(log)


if __name__ == "__main__":
    main()
