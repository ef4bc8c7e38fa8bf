#!/usr/bin/env bash
# Benchmark `provision flash` against the floor (xz alone) and bmaptool, and provision's start-up
# against a bare node: one run measures every goal of issue 14 but the qemu-remote one.
#
#   npm run bench                           (builds dist/ first, then runs this script)
#   BENCH_RUNS=5 bash bench/flash.sh
#   BENCH_QUICK=1 bash bench/flash.sh       (small images, 1 run: to try the script out)
#   BENCH_BUILD_ONLY=1 bash bench/flash.sh  (only build the cached images, e.g. with nice)
#
# 1. Builds once (cached under .cache/bench/, keyed by the hash of the fixture builder and of
#    the image parameters) three FCOS-layout images (fixtures/build-fcos-image.sh), made sparse
#    (cp --sparse=always, fallocate --dig-holes), compressed with `xz -T0 -6` (multi-block:
#    decompresses in parallel), with a bmap (`bmaptool create`):
#      files  2304 MiB with 700 MiB of real files, ~60 % zeros      (timed)
#      zeros  1536 MiB with 56 MiB of files, ~96 % zeros            (timed)
#      rss    8192 MiB with 56 MiB of files, ~99 % zeros            (node's peak RSS only)
#    BENCH_QUICK=1: 256 MiB, 256 MiB and 1024 MiB instead, 1 run.
# 2. Start-up: `--help`, `--version` and every `COMMAND --help` (and subcommand), each 20 times
#    (BENCH_STARTUP_REPS), median wall time against a bare `node -e 0` (bench/startup.mjs).
# 3. Times every case on both timed images BENCH_RUNS times (default 3), in rounds that
#    alternate the order of the cases, and reports the median wall time and the peak RSS (GNU
#    time %e / %M), CPU time, node's own peak RSS and --json timings.firstWrite. The machine is
#    shared (2 cores): each run first waits for a quiet moment, and a run that other processes
#    disturbed (BENCH_MAX_OTHER CPU seconds, default 3) is repeated, up to BENCH_TRIES attempts
#    (default 3); see wait_quiet/run_case. Then flashes the rss image to a file once with and
#    once without verify, for node's peak RSS.
# 4. Checks that what each provision and bmaptool case wrote is byte-identical to the image
#    (sha256; in the last round, and for the rss image). The cases that skip zeros on the loop
#    device (provision --sparse, bmaptool) get a zeroed device (untimed) when it holds the other
#    image, and always in the last round, so that the check shows they wrote every data block.
# 5. Prints the tables and the goals with PASS/MISS (bench/flash-report.mjs) and writes
#    .cache/bench/results.json (BENCH_QUICK=1: results-quick.json, not to be taken for it).
#
# bmaptool, the second anchor (Debian bmap-tools): `bmaptool copy --bmap IMG.bmap IMG.xz OUT`.
#  - It writes only the blocks the bmap maps, like provision does on a file (always sparse) and
#    on a device with --sparse; provision's default on a device writes every byte. So the
#    like-for-like pairs, and the goals (provision / bmaptool <= 1.0), are:
#      file:  provision          vs bmaptool copy,  and --no-verify vs --no-verify
#      loop:  provision --sparse vs bmaptool copy,  and --no-verify vs --no-verify
#    "provision (every byte) / bmaptool, loop" is shown for information.
#  - Its verify (the default) checks the decompressed data against the bmap's sha256 of each
#    range as it goes; provision's verify reads the target back afterwards. Not the same check,
#    but each tool's default safe mode, so default is compared with default, and --no-verify
#    with --no-verify.
#  - It runs `xz -d -c`, which xz 5.4 (bookworm) decompresses with one thread; provision and
#    the floor use `xz -T0`. So that the comparison is about the tools and not about xz's
#    threads, bmaptool runs with XZ_DEFAULTS=-T0 (BENCH_BMAP_XZ_DEFAULTS= for the stock one).
#
# Disk: the files image is ~0.8 GiB on disk (sparse) + its xz, the loop backing file is
# allocated in full (~2.4 GiB), the rss image and every output are sparse (a file target gets
# only the non-zero blocks). Outputs are deleted after each case.
#
# Safety: the only block device touched is a loop device this script attaches itself
# (`losetup -f --show` on its own backing file); it is detached on exit, also on failure/Ctrl-C.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
export LC_ALL=C
export PATH=$PATH:/usr/sbin:/sbin

