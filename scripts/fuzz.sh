#!/usr/bin/env bash
# Fuzz the byte parsers: run the property tests (test/property) with a random seed and many
# more cases than CI does. The seed is printed first and last, so a failure is reproducible:
#
#   bash scripts/fuzz.sh                                   # every property, random seed
#   bash scripts/fuzz.sh test/property/gpt.test.ts         # one file (any vitest arguments)
#   FC_SEED=123456 bash scripts/fuzz.sh                    # replay a seed
#
# Environment: FC_SEED (default: random), FC_RUNS (base cases per property, default 20000),
# FC_CASE_MS (time bound per case, default 5000), FUZZ_TIMEOUT (seconds for the whole run,
# default 7200: a synchronous hang cannot be cut off from inside the test process).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seed=${FC_SEED:-$(($(od -An -N4 -tu4 /dev/urandom | tr -d ' ') % 2147483647))}
runs=${FC_RUNS:-20000}
case_ms=${FC_CASE_MS:-5000}
limit=${FUZZ_TIMEOUT:-7200}
[[ $# -gt 0 ]] || set -- test/property
replay="FC_SEED=$seed FC_RUNS=$runs FC_CASE_MS=$case_ms bash scripts/fuzz.sh $*"

echo "fuzz: seed $seed, $runs runs per property (x its weight), ${case_ms} ms per case"
echo "fuzz: replay with: $replay"
status=0
FC_SEED=$seed FC_RUNS=$runs FC_CASE_MS=$case_ms \
  timeout --foreground -k 10 "$limit" \
  npx vitest run --config test/property/vitest.config.ts "$@" || status=$?
if [[ $status -eq 124 ]]; then
  echo "fuzz: still running after ${limit}s (a hang?), seed $seed" >&2
elif [[ $status -ne 0 ]]; then
  echo "fuzz: FAILED with seed $seed; replay with: $replay" >&2
else
  echo "fuzz: passed, seed $seed"
fi
exit "$status"
