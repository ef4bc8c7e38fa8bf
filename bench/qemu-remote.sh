#!/usr/bin/env bash
# What `qemu-test --connect` costs over a local run: the aarch64 boot fixture (TCG) booted
# to its marker by `provision qemu-test` locally and through qemu+ssh to this machine's own
# libvirtd (a throw-away sshd on 127.0.0.1, libvirtd started by hand when none runs).
#
#   npm run build && bash bench/qemu-remote.sh          # BENCH_RUNS=3 by default
#
# Per run: wall time from start to exit, provision's own QEMU/domain start -> verdict
# (bootSeconds), and for the remote run the SFTP upload (image as qcow2 + config) time.
# Runs alternate local/remote. Writes .cache/bench/qemu-remote-results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${BENCH_RUNS:-3}
MARKER=PROVISION-BOOT-OK
FIXTURE_DIR=$ROOT/.cache/boot-fixture
IMG=$FIXTURE_DIR/boot-aarch64.img
BENCH=$ROOT/.cache/bench
die() { echo "bench: $*" >&2; exit 1; }
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

# libvirtd (stock configuration), unless one answers already.
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  [[ -S /run/libvirt/virtlogd-sock ]] || { virtlogd -d; STARTED+=(/run/virtlogd.pid); }
  libvirtd -d
  STARTED+=(/run/libvirtd.pid)
  for _ in $(seq 75); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
fi

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

now() { date +%s.%N; }
run() { # label, extra args...
  local label=$1 t0 t1
  shift
  t0=$(now)
  node bin/provision.js qemu-test "${ARGS[@]}" "$@" >"$WORK/$label.json" 2>"$WORK/$label.err" ||
    die "$label run failed: $(cat "$WORK/$label.err")"
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
field() { node -e 'const r=require(process.argv[1]); const v=process.argv[2].split(".").reduce((o,k)=>o?.[k],r); console.log(v===undefined?"":Number(v).toFixed(2))' "$1" "$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

L=() LB=() R=() RB=() RU=()
echo "fixture: $IMG ($(($(stat -c %s "$IMG") / 1048576)) MiB raw), $RUNS runs each, remote: $URI"
for ((i = 1; i <= RUNS; i++)); do
  if ((i % 2)); then
    l=$(run local); r=$(run remote --connect "$URI" --upload-image)
  else
    r=$(run remote --connect "$URI" --upload-image); l=$(run local)
  fi
  L+=("$l") LB+=("$(field "$WORK/local.json" bootSeconds)")
  R+=("$r") RB+=("$(field "$WORK/remote.json" bootSeconds)") RU+=("$(field "$WORK/remote.json" remote.uploadSeconds)")
  printf '  run %d: local %6.2f s (boot %6.2f)   remote %6.2f s (boot %6.2f, upload+prepare %5.2f)\n' \
    "$i" "$l" "${LB[-1]}" "$r" "${RB[-1]}" "${RU[-1]}"
done
bytes=$(node -e 'console.log(require(process.argv[1]).remote.uploadedBytes)' "$WORK/remote.json")
echo
printf '%-44s %8s\n' "case (median of $RUNS)" "seconds"
printf '%-44s %8.2f\n' "local qemu-test, start -> exit" "$(median "${L[@]}")"
printf '%-44s %8.2f\n' "  QEMU start -> verdict" "$(median "${LB[@]}")"
printf '%-44s %8.2f\n' "remote qemu-test --upload-image, start -> exit" "$(median "${R[@]}")"
printf '%-44s %8.2f\n' "  domain start -> verdict" "$(median "${RB[@]}")"
printf '%-44s %8.2f  (%s bytes sent)\n' "  uploads (qcow2 image + config)" "$(median "${RU[@]}")" "$bytes"
printf '%-44s %8.2f\n' "remote - local" "$(awk -v a="$(median "${R[@]}")" -v b="$(median "${L[@]}")" 'BEGIN { print a - b }')"
node -e '
  const [l, lb, r, rb, ru, bytes, file] = process.argv.slice(1);
  const n = (s) => s.split(" ").map(Number);
  require("fs").writeFileSync(file, JSON.stringify({ localSeconds: n(l), localBootSeconds: n(lb),
    remoteSeconds: n(r), remoteBootSeconds: n(rb), remoteUploadSeconds: n(ru),
    uploadedBytes: Number(bytes), date: new Date().toISOString() }, null, 2) + "\n");
' "${L[*]}" "${LB[*]}" "${R[*]}" "${RB[*]}" "${RU[*]}" "$bytes" "$BENCH/qemu-remote-results.json"
echo "results: $BENCH/qemu-remote-results.json"
