// The report of bench/flash.sh: reads what the script recorded in its work directory, prints
// the per-image tables and the goals of issue 14 with PASS/MISS, and writes the JSON.
//
//   node bench/flash-report.mjs WORKDIR OUT.json
//
// WORKDIR/images.tsv  slot role totalMiB path bytes xzBytes zeroFraction sha256 bmapMappedBytes
// WORKDIR/runs.tsv    slot case round seconds cpu rssKiB nodeHwmKiB treeKiB otherCpu attempts
//                     firstWrite jsonPeakRssBytes timingsJSON   ("-" where it does not apply)
// WORKDIR/checks.tsv  slot case ok got
// WORKDIR/startup.json (bench/startup.mjs)
// Environment: BENCH_RUNS, BENCH_QUICK, BENCH_LOAD_START, BENCH_GIT.
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { median } from "./stats.mjs";

const [work, outPath] = process.argv.slice(2);
const tsv = (name) =>
  readFileSync(`${work}/${name}`, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => l.split("\t"));
const num = (s) => (s === undefined || s === "-" || s === "" ? undefined : Number(s));

const images = {};
for (const [slot, role, totalMiB, path, bytes, xzBytes, zeroFraction, sha256, mapped] of tsv(
  "images.tsv",
)) {
  images[slot] = {
    role,
    totalMiB: Number(totalMiB),
    path,
    bytes: Number(bytes),
    xzBytes: Number(xzBytes),
    zeroFraction: Number(zeroFraction),
    sha256,
    bmapMappedBytes: num(mapped) ?? null,
  };
}
const slotOf = (role) => Object.keys(images).find((s) => images[s].role === role);
const A = slotOf("files"); // ~60 % zeros
const B = slotOf("zeros"); // ~96 % zeros
const C = slotOf("rss"); // the big mostly-zero one, peak RSS only

const runs = {}; // "slot:case" -> list of run records
for (const r of tsv("runs.tsv")) {
  const [
    slot,
    kase,
    round,
    seconds,
    cpu,
    rss,
    hwm,
    tree,
    other,
    attempts,
    firstWrite,
    jsonPeak,
    timings,
  ] = r;
  const key = `${slot}:${kase}`;
  const hwmKiB = num(hwm);
  const jsonPeakKiB = num(jsonPeak) === undefined ? undefined : num(jsonPeak) / 1024;
  // node's peak: the larger of the polled VmHWM and what node itself reports in --json
  // (peakRssBytes, process.resourceUsage().maxRSS): polling every 0.1 s can miss the last moment.
  const nodePeak =
    hwmKiB === undefined && jsonPeakKiB === undefined
      ? undefined
      : Math.max(hwmKiB ?? 0, jsonPeakKiB ?? 0);
  (runs[key] ??= []).push({
    round: Number(round),
    seconds: Number(seconds),
    cpu: Number(cpu),
    rssKiB: Number(rss),
    nodePeakKiB: nodePeak,
    nodeHwmPolledKiB: hwmKiB,
    nodeJsonPeakKiB: jsonPeakKiB,
    treeKiB: num(tree),
    otherCpu: Number(other),
    attempts: Number(attempts),
    firstWrite: num(firstWrite),
    timings: timings && timings !== "-" ? JSON.parse(timings) : undefined,
  });
}
const checks = tsv("checks.tsv").map(([slot, kase, ok, got]) => ({
  slot,
  case: kase,
  ok: ok === "1",
  got,
}));
const startup = JSON.parse(readFileSync(`${work}/startup.json`, "utf8"));

const max = (a) => {
  const s = a.filter((x) => x !== undefined);
  return s.length ? Math.max(...s) : undefined;
};
const stat = (key) => {
  const l = runs[key];
  if (!l) return undefined;
  return {
    median: median(l.map((r) => r.seconds)),
    min: Math.min(...l.map((r) => r.seconds)),
    cpu: median(l.map((r) => r.cpu)),
    rssKiB: max(l.map((r) => r.rssKiB)),
    nodePeakKiB: max(l.map((r) => r.nodePeakKiB)),
    treeKiB: max(l.map((r) => r.treeKiB)),
    firstWrite: median(l.map((r) => r.firstWrite)),
  };
};

