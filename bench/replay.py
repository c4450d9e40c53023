#!/usr/bin/env python3
"""ftvm record/replay benchmarks.

Prints, side by side in one run:
  * recording overhead: the same CPU-bound guest work under `ftvm run` and
    `ftvm record` (bare-metal cpubench, and an md5sum loop inside Linux);
  * replay speed (MIPS, and wall time versus the recording);
  * log bandwidth in bytes per second of recording for an idle guest, the
    boot, and (when the guest image has them and the host can make network
    namespaces) a redis-benchmark run and a disk-heavy dd.

Usage: bench/replay.py [--runs N]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FTVM = os.path.join(ROOT, "target/release/ftvm")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def guest_dir():
    d = os.environ.get("FTVM_GUEST_DIR")
    if d:
        return d
    out = sh([os.path.join(ROOT, "guest/build.sh")], stdout=subprocess.PIPE).stdout
    return out.decode().strip().splitlines()[-1]


def timed(cmd):
    t = time.monotonic()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.monotonic() - t
    if r.returncode != 0:
        sys.exit("command failed (%d): %s\n%s" % (r.returncode, " ".join(cmd), r.stderr.decode()[-2000:]))
    return dt, r.stderr.decode()


def steps_of(stderr):
    m = re.search(r"(\d+) steps", stderr)
    return int(m.group(1)) if m else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not os.environ.get("FTVM_BENCH_NO_BUILD"):  # set to measure an existing binary
        sh(["cargo", "build", "--release", "--quiet", "-p", "ftvm"], cwd=ROOT)
    g = guest_dir()
    img = ["--bios", g + "/fw_jump.bin", "--kernel", g + "/Image", "--initrd", g + "/initrd.cpio.gz"]
    tmp = tempfile.mkdtemp(prefix="ftvm-bench-")
    elf = sh([os.path.join(ROOT, "bench/cpu/build.sh"), tmp], stdout=subprocess.PIPE,
             stderr=subprocess.DEVNULL).stdout.decode().strip()
    log = os.path.join(tmp, "b.log")
    print("# ftvm record/replay benchmarks (%s, %d runs each, median)" % (time.strftime("%Y-%m-%d"), args.runs))

    # 1. Overhead on CPU-bound work, run vs record, interleaved.
    workloads = [
        ("cpubench (bare metal)", ["--bios", "none", "--kernel", elf, "--memory", "64M"]),
        ("md5sum of 48 MiB in a Linux guest", img + [
            "--append", 'console=ttyS0 quiet ftvm.run="dd if=/dev/zero bs=1M count=48 2>/dev/null | md5sum"']),
    ]
    for name, wl in workloads:
        run_t, rec_t, rep_t, rep_mips, sizes = [], [], [], [], []
        for _ in range(args.runs):
            dt, err = timed([FTVM, "run", "--no-input", "--console", "null", "--stats"] + wl)
            run_t.append(dt)
            steps = steps_of(err)
            dt, err = timed([FTVM, "record", "--log", log, "--no-input", "--console", "null"] + wl)
            rec_t.append(dt)
            sizes.append(os.path.getsize(log))
            dt, err = timed([FTVM, "replay", "--log", log, "--console", "null", "--stats"])
            rep_t.append(dt)
            rep_mips.append(float(re.search(r"\(([0-9.]+) MIPS\)", err).group(1)))
        r, c, p = statistics.median(run_t), statistics.median(rec_t), statistics.median(rep_t)
        print("%s, %d steps:" % (name, steps))
        print("  run     %.3f s" % r)
        print("  record  %.3f s   overhead %+.1f %%   log %d bytes (%.0f B/s)" %
              (c, (c / r - 1) * 100, statistics.median(sizes), statistics.median(sizes) / c))
        print("  replay  %.3f s   %.1f MIPS   (%.2fx the recording's wall time)" %
              (p, statistics.median(rep_mips), p / c))

    # 2. Log bandwidth of an idle guest and of the boot.
    for name, append in [
        ("boot to poweroff", 'console=ttyS0 ftvm.run=true'),
        ("idle guest, 10 s", 'console=ttyS0 ftvm.run="sleep 10"'),
    ]:
        dt, err = timed([FTVM, "record", "--log", log, "--no-input", "--console", "null"] + img + ["--append", append])
        size = os.path.getsize(log)
        print("log bandwidth, %s: %d bytes in %.2f s = %.0f B/s" % (name, size, dt, size / dt))

    # 3. redis-benchmark and dd, when the guest and host allow (bench/net.py does this side by side with QEMU).
    print("log bandwidth for redis and dd: see bench/net.py --record")


if __name__ == "__main__":
    main()
