#!/usr/bin/env bash
# Benchmark `provision qemu-test` against the same QEMU command run by hand: boot time of the
# aarch64 boot fixture (TCG) to the marker it prints once Ignition applied the config.
#
#   npm run build && bash bench/qemu.sh
#   BENCH_RUNS=5 BENCH_MEMORY=1024 bash bench/qemu.sh
#
# 1. Builds (or reuses) the fixture: fixtures/build-boot-fixture.sh .cache/boot-fixture.
# 2. BENCH_RUNS times (default 3), in rounds that alternate the order:
#    - by hand: `provision qemu-test --print-command` prepares the overlay, VARS copy and config
#      (untimed) and prints the QEMU command; the clock runs from starting that command to the
#      marker on its serial console (read with grep through a FIFO);
#    - provision: the whole `provision qemu-test IMG -i CONFIG --expect MARKER`, from start to
#      exit (Node start-up, config validation, overlay, QEMU, verdict, stopping QEMU, cleanup).
# 3. Prints the medians and their ratio (target: provision <= 1.05 x by hand), the same for
#    the fastest run of each, and writes .cache/bench/qemu-results.json.
#
# The machine is shared (2 cores): before each run the script waits (up to BENCH_QUIET_WAIT
# seconds, default 300) for a second in which the CPUs are less than 15% busy, and each run
# reports how much CPU everything else used meanwhile (a TCG guest slows down with it).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
export LC_ALL=C
RUNS=${BENCH_RUNS:-3}
MEMORY=${BENCH_MEMORY:-1024}
MARKER="PROVISION-BOOT-OK"
FIXTURE_DIR=$ROOT/.cache/boot-fixture
IMG=$FIXTURE_DIR/boot-aarch64.img
BENCH=$ROOT/.cache/bench
PROVISION=(node "$ROOT/bin/provision.js")

die() { echo "bench: $*" >&2; exit 1; }
[[ -d dist ]] || die "dist/ is missing; run npm run build"
[[ -x /usr/bin/time ]] || die "missing /usr/bin/time (Debian package: time)"
for p in qemu-system-aarch64 qemu-img node grep mkfifo; do
  command -v "$p" >/dev/null || die "missing program: $p"
done

bash fixtures/build-boot-fixture.sh "$FIXTURE_DIR" >&2
[[ -s $IMG ]] || die "$IMG was not built"