const LABEL = {
  floor: "floor: xz -dc -T0 > /dev/null",
  pipe: "pipe: xz -dc -T0 | cat > /dev/null",
  prov_file_nv: "provision --no-verify          -> file",
  prov_file_v: "provision (verify)             -> file",
  bmap_file_nv: "bmaptool copy --no-verify      -> file",
  bmap_file_v: "bmaptool copy (verify)         -> file",
  prov_loop_nv: "provision --no-verify          -> loop",
  prov_loop_v: "provision (verify)             -> loop",
  prov_sparse_nv: "provision --sparse --no-verify -> loop",
  prov_sparse_v: "provision --sparse (verify)    -> loop",
  bmap_loop_nv: "bmaptool copy --no-verify      -> loop",
  bmap_loop_v: "bmaptool copy (verify)         -> loop",
  dd_file: "xz -dc | dd bs=4M conv=fsync    -> file",
  dd_loop: "xz -dc | dd bs=4M conv=fsync    -> loop",
  prov_rss_nv: "provision --no-verify          -> file",
  prov_rss_v: "provision (verify)             -> file",
};
const ORDER = Object.keys(LABEL);
const f2 = (x) => (x === undefined ? "-" : x.toFixed(2));
const mib = (k) => (k === undefined ? "-" : (k / 1024).toFixed(1));
const mb = (k) => (k === undefined ? undefined : Math.round((k * 1024) / 1e5) / 10);
const pct = (x) => `${(x * 100).toFixed(1)}%`;
const imgDesc = (s) => {
  const i = images[s];
  return `${i.totalMiB} MiB, ${pct(i.zeroFraction)} all-zero 4 KiB blocks (${(
    (i.bytes * (1 - i.zeroFraction)) / 1048576
  ).toFixed(0)} MiB non-zero), ${(i.xzBytes / 1048576).toFixed(1)} MiB as xz${
    i.bmapMappedBytes != null ? `, bmap maps ${(i.bmapMappedBytes / 1048576).toFixed(0)} MiB` : ""
  }`;
};
const size = (b) =>
  b >= 1073741824
    ? `${(b / 1073741824).toFixed(b % 1073741824 ? 1 : 0)}G`
    : `${Math.round(b / 1048576)}M`;
const NAME = {};
for (const s of Object.keys(images)) NAME[s] = `${images[s].role} ${size(images[s].bytes)}`;

const pad = (s, n) => String(s).padEnd(n);
const lpad = (s, n) => String(s).padStart(n);
const lines = [];
const say = (s = "") => lines.push(s);

say(
  `load average at the end: ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`,
);
for (const s of Object.keys(images)) {
  const keys = ORDER.filter((c) => runs[`${s}:${c}`]);
  if (keys.length === 0) continue;
  say();
  say(`image ${NAME[s]}: ${imgDesc(s)}`);
  say(
    `  ${pad("case", 38)} ${lpad("median s", 8)} ${lpad("min s", 6)} ${lpad("CPU s", 6)} ${lpad("RSS MiB", 8)} ${lpad(
      "node MiB",
      8,
    )} ${lpad("+xz MiB", 8)} ${lpad("1st wr s", 8)}   ${pad("runs (s)", 18)} other CPU s`,
  );
  for (const c of keys) {
    const k = `${s}:${c}`;
    const st = stat(k);
    const prov = c.startsWith("prov_");
    say(
      `  ${pad(LABEL[c], 38)} ${lpad(f2(st.median), 8)} ${lpad(f2(st.min), 6)} ${lpad(f2(st.cpu), 6)} ${lpad(
        mib(st.rssKiB),
        8,
      )} ${lpad(prov ? mib(st.nodePeakKiB) : "-", 8)} ${lpad(prov ? mib(st.treeKiB) : "-", 8)} ${lpad(
        prov && st.firstWrite !== undefined ? st.firstWrite.toFixed(3) : "-",
        8,
      )}   ${pad(runs[k].map((r) => r.seconds).join(" "), 18)} ${runs[k].map((r) => r.otherCpu).join(" ")}`,
    );
  }
}
say(`(CPU s: median user+system of the process and its children. RSS MiB: GNU time %M, the peak of
 the largest single process, for provision usually its xz -T0 child. node MiB: node's own peak
 RSS, the larger of VmHWM polled every 0.1 s and --json peakRssBytes. +xz MiB: node and its
 children together (sum of VmRSS, sampled). 1st wr s: --json timings.firstWrite, from process
 start to the first byte written. other CPU s: CPU time used meanwhile by everything else, incl.
 kernel threads working for the run (loop device, writeback); a few seconds are normal.)`);

