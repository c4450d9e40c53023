#!/usr/bin/env python3
"""redis's own test suite against the redis in the guest, on ftvm and QEMU.

Both VMs boot the same guest image in the same network-namespace topology
(scripts/netns.sh), with a fresh data disk and the guest's redis started
with `ftvm.redis.args="--enable-debug-command yes"` (the suite needs DEBUG).
From the client namespace, the redis 7.0.15 Tcl suite (Debian's source
package, fetched once with `apt-get source redis` into
~/.cache/ftvm/redis-src) runs in external-server mode, one test unit per
`tclsh tests/test_helper.tcl --host GUEST --port 6379 --single UNIT` so
that one unit's exception does not end the run. Both VMs are up at once
(each in its own lab) and every unit runs on one, then the other, so a run
cut short still compares the units it reached (--report is rewritten after
every unit). Tests tagged external:skip
are skipped by the suite itself in that mode.

Prints, per unit and in total, the ok / err / exception / skipped (skip and
ignore) counts and the wall time on each VM, then every test that failed on
ftvm but not on QEMU: those are emulator bugs or missing guest features
(or timing tests that need a faster CPU). It takes long (tens of minutes
per VM for the whole suite), so it is not part of ./test.sh.

Needs root (network namespaces, TAP). Usage:
  bench/redis-suite.py [--units unit/type/string,unit/expire] [--vms ftvm,qemu]
                       [--unit-timeout S] [--report FILE.json]
"""
import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from net import APPEND, GUEST_IP, NETNS, ROOT, Console, guest_dir, sh, vm_command  # noqa: E402

REDIS_VERSION = "7.0.15"
SRC_CACHE = os.path.join(os.environ.get("FTVM_CACHE_DIR", os.path.expanduser("~/.cache/ftvm")), "redis-src")
SUITE_APPEND = APPEND + ' ftvm.redis.args="--enable-debug-command yes"'
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STATUS = re.compile(r"^\[(ok|err|exception|skip|ignore)\]: (.*?)(?: \(\d+ ms\))?$")


def redis_source():
    """The redis source tree of Debian's package, fetched once."""
    tree = os.path.join(SRC_CACHE, "redis-" + REDIS_VERSION)
    if not os.path.isfile(os.path.join(tree, "tests", "test_helper.tcl")):
        os.makedirs(SRC_CACHE, exist_ok=True)
        print("[suite] fetching the redis source (apt-get source redis) into %s" % SRC_CACHE, file=sys.stderr)
        # guest/build.sh adds the deb-src entry the first time it runs.
        sh(["apt-get", "source", "-qq", "redis"], cwd=SRC_CACHE, stdout=subprocess.DEVNULL)
        found = glob.glob(os.path.join(SRC_CACHE, "redis-*", "tests", "test_helper.tcl"))
        if not found:
            sys.exit("redis-suite: no redis source tree under %s after apt-get source" % SRC_CACHE)
        tree = os.path.dirname(os.path.dirname(found[0]))
    # A few tests run the command-line tools from src/; the host's redis-tools
    # are the same version.
    for prog in ("redis-cli", "redis-benchmark", "redis-server", "redis-check-aof"):
        dst = os.path.join(tree, "src", prog)
        src = shutil.which(prog)
        if src and not os.path.exists(dst):
            os.symlink(src, dst)
    return tree


def all_units(tree):
    """The suite's own list of test units (test_helper.tcl's ::all_tests)."""
    text = open(os.path.join(tree, "tests", "test_helper.tcl")).read()
    m = re.search(r"set ::all_tests \{(.*?)\}", text, re.S)
    if not m:
        sys.exit("redis-suite: cannot find ::all_tests in test_helper.tcl")
    return m.group(1).split()