mkdir -p "$BENCH"
WORK=$(mktemp -d "$BENCH/qemu.XXXXXX")
QPID=""
KEPT=""
cleanup() {
  local rc=$?
  set +e
  [[ -n $QPID ]] && kill "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null
  [[ -n $KEPT ]] && rm -rf "$KEPT"
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

CONFIG=$WORK/config.ign
cat >"$CONFIG" <<'EOF'
{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/provision-bench","mode":420,"contents":{"source":"data:,bench%0A"}}]}}
EOF
ARGS=("$IMG" -i "$CONFIG" --expect "$MARKER" --memory "$MEMORY" --timeout 10m)

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
busy_jiffies() { cpu_jiffies | cut -d' ' -f1; }
# CPU seconds that everything else on the machine used during a run: all busy time minus what
# the run itself used. The machine is shared; a run with a lot of it is not comparable.
others() { awk -v b="$1" -v c="$CLK_TCK" -v own="$2" 'BEGIN { o = b / c - own; printf "%.1f", (o < 0 ? 0 : o) }'; }

# By hand: the printed QEMU command, timed from its start to the marker.
run_hand() {
  local cmd fifo t0 t1
  cmd=$("${PROVISION[@]}" qemu-test "${ARGS[@]}" --print-command -q)
  KEPT=$(grep -o 'file=[^ ]*/overlay.qcow2' <<<"$cmd" | sed 's|^file=||; s|/overlay.qcow2$||')
  [[ -d $KEPT ]] || die "cannot find the prepared directory in: $cmd"
  [[ ${#HAND_CMD} -gt 0 ]] || HAND_CMD=$cmd
  fifo=$WORK/console
  rm -f "$fifo"
  mkfifo "$fifo"
  wait_quiet 1
  local j0 j1 own
  j0=$(busy_jiffies)
  t0=$(now)
  (eval "exec $cmd" </dev/null >"$fifo" 2>"$WORK/qemu.err") &
  QPID=$!
  if ! grep -a -m1 -q "$MARKER" <"$fifo"; then
    wait "$QPID" || true
    QPID=""
    die "by hand: QEMU ended without printing $MARKER: $(tail -n3 "$WORK/qemu.err")"
  fi
  t1=$(now)
  j1=$(busy_jiffies)
  # QEMU's own CPU time (utime + stime, fields 14 and 15 of /proc/PID/stat).
  own=$(awk -v c="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / c }' "/proc/$QPID/stat" 2>/dev/null || echo 0)
  OTHERS=$(others $((j1 - j0)) "$own")
  kill "$QPID" 2>/dev/null || true
  wait "$QPID" 2>/dev/null || true
  QPID=""
  rm -rf "$KEPT"
  KEPT=""
  ELAPSED=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

run_provision() {
  local t0 t1 j0 j1 own rc=0
  wait_quiet 1
  j0=$(busy_jiffies)
  t0=$(now)
  # GNU time's user+sys include QEMU: node waits for it, so its rusage is in node's children.
  /usr/bin/time -f '%U %S' -o "$WORK/time.out" \
    "${PROVISION[@]}" qemu-test "${ARGS[@]}" -q --json >"$WORK/result.json" 2>"$WORK/provision.err" || rc=$?
  t1=$(now)
  j1=$(busy_jiffies)
  own=$(awk '{ print $1 + $2 }' "$WORK/time.out")
  OTHERS=$(others $((j1 - j0)) "$own")
  ((rc == 0)) || die "provision qemu-test exited $rc: $(cat "$WORK/provision.err")"
  # provision's own measure of QEMU start -> verdict, to separate harness from boot time.
  BOOT_SECONDS+=("$(node -e 'console.log(require(process.argv[1]).bootSeconds.toFixed(3))' "$WORK/result.json")")
  ELAPSED=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}


HAND=()
PROV=()
BOOT_SECONDS=()
HAND_CMD=""
ELAPSED=""
OTHERS=""
echo "fixture: $IMG ($(($(stat -c %s "$IMG") / 1048576)) MiB), marker $MARKER, --memory $MEMORY, $RUNS runs each"
for ((i = 1; i <= RUNS; i++)); do
  if ((i % 2)); then
    run_hand; h=$ELAPSED; ho=$OTHERS
    run_provision; p=$ELAPSED; po=$OTHERS
  else
    run_provision; p=$ELAPSED; po=$OTHERS
    run_hand; h=$ELAPSED; ho=$OTHERS
  fi
  HAND+=("$h")
  PROV+=("$p")
  printf '  run %d: by hand %6.2f s (others used %5s CPU-s)   provision qemu-test %6.2f s (others %5s CPU-s)\n' \
    "$i" "$h" "$ho" "$p" "$po"
done
mh=$(median "${HAND[@]}")
mp=$(median "${PROV[@]}")
ratio=$(awk -v a="$mp" -v b="$mh" 'BEGIN { printf "%.3f", a / b }')
# The fastest run of each is the least disturbed by other work on the machine.
nh=$(minimum "${HAND[@]}")
np=$(minimum "${PROV[@]}")
min_ratio=$(awk -v a="$np" -v b="$nh" 'BEGIN { printf "%.3f", a / b }')
verdict=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.05) ? "PASS" : "MISS" }')
echo
echo "QEMU command (by hand):"
echo "  $HAND_CMD"
echo
printf '%-40s %8s %8s\n' "case" "median" "fastest"
printf '%-40s %7.2fs %7.2fs\n' "QEMU by hand, start -> marker" "$mh" "$nh"
printf '%-40s %7.2fs %7.2fs\n' "provision qemu-test, start -> exit" "$mp" "$np"
printf '%-40s %7.2fs %7.2fs\n' "  of which QEMU start -> verdict" "$(median "${BOOT_SECONDS[@]}")" "$(minimum "${BOOT_SECONDS[@]}")"
printf '%-40s %7.3fx %7.3fx  (target <= 1.05x: %s)\n' "ratio provision / by hand" "$ratio" "$min_ratio" "$verdict"

node -e '
  const [h, p, b, ratio, minRatio, runs, memory, file] = process.argv.slice(1);
  const out = { runs: Number(runs), memoryMiB: Number(memory),
    byHandSeconds: h.split(" ").map(Number), provisionSeconds: p.split(" ").map(Number),
    provisionBootSeconds: b.split(" ").map(Number),
    ratio: Number(ratio), fastestRatio: Number(minRatio), target: 1.05,
    date: new Date().toISOString() };
  require("fs").writeFileSync(file, JSON.stringify(out, null, 2) + "\n");
' "${HAND[*]}" "${PROV[*]}" "${BOOT_SECONDS[*]}" "$ratio" "$min_ratio" "$RUNS" "$MEMORY" "$BENCH/qemu-results.json"
echo "results: $BENCH/qemu-results.json"
