// `provision mbr show|fix|repair-unit` through the built CLI (bin/provision.js over dist/; `npm
// test` builds first), with no terminal, on copies of the FCOS fixture and on a loop device this
// file attaches.
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPAIR_SCRIPT, repairUnitFragment } from "../../src/mbr/index.js";
import { runCli } from "../helpers/cli.js";
import { partition } from "../helpers/fixtures.js";
import { attachLoop, detachLoop } from "../helpers/loop.js";
import { copyFcos, hybridDump, isRoot, mbrDump, ok, sha256 } from "./util.js";

let work: string;
let cacheHome: string;
let n = 0;
const fresh = () => copyFcos(join(work, `cli-${++n}.img`));
const cli = (args: string[]) => runCli(args, { cacheHome });

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-mbr-cli-"));
  cacheHome = join(work, "cache");
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("mbr errors a user hits", () => {
  it("a directory is named as one (exit 2); a mounted image is refused without suggesting a flag mbr fix lacks", async () => {
    const dir = await cli(["mbr", "show", work]);
    expect(dir.code).toBe(2);
    expect(dir.stderr.trim()).toBe(`provision: ${work} is a directory, not a disk or image`);
    const img = await fresh();
    const mnt = await mkdtemp(join(work, "mnt-"));
    const boot = partition("boot");
    await execa("mount", ["-o", `ro,loop,offset=${boot.offset},sizelimit=${boot.size}`, img, mnt]);
    try {
      const r = await cli(["mbr", "fix", img, "--yes"]);
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/is mounted through a loop device \(.*\); unmount it first/);
      expect(r.stderr).not.toMatch(/--unmount/);
    } finally {
      await execa("umount", [mnt], { reject: false });
    }
  });
});

