#!/usr/bin/env python3
"""ftvm benchmarks for the machine and its CPU engines.

Prints, side by side in one run, for ftvm with the interpreter (--cpu
interp), ftvm with the translator (--cpu jit) and qemu-system-riscv64 -M virt
(TCG) on the same images:
  * cpubench (bench/cpu), a CPU-bound bare-metal program, long enough
    (ROUNDS=1500, ~3.3 G instructions) that QEMU's start-up (measured with a
    1-round build) is a few percent of its time: ftvm MIPS, wall times;
  * MIPS over the first 50 M instructions of the Linux boot;
  * time from start to the guest's shell being ready ("ftvm-guest: ready");
  * in-guest work with ftvm.run=: 16 MiB of /dev/urandom in tmpfs, then
    sha256sum of it 4 times, md5sum 10 times: the host's wall time between
    two console markers printed around the work;
  * replay speed: the md5sum session recorded with the interpreter, replayed
    with each engine (every digest verified).

Usage: bench/run.py [--runs N] [--only NAME,...]   (needs the guest image:
guest/build.sh, or FTVM_GUEST_DIR). Wrap in `flock /tmp/ftvm-bench.lock` on a
shared machine.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = b"ftvm-guest: ready"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def guest_dir():
    d = os.environ.get("FTVM_GUEST_DIR")
    if d:
        return d
    out = sh([os.path.join(ROOT, "guest/build.sh")], stdout=subprocess.PIPE).stdout
    return out.decode().strip().splitlines()[-1]


def time_to_marker(cmd, timeout=120):
    """Starts cmd, returns seconds until MARKER appears on its stdout."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    buf = b""
    try:
        os.set_blocking(p.stdout.fileno(), False)
        while time.monotonic() - start < timeout:
            chunk = p.stdout.read(65536)
            if chunk:
                buf += chunk
                if MARKER in buf:
                    return time.monotonic() - start
            elif p.poll() is not None:
                break
            else:
                time.sleep(0.002)
        raise RuntimeError("no ready marker from %s; output tail: %r" % (cmd[0], buf[-500:]))
    finally:
        p.kill()
        p.wait()


ENGINES = ("interp", "jit")