def run_unit(tree, prefix, unit, timeout):
    cmd = ["ip", "netns", "exec", prefix + "-c", "tclsh", "tests/test_helper.tcl", "--host", GUEST_IP,
           "--port", "6379", "--single", unit, "--timeout", str(timeout), "--clients", "1"]
    t0 = time.monotonic()
    counts = {"ok": 0, "err": 0, "exception": 0, "skip": 0, "ignore": 0}
    failed = []
    # Its own process group: the suite starts a test client of its own, and
    # a timeout or Ctrl-C must stop both.
    p = subprocess.Popen(cmd, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        raw, _ = p.communicate(timeout=timeout + 120)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        raw, _ = p.communicate()
        timed_out = True
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    out = raw.decode(errors="replace")
    for line in out.splitlines():
        m = STATUS.match(ANSI.sub("", line).strip())
        if m:
            counts[m.group(1)] += 1
            if m.group(1) in ("err", "exception"):
                failed.append(m.group(2))
    if timed_out or "[TIMEOUT]" in ANSI.sub("", out):
        counts["exception"] += 1
        failed.append("%s: the unit timed out" % unit)
    return {"counts": counts, "failed": failed, "seconds": time.monotonic() - t0,
            "tail": ANSI.sub("", out)[-3000:] if failed else ""}


def boot(kind, g, prefix, disk):
    cmd = vm_command(kind, g, prefix, disk, SUITE_APPEND)
    vm = Console(cmd)
    vm.expect("ftvm-guest: redis ready", 300)
    vm.expect("ftvm-guest: ready", 120)
    return vm


class Lab:
    """One VM in its own network-namespace lab, with a fresh data disk."""

    def __init__(self, kind, g, index):
        self.kind = kind
        self.prefix = "rs%d%d" % (os.getpid() % 1000, index)
        self.disk = tempfile.mktemp(prefix="ftvm-suite-", suffix=".img")
        self.vm = None
        sh(["truncate", "-s", "512M", self.disk])
        sh([NETNS, "up", self.prefix, "1"], stdout=subprocess.DEVNULL)
        self.vm = boot(kind, g, self.prefix, self.disk)

    def close(self):
        if self.vm is not None:
            self.vm.poweroff()
        sh([NETNS, "down", self.prefix, "--kill"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.path.exists(self.disk):
            os.unlink(self.disk)


def run_all(vms, g, tree, units, timeout, report):
    """Both VMs up at once, each unit run on one and then the other, so a
    run cut short still has paired figures for the units it reached."""
    results = {kind: {"units": {}, "seconds": 0.0} for kind in vms}
    labs = []
    try:
        for i, kind in enumerate(vms):
            labs.append(Lab(kind, g, i))
        for n, unit in enumerate(units):
            for lab in labs:
                r = run_unit(tree, lab.prefix, unit, timeout)
                res = results[lab.kind]
                res["units"][unit] = r
                res["seconds"] += r["seconds"]
                c = r["counts"]
                print("[suite] %-5s %3d/%d %-34s ok %3d err %2d exc %d skip %3d  %6.1f s" %
                      (lab.kind, n + 1, len(units), unit, c["ok"], c["err"], c["exception"],
                       c["skip"] + c["ignore"], r["seconds"]), file=sys.stderr, flush=True)
                if lab.vm.p.poll() is not None:
                    raise RuntimeError("%s exited during %s" % (lab.kind, unit))
            if report:
                with open(report, "w") as f:
                    json.dump(results, f, indent=1)
    finally:
        for lab in labs:
            lab.close()
    return results


def totals(res):
    t = {"ok": 0, "err": 0, "exception": 0, "skipped": 0}
    for r in res["units"].values():
        c = r["counts"]
        t["ok"] += c["ok"]
        t["err"] += c["err"]
        t["exception"] += c["exception"]
        t["skipped"] += c["skip"] + c["ignore"]
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--units", help="comma-separated test units (default: the whole suite)")
    ap.add_argument("--vms", default="ftvm,qemu", help="which VMs, in order (default: ftvm,qemu)")
    ap.add_argument("--unit-timeout", type=int, default=900, help="seconds one unit may take (default 900)")
    ap.add_argument("--report", help="also write the full results as JSON here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/redis-suite.py needs root (network namespaces and TAP devices)")
    if not shutil.which("tclsh"):
        sh(["apt-get", "install", "-y", "-qq", "tcl"], stdout=subprocess.DEVNULL)
    if not os.environ.get("FTVM_BENCH_NO_BUILD"):
        sh(["cargo", "build", "--release", "--quiet", "-p", "ftvm"], cwd=ROOT)
    g = guest_dir()
    tree = redis_source()
    units = args.units.split(",") if args.units else all_units(tree)
    vms = args.vms.split(",")
    for kind in vms:
        if kind not in ("ftvm", "qemu"):
            sys.exit("redis-suite: unknown VM %r (ftvm or qemu)" % kind)
    results = run_all(vms, g, tree, units, args.unit_timeout, args.report)
    print("# redis %s test suite against the guest's redis (%s), %d units, same image and topology" %
          (REDIS_VERSION, time.strftime("%Y-%m-%d %H:%M"), len(units)))
    print("%-6s %6s %5s %10s %8s %9s" % ("vm", "ok", "err", "exception", "skipped", "wall s"))
    for kind in vms:
        t = totals(results[kind])
        print("%-6s %6d %5d %10d %8d %9.0f" % (kind, t["ok"], t["err"], t["exception"], t["skipped"],
                                               results[kind]["seconds"]))
    if "ftvm" in results:
        theirs = set()
        for r in results.get("qemu", {"units": {}})["units"].values():
            theirs.update(r["failed"])
        only = [(u, f) for u, r in results["ftvm"]["units"].items() for f in r["failed"] if f not in theirs]
        label = "failed on ftvm but not on qemu" if "qemu" in results else "failed on ftvm"
        print("%s: %d" % (label, len(only)))
        for u, f in only:
            print("  %s: %s" % (u, f))


if __name__ == "__main__":
    main()
