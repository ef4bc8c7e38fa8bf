// Start-up: --help, --version and every COMMAND --help load commander and the flag
// definitions only. A command's own modules (execa, undici, ora, yaml, inquirer, ssh2, the
// flash/qemu/ipxe/serve code) load when it runs: this fails when one is imported at start-up.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { afterAll, describe, expect, it } from "vitest";
import { repoRoot } from "./helpers/fixtures.js";

const dir = mkdtempSync(path.join(tmpdir(), "provision-loads-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The packages (node_modules) and the dist/ modules a command line loads. */
async function loads(
  args: string[],
): Promise<{ packages: string[]; dist: string[]; code: number }> {
  const file = path.join(dir, `${args.join("_").replace(/[^a-z0-9_-]/gi, "")}.txt`);
  const r = await execa(
    "node",
    ["--import", path.join(repoRoot, "test/helpers/record-loads.mjs"), "bin/provision.js", ...args],
    { cwd: repoRoot, reject: false, env: { RECORD_LOADS: file }, stdin: "ignore" },
  );
  const urls = readFileSync(file, "utf8").trim().split("\n");
  const packages = new Set<string>();
  const dist: string[] = [];
  for (const u of urls) {
    const m = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(u);
    if (m) packages.add(m[1] as string);
    const d = /\/dist\/(.+)$/.exec(u);
    if (d) dist.push(d[1] as string);
  }
  return { packages: [...packages].sort(), dist, code: r.exitCode ?? -1 };
}

/** Every command path, from the real program's --help output (so a new command is covered). */
async function commandLines(): Promise<string[][]> {
  const top = await execa("node", ["bin/provision.js", "--help"], { cwd: repoRoot });
  const names = [...top.stdout.matchAll(/^ {2}([a-z][a-z-]*)\b/gm)].map((m) => m[1] as string);
  const out: string[][] = [];
  for (const n of names.filter((n) => n !== "help")) {
    out.push([n]);
    const sub = await execa("node", ["bin/provision.js", n, "--help"], { cwd: repoRoot });
    if (/^Commands:/m.test(sub.stdout))
      for (const m of sub.stdout.split(/^Commands:/m)[1]?.matchAll(/^ {2}([a-z][a-z-]*)\b/gm) ?? [])
        if (m[1] !== "help") out.push([n, m[1] as string]);
  }
  return out;
}

describe("start-up loads only commander and the flag definitions", () => {
  it("--help and --version", async () => {
    for (const args of [["--help"], ["--version"]]) {
      const r = await loads(args);
      expect(r.code, args.join(" ")).toBe(0);
      expect(r.packages, args.join(" ")).toEqual(["commander"]);
      // No command's run module or library code: those are loaded by the action.
      expect(r.dist.filter((d) => /(^|\/)(run|index)\.js$/.test(d) && d !== "cli.js")).toEqual([]);
    }
  });

  it("every COMMAND --help", async () => {
    const cmds = await commandLines();
    expect(cmds.map((c) => c.join(" "))).toEqual(
      expect.arrayContaining([
        "flash",
        "pxe-stick",
        "qemu-test",
        "serve",
        "fleet list",
        "mbr show",
      ]),
    );
    for (const c of cmds) {
      const r = await loads([...c, "--help"]);
      expect(r.code, c.join(" ")).toBe(0);
      expect(r.packages, c.join(" ")).toEqual(["commander"]);
    }
  });

  it("a command that runs loads its modules (the recorder sees them)", async () => {
    // The check above means something only if loads() sees a command's imports.
    const r = await loads(["mbr", "repair-unit"]);
    expect(r.code).toBe(0);
    expect(r.dist).toContain("mbr/index.js");
  });
});