def console_marker_times(cmd, markers=(b"FTVM-T0", b"FTVM-T1"), timeout=600):
    """Runs cmd to its end; returns (seconds between the two markers on its
    stdout, whole output)."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    buf = b""
    seen = {}
    os.set_blocking(p.stdout.fileno(), False)
    try:
        while time.monotonic() - start < timeout:
            chunk = p.stdout.read(65536)
            if chunk:
                buf += chunk
                for m in markers:
                    if m not in seen and (m + b"\r\n" in buf or m + b"\n" in buf):
                        seen[m] = time.monotonic()
            elif p.poll() is not None:
                break
            else:
                time.sleep(0.002)
        else:
            raise RuntimeError("timeout running %s" % cmd[0])
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
    if len(seen) != len(markers):
        raise RuntimeError("markers missing from %s; output tail: %r" % (cmd[0], buf[-800:]))
    return seen[markers[1]] - seen[markers[0]], buf


def workload(cmd):
    # The markers are printed by the guest with `echo`: the host sees them
    # when they reach the console.
    return ('console=ttyS0 ftvm.run="dd if=/dev/urandom of=/tmp/r bs=1M count=16 2>/dev/null; '
            'echo FTVM-T0; %s; echo FTVM-T1"' % cmd)


WORKLOADS = {
    "sha256sum": "for i in 1 2 3 4; do sha256sum /tmp/r; done",
    "md5sum": "for i in 1 2 3 4 5 6 7 8 9 10; do md5sum /tmp/r; done",
}


def med(v):
    return statistics.median(v)


def runs_str(v):
    return ", ".join("%.3f" % x for x in v)


def load():
    return open("/proc/loadavg").read().split()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="cpubench,boot,shell,work,replay")
    args = ap.parse_args()
    only = set(args.only.split(","))
    ftvm = os.path.join(ROOT, "target/release/ftvm")
    if not os.environ.get("FTVM_BENCH_NO_BUILD"):  # set to measure an existing binary
        sh(["cargo", "build", "--release", "--quiet", "-p", "ftvm"], cwd=ROOT)
    g = guest_dir()
    tmp = os.path.join(ROOT, "target/bench")
    image = ["--bios", g + "/fw_jump.bin", "--kernel", g + "/Image", "--initrd", g + "/initrd.cpio.gz"]
    qemu_image = ["qemu-system-riscv64", "-M", "virt", "-m", "256M", "-nographic", "-bios",
                  g + "/fw_jump.bin", "-kernel", g + "/Image", "-initrd", g + "/initrd.cpio.gz"]

    print("# ftvm machine benchmarks (%s, %d runs each, median; load average at start %s)"
          % (time.strftime("%Y-%m-%d %H:%M"), args.runs, load()))

    if "cpubench" in only:
        def build(rounds):
            env = dict(os.environ, ROUNDS=str(rounds))
            return sh([os.path.join(ROOT, "bench/cpu/build.sh"), tmp], stdout=subprocess.PIPE,
                      stderr=subprocess.DEVNULL, env=env).stdout.decode().strip()
        elf, elf1 = build(1500), build(1)
        qemu_cmd = lambda e: ["qemu-system-riscv64", "-M", "virt", "-m", "64M", "-bios", "none",
                              "-kernel", e, "-nographic", "-monitor", "none", "-serial", "null"]
        res = {e: ([], []) for e in ENGINES}
        qemu_s, qemu1_s = [], []
        steps = 0
        for _ in range(args.runs):
            for e in ENGINES:
                t = time.monotonic()
                r = subprocess.run([ftvm, "run", "--cpu", e, "--bios", "none", "--kernel", elf,
                                    "--no-input", "--stats", "--memory", "64M"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                res[e][0].append(time.monotonic() - t)
                if r.returncode != 0:
                    sys.exit("cpubench failed its self-check on ftvm --cpu %s (exit %d)" % (e, r.returncode))
                res[e][1].append(float(re.search(rb"\(([0-9.]+) MIPS\)", r.stderr).group(1)))
                steps = int(re.search(rb"ftvm: (\d+) steps", r.stderr).group(1))
            t = time.monotonic()
            sh(qemu_cmd(elf), stdin=subprocess.DEVNULL)
            qemu_s.append(time.monotonic() - t)
            t = time.monotonic()
            sh(qemu_cmd(elf1), stdin=subprocess.DEVNULL)
            qemu1_s.append(time.monotonic() - t)
        print("cpubench (bare metal, 1500 rounds, %d instructions):" % steps)
        for e in ENGINES:
            print("  ftvm --cpu %-6s %.3f s  %.1f MIPS   (runs: %s)"
                  % (e, med(res[e][0]), med(res[e][1]), runs_str(res[e][0])))
        q = med(qemu_s)
        print("  qemu              %.3f s  (%.0f MIPS equivalent; start-up, 1-round build: %.3f s = %.1f %%)"
              % (q, steps / q / 1e6, med(qemu1_s), 100 * med(qemu1_s) / q))
        for e in ENGINES:
            print("  ftvm %s / qemu time ratio %.2f" % (e, med(res[e][0]) / q))

    if "boot" in only:
        for e in ENGINES:
            boot_mips = []
            for _ in range(args.runs):
                r = subprocess.run([ftvm, "run", "--cpu", e] + image +
                                   ["--no-input", "--stats", "--console", "null", "--max-steps", "50000000"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
                boot_mips.append(float(re.search(rb"\(([0-9.]+) MIPS\)", r.stderr).group(1)))
            print("linux boot, first 50M instructions: ftvm --cpu %s %.1f MIPS" % (e, med(boot_mips)))

    if "shell" in only:
        times = {e: [] for e in ENGINES + ("qemu",)}
        for _ in range(args.runs):
            for e in ENGINES:
                times[e].append(time_to_marker([ftvm, "run", "--cpu", e] + image + ["--memory", "256M"]))
            times["qemu"].append(time_to_marker(qemu_image + ["-append", "console=ttyS0"]))
        print("boot to shell ready (256 MiB):")
        for e, v in times.items():
            print("  %-11s %.3f s   (runs: %s)" % (e, med(v), runs_str(v)))
        for e in ENGINES:
            print("  ftvm %s / qemu ratio %.2f" % (e, med(times[e]) / med(times["qemu"])))

    if "work" in only:
        for name, cmd in WORKLOADS.items():
            times = {e: [] for e in ENGINES + ("qemu",)}
            outs = {}
            for _ in range(args.runs):
                for e in ENGINES:
                    t, out = console_marker_times([ftvm, "run", "--cpu", e, "--no-input", "--memory", "256M"]
                                                  + image + ["--append", workload(cmd)])
                    times[e].append(t)
                    outs[e] = out
                t, out = console_marker_times(qemu_image + ["-append", workload(cmd)])
                times["qemu"].append(t)
            print("in guest: %s of 16 MiB from /dev/urandom in tmpfs, between console markers (load %s):"
                  % (cmd, load()))
            for e, v in times.items():
                print("  %-11s %.3f s   (runs: %s)" % (e, med(v), runs_str(v)))
            for e in ENGINES:
                print("  ftvm %s / qemu time ratio %.2f" % (e, med(times[e]) / med(times["qemu"])))

    if "replay" in only:
        log = os.path.join(tmp, "bench-md5.log")
        os.makedirs(tmp, exist_ok=True)
        sh([ftvm, "record", "--cpu", "interp", "--log", log, "--no-input", "--console", "null",
            "--memory", "256M"] + image + ["--append", workload(WORKLOADS["md5sum"])],
           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("replay of the md5sum session recorded with --cpu interp (every digest verified):")
        for e in ENGINES:
            mips = []
            for _ in range(args.runs):
                r = subprocess.run([ftvm, "replay", "--cpu", e, "--log", log, "--console", "null", "--stats"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                if r.returncode != 0:
                    sys.exit("replay with --cpu %s failed (exit %d): %s" % (e, r.returncode, r.stderr[-500:]))
                m = re.search(rb"replayed (\d+) steps in ([0-9.]+) s \(([0-9.]+) MIPS\): (\d+) inputs, (\d+) digests",
                              r.stderr)
                mips.append(float(m.group(3)))
            print("  ftvm replay --cpu %-6s %.1f MIPS  (%s steps, %s digests verified; runs: %s)"
                  % (e, med(mips), m.group(1).decode(), m.group(5).decode(), ", ".join("%.1f" % x for x in mips)))
    print("# load average at end %s" % load())


if __name__ == "__main__":
    main()