describe("provision mbr show", () => {
  it("exit 1 and the problem on a protective MBR, tables aligned", async () => {
    const img = await fresh();
    const r = await cli(["mbr", "show", img]);
    expect(r.code).toBe(1);
    const lines = r.stdout.split("\n");
    expect(lines).toContain("hybrid MBR is NOT correct for a Raspberry Pi 2/3:");
    expect(lines).toContain(
      "  - MBR is protective only (0xEE in slot 1); the Pi boot ROM needs the ESP in slot 1 with type 0x0C",
    );
    // The "end" column ends at the same place in every GPT and MBR row.
    const rows = lines.filter((l) => /^(GPT|MBR) /.test(l));
    expect(rows).toHaveLength(8);
    const header = lines.find((l) => l.startsWith("table")) as string;
    const endCol = header.indexOf("end") + "end".length;
    for (const row of rows) expect(row[endCol - 1]).toMatch(/[0-9-]/);
    expect(rows.find((l) => l.includes("EFI-SYSTEM"))).toMatch(/^GPT\s+2\s+4096\s+69631\s+65536\s/);
    expect(rows[4]).toMatch(/^MBR\s+1\s+1\s+\d+\s+\d+\s+0xEE GPT protective$/);
  });

  it("exit 0 and the verdict on a hybrid MBR; --json", async () => {
    const img = await fresh();
    expect((await cli(["mbr", "fix", img])).code).toBe(0);
    const r = await cli(["mbr", "show", img]);
    expect(r.code).toBe(0);
    expect(r.stdout.trimEnd().split("\n").at(-1)).toBe(
      "hybrid MBR is correct for a Raspberry Pi 2/3",
    );
    const esp = partition("EFI-SYSTEM");
    expect(r.stdout).toMatch(
      new RegExp(
        `^MBR\\s+1\\s+${esp.start}\\s+${esp.end}\\s+${esp.sectors}\\s+0x0C FAT32 \\(LBA\\)\\s+bootable  = GPT 2 EFI-SYSTEM$`,
        "m",
      ),
    );
    expect(r.stdout).toMatch(
      new RegExp(
        `^MBR\\s+2\\s+1\\s+${esp.start - 1}\\s+${esp.start - 1}\\s+0xEE GPT protective`,
        "m",
      ),
    );
    const j = await cli(["mbr", "show", img, "--json"]);
    expect(j.code).toBe(0);
    const parsed = JSON.parse(j.stdout) as { problems: string[]; mbr: { entries: unknown[] } };
    expect(parsed.problems).toEqual([]);
    expect(parsed.mbr.entries[0]).toMatchObject({ type: 0x0c, status: 0x80 });
  });

  it("exit 2 without a GPT, or without the file", async () => {
    const blank = join(work, "blank.img");
    await writeFile(blank, Buffer.alloc(1 << 20));
    const r = await cli(["mbr", "show", blank]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/has no GPT partition table/);
    const missing = await cli(["mbr", "show", join(work, "nothing-here.img")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/no such file or device/);
  });
});

describe("provision mbr fix on image files", () => {
  it("writes without asking, then has nothing to do", async () => {
    const img = await fresh();
    const r = await cli(["mbr", "fix", img]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/hybrid MBR written and read back/);
    expect(r.stdout).toMatch(/hybrid MBR is correct for a Raspberry Pi 2\/3/);
    expect(await mbrDump(img)).toEqual(hybridDump());
    const before = { hash: await sha256(img, 0, 512), mtime: (await stat(img)).mtimeMs };
    const again = await cli(["mbr", "fix", img]);
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/hybrid MBR already correct; nothing written/);
    expect(await sha256(img, 0, 512)).toBe(before.hash);
    expect((await stat(img)).mtimeMs).toBe(before.mtime);
  });

  it("exit 2 for an unknown --partition, nothing written", async () => {
    const img = await fresh();
    const hash = await sha256(img, 0, 512);
    const r = await cli(["mbr", "fix", img, "--partition", "nope"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/the GPT has no partition named nope/);
    expect(await sha256(img, 0, 512)).toBe(hash);
  });
});

describe("provision mbr fix on a loop device (attached here)", () => {
  let loop: string | undefined;
  let backing: string;
  beforeAll(async () => {
    backing = await fresh();
    loop = await attachLoop(backing);
  });
  afterAll(async () => {
    await detachLoop(loop);
  });

  it("refuses without a terminal and without --yes, writing nothing", async () => {
    const hash = await sha256(backing, 0, 512);
    const r = await cli(["mbr", "fix", loop as string]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(
      /refusing to write \/dev\/loop\d+ without confirmation: no terminal to ask on; pass --yes/,
    );
    expect(await sha256(backing, 0, 512)).toBe(hash);
  });

  it("refuses a partition instead of the whole disk", async () => {
    const dev = loop as string;
    await ok("partx", ["-a", dev]);
    try {
      const r = await cli(["mbr", "fix", `${dev}p2`, "--yes"]);
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/is a partition; pass the whole disk \/dev\/loop\d+/);
    } finally {
      await ok("partx", ["-d", dev]);
    }
  });

  it("writes with --yes", async () => {
    const r = await cli(["mbr", "fix", loop as string, "--yes"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/hybrid MBR written and read back/);
    expect(await mbrDump(loop as string)).toEqual(hybridDump());
    expect(await mbrDump(backing)).toEqual(hybridDump());
    expect((await ok("sgdisk", ["-v", loop as string])).trim()).toMatch(/^No problems found\./);
  });
});

describe("provision mbr repair-unit", () => {
  it("prints the fragment as JSON", async () => {
    const r = await cli(["mbr", "repair-unit"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(repairUnitFragment());
  });

  it("--butane prints a Butane config with the script inline", async () => {
    const r = await cli(["mbr", "repair-unit", "--butane"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^variant: fcos\nversion: 1\.4\.0$/m);
    expect(r.stdout).toContain(`          ${REPAIR_SCRIPT.split("\n")[1]}`);
  });
});
