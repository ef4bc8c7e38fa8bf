# shellcheck shell=bash
# Shared by the bench scripts (sourced, not run): the machine is shared (2 cores), so each
# timed run first waits for the CPUs to be quiet and reports how much CPU others used.

# "busy total" jiffies of all CPUs since boot, from /proc/stat.
cpu_jiffies() {
  local _cpu user nice system idle iowait irq softirq steal _rest
  read -r _cpu user nice system idle iowait irq softirq steal _rest </proc/stat
  echo "$((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}

# shellcheck disable=SC2034 # used by the scripts that source this
CLK_TCK=$(getconf CLK_TCK)
QUIET_WAIT=${BENCH_QUIET_WAIT:-300}

# Wait (up to QUIET_WAIT seconds) for a window of $1 seconds (default 1) in which the CPUs
# are less than 15% busy.
wait_quiet() {
  local window=${1:-1} waited=0 b0 t0 b1 t1
  while :; do
    read -r b0 t0 < <(cpu_jiffies)
    sleep "$window"
    read -r b1 t1 < <(cpu_jiffies)
    if (((b1 - b0) * 100 < 15 * (t1 - t0))); then break; fi
    waited=$((waited + window))
    if ((waited == window)); then echo "  (machine busy: waiting up to ${QUIET_WAIT}s for it to calm down)" >&2; fi
    if ((waited >= QUIET_WAIT)); then
      echo "bench: WARNING: still busy after ${QUIET_WAIT}s; timing anyway" >&2
      break
    fi
  done
}

now() { date +%s.%N; }
# The median and the minimum of the numbers given as arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
minimum() { printf '%s\n' "$@" | sort -g | head -n1; }

# REAPER: bench/reaper.c built once under $BENCH (a child subreaper that waits for the command
# and for everything it leaves behind), rebuilt when the source changes.
build_reaper() {
  REAPER=$BENCH/reaper-$(sha256sum "$(dirname "${BASH_SOURCE[0]}")/reaper.c" | cut -c1-12)
  if [[ ! -x $REAPER ]]; then
    rm -f "$BENCH"/reaper-*
    cc -O2 -Wall -o "$REAPER.tmp" "$(dirname "${BASH_SOURCE[0]}")/reaper.c"
    mv -f "$REAPER.tmp" "$REAPER"
  fi
}