QUICK=${BENCH_QUICK:-0}
[[ $QUICK == 0 || $QUICK == 1 ]] || { echo "bench: BENCH_QUICK must be 0 or 1" >&2; exit 2; }
declare -A ROLE TOTAL_MIB FILL_MIB
if [[ $QUICK == 1 ]]; then
  SLOTS=(qa qb qc)
  ROLE=([qa]=files [qb]=zeros [qc]=rss)
  TOTAL_MIB=([qa]=256 [qb]=256 [qc]=1024)
  FILL_MIB=([qa]=90 [qb]=4 [qc]=4)
  RUNS=${BENCH_RUNS:-1}
else
  SLOTS=(a b c)
  ROLE=([a]=files [b]=zeros [c]=rss)
  TOTAL_MIB=([a]=2304 [b]=1536 [c]=8192)
  FILL_MIB=([a]=${BENCH_ROOT_FILL_MIB:-700} [b]=56 [c]=56)
  RUNS=${BENCH_RUNS:-3}
fi
TIMED_SLOTS=("${SLOTS[0]}" "${SLOTS[1]}")
RSS_SLOT=${SLOTS[2]}
XZ_OPTS=(-T0 -6 -k)
STARTUP_REPS=${BENCH_STARTUP_REPS:-20}
BMAP_XZ_DEFAULTS=${BENCH_BMAP_XZ_DEFAULTS--T0}

BENCH=$ROOT/.cache/bench
mkdir -p "$BENCH"
RESULTS=$BENCH/results.json
if [[ $QUICK == 1 ]]; then RESULTS=$BENCH/results-quick.json; fi
PROVISION=(node "$ROOT/bin/provision.js")

die() { echo "bench: $*" >&2; exit 1; }
for p in xz dd sha256sum losetup setsid flock pgrep node sgdisk mke2fs mkfs.vfat mcopy fallocate bmaptool cc; do
  command -v "$p" >/dev/null || die "missing program: $p (bmaptool: Debian package bmap-tools; scripts/setup.sh)"
done
[[ -x /usr/bin/time ]] || die "missing /usr/bin/time (Debian package: time)"
[[ -d dist ]] || die "dist/ is missing; run npm run build"

