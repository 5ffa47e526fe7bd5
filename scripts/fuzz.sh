#!/usr/bin/env bash
# Fuzzes every parser of network input (targets in tests/support/fuzz.rs) for a given
# number of executions each, and reports what each run found.
#
#   scripts/fuzz.sh [EXECS] [TARGET...]      EXECS per target (default 1000000)
#
# With a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`): libFuzzer,
# coverage-guided, with AddressSanitizer; new inputs that reach new code are added to
# tests/fuzz/corpus/<target>/ and the corpus is minimised afterwards (commit it).
# Crashes land in tests/fuzz/artifacts/<target>/. Without nightly: the seeded mutator
# of tests/fuzz.rs, same targets, same properties, no coverage guidance.
# Not part of the test run (which runs the stable mutator for 5,000 inputs per target).
set -euo pipefail
cd "$(dirname "$0")/.."
EXECS=${1:-1000000}
shift || true
ALL=$(sed -n 's/^ *name: "\([a-z_]*\)",$/\1/p' tests/support/fuzz.rs)
TARGETS=${*:-$ALL}
log() { printf '[fuzz %s] %s\n' "$(date +%T)" "$*" >&2; }

if cargo +nightly fuzz --version >/dev/null 2>&1; then
  log "libFuzzer (cargo +nightly fuzz), $EXECS executions per target"
  cargo +nightly fuzz build --fuzz-dir tests/fuzz -O
  # The seeds made in code (valid signed messages, tokens...) start every corpus.
  cargo test -q -p shoal-tests --test fuzz -- --ignored write_seeds >/dev/null
  status=0
  for t in $TARGETS; do
    mkdir -p "tests/fuzz/corpus/$t" "tests/fuzz/artifacts/$t"
    before=$(find "tests/fuzz/corpus/$t" -type f | wc -l)
    log "$t: $before inputs kept so far"
    if cargo +nightly fuzz run --fuzz-dir tests/fuzz -O "$t" "tests/fuzz/corpus/$t" -- \
        -runs="$EXECS" -dict=tests/fuzz/shoal.dict -max_len=65536 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="tests/fuzz/artifacts/$t/" 2>"tests/fuzz/artifacts/$t.log"; then
      # Keep only inputs that add coverage.
      tmp=$(mktemp -d)
      cargo +nightly fuzz run --fuzz-dir tests/fuzz -O "$t" "$tmp" "tests/fuzz/corpus/$t" -- \
        -merge=1 2>/dev/null >/dev/null && rm -rf "tests/fuzz/corpus/$t" && mv "$tmp" "tests/fuzz/corpus/$t"
      chmod 755 "tests/fuzz/corpus/$t"
      after=$(find "tests/fuzz/corpus/$t" -type f | wc -l)
      runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "tests/fuzz/artifacts/$t.log" | tail -1)
      cov=$(grep -o 'cov: [0-9]*' "tests/fuzz/artifacts/$t.log" | tail -1)
      log "$t: ${runs:-?} executions, $cov, no crash; corpus $before -> $after inputs"
    else
      status=1
      log "$t: FAILED (tests/fuzz/artifacts/$t.log):"
      grep -E "panicked|ERROR|Test unit written" "tests/fuzz/artifacts/$t.log" | head -5 >&2
    fi
  done
  exit $status
fi

log "no nightly cargo-fuzz: the seeded mutator on stable, $EXECS executions per target"
for t in $TARGETS; do
  SHOAL_FUZZ_EXECS=$EXECS SHOAL_FUZZ_TARGET=$t \
    cargo test --release -q -p shoal-tests --test fuzz -- --nocapture 2>&1 | grep -E '^fuzz |failures|: '
done
