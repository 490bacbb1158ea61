#!/usr/bin/env bash
# Programs that keep running code a tier-up retired, in every JIT tier and auto: medians of
# ROUNDS rounds (default 7), commands interleaved round by round. Usage: run.sh JITVM...
# (several binaries are compared side by side). Prints a Markdown table.
set -euo pipefail
here=$(dirname "$0")
rounds=${ROUNDS:-7}
out=$(mktemp)
for _ in $(seq "$rounds"); do
  for p in hold mainloop search; do
    for bin in "$@"; do
      for tier in baseline opt auto; do
        t=$( { /usr/bin/time -f %e "$bin" run --tier "$tier" "$here/$p.bc" >/dev/null; } 2>&1 | tail -1)
        echo "$p $bin $tier $t" >>"$out"
      done
    done
  done
done
python3 - "$out" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    p, b, m, t = line.split()
    d[(p, b, m)].append(float(t))
print("| program | binary | baseline | opt | auto | auto / best forced tier |")
print("|---|---|---:|---:|---:|---:|")
for p, b in dict.fromkeys((p, b) for p, b, _ in d):
    med = {m: statistics.median(d[(p, b, m)]) for m in ("baseline", "opt", "auto")}
    best = min(med["baseline"], med["opt"])
    print(f"| {p} | {b} | {med['baseline']:.2f} s | {med['opt']:.2f} s | {med['auto']:.2f} s | {med['auto'] / best:.2f}x |")
PY
rm -f "$out"