# --- cleanup -----------------------------------------------------------------------------------
LOOP=""
BACKING=$BENCH/loop-backing.img
WORK=""
OWN_BACKING=false # set once this run holds the lock and created the backing file
CUR_PID="" # the timed command, started in its own session/process group (see timed)
# Stop the timed command's process group (time, reaper, node, xz): SIGINT like Ctrl-C, so
# provision cleans up, then SIGKILL whatever is left after 15 s.
stop_current() {
  [[ -n $CUR_PID ]] || return 0
  kill -INT -- "-$CUR_PID" 2>/dev/null
  local i
  for ((i = 0; i < 150; i++)); do
    kill -0 -- "-$CUR_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$CUR_PID" 2>/dev/null
  wait "$CUR_PID" 2>/dev/null
  CUR_PID=""
}
cleanup() {
  local rc=$?
  set +e
  stop_current
  if [[ -n $LOOP ]]; then
    losetup -d "$LOOP" && echo "bench: detached $LOOP" >&2
    LOOP=""
  fi
  if [[ -n $WORK ]]; then rm -rf "$WORK"; fi
  if $OWN_BACKING; then rm -f "$BACKING"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# One bench run at a time: two would share the image build, the loop backing file and the CPU.
# (This lock also makes a loop device found on our backing file below truly stale.)
exec 9>"$BENCH/.lock"
if ! flock -n 9; then
  echo "bench: another bench run holds $BENCH/.lock; waiting for it" >&2
  flock 9
fi

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WORK=$(mktemp -d "$BENCH/run.XXXXXX")
export XDG_CACHE_HOME=$WORK/xdg-cache # provision's cache: private, removed on exit
mkdir -p "$XDG_CACHE_HOME"
OUT=$WORK/out.img # every file target, deleted after each case
: >"$WORK/runs.tsv"
: >"$WORK/checks.tsv"
: >"$WORK/images.tsv"

avail_mib=$(df -Pm "$BENCH" | awk 'NR == 2 { print $4 }')
echo "disk: ${avail_mib} MiB free on the file system of $BENCH"
need_mib=$((QUICK == 1 ? 2048 : 8192))
((avail_mib >= need_mib)) || die "need about $need_mib MiB free under $BENCH (images, loop backing file, outputs)"

# Every timed command runs under bench/reaper.c (a child subreaper that also waits for what the
# command leaves behind: bmaptool sometimes exits without reaping its xz), built once.
build_reaper

# --- 1. the images -----------------------------------------------------------------------------
# Fraction of all-zero 4 KiB blocks of $1.
zero_fraction() {
  node -e '
    const fs = require("fs");
    const fd = fs.openSync(process.argv[1], "r");
    const buf = Buffer.alloc(4 << 20), zero = Buffer.alloc(4096);
    let blocks = 0, zeros = 0, n;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) {
      for (let o = 0; o < n; o += 4096) {
        const e = Math.min(o + 4096, n);
        blocks++;
        if (buf.compare(zero, 0, e - o, o, e) === 0) zeros++;
      }
    }
    console.log((zeros / blocks).toFixed(4));
  ' "$1"
}

