// Installed as a user installs it: `npm pack`, then `npm install -g` of the tarball into a
// temporary prefix, then the installed `provision` run with a PATH holding only node (and
// PROVISION_SBIN_DIRS="", so not even /usr/sbin is searched): --version, doctor --json and
// a flash --dry-run of the example image. Packed from a copy of the sources, so the prepack
// build makes a fresh dist/ there (no stale files from earlier builds can slip into the
// tarball) and the dist/ the other tests run is not rebuilt under them.
// Also: --version from this git checkout, and reading the commit from .git without git.
import { readFileSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DoctorReport } from "../../src/doctor/index.js";
import { gitCommit } from "../../src/version.js";
import { fixture, repoRoot } from "../helpers/fixtures.js";

const { version } = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
  version: string;
};

let work: string;
let tarball: string;
let entries: string[];
let prefix: string;
let nodeOnly: string;

/** Not copied: installed or built things, fixtures' outputs, git's own files. */
const NOT_COPIED = new Set(["node_modules", "dist", ".cache", ".git", "example", "tmp"]);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-package-"));
  const src = join(work, "src");
  await cp(repoRoot, src, {
    recursive: true,
    filter: (from) => {
      const rel = from.slice(repoRoot.length + 1);
      return rel === "" || !NOT_COPIED.has(rel.split("/")[0] as string);
    },
  });
  // The build needs the dev dependencies (tsc, @types/node): the repository's.
  await symlink(join(repoRoot, "node_modules"), join(src, "node_modules"));
  await execa("npm", ["pack", "--pack-destination", work], { cwd: src });
  const name = (await readdir(work)).find((f) => f.endsWith(".tgz"));
  if (!name) throw new Error(`npm pack made no tarball in ${work}`);
  tarball = join(work, name);
  entries = (await execa("tar", ["-tzf", tarball])).stdout.split("\n").filter(Boolean);

  prefix = join(work, "prefix");
  await execa(
    "npm",
    ["install", "-g", "--prefix", prefix, tarball, "--prefer-offline", "--no-audit", "--no-fund"],
    { cwd: work },
  );
  nodeOnly = join(work, "node-only");
  await mkdir(nodeOnly);
  await symlink(process.execPath, join(nodeOnly, "node"));
}, 600_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** The installed provision, on a machine that has only Node.js as far as it can tell. */
function installed(args: string[]) {
  return execa(join(prefix, "bin", "provision"), args, {
    reject: false,
    stdin: "ignore",
    cwd: work,
    extendEnv: false,
    env: {
      PATH: `${join(prefix, "bin")}:${nodeOnly}`,
      PROVISION_SBIN_DIRS: "",
      HOME: join(work, "home"),
      XDG_CACHE_HOME: join(work, "cache"),
      CI: "1",
    },
  });
}

describe("npm pack", () => {
  it("holds dist/ (no source maps), bin/, README.md, LICENSE, package.json and nothing else", () => {
    expect(tarball.endsWith(`provision-${version}.tgz`)).toBe(true);
    for (const f of ["bin/provision.js", "dist/cli.js", "dist/version.js", "dist/doctor/cli.js"])
      expect(entries).toContain(`package/${f}`);
    expect(entries).toContain("package/README.md");
    expect(entries).toContain("package/LICENSE");
    expect(entries).toContain("package/package.json");
    const other = entries.filter(
      (e) =>
        !/^package\/dist\/.+\.js$/.test(e) &&
        ![
          "package/bin/provision.js",
          "package/README.md",
          "package/LICENSE",
          "package/package.json",
        ].includes(e),
    );
    expect(other).toEqual([]);
    for (const dir of ["test/", "src/", "fixtures/", "bench/", "scripts/", "node_modules/"])
      expect(entries.filter((e) => e.startsWith(`package/${dir}`))).toEqual([]);
    expect(entries.filter((e) => e.endsWith(".map") || e.endsWith(".ts"))).toEqual([]);
  });
});

