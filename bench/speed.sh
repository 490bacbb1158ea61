#!/usr/bin/env bash
# The README's speed table: each benchmark of ../shared/bench in every jitvm tier and in the
# peers (gcc -O2, luajit, lua5.4; a peer not installed is left out), all of a benchmark's
# commands in one `hyperfine -N --warmup 1 --runs RUNS` (default 10), medians of whole
# processes. Usage: bench/speed.sh [JITVM] [BENCH...]   (default target/release/jitvm, fib loop sieve)
# Prints one Markdown row per benchmark. Needs hyperfine (apt-get install hyperfine).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shared=$here/../../shared/bench
jitvm=${1:-target/release/jitvm}
shift || true
benches=("$@"); [ ${#benches[@]} -gt 0 ] || benches=(fib loop sieve)
runs=${RUNS:-10}
tiers=(interp baseline opt auto)
scratch=$(mktemp -d)
echo "| benchmark | interp | baseline | opt | auto | gcc -O2 | luajit | lua5.4 | auto / best forced tier |"
echo "|---|---|---|---|---|---|---|---|---|"
for b in "${benches[@]}"; do
  names=() cmds=()
  for t in "${tiers[@]}"; do names+=("$t"); cmds+=("$jitvm run --tier $t $shared/$b.bc"); done
  gcc -O2 -o "$scratch/$b" "$shared/peers/$b.c" && { names+=(gcc); cmds+=("$scratch/$b"); }
  for lua in luajit lua5.4; do
    command -v $lua >/dev/null && { names+=($lua); cmds+=("$lua $shared/peers/$b.lua"); }
  done
  hyperfine -N --warmup 1 --runs "$runs" --style none --export-json "$scratch/$b.json" \
    "${cmds[@]}" >/dev/null
  python3 - "$b" "$scratch/$b.json" "${names[@]}" <<'PY'
import json, statistics, sys
bench, path, names = sys.argv[1], sys.argv[2], sys.argv[3:]
med = {n: statistics.median(r["times"]) for n, r in zip(names, json.load(open(path))["results"])}
cell = lambda n: f"{med[n]:.3f} s" if n in med else "-"
ratio = med["auto"] / min(med["baseline"], med["opt"])
cols = ["interp", "baseline", "opt", "auto", "gcc", "luajit", "lua5.4"]
print(f"| {bench} | " + " | ".join(cell(n) for n in cols) + f" | {ratio:.2f}x |")
PY
done