declare -A IMG XZ IMG_SIZE XZ_SIZE ZERO_FRACTION IMG_SHA BMAP
build_image() {
  local slot=$1 total=${TOTAL_MIB[$1]} fill=${FILL_MIB[$1]} key img t0
  key=$({
    sha256sum fixtures/build-fcos-image.sh
    echo "total=$total fill=$fill xz=${XZ_OPTS[*]} sparse-copy dig-holes bmap"
  } | sha256sum | cut -c1-16)
  img=$BENCH/fcos-$slot-$key.img
  if [[ ! -s $img.xz || ! -s $img || ! -s $img.zero-fraction || ! -s $img.bmap ]]; then
    # Older cached images of this slot (other keys), and of the old one-image layout
    # (fcos-KEY.img), are GiBs each: drop them.
    rm -f "$BENCH/fcos-$slot-"*.img "$BENCH/fcos-$slot-"*.img.* "$BENCH"/fcos-????????????????.img*
    rm -f "$img.tmp"*
    echo "bench: building $img (${total} MiB, ${fill} MiB of files in root)" >&2
    t0=$(date +%s)
    bash fixtures/build-fcos-image.sh "$img.tmp" "$total" "$fill"
    # Sparse: zero blocks become holes, so that `bmaptool create` maps only the data. mke2fs
    # leaves fallocated (unwritten) extents, which --dig-holes skips (SEEK_DATA calls them holes)
    # but FIEMAP, and so the bmap, counts as data: a sparse copy drops them first.
    cp --sparse=always "$img.tmp" "$img.tmp.sparse"
    mv -f "$img.tmp.sparse" "$img.tmp"
    fallocate --dig-holes "$img.tmp"
    zero_fraction "$img.tmp" >"$img.zero-fraction.tmp"
    echo "bench: compressing with xz ${XZ_OPTS[*]}" >&2
    rm -f "$img.tmp.xz"
    xz "${XZ_OPTS[@]}" "$img.tmp"
    bmaptool -q create -o "$img.bmap.tmp" "$img.tmp"
    mv -f "$img.tmp.xz" "$img.xz"
    mv -f "$img.tmp" "$img"
    mv -f "$img.bmap.tmp" "$img.bmap"
    mv -f "$img.zero-fraction.tmp" "$img.zero-fraction"
    echo "bench: image built in $(($(date +%s) - t0)) s" >&2
  fi
  if [[ ! -s $img.sha256 || $img.sha256 -ot $img ]]; then sha256sum "$img" | cut -d' ' -f1 >"$img.sha256"; fi
  IMG[$slot]=$img
  XZ[$slot]=$img.xz
  BMAP[$slot]=$img.bmap
  IMG_SIZE[$slot]=$(stat -c %s "$img")
  XZ_SIZE[$slot]=$(stat -c %s "$img.xz")
  ZERO_FRACTION[$slot]=$(cat "$img.zero-fraction")
  IMG_SHA[$slot]=$(cat "$img.sha256")
  local mapped
  mapped=$(sed -n 's|.*<MappedBlocksCount> *\([0-9]*\) *</MappedBlocksCount>.*|\1|p' "$img.bmap")
  mapped=$((mapped * $(sed -n 's|.*<BlockSize> *\([0-9]*\) *</BlockSize>.*|\1|p' "$img.bmap")))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$slot" "${ROLE[$slot]}" "$total" "$img" "${IMG_SIZE[$slot]}" \
    "${XZ_SIZE[$slot]}" "${ZERO_FRACTION[$slot]}" "${IMG_SHA[$slot]}" "$mapped" >>"$WORK/images.tsv"
  awk -v n="${ROLE[$slot]}" -v s="${IMG_SIZE[$slot]}" -v x="${XZ_SIZE[$slot]}" -v z="${ZERO_FRACTION[$slot]}" \
    -v d="$(du -k "$img" | cut -f1)" -v m="$mapped" 'BEGIN {
    printf "image %s: %.0f MiB, %.1f%% all-zero 4 KiB blocks (%.0f MiB non-zero, %.0f MiB on disk, bmap maps %.0f MiB), %.1f MiB as xz\n",
      n, s / 1048576, z * 100, s * (1 - z) / 1048576, d / 1024, m / 1048576, x / 1048576 }'
}
for s in "${SLOTS[@]}"; do build_image "$s"; done
if [[ $QUICK == 0 ]]; then
  ok() { awk -v z="${ZERO_FRACTION[$1]}" -v s="${IMG_SIZE[$1]}" -v zmin="$2" -v gib="$3" 'BEGIN { exit !(z >= zmin && s >= gib * 1073741824) }'; }
  ok a 0.60 2 || die "the files image must be at least 2 GiB and at least 60% zeros"
  ok b 0.95 1.5 || die "the zeros image must be at least 1.5 GiB and at least 95% zeros"
  ok c 0.99 8 || die "the rss image must be at least 8 GiB and at least 99% zeros"
fi
if [[ ${BENCH_BUILD_ONLY:-0} == 1 ]]; then echo "bench: images ready (BENCH_BUILD_ONLY=1)"; exit 0; fi
# The rss image's output is written sparsely (a file target skips zero blocks): it needs about
# its non-zero part on disk, not its size. A file system without holes would need it all.
rss_disk_kib=$(du -k "${IMG[$RSS_SLOT]}" | cut -f1)
if ((rss_disk_kib * 1024 > IMG_SIZE[$RSS_SLOT] / 2)); then
  echo "bench: note: ${IMG[$RSS_SLOT]} is not sparse on disk ($rss_disk_kib KiB): this file system may not keep holes; its output needs $((IMG_SIZE[$RSS_SLOT] >> 20)) MiB" >&2
  ((avail_mib > (IMG_SIZE[$RSS_SLOT] >> 20) + 1024)) || die "not enough room for the rss image's output"
fi

# --- 2. start-up -------------------------------------------------------------------------------
echo "start-up: --help, --version, every COMMAND --help: $STARTUP_REPS runs each, against node -e 0"
wait_quiet 2
read -r sb0 st0 < <(cpu_jiffies)
node bench/startup.mjs "$ROOT/bin/provision.js" "$STARTUP_REPS" "$WORK/startup.json"
read -r sb1 st1 < <(cpu_jiffies)
STARTUP_BUSY=$(awk -v j="$((sb1 - sb0))" -v t="$((st1 - st0))" 'BEGIN { printf "%.0f", t ? 100 * j / t : 0 }')
echo "  ($(node -e 'const r = require(process.argv[1]); console.log(r.cases.length + " paths")' "$WORK/startup.json"), CPUs ${STARTUP_BUSY}% busy meanwhile, incl. the runs themselves)"