// --- start-up -------------------------------------------------------------------------------
say();
say(
  `start-up (median of ${startup.reps} runs each, wall time of the spawn; ${startup.baseline.name}: ${startup.baseline.medianSeconds.toFixed(
    3,
  )} s; CPUs ${process.env.BENCH_STARTUP_BUSY}% busy meanwhile)`,
);
for (const c of startup.cases) {
  say(
    `  ${pad(c.name, 36)} ${lpad(c.medianSeconds.toFixed(3), 7)} s  ${lpad(c.ratio.toFixed(2), 5)}x${
      c.exitStatus ? `  (exit status ${c.exitStatus}!)` : ""
    }`,
  );
}

// --- goals ----------------------------------------------------------------------------------
const ratio = (a, b) => (a === undefined || b === undefined || b <= 0 ? undefined : a / b);
const med = (s, c) => stat(`${s}:${c}`)?.median;
const targets = []; // {name, value, op, target, counts}
const goal = (name, value, op, target, counts = true, note) =>
  targets.push({ name, value, op, target, counts, note });
for (const s of [A, B]) {
  const n = `[${NAME[s]}]`;
  goal(`${n} file --no-verify / floor`, ratio(med(s, "prov_file_nv"), med(s, "floor")), "<=", 1.15);
  goal(
    `${n} verify / --no-verify, file`,
    ratio(med(s, "prov_file_v"), med(s, "prov_file_nv")),
    "<=",
    1.25,
  );
  goal(
    `${n} verify / --no-verify, loop`,
    ratio(med(s, "prov_loop_v"), med(s, "prov_loop_nv")),
    "<=",
    1.25,
  );
  goal(
    `${n} provision / bmaptool, file, verify`,
    ratio(med(s, "prov_file_v"), med(s, "bmap_file_v")),
    "<=",
    1.0,
  );
  goal(
    `${n} provision / bmaptool, file, --no-verify`,
    ratio(med(s, "prov_file_nv"), med(s, "bmap_file_nv")),
    "<=",
    1.0,
  );
  goal(
    `${n} prov --sparse / bmaptool, loop, verify`,
    ratio(med(s, "prov_sparse_v"), med(s, "bmap_loop_v")),
    "<=",
    1.0,
  );
  goal(
    `${n} prov --sparse / bmaptool, loop, --no-verify`,
    ratio(med(s, "prov_sparse_nv"), med(s, "bmap_loop_nv")),
    "<=",
    1.0,
  );
  // Information (indented names do not count): provision's default on a device writes every byte.
  goal(
    `  ${n} prov (every byte) / bmaptool, loop, verify`,
    ratio(med(s, "prov_loop_v"), med(s, "bmap_loop_v")),
    "<=",
    1.0,
    false,
  );
  goal(
    `  ${n} verify / --no-verify, loop --sparse`,
    ratio(med(s, "prov_sparse_v"), med(s, "prov_sparse_nv")),
    "<=",
    1.25,
    false,
  );
  goal(
    `  ${n} pipe floor (xz | cat) / floor`,
    ratio(med(s, "pipe"), med(s, "floor")),
    "<=",
    1.15,
    false,
  );
  goal(
    `  ${n} file --no-verify / pipe floor`,
    ratio(med(s, "prov_file_nv"), med(s, "pipe")),
    "<=",
    1.15,
    false,
  );
  goal(
    `  ${n} bmaptool --no-verify file / pipe floor`,
    ratio(med(s, "bmap_file_nv"), med(s, "pipe")),
    "<=",
    1.15,
    false,
  );
  goal(
    `  ${n} bmaptool (verify) file / floor`,
    ratio(med(s, "bmap_file_v"), med(s, "floor")),
    "<=",
    1.15,
    false,
  );
  if (runs[`${s}:dd_file`]) {
    goal(
      `  ${n} xz|dd file / provision file --no-verify`,
      ratio(med(s, "dd_file"), med(s, "prov_file_nv")),
      ">=",
      1.0,
      false,
    );
  }
}
const provKeys = Object.keys(runs).filter((k) => k.split(":")[1].startsWith("prov_"));
const nodePeakOf = (keys) => max(keys.map((k) => stat(k).nodePeakKiB));
const peakAll = nodePeakOf(provKeys);
goal("node peak RSS, MB (every provision run)", mb(peakAll), "<=", 100);
for (const s of [A, B, C]) {
  goal(
    `  (${NAME[s]} image, MB)`,
    mb(nodePeakOf(provKeys.filter((k) => k.startsWith(`${s}:`)))),
    "<=",
    100,
    false,
  );
}
// "The same for a 1.5 GiB and an 8 GiB image": the same two runs (file, with and without verify).
const peakB = nodePeakOf([`${B}:prov_file_nv`, `${B}:prov_file_v`].filter((k) => runs[k]));
const peakC = nodePeakOf([`${C}:prov_rss_nv`, `${C}:prov_rss_v`].filter((k) => runs[k]));
goal(
  `node peak RSS ${NAME[C]} - ${NAME[B]} (file runs), MB`,
  peakB === undefined || peakC === undefined
    ? undefined
    : Math.round(((peakC - peakB) * 1024) / 1e5) / 10,
  "<=",
  10,
);
const firstWrites = provKeys.flatMap((k) => runs[k].map((r) => r.firstWrite));
const fwMedian = median(firstWrites);
goal(
  "first write, median s (--json timings.firstWrite)",
  fwMedian === undefined ? undefined : Math.round(fwMedian * 1000) / 1000,
  "<=",
  0.3,
  true,
  fwMedian === undefined
    ? "no timings.firstWrite in --json: dist/ older than the timings? (npm run build)"
    : undefined,
);
const failedStartup = startup.cases.filter((c) => c.exitStatus !== 0);
const worst = startup.cases.reduce((w, c) => (w && w.ratio >= c.ratio ? w : c), undefined);
goal(
  `start-up, worst / node -e 0 (${worst?.name})`,
  failedStartup.length ? undefined : worst && Math.round(worst.ratio * 100) / 100,
  "<=",
  2.0,
  true,
  failedStartup.length ? `failed: ${failedStartup.map((c) => c.name).join(", ")}` : undefined,
);

