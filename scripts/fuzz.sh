#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ (libFuzzer through libfuzzer-sys, with
# SanitizerCoverage instrumentation; the stable toolchain is enough) and runs
# each for a while over its checked-in corpus. New inputs go to a scratch
# corpus (the checkout is not touched unless --merge); a crash, a leak of
# time (-timeout) or memory (-rss_limit_mb) fails the run, and the input
# is kept in fuzz/artifacts/TARGET/ to be fixed and added to
# fuzz/regressions/TARGET/, which every run replays first.
#
# Usage: scripts/fuzz.sh [--seconds N] [--jobs J] [--merge] [--seeds] [--report FILE] [TARGET...]
#   --seconds N   fuzzing time per target (default 5: the short run of ./test.sh)
#   --jobs J      targets run at once (default 1)
#   --merge       minimise the new inputs into fuzz/corpus/TARGET/ afterwards
#   --seeds       rewrite the seed corpus from src/bin/seeds.rs and exit
#   --report F    append one line per target (executions, exec/s, corpus, result)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=5 jobs=1 merge=0 seeds=0 report="" targets=()
while (($#)); do
    case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --merge) merge=1; shift ;;
    --seeds) seeds=1; shift ;;
    --report) report=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d;s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
all=(ft_wire log arbiter_wire nbd_server nbd_client virtio loader snapshot)
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
    [[ " ${all[*]} " == *" $t "* ]] || { echo "fuzz.sh: no target $t (have: ${all[*]})" >&2; exit 2; }
done

host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR="$root/fuzz/target"
if ((seeds)); then
    # The seed writer is an ordinary program: no instrumentation.
    cargo build --manifest-path fuzz/Cargo.toml --release --quiet --bin seeds
    rm -rf fuzz/corpus
    "$CARGO_TARGET_DIR/release/seeds" fuzz/corpus
    find fuzz/corpus -type f | sort | sed 's/^/[fuzz] seed /' >&2
    exit 0
fi
# What cargo-fuzz passes, minus a sanitizer (that would need nightly):
# edge coverage with 8-bit counters and PC tables, comparison tracing,
# debug assertions and overflow checks, and cfg(fuzzing), under which the
# decoders skip checksums so that mutations reach the code behind them.
# With --target, the flags stay off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
echo "[fuzz] building ${targets[*]} ($host, release, instrumented)" >&2
cargo build --manifest-path fuzz/Cargo.toml --release --target "$host" --quiet \
    $(printf -- '--bin %s ' "${targets[@]}")
bin="$CARGO_TARGET_DIR/$host/release"

# In memory where possible: the nbd_server target's arbiter fsyncs its state.
tmp=${TMPDIR:-/tmp}
[ -d /dev/shm ] && [ -w /dev/shm ] && tmp=/dev/shm
scratch=$(mktemp -d "$tmp/ftvm-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# The targets' own scratch files (the nbd_server exports) go there too.
export TMPDIR="$scratch"

run_one() {
    local t=$1 out="$scratch/$1.log" work="$scratch/$1.corpus"
    mkdir -p "$work" "fuzz/artifacts/$t"
    local regs=()
    if [ -d "fuzz/regressions/$t" ]; then
        mapfile -t regs < <(find "fuzz/regressions/$t" -type f | sort)
    fi
    if ((${#regs[@]})) && ! "$bin/$t" "${regs[@]}" >"$out.reg" 2>&1; then
        echo "[fuzz] $t: a regression input fails again:" >&2
        tail -20 "$out.reg" >&2
        return 1
    fi
    local rc=0
    "$bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
        "$work" "fuzz/corpus/$t" >"$out" 2>&1 || rc=$?
    local execs eps units
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out" | tail -1)
    units=$(find "$work" "fuzz/corpus/$t" -type f | wc -l)
    local result=ok
    ((rc == 0)) || result="FAILED (exit $rc)"
    local line
    line=$(printf '%-13s %6ss %12s execs %8s/s  corpus %5s  regressions %3s  %s' \
        "$t" "$seconds" "${execs:-?}" "${eps:-?}" "$units" "${#regs[@]}" "$result")
    echo "[fuzz] $line" >&2
    [ -z "$report" ] || echo "$line" >>"$report"
    if ((rc != 0)); then
        grep -E "panicked|ERROR: libFuzzer|SUMMARY|Test unit written|deadly signal|timeout" "$out" | head -20 >&2
        return 1
    fi
    if ((merge)); then
        local m="$scratch/$t.merged"
        mkdir -p "$m"
        "$bin/$t" -merge=1 "$m" "fuzz/corpus/$t" "$work" >/dev/null 2>&1
        rm -rf "fuzz/corpus/$t" && mv "$m" "fuzz/corpus/$t"
    fi
}

failed=0 running=0 pids=()
for t in "${targets[@]}"; do
    run_one "$t" &
    pids+=($!)
    running=$((running + 1))
    if ((running >= jobs)); then
        wait -n || failed=1
        running=$((running - 1))
    fi
done
while ((running > 0)); do
    wait -n || failed=1
    running=$((running - 1))
done
if ((failed)); then
    echo "[fuzz] a target failed; its input is in fuzz/artifacts/" >&2
    exit 1
fi