# --- the loop device ---------------------------------------------------------------------------
# A loop device left behind by an earlier run of this script that was killed (SIGKILL) stands on
# our own backing file: detach it.
if [[ -e $BACKING ]]; then
  for l in $(losetup -j "$BACKING" -n -O NAME 2>/dev/null); do
    if [[ $l =~ ^/dev/loop[0-9]+$ ]]; then losetup -d "$l" && echo "bench: detached stale $l" >&2; fi
  done
  rm -f "$BACKING"
fi
LOOP_SIZE=0
for s in "${TIMED_SLOTS[@]}"; do
  if ((IMG_SIZE[$s] > LOOP_SIZE)); then LOOP_SIZE=${IMG_SIZE[$s]}; fi
done
LOOP_SIZE=$((LOOP_SIZE + 64 * 1048576))
OWN_BACKING=true
truncate -s "$LOOP_SIZE" "$BACKING"
LOOP=$(losetup -f --show "$BACKING")
[[ $LOOP =~ ^/dev/loop[0-9]+$ ]] || die "unexpected losetup output: $LOOP"
[[ $(losetup -n -O BACK-FILE "$LOOP") == "$(realpath "$BACKING")" ]] || die "$LOOP is not backed by $BACKING"
echo "loop device: $LOOP (backing file $BACKING, $((LOOP_SIZE >> 20)) MiB)"
# What the loop device holds: "zero", a slot (that image, byte for byte), or "other".
LOOP_HOLDS=zero
# Zero the whole loop device (untimed).
zero_loop() {
  dd if=/dev/zero of="$LOOP" bs=4M count=$((LOOP_SIZE / 4194304)) conv=fsync status=none
  LOOP_HOLDS=zero
}

# Allocate the backing file once, untimed, so that no timed run pays for the first write.
zero_loop

# --- 3. timed cases ----------------------------------------------------------------------------
CASES=(floor pipe prov_file_nv prov_file_v bmap_file_nv bmap_file_v
  prov_loop_nv prov_loop_v prov_sparse_nv prov_sparse_v bmap_loop_nv bmap_loop_v)
# The naive `xz -dc | dd` of the earlier bench, for information: BENCH_DD=1.
if [[ ${BENCH_DD:-0} == 1 ]]; then CASES+=(dd_file dd_loop); fi

# Other engineers' tests, QEMU… share this machine's 2 cores. Before each run, wait (up to
# BENCH_QUIET_WAIT seconds, default 300) for 2 s in which the CPUs are < 15% busy; a run during
# which something else used more than BENCH_MAX_OTHER CPU seconds (default 3) is repeated, up to
# BENCH_TRIES attempts in all (default 3), and the least disturbed attempt counts.
MAX_OTHER=${BENCH_MAX_OTHER:-3}
MAX_TRIES=${BENCH_TRIES:-3}