const verdict = (t) => {
  if (t.value === undefined) return "MISS";
  const ok =
    t.op === "<=" ? t.value <= t.target : t.op === ">=" ? t.value >= t.target : t.value < t.target;
  return ok ? "PASS" : "MISS";
};
const shaOk = checks.length > 0 && checks.every((c) => c.ok);
say();
say(`${pad("goal (issue 14)", 58)} ${lpad("value", 7)}   ${pad("target", 8)}`);
let allPass = true;
for (const t of targets) {
  t.result = verdict(t);
  if (t.counts && t.result !== "PASS") allPass = false;
  const v =
    t.value === undefined ? "n/a" : t.name.includes("MB") ? t.value.toFixed(1) : t.value.toFixed(3);
  say(
    `${pad(t.name, 58)} ${lpad(v, 7)}   ${pad(`${t.op} ${t.target}`, 8)} ${t.result}${t.note ? `  (${t.note})` : ""}`,
  );
}
say(
  `${pad(`outputs identical to the image (${checks.length} checked)`, 58)} ${lpad(String(shaOk), 7)}   ${pad("== true", 8)} ${
    shaOk ? "PASS" : "MISS"
  }`,
);
for (const c of checks.filter((c) => !c.ok)) say(`  MISMATCH: ${c.slot} ${c.case}: ${c.got}`);
if (!shaOk) allPass = false;
say(`all goals: ${allPass ? "PASS" : "MISS"}`);
console.log(lines.join("\n"));

const results = {
  date: new Date().toISOString(),
  git: process.env.BENCH_GIT ?? "unknown",
  quick: process.env.BENCH_QUICK === "1",
  runs: Number(process.env.BENCH_RUNS),
  loadAverageAtStart: process.env.BENCH_LOAD_START,
  loadAverageAtEnd: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" "),
  images,
  cases: Object.fromEntries(
    Object.keys(runs).map((k) => {
      const st = stat(k);
      return [
        k,
        {
          label: LABEL[k.split(":")[1]],
          medianSeconds: st.median,
          minSeconds: st.min,
          medianCpuSeconds: st.cpu,
          peakRssKiB: st.rssKiB,
          nodePeakRssKiB: st.nodePeakKiB ?? null,
          nodeAndChildrenPeakRssKiB: st.treeKiB ?? null,
          medianFirstWriteSeconds: st.firstWrite ?? null,
          runs: runs[k],
        },
      ];
    }),
  ),
  startup: { ...startup, cpuBusyPercent: Number(process.env.BENCH_STARTUP_BUSY) },
  outputChecks: checks,
  targets: [
    ...targets.map((t) => ({
      name: t.name.trim(),
      value: t.value ?? null,
      op: t.op,
      target: t.target,
      result: t.result,
      counts: t.counts,
      ...(t.note ? { note: t.note } : {}),
    })),
    {
      name: "outputs identical to the image",
      value: shaOk,
      op: "==",
      target: true,
      result: shaOk ? "PASS" : "MISS",
      counts: true,
    },
  ],
  allPass,
};
writeFileSync(`${outPath}.tmp`, `${JSON.stringify(results, null, 2)}\n`);
renameSync(`${outPath}.tmp`, outPath);
