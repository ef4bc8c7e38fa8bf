#!/usr/bin/env bash
# What `qemu-test --connect` costs over a local run: the aarch64 boot fixture (TCG) booted
# to its marker by `provision qemu-test` locally and through qemu+ssh to this machine's own
# libvirtd (a throw-away sshd on 127.0.0.1; libvirtd started by hand when none runs, under
# bench/reaper.c unless BENCH_REAPER=0: see below).
#
#   npm run build && bash bench/qemu-remote.sh          # BENCH_RUNS=3 by default
#
# Per run: wall time from start to exit, provision's own QEMU/domain start -> verdict
# (bootSeconds), their difference (what the harness adds around the boot), and for the remote
# run its --json remote.timings (connect, prepare, launch, teardown). Runs alternate
# local/remote; before each run the script waits (up to BENCH_QUIET_WAIT seconds, default
# 300) for a second in which the CPUs are less than 15% busy: the machine is shared (2 cores)
# and a TCG guest slows down with whatever else runs. Prints the ratio of the medians
# remote / local with PASS/MISS against BENCH_TARGET (default 1.2, issue 14) and writes
# .cache/bench/qemu-remote-results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${BENCH_RUNS:-3}
TARGET=${BENCH_TARGET:-1.2}
MARKER=PROVISION-BOOT-OK
FIXTURE_DIR=$ROOT/.cache/boot-fixture
IMG=$FIXTURE_DIR/boot-aarch64.img
BENCH=$ROOT/.cache/bench
die() { echo "bench: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -d dist ]] || die "dist/ is missing; run npm run build"
for p in virsh libvirtd virtlogd /usr/sbin/sshd ssh-keygen qemu-system-aarch64 node; do
  command -v "$p" >/dev/null || die "missing program: $p (bash scripts/setup.sh installs it)"
done
bash fixtures/build-boot-fixture.sh "$FIXTURE_DIR" >&2
mkdir -p "$BENCH"
WORK=$(mktemp -d "$BENCH/remote.XXXXXX")
STARTED=()
cleanup() {
  local rc=$?
  set +e
  [[ -f $WORK/sshd.pid ]] && kill "$(cat "$WORK/sshd.pid")"
  for f in "${STARTED[@]}"; do [[ -f $f ]] && kill "$(cat "$f")"; done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT

# libvirtd (stock configuration), unless one answers already. libvirt double-forks QEMU, so
# a guest's QEMU is reparented to the nearest child subreaper or PID 1, and `virsh destroy`
# waits (polling every 200 ms) until its PID is gone, i.e. reaped. On a libvirt host PID 1 is
# systemd, which reaps at once; in a container it may not be (this machine's PID 1 reaps a
# second or two late, which every remote run would pay in its teardown, while the local QEMU,
# node's own child, is reaped at once). So libvirtd runs under bench/reaper.c (a subreaper,
# as flash.sh uses it), the way systemd would run it; BENCH_REAPER=0 starts it as is.
REAPER_ON=${BENCH_REAPER:-1}
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  [[ -S /run/libvirt/virtlogd-sock ]] || { virtlogd -d; STARTED+=(/run/virtlogd.pid); }
  if ((REAPER_ON)); then
    build_reaper
    # It keeps reaping until libvirtd (stopped by cleanup) and every QEMU are gone.
    "$REAPER" libvirtd -d &
  else
    libvirtd -d
  fi
  STARTED+=(/run/libvirtd.pid)
  for _ in $(seq 75); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
fi
LIBVIRTD_PARENT=$(ps -o comm= -p "$(ps -o ppid= -p "$(cat /run/libvirtd.pid 2>/dev/null)" | tr -d ' ')" 2>/dev/null || echo "?")
echo "libvirtd: its QEMUs are reaped by ${LIBVIRTD_PARENT} (PID 1 is $(ps -o comm= -p 1))"

# A throw-away sshd on a free port.
PORT=$(node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$WORK/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/key"
cp "$WORK/key.pub" "$WORK/authorized_keys"
cat >"$WORK/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $PORT
HostKey $WORK/hostkey
PidFile $WORK/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM no
AuthorizedKeysFile $WORK/authorized_keys
StrictModes no
Subsystem sftp internal-sftp
EOF
/usr/sbin/sshd -f "$WORK/sshd_config"
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$WORK/hostkey.pub")" >"$WORK/known_hosts"
URI="qemu+ssh://root@127.0.0.1:$PORT/system?keyfile=$WORK/key&known_hosts=$WORK/known_hosts"

cat >"$WORK/config.ign" <<'EOF'
{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/provision-bench","mode":420,"contents":{"source":"data:,bench%0A"}}]}}
EOF
ARGS=("$IMG" -i "$WORK/config.ign" --expect "$MARKER" --memory 1024 --timeout 10m -q --json)

run() { # label, extra args...
  local label=$1 t0 t1
  shift
  wait_quiet 1
  t0=$(now)
  node bin/provision.js qemu-test "${ARGS[@]}" "$@" >"$WORK/$label.json" 2>"$WORK/$label.err" ||
    die "$label run failed: $(cat "$WORK/$label.err")"
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
field() { node -e 'const r=require(process.argv[1]); const v=process.argv[2].split(".").reduce((o,k)=>o?.[k],r); console.log(v===undefined?"":Number(v).toFixed(2))' "$1" "$2"; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
# Medians of a --json remote.timings field over the runs (blank when the build has none).
tmedian() { local v=() x; for x in "$@"; do [[ -n $x ]] && v+=("$x"); done; ((${#v[@]})) && median "${v[@]}" || echo ""; }

L=() LB=() LO=() R=() RB=() RO=() RU=() RC=() RP=() RL=() RT=()
echo "fixture: $IMG ($(($(stat -c %s "$IMG") / 1048576)) MiB raw), $RUNS runs each, remote: $URI"
for ((i = 1; i <= RUNS; i++)); do
  if ((i % 2)); then
    l=$(run local); r=$(run remote --connect "$URI" --upload-image)
  else
    r=$(run remote --connect "$URI" --upload-image); l=$(run local)
  fi
  L+=("$l") LB+=("$(field "$WORK/local.json" bootSeconds)")
  R+=("$r") RB+=("$(field "$WORK/remote.json" bootSeconds)") RU+=("$(field "$WORK/remote.json" remote.uploadSeconds)")
  LO+=("$(minus "$l" "${LB[-1]}")") RO+=("$(minus "$r" "${RB[-1]}")")
  RC+=("$(field "$WORK/remote.json" remote.timings.connect)") RP+=("$(field "$WORK/remote.json" remote.timings.prepare)")
  RL+=("$(field "$WORK/remote.json" remote.timings.launch)") RT+=("$(field "$WORK/remote.json" remote.timings.teardown)")
  printf '  run %d: local %6.2f s (boot %6.2f, around it %5.2f)   remote %6.2f s (boot %6.2f, around it %5.2f; upload %5.2f)\n' \
    "$i" "$l" "${LB[-1]}" "${LO[-1]}" "$r" "${RB[-1]}" "${RO[-1]}" "${RU[-1]}"
  if [[ -n ${RC[-1]} ]]; then
    printf '         remote timings: connect %5.2f  prepare %5.2f  launch %5.2f  teardown %5.2f\n' \
      "${RC[-1]}" "${RP[-1]}" "${RL[-1]}" "${RT[-1]}"
  fi
done
bytes=$(node -e 'console.log(require(process.argv[1]).remote.uploadedBytes)' "$WORK/remote.json")
ml=$(median "${L[@]}") mr=$(median "${R[@]}")
ratio=$(awk -v a="$mr" -v b="$ml" 'BEGIN { printf "%.3f", a / b }')
fastest=$(awk -v a="$(minimum "${R[@]}")" -v b="$(minimum "${L[@]}")" 'BEGIN { printf "%.3f", a / b }')
verdict=$(awk -v r="$ratio" -v t="$TARGET" 'BEGIN { print (r <= t) ? "PASS" : "MISS" }')
echo
printf '%-50s %8s %8s\n' "case" "median" "fastest"
printf '%-50s %7.2fs %7.2fs\n' "local qemu-test, start -> exit" "$ml" "$(minimum "${L[@]}")"
printf '%-50s %7.2fs %7.2fs\n' "  QEMU start -> verdict" "$(median "${LB[@]}")" "$(minimum "${LB[@]}")"
printf '%-50s %7.2fs %7.2fs\n' "  around the boot (start -> exit minus that)" "$(median "${LO[@]}")" "$(minimum "${LO[@]}")"
printf '%-50s %7.2fs %7.2fs\n' "remote qemu-test --upload-image, start -> exit" "$mr" "$(minimum "${R[@]}")"
printf '%-50s %7.2fs %7.2fs\n' "  domain start -> verdict" "$(median "${RB[@]}")" "$(minimum "${RB[@]}")"
printf '%-50s %7.2fs %7.2fs\n' "  around the boot (start -> exit minus that)" "$(median "${RO[@]}")" "$(minimum "${RO[@]}")"
printf '%-50s %7.2fs %7.2fs  (%s bytes sent)\n' "  uploads (qcow2 image + config)" "$(median "${RU[@]}")" "$(minimum "${RU[@]}")" "$bytes"
if [[ -n $(tmedian "${RC[@]}") ]]; then
  printf '%-50s %7.2fs\n' "  connect (SSH, host key, login)" "$(tmedian "${RC[@]}")"
  printf '%-50s %7.2fs\n' "  prepare (host facts, uploads, domain XML)" "$(tmedian "${RP[@]}")"
  printf '%-50s %7.2fs\n' "  launch (virsh define + start)" "$(tmedian "${RL[@]}")"
  printf '%-50s %7.2fs\n' "  teardown (destroy, undefine, rm)" "$(tmedian "${RT[@]}")"
fi
printf '%-50s %7.2fs\n' "remote - local" "$(minus "$mr" "$ml")"
printf '%-50s %7.3fx %7.3fx  (target <= %sx: %s)\n' "ratio remote / local" "$ratio" "$fastest" "$TARGET" "$verdict"
LIBVIRTD_PARENT=$LIBVIRTD_PARENT node -e '
  const [l, lb, r, rb, ru, rc, rp, rl, rt, bytes, ratio, fastest, target, verdict, file] = process.argv.slice(1);
  const n = (s) => s.split(" ").filter(Boolean).map(Number);
  require("fs").writeFileSync(file, JSON.stringify({ runs: n(l).length,
    localSeconds: n(l), localBootSeconds: n(lb),
    remoteSeconds: n(r), remoteBootSeconds: n(rb), remoteUploadSeconds: n(ru),
    remoteTimings: { connect: n(rc), prepare: n(rp), launch: n(rl), teardown: n(rt) },
    uploadedBytes: Number(bytes), ratio: Number(ratio), fastestRatio: Number(fastest),
    libvirtdReapedBy: process.env.LIBVIRTD_PARENT,
    target: Number(target), verdict, date: new Date().toISOString() }, null, 2) + "\n");
' "${L[*]}" "${LB[*]}" "${R[*]}" "${RB[*]}" "${RU[*]}" "${RC[*]}" "${RP[*]}" "${RL[*]}" "${RT[*]}" "$bytes" "$ratio" "$fastest" "$TARGET" "$verdict" "$BENCH/qemu-remote-results.json"
echo "results: $BENCH/qemu-remote-results.json"
