#!/usr/bin/env bash
# `recover report` of a 100k-event journal (issue 20: the report is linear in the journal's
# size; goal under 2 s): two shapes, 10k gate steps of 8 probes and 1000 of 97, three times each,
# with the release build. Prints the wall time and peak RSS of each.
#
#   benches/report_big.sh        # from anywhere in the repository; about a minute with the build
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin=${CARGO_TARGET_DIR:-target}/release/recover
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
for shape in "10000 8" "1000 97"; do
  set -- $shape
  n=$(python3 benches/big_journal.py "$1" "$2" "$w/j.jsonl")
  for _ in 1 2 3; do
    /usr/bin/time -f "$n events ($1 steps x $2 probes): %e s, peak RSS %M KB" \
      "$bin" report "$w/j.jsonl" --format html -o "$w/j.html"
  done
done
