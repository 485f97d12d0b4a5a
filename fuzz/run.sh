#!/usr/bin/env bash
# Runs every fuzz target for RUNS inputs (default 1e6), one after the other, with pupil's
# memory bounds: no allocation over 1 GiB, at most 2 GiB resident. Prints each target's
# libFuzzer summary; a crash stops the script and leaves its input in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
runs="${1:-1000000}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for t in coco_instances coco_results voc_xml image checkpoint toml_config; do
  mkdir -p "corpus/$t"
  echo "== $t"
  cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -runs="$runs" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=20 -max_len=65536 \
    -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done|==[0-9]+==ERROR|SUMMARY)" || true
done