describe("npm install -g of the tarball, run with only Node.js", () => {
  it("provision --version prints the version (no git checkout there: no commit)", async () => {
    const r = await installed(["--version"]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe(version);
  });

  it("provision doctor --json: one JSON document listing the commands and what is missing", async () => {
    const r = await installed(["doctor", "--json"]);
    expect([0, 1]).toContain(r.exitCode);
    const report = JSON.parse(r.stdout) as DoctorReport;
    expect(Object.keys(report.commands)).toEqual([
      "flash",
      "pxe-stick",
      "qemu-test",
      "mbr",
      "serve",
      "fleet",
      "cache",
    ]);
    // Nothing but node on PATH: xz is missing and doctor says where it looked.
    const xz = report.commands.flash?.checks.find((c) => c.name === "xz");
    expect(xz).toMatchObject({ status: "error", looked: [join(prefix, "bin"), nodeOnly] });
    expect(report.ok).toBe(false);
    expect(r.exitCode).toBe(1);
    expect(report.install.debian).toContain("xz-utils");
  });

  it("provision flash --dry-run of the example image into a file: the plan, nothing written", async () => {
    const target = join(work, "example.img");
    const r = await installed([
      "flash",
      target,
      "--image-url",
      fixture("fcos.img.xz"),
      "--arch",
      "aarch64",
      "-i",
      join(repoRoot, "fixtures", "example.ign"),
      "--append-karg",
      "console=ttyAMA0",
      "--dry-run",
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`image: ${fixture("fcos.img.xz")}`);
    expect(r.stdout).toContain(`target: ${target} (image file, created, sparse)`);
    expect(r.stdout).toMatch(/ignition: .*example\.ign → partition boot:\/ignition\/config\.ign/);
    expect(r.stdout).toContain("dry run: nothing was downloaded or written");
    await expect(readdir(work)).resolves.not.toContain("example.img");
  });
});

describe("--version from a git checkout", () => {
  it("prints the version and the commit checked out here", async () => {
    const head = (await execa("git", ["rev-parse", "HEAD"], { cwd: repoRoot })).stdout.trim();
    const r = await execa("node", [join(repoRoot, "bin", "provision.js"), "--version"]);
    expect(r.stdout).toBe(`${version} (commit ${head.slice(0, 12)})`);
  });

  it("reads HEAD, loose refs, packed-refs and worktrees without git", async () => {
    const root = join(work, "repo");
    const git = join(root, ".git");
    const a = "a".repeat(40);
    const b = "b".repeat(40);
    const c = "c".repeat(40);
    await mkdir(join(git, "refs", "heads"), { recursive: true });
    expect(gitCommit(join(work, "no-such-dir"))).toBeUndefined();
    await writeFile(join(git, "HEAD"), "ref: refs/heads/main\n");
    expect(gitCommit(root)).toBeUndefined(); // a new repository: no commit yet
    await writeFile(
      join(git, "packed-refs"),
      `# pack-refs with: peeled fully-peeled sorted\n${b} refs/heads/main\n^${c}\n`,
    );
    expect(gitCommit(root)).toBe(b);
    await writeFile(join(git, "refs", "heads", "main"), `${a}\n`); // a loose ref wins
    expect(gitCommit(root)).toBe(a);
    await writeFile(join(git, "HEAD"), `${c}\n`); // detached
    expect(gitCommit(root)).toBe(c);

    // A worktree: .git is a file; HEAD is its own, the refs are the main repository's.
    const wt = join(work, "worktree");
    await mkdir(join(git, "worktrees", "wt"), { recursive: true });
    await mkdir(wt);
    await writeFile(join(wt, ".git"), `gitdir: ${join(git, "worktrees", "wt")}\n`);
    await writeFile(join(git, "worktrees", "wt", "HEAD"), "ref: refs/heads/main\n");
    await writeFile(join(git, "worktrees", "wt", "commondir"), "../..\n");
    expect(gitCommit(wt)).toBe(a);
  });
});
