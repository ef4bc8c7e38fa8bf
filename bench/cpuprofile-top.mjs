#!/usr/bin/env node
// Where a process's CPU time went, from a V8 .cpuprofile (node --cpu-prof): the functions
// with the most self time, self time summed per file (or package), and the inclusive time
// of provision's own functions (dist/...). Used by bench/serve.sh (BENCH_PROFILE=1).
//
//   node bench/cpuprofile-top.mjs FILE.cpuprofile [N]
import { readFileSync } from "node:fs";

const [file, nArg] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: cpuprofile-top.mjs FILE.cpuprofile [N]\n");
  process.exit(2);
}
const N = Number(nArg ?? 15);
const p = JSON.parse(readFileSync(file, "utf8"));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Time of each sample: the delta to the next sample (the last one gets the mean).
const self = new Map(); // node id -> µs
const total = p.endTime - p.startTime;
const deltas = p.timeDeltas ?? [];
for (let i = 0; i < p.samples.length; i++) {
  const dt = i + 1 < deltas.length ? deltas[i + 1] : total / p.samples.length;
  self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + Math.max(0, dt));
}

const short = (url) => {
  if (!url) return "";
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return `npm:${nm[1]}`;
  const d = /\/(dist\/.*)$/.exec(url);
  if (d) return d[1];
  return url.replace(/^file:\/\//, "");
};
const keyOf = (n) => {
  const f = n.callFrame;
  const name = f.functionName || "(anonymous)";
  return f.url ? `${name} ${short(f.url)}:${f.lineNumber + 1}` : name;
};

const selfByKey = new Map();
const selfByFile = new Map();
const inclusive = new Map();
let busy = 0;
for (const [id, us] of self) {
  const n = byId.get(id);
  const k = keyOf(n);
  selfByKey.set(k, (selfByKey.get(k) ?? 0) + us);
  const f = n.callFrame.url ? short(n.callFrame.url) : `(${n.callFrame.functionName || "native"})`;
  selfByFile.set(f, (selfByFile.get(f) ?? 0) + us);
  if (n.callFrame.functionName !== "(idle)") busy += us;
  // Inclusive: every distinct provision function on this node's stack.
  const seen = new Set();
  for (let x = id; x !== undefined; x = parent.get(x)) {
    const m = byId.get(x);
    if (!/\/dist\//.test(m.callFrame.url) || /node_modules/.test(m.callFrame.url)) continue;
    const mk = keyOf(m);
    if (seen.has(mk)) continue;
    seen.add(mk);
    inclusive.set(mk, (inclusive.get(mk) ?? 0) + us);
  }
}

const ms = (us) => (us / 1000).toFixed(0).padStart(7);
const pc = (us) => `${((us * 100) / busy).toFixed(1).padStart(5)}%`;
const top = (m, n) =>
  [...m]
    .filter(([k]) => !k.includes("(idle)"))
    .sort((a, b) => b[1] - a[1])
    .slice(0, n);
console.log(
  `profile: ${(total / 1e6).toFixed(1)} s wall, ${(busy / 1e6).toFixed(1)} s not idle (= 100% below; "(program)" is native code V8 does not attribute, "(garbage collector)" GC)`,
);
console.log(`\ntop ${N} functions by self time (ms):`);
for (const [k, us] of top(selfByKey, N)) console.log(`  ${ms(us)} ${pc(us)}  ${k}`);
console.log("\nself time by file or package (ms):");
for (const [k, us] of top(selfByFile, 12)) console.log(`  ${ms(us)} ${pc(us)}  ${k}`);
console.log(`\nprovision's functions by inclusive time (ms):`);
for (const [k, us] of top(inclusive, N)) console.log(`  ${ms(us)} ${pc(us)}  ${k}`);
