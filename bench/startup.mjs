// Start-up time of provision's cheap paths against a bare `node -e 0` (issue 14), used by
// bench/flash.sh:
//
//   node bench/startup.mjs BIN REPS OUT.json
//
// The paths: `--help`, `--version`, and `COMMAND --help` for every command and subcommand
// that `--help` lists (found by reading the "Commands:" sections, so new commands are picked
// up; `help` itself is left out). Each is run REPS times, round-robin with the baseline so
// that a disturbance hits all of them alike (after one untimed warm-up round), with
// stdout/stderr to /dev/null; the wall time of each spawn is taken with hrtime (ns, not GNU
// time's 10 ms) and the median is reported. Spawning costs both sides the same.
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { median } from "./stats.mjs";

const [bin, repsArg, out] = process.argv.slice(2);
const reps = Number(repsArg);
if (!bin || !out || !(reps > 0)) {
  console.error("usage: node bench/startup.mjs BIN REPS OUT.json");
  process.exit(2);
}
const node = process.execPath;

/** Command names listed under "Commands:" in commander's help (continuation lines are indented deeper). */
function commandsIn(text) {
  const names = [];
  let inside = false;
  for (const line of text.split("\n")) {
    if (/^Commands:/.test(line)) inside = true;
    else if (inside && line.trim() === "") inside = false;
    else if (inside) {
      const m = /^ {2}([a-z][\w-]*)/.exec(line);
      if (m && m[1] !== "help") names.push(m[1]);
    }
  }
  return names;
}

function helpOf(path) {
  const r = spawnSync(node, [bin, ...path, "--help"], { encoding: "utf8" });
  if (r.status !== 0) return "";
  return r.stdout;
}

const cases = [
  { name: "node -e 0", args: ["-e", "0"] },
  { name: "--help", args: [bin, "--help"] },
  { name: "--version", args: [bin, "--version"] },
];
const walk = (path, depth) => {
  for (const c of commandsIn(helpOf(path))) {
    const sub = [...path, c];
    cases.push({ name: `${sub.join(" ")} --help`, args: [bin, ...sub, "--help"] });
    if (depth < 2) walk(sub, depth + 1);
  }
};
walk([], 0);

const samples = cases.map(() => []);
const status = cases.map(() => 0);
for (let r = 0; r <= reps; r++) {
  // Rotate the order each round.
  for (let k = 0; k < cases.length; k++) {
    const i = (k + r) % cases.length;
    const t0 = process.hrtime.bigint();
    const res = spawnSync(node, cases[i].args, { stdio: "ignore" });
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    if (res.status !== 0) status[i] = res.status ?? 128;
    if (r > 0) samples[i].push(s); // round 0 warms the file cache
  }
}
const base = median(samples[0]);
const result = {
  reps,
  baseline: { name: cases[0].name, medianSeconds: base, minSeconds: Math.min(...samples[0]) },
  cases: cases.slice(1).map((c, j) => {
    const i = j + 1;
    const m = median(samples[i]);
    return {
      name: c.name,
      medianSeconds: m,
      minSeconds: Math.min(...samples[i]),
      ratio: m / base,
      exitStatus: status[i],
    };
  }),
};
writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