# Run "$@" under GNU time (and the reaper) and set R_E (wall s, until it and everything it
# started have exited), R_M (%M: peak RSS KiB of the largest single process among it and its
# descendants, so for provision usually its xz), R_CPU (user + system s of it and its
# descendants) and R_OTHER (CPU s used meanwhile by everything else: other users, and kernel
# threads working for the run, e.g. the loop device's). For provision, the node process is
# polled every 0.1 s: R_HWM is its own VmHWM, R_TREE the largest sum of the VmRSS of node and
# its children (xz) seen at one time.
timed() {
  local case=$1
  shift
  local tf=$WORK/time.out hwm=0 tree=0 child="" k v _ jb0 jb1 f p sum pids kids
  wait_quiet 2
  read -r jb0 _ < <(cpu_jiffies)
  # setsid: its own process group, which cleanup can stop as a whole (setsid execs, no fork,
  # as a background job of this script is no group leader: $! is time's pid).
  setsid /usr/bin/time -f '%e %M %U %S' -o "$tf" "$REAPER" "$@" >"$WORK/stdout" 2>"$WORK/stderr" &
  local tpid=$!
  CUR_PID=$tpid
  if [[ $case == prov_* ]]; then
    while kill -0 "$tpid" 2>/dev/null; do
      # node, in the session setsid started (its parent is the reaper).
      [[ -n $child ]] || child=$(pgrep -s "$tpid" -x node | head -n1 || true)
      if [[ -n $child ]]; then
        while read -r k v _; do
          if [[ $k == VmHWM: ]] && ((v > hwm)); then hwm=$v; fi
        done 2>/dev/null <"/proc/$child/status" || true
        pids=("$child")
        for f in /proc/"$child"/task/*/children; do
          kids=()
          read -r -a kids 2>/dev/null <"$f" || true
          pids+=("${kids[@]}")
        done
        sum=0
        for p in "${pids[@]}"; do
          while read -r k v _; do
            if [[ $k == VmRSS: ]]; then sum=$((sum + v)); fi
          done 2>/dev/null <"/proc/$p/status" || true
        done
        if ((sum > tree)); then tree=$sum; fi
      fi
      sleep 0.1
    done
  fi
  if ! wait "$tpid"; then
    CUR_PID=""
    echo "bench: case $case failed: $*" >&2
    cat "$WORK/stderr" "$WORK/stdout" "$tf" >&2
    return 1
  fi
  CUR_PID=""
  read -r jb1 _ < <(cpu_jiffies)
  local u s
  read -r R_E R_M u s < <(tail -n1 "$tf")
  R_CPU=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
  R_OTHER=$(awk -v j="$((jb1 - jb0))" -v hz="$CLK_TCK" -v c="$R_CPU" 'BEGIN { o = j / hz - c; printf "%.1f", o < 0 ? 0 : o }')
  R_HWM=$hwm R_TREE=$tree
}

# Fail loudly unless provision's JSON summary reports every target OK (and verified or not, $1);
# set R_FW (timings.firstWrite), R_PEAK (peakRssBytes) and R_TIMINGS (the timings, JSON), "-"
# when absent.
check_json() {
  local out
  out=$(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const bad = (r.targets || []).filter((t) => !t.ok);
    if (!r.targets || r.targets.length === 0 || bad.length) {
      console.error("provision reported failure:", JSON.stringify(r));
      process.exit(1);
    }
    const want = process.argv[2] === "1";
    for (const t of r.targets) if (t.verified !== want) { console.error("verified != " + want, JSON.stringify(t)); process.exit(1); }
    const fw = r.timings?.firstWrite;
    console.log([typeof fw === "number" ? fw : "-", r.peakRssBytes ?? "-", r.timings ? JSON.stringify(r.timings) : "-"].join("\t"));
  ' "$WORK/stdout" "$1")
  IFS=$'\t' read -r R_FW R_PEAK R_TIMINGS <<<"$out"
}

ROUND=0
run_once() {
  local slot=$1 case=$2 xz=${XZ[$1]} bmap=${BMAP[$1]}
  R_FW=- R_PEAK=- R_TIMINGS=-
  case $case in
    prov_sparse_* | bmap_loop_*)
      # These skip the image's zero blocks: the device must hold zeros there, as a new or
      # discarded device does, not the other image (provision's verify would rightly fail). In
      # the last round it is zeroed anyway, so that the sha256 check means something (see 4.).
      if ((ROUND == RUNS)) || [[ $LOOP_HOLDS != zero && $LOOP_HOLDS != "$slot" ]]; then zero_loop; fi ;;
  esac
  case $case in
    *_loop* | prov_sparse_*) LOOP_HOLDS=other ;; # until it succeeds
  esac
  rm -f "$OUT"
  # shellcheck disable=SC2016 # $1, $2: of the bash -c scripts
  case $case in
    floor)
      timed "$case" bash -c 'xz -dc -T0 "$1" >/dev/null' _ "$xz" ;;
    pipe)
      # The floor of any tool that reads the decompressor's output through a pipe (bmaptool,
      # provision): a C program that reads it and does nothing with it.
      timed "$case" bash -c 'xz -dc -T0 "$1" | cat >/dev/null' _ "$xz" ;;
    dd_file)
      timed "$case" bash -c 'xz -dc "$1" | dd of="$2" bs=4M conv=fsync status=none' _ "$xz" "$OUT" ;;
    dd_loop)
      timed "$case" bash -c 'xz -dc "$1" | dd of="$2" bs=4M conv=fsync status=none' _ "$xz" "$LOOP" ;;
    prov_file_nv | prov_rss_nv)
      timed "$case" "${PROVISION[@]}" flash "$OUT" --image-url "$xz" --no-verify --yes --quiet --json
      check_json 0 ;;
    prov_file_v | prov_rss_v)
      timed "$case" "${PROVISION[@]}" flash "$OUT" --image-url "$xz" --yes --quiet --json
      check_json 1 ;;
    prov_loop_nv)
      timed "$case" "${PROVISION[@]}" flash "$LOOP" --image-url "$xz" --no-verify --yes --quiet --json
      check_json 0 ;;
    prov_loop_v)
      timed "$case" "${PROVISION[@]}" flash "$LOOP" --image-url "$xz" --yes --quiet --json
      check_json 1 ;;
    prov_sparse_nv)
      timed "$case" "${PROVISION[@]}" flash "$LOOP" --image-url "$xz" --sparse --no-verify --yes --quiet --json
      check_json 0 ;;
    prov_sparse_v)
      timed "$case" "${PROVISION[@]}" flash "$LOOP" --image-url "$xz" --sparse --yes --quiet --json
      check_json 1 ;;
    bmap_file_nv)
      timed "$case" env XZ_DEFAULTS="$BMAP_XZ_DEFAULTS" bmaptool -q copy --no-verify --bmap "$bmap" "$xz" "$OUT" ;;
    bmap_file_v)
      timed "$case" env XZ_DEFAULTS="$BMAP_XZ_DEFAULTS" bmaptool -q copy --bmap "$bmap" "$xz" "$OUT" ;;
    bmap_loop_nv)
      timed "$case" env XZ_DEFAULTS="$BMAP_XZ_DEFAULTS" bmaptool -q copy --no-verify --bmap "$bmap" "$xz" "$LOOP" ;;
    bmap_loop_v)
      timed "$case" env XZ_DEFAULTS="$BMAP_XZ_DEFAULTS" bmaptool -q copy --bmap "$bmap" "$xz" "$LOOP" ;;
    *) die "unknown case $case" ;;
  esac
  case $case in
    *_loop* | prov_sparse_*) LOOP_HOLDS=$slot ;;
  esac
}

# One measurement of a case: repeated while disturbed (see MAX_OTHER), the least disturbed
# attempt is recorded (runs.tsv). Leaves the last attempt's output in place (for check_output).
run_case() {
  local slot=$1 case=$2 try best="" b_other=""
  for ((try = 1; try <= MAX_TRIES; try++)); do
    run_once "$slot" "$case"
    if [[ -z $b_other ]] || awk -v a="$R_OTHER" -v b="$b_other" 'BEGIN { exit !(a < b) }'; then
      b_other=$R_OTHER
      best=$(printf '%s\t' "$R_E" "$R_CPU" "$R_M" "$R_HWM" "$R_TREE" "$R_OTHER")
      B_LINE=("$R_E" "$R_CPU" "$R_M" "$R_OTHER" "$R_FW")
      best_tail=$(printf '%s\t%s\t%s' "$R_FW" "$R_PEAK" "$R_TIMINGS")
    fi
    if awk -v o="$R_OTHER" -v m="$MAX_OTHER" 'BEGIN { exit !(o <= m) }'; then break; fi
    if ((try < MAX_TRIES)); then
      echo "  ($slot $case took ${R_E}s while other processes used ${R_OTHER}s of CPU: again)" >&2
    fi
  done
  printf '%s\t%s\t%s\t%s%s\t%s\n' "$slot" "$case" "$ROUND" "$best" "$((try > MAX_TRIES ? MAX_TRIES : try))" \
    "$best_tail" >>"$WORK/runs.tsv"
  local fw=""
  if [[ ${B_LINE[4]} != - ]]; then fw="  1st write ${B_LINE[4]}s"; fi
  printf '  round %d %-3s %-15s %6ss  CPU %6ss  %4s MiB%s  (other CPU during the run: %ss)\n' \
    "$ROUND" "$slot" "$case" "${B_LINE[0]}" "${B_LINE[1]}" "$((B_LINE[2] / 1024))" "$fw" "${B_LINE[3]}"
}

# What provision and bmaptool wrote must be the image, byte for byte (untimed).
check_output() {
  local slot=$1 case=$2 got
  case $case in
    prov_file_* | prov_rss_* | bmap_file_*) got=$(sha256sum "$OUT" | cut -d' ' -f1) ;;
    prov_loop_* | prov_sparse_* | bmap_loop_*) got=$(head -c "${IMG_SIZE[$slot]}" "$LOOP" | sha256sum | cut -d' ' -f1) ;;
    *) return 0 ;;
  esac
  if [[ $got == "${IMG_SHA[$slot]}" ]]; then
    echo "  sha256 of $slot $case output = image: ok"
    printf '%s\t%s\t1\t%s\n' "$slot" "$case" "$got" >>"$WORK/checks.tsv"
  else
    echo "  sha256 of $slot $case output: $got, image: ${IMG_SHA[$slot]}: MISMATCH"
    printf '%s\t%s\t0\t%s\n' "$slot" "$case" "$got" >>"$WORK/checks.tsv"
  fi
}

# Every case on every timed image, one list; even rounds run it backwards.
ALL=()
for s in "${TIMED_SLOTS[@]}"; do
  for c in "${CASES[@]}"; do ALL+=("$s:$c"); done
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "timing ${#CASES[@]} cases x ${#TIMED_SLOTS[@]} images x $RUNS runs on $(nproc) cores, order alternating per round; load average $LOAD_START"
if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 1.0) }'; then
  echo "bench: note: the machine is busy (load average $LOAD_START); each run waits for a quiet moment, but other processes may still compete for the CPU" >&2
fi
for ((ROUND = 1; ROUND <= RUNS; ROUND++)); do
  order=("${ALL[@]}")
  if ((ROUND % 2 == 0)); then
    order=()
    for ((i = ${#ALL[@]} - 1; i >= 0; i--)); do order+=("${ALL[i]}"); done
  fi
  for sc in "${order[@]}"; do
    run_case "${sc%%:*}" "${sc#*:}"
    if ((ROUND == RUNS)); then check_output "${sc%%:*}" "${sc#*:}"; fi
    rm -f "$OUT"
  done
done

# Node's peak RSS on the big mostly-zero image: once without and once with verify, to a file.
echo "peak RSS on the $((IMG_SIZE[$RSS_SLOT] >> 20)) MiB image:"
ROUND=$RUNS
for c in prov_rss_nv prov_rss_v; do
  run_case "$RSS_SLOT" "$c"
  echo "  (output: $(du -k "$OUT" | cut -f1) KiB on disk)"
  check_output "$RSS_SLOT" "$c"
  rm -f "$OUT"
done

# --- 5. report ---------------------------------------------------------------------------------
echo
BENCH_RUNS=$RUNS BENCH_QUICK=$QUICK BENCH_LOAD_START=$LOAD_START BENCH_STARTUP_BUSY=$STARTUP_BUSY \
  BENCH_GIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo -dirty)" \
  node bench/flash-report.mjs "$WORK" "$RESULTS"
echo
echo "results: $RESULTS"
if grep -q $'\t0\t' "$WORK/checks.tsv"; then die "an output differs from the image"; fi
