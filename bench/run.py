#!/usr/bin/env python3
"""ftvm benchmarks for the machine (issue: boot Linux to a shell).

Prints, side by side in one run:
  * guest MIPS of ftvm on a CPU-bound bare-metal program (bench/cpu), and the
    wall time of the same program on qemu-system-riscv64 -M virt (TCG);
  * ftvm's MIPS over the Linux boot;
  * time from start to the guest's shell being ready ("ftvm-guest: ready"
    on the console) for ftvm and for QEMU on the same guest image, and the
    ratio.

Usage: bench/run.py [--runs N]   (needs the guest image: guest/build.sh)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    ftvm = os.path.join(ROOT, "target/release/ftvm")
    if not os.environ.get("FTVM_BENCH_NO_BUILD"):  # set to measure an existing binary
        sh(["cargo", "build", "--release", "--quiet", "-p", "ftvm"], cwd=ROOT)
    g = guest_dir()
    tmp = os.path.join(ROOT, "target/bench")
    elf = sh([os.path.join(ROOT, "bench/cpu/build.sh"), tmp], stdout=subprocess.PIPE,
             stderr=subprocess.DEVNULL).stdout.decode().strip()

    print("# ftvm machine benchmarks (%s, %d runs each, median)" % (time.strftime("%Y-%m-%d"), args.runs))
    # 1. CPU-bound bare-metal program.
    mips, ftvm_s, qemu_s = [], [], []
    for _ in range(args.runs):
        t = time.monotonic()
        r = subprocess.run([ftvm, "run", "--bios", "none", "--kernel", elf, "--no-input", "--stats",
                            "--memory", "64M"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ftvm_s.append(time.monotonic() - t)
        if r.returncode != 0:
            sys.exit("cpubench failed its self-check on ftvm (exit %d)" % r.returncode)
        m = re.search(rb"\(([0-9.]+) MIPS\)", r.stderr)
        mips.append(float(m.group(1)))
        t = time.monotonic()
        sh(["qemu-system-riscv64", "-M", "virt", "-m", "64M", "-bios", "none", "-kernel", elf,
            "-nographic", "-monitor", "none", "-serial", "null"], stdin=subprocess.DEVNULL)
        qemu_s.append(time.monotonic() - t)
    steps = int(re.search(rb"ftvm: (\d+) steps", r.stderr).group(1))
    print("cpubench (bare metal, %d instructions):" % steps)
    print("  ftvm  %.3f s  %.1f MIPS" % (statistics.median(ftvm_s), statistics.median(mips)))
    print("  qemu  %.3f s  (%.0f MIPS equivalent)" % (statistics.median(qemu_s), steps / statistics.median(qemu_s) / 1e6))
    print("  ftvm/qemu time ratio %.2f" % (statistics.median(ftvm_s) / statistics.median(qemu_s)))

    # 2. MIPS over the Linux boot (first 150 M instructions: firmware + kernel init).
    boot_mips = []
    for _ in range(args.runs):
        r = subprocess.run([ftvm, "run", "--bios", g + "/fw_jump.bin", "--kernel", g + "/Image", "--initrd",
                            g + "/initrd.cpio.gz", "--no-input", "--stats", "--console", "null",
                            "--max-steps", "50000000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        boot_mips.append(float(re.search(rb"\(([0-9.]+) MIPS\)", r.stderr).group(1)))
    print("linux boot, first 50M instructions: ftvm %.1f MIPS" % statistics.median(boot_mips))

    # 3. Boot to the shell, side by side.
    f_boot, q_boot = [], []
    for _ in range(args.runs):
        f_boot.append(time_to_marker([ftvm, "run", "--bios", g + "/fw_jump.bin", "--kernel", g + "/Image",
                                      "--initrd", g + "/initrd.cpio.gz", "--memory", "256M"]))
        q_boot.append(time_to_marker(["qemu-system-riscv64", "-M", "virt", "-m", "256M", "-nographic",
                                      "-bios", g + "/fw_jump.bin", "-kernel", g + "/Image", "-initrd",
                                      g + "/initrd.cpio.gz", "-append", "console=ttyS0"]))
    fb, qb = statistics.median(f_boot), statistics.median(q_boot)
    print("boot to shell ready (256 MiB):")
    print("  ftvm  %.3f s   (runs: %s)" % (fb, ", ".join("%.3f" % x for x in f_boot)))
    print("  qemu  %.3f s   (runs: %s)" % (qb, ", ".join("%.3f" % x for x in q_boot)))
    print("  ftvm/qemu ratio %.2f" % (fb / qb))


if __name__ == "__main__":
    main()
