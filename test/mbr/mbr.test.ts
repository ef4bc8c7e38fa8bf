// src/mbr against real tools: copies of the FCOS-layout fixture, read back with sfdisk, fdisk,
// sgdisk and gdisk, and a loop device this file attaches (partx -a) to check that Linux still
// reads the GPT. Writes only to files in a temp dir and to the loop devices it attaches.
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProvisionError, UsageError } from "../../src/errors.js";
import { type Gpt, readGpt } from "../../src/gpt/index.js";
import {
  buildHybridMbr,
  checkHybridForPi,
  encodeMbrEntries,
  type Mbr,
  type MbrEntries,
  mbrEquals,
  readMbr,
  writeHybridMbr,
} from "../../src/mbr/index.js";
import { manifest, partition } from "../helpers/fixtures.js";
import { attachLoop, detachLoop } from "../helpers/loop.js";
import { copyFcos, gptDump, hybridDump, isRoot, mbrDump, ok, sha256, tool } from "./util.js";

let work: string;
let n = 0;
const fresh = () => copyFcos(join(work, `fcos-${++n}.img`));

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-mbr-"));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

const esp = () => partition("EFI-SYSTEM");

describe("readMbr", () => {
  it("reads the protective MBR of the fixture", async () => {
    const img = await fresh();
    const mbr = await readMbr(img);
    const total = manifest().artifacts["fcos.img"].size / 512;
    expect(mbr.signatureOk).toBe(true);
    expect(mbr.entries[0]).toMatchObject({ slot: 1, type: 0xee, lbaStart: 1, sectors: total - 1 });
    expect(mbr.entries.slice(1).every((e) => e.type === 0 && e.sectors === 0)).toBe(true);
  });

  it("reports a missing 0x55AA, and refuses a file shorter than a sector", async () => {
    const blank = join(work, "blank.img");
    await writeFile(blank, Buffer.alloc(4096));
    expect((await readMbr(blank)).signatureOk).toBe(false);
    const tiny = join(work, "tiny.img");
    await writeFile(tiny, Buffer.alloc(100));
    await expect(readMbr(tiny)).rejects.toThrow(/shorter than one sector/);
    await expect(readMbr(join(work, "missing.img"))).rejects.toThrow(UsageError);
  });
});

describe("buildHybridMbr", () => {
  it("puts the ESP in slot 1 (0x0C, bootable) and 0xEE from LBA 1 in slot 2", async () => {
    const gpt = await readGpt(await fresh());
    const e = buildHybridMbr(gpt);
    expect(e[0]).toEqual({
      slot: 1,
      status: 0x80,
      type: 0x0c,
      chsFirst: [0xfe, 0xff, 0xff],
      chsLast: [0xfe, 0xff, 0xff],
      lbaStart: esp().start,
      sectors: esp().sectors,
    });
    expect(e[1]).toEqual({
      slot: 2,
      status: 0,
      type: 0xee,
      chsFirst: [0xfe, 0xff, 0xff],
      chsLast: [0xfe, 0xff, 0xff],
      lbaStart: 1,
      sectors: esp().start - 1,
    });
    expect(
      encodeMbrEntries(e)
        .subarray(32)
        .equals(Buffer.from([...Array(32).fill(0), 0x55, 0xaa])),
    ).toBe(true);
  });

  it("takes another partition by name, falls back to the EF00 type, and names what is missing", async () => {
    const img = await fresh();
    const gpt = await readGpt(img);
    const boot = partition("boot");
    expect(buildHybridMbr(gpt, { partition: "boot" })[0]).toMatchObject({
      lbaStart: boot.start,
      sectors: boot.sectors,
    });
    expect(() => buildHybridMbr(gpt, { partition: "nope" })).toThrow(
      /no partition named nope \(it has: reserved, EFI-SYSTEM, boot, root\)/,
    );
    // Renamed ESP: found by its type GUID.
    await ok("sgdisk", ["-c", "2:esp", img]);
    const renamed = await readGpt(img);
    expect(buildHybridMbr(renamed)[0]).toMatchObject({ lbaStart: esp().start });
    // No ESP at all.
    await ok("sgdisk", ["-t", "2:8300", img]);
    const noEsp = await readGpt(img);
    expect(() => buildHybridMbr(noEsp)).toThrow(UsageError);
  });

  it("refuses 4096-byte sectors and partitions beyond 2 TiB", async () => {
    const gpt = await readGpt(await fresh());
    const g4k: Gpt = { ...gpt, sectorSize: 4096 };
    expect(() => buildHybridMbr(g4k)).toThrow(/4096-byte sectors.*not supported/);
    const far: Gpt = {
      ...gpt,
      partitions: gpt.partitions.map((p) =>
        p.name === "EFI-SYSTEM" ? { ...p, firstLba: 2 ** 32 - 10, lastLba: 2 ** 32 + 100 } : p,
      ),
    };
    expect(() => buildHybridMbr(far)).toThrow(/beyond sector 2\^32/);
  });
});

describe("writeHybridMbr on an image file", () => {
  let img: string;
  let original: string;
  let gpt: Gpt;
  let written: Mbr;
  beforeAll(async () => {
    img = await fresh();
    original = join(work, "original.img");
    await ok("cp", ["--sparse=always", img, original]);
    gpt = await readGpt(img);
    written = await writeHybridMbr(img, buildHybridMbr(gpt));
  });

  it("sfdisk -d shows exactly the hybrid, and the GPT unchanged", async () => {
    expect(await mbrDump(img)).toEqual(hybridDump());
    expect(await gptDump(img)).toEqual(await gptDump(original));
    expect(written.entries[0]).toMatchObject({ status: 0x80, type: 0x0c });
  });

  it("fdisk -l shows slot 1 bootable FAT32 (LBA) and slot 2 GPT from sector 1", async () => {
    const out = await ok("fdisk", ["-l", "-t", "dos", img]);
    const rows = out
      .split("\n")
      .filter((l) => l.startsWith(img))
      .map((l) => l.slice(img.length).trim().split(/\s+/));
    const e = esp();
    expect(rows).toEqual([
      [
        "1",
        "*",
        String(e.start),
        String(e.end),
        String(e.sectors),
        "32M",
        "c",
        "W95",
        "FAT32",
        "(LBA)",
      ],
      ["2", "1", String(e.start - 1), String(e.start - 1), "2M", "ee", "GPT"],
    ]);
    // Without -t dos, fdisk still reads the GPT.
    expect(await ok("fdisk", ["-l", img])).toMatch(/Disklabel type: gpt/);
  });

  it("sgdisk -v finds no problems and gdisk calls it a hybrid MBR", async () => {
    const v = await tool("sgdisk", ["-v", img]);
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(/^No problems found\. \d+ free sectors/m);
    expect(`${v.stdout}${v.stderr}`).not.toMatch(/warning|problem:|caution/i);
    const l = await ok("gdisk", ["-l", img]);
    expect(l).toMatch(/^ {2}MBR: hybrid$/m);
    expect(l).toMatch(/^Found valid GPT with hybrid MBR; using GPT\.$/m);
  });

  it("changes bytes 446–511 only", async () => {
    const size = (await stat(img)).size;
    expect(await sha256(img, 0, 446)).toBe(await sha256(original, 0, 446));
    expect(await sha256(img, 512, size)).toBe(await sha256(original, 512, size));
    const a = await readFile(img);
    expect(a.subarray(446, 512).equals(encodeMbrEntries(buildHybridMbr(gpt)))).toBe(true);
  });

  it("keeps a disk signature and boot code that were there", async () => {
    const other = await fresh();
    const code = Buffer.alloc(446, 0x5a);
    code.writeUInt32LE(0xdeadbeef, 440);
    const { open } = await import("node:fs/promises");
    const fh = await open(other, "r+");
    await fh.write(code, 0, 446, 0);
    await fh.close();
    const mbr = await writeHybridMbr(other, buildHybridMbr(await readGpt(other)));
    expect(mbr.diskSignature).toBe(0xdeadbeef);
    expect((await readFile(other)).subarray(0, 446).equals(code)).toBe(true);
    expect(await ok("sfdisk", ["-d", "-Y", "dos", other])).toMatch(/label-id: 0xdeadbeef/);
  });

  it("checkHybridForPi: no problems; mbrEquals: true", async () => {
    expect(checkHybridForPi(await readMbr(img), gpt)).toEqual([]);
    expect(mbrEquals(await readMbr(img), buildHybridMbr(gpt))).toBe(true);
    expect(mbrEquals(await readMbr(original), buildHybridMbr(gpt))).toBe(false);
  });
});

describe("checkHybridForPi", () => {
  let gpt: Gpt;
  let good: MbrEntries;
  beforeAll(async () => {
    gpt = await readGpt(await fresh());
    good = buildHybridMbr(gpt);
  });
  const mbrOf = (entries: MbrEntries, signatureOk = true): Mbr => ({
    entries,
    signatureOk,
    diskSignature: 0,
  });
  const edit = (slot: number, change: object): MbrEntries =>
    good.map((e) => (e.slot === slot ? { ...e, ...change } : e)) as MbrEntries;

  it("a protective MBR", async () => {
    const problems = checkHybridForPi(await readMbr(await fresh()), gpt);
    expect(problems).toEqual([
      "MBR is protective only (0xEE in slot 1); the Pi boot ROM needs the ESP in slot 1 with type 0x0C",
    ]);
  });

  it("what sgdisk --hybrid makes: 0xEF in slot 1, or 0xEE first", async () => {
    const efFirst = await fresh();
    await ok("sgdisk", ["-h", "2:EE", efFirst]);
    expect(checkHybridForPi(await readMbr(efFirst), gpt)).toEqual([
      "slot 1 has type 0xEF; the Pi boot ROM needs 0x0C",
      "slot 1 is not marked bootable (status 0x00, want 0x80)",
    ]);
    const eeFirst = await fresh();
    await ok("sgdisk", ["-h", "2", eeFirst]);
    expect(checkHybridForPi(await readMbr(eeFirst), gpt)).toEqual([
      "slot 1 has type 0xEE; the Pi boot ROM needs the ESP there with type 0x0C (0xEE belongs in slot 2)",
      `slot 2 has type 0xEF; want 0xEE (GPT protective) from LBA 1–${esp().start - 1}`,
    ]);
  });

  it("accepts the other FAT types in slot 1, and names each other fault", () => {
    expect(checkHybridForPi(mbrOf(edit(1, { type: 0x0b })), gpt)).toEqual([]);
    expect(checkHybridForPi(mbrOf(edit(1, { type: 0x0e })), gpt)).toEqual([]);
    expect(checkHybridForPi(mbrOf(edit(1, { chsFirst: [0, 2, 0] })), gpt)).toEqual([]);
    expect(checkHybridForPi(mbrOf(good, false), gpt)).toEqual([
      "no MBR signature (0x55AA) at bytes 510–511",
    ]);
    expect(
      checkHybridForPi(mbrOf(edit(1, { type: 0, status: 0, lbaStart: 0, sectors: 0 })), gpt),
    ).toEqual(["slot 1 is empty; the Pi boot ROM boots only from slot 1"]);
    expect(checkHybridForPi(mbrOf(edit(1, { sectors: 100 })), gpt)).toEqual([
      `slot 1 covers LBA ${esp().start}–${esp().start + 99} (100 sectors) but GPT partition 2 (EFI-SYSTEM) is LBA ${esp().start}–${esp().end} (${esp().sectors} sectors)`,
    ]);
    expect(checkHybridForPi(mbrOf(edit(2, { type: 0, lbaStart: 0, sectors: 0 })), gpt)).toEqual([
      `slot 2 is empty; it needs 0xEE from LBA 1–${esp().start - 1} so that Linux keeps using the GPT`,
    ]);
    expect(checkHybridForPi(mbrOf(edit(2, { lbaStart: 2048, sectors: 2048 })), gpt)).toEqual([
      `slot 2 (0xEE) covers LBA 2048–4095 (2048 sectors); want LBA 1–${esp().start - 1}`,
    ]);
    expect(
      checkHybridForPi(mbrOf(edit(3, { type: 0x83, lbaStart: 69632, sectors: 10 })), gpt),
    ).toEqual(["slot 3 has type 0x83; it must be empty"]);
    expect(checkHybridForPi(mbrOf(good), { ...gpt, sectorSize: 4096 })).toEqual([
      expect.stringMatching(/4096-byte sectors/),
    ]);
    expect(checkHybridForPi(mbrOf(good), gpt, { partition: "boot" })).toHaveLength(2);
  });
});

describe("on a loop device (attached here)", () => {
  let loop: string | undefined;
  let backing: string;
  beforeAll(async () => {
    backing = await fresh();
    loop = await attachLoop(backing);
  });
  afterAll(async () => {
    await detachLoop(loop);
  });

  it("writes through the block device and reads it back", async () => {
    const dev = loop as string;
    const gpt = await readGpt(dev);
    const mbr = await writeHybridMbr(dev, buildHybridMbr(gpt));
    expect(checkHybridForPi(mbr, gpt)).toEqual([]);
    expect(await mbrDump(dev)).toEqual(hybridDump());
    // The backing file has it too (it went to the medium, not only to the page cache).
    expect(checkHybridForPi(await readMbr(backing), await readGpt(backing))).toEqual([]);
  });

  it("Linux still reads the GPT: partx -a adds p1..p4 at the GPT starts", async () => {
    const dev = loop as string;
    const name = dev.slice("/dev/".length);
    await ok("partx", ["-a", dev]);
    const parts = manifest().images["fcos.img"].partitions;
    for (const p of parts) {
      await expect(stat(`${dev}p${p.number}`)).resolves.toBeTruthy();
      const sys = `/sys/block/${name}/${name}p${p.number}`;
      expect(Number((await readFile(`${sys}/start`, "utf8")).trim())).toBe(p.start);
      expect(Number((await readFile(`${sys}/size`, "utf8")).trim())).toBe(p.sectors);
    }
    const show = await ok("partx", ["-g", "-o", "NR,START,SECTORS,NAME", "--show", dev]);
    expect(
      show
        .trim()
        .split("\n")
        .map((l) => l.trim().split(/\s+/)),
    ).toEqual(parts.map((p) => [String(p.number), String(p.start), String(p.sectors), p.name]));
    await ok("partx", ["-d", dev]);
  });

  it("refuses to write a read-only device", async () => {
    const ro = await attachLoopReadOnly(backing);
    try {
      await expect(writeHybridMbr(ro, buildHybridMbr(await readGpt(ro)))).rejects.toThrow(
        ProvisionError,
      );
    } finally {
      await detachLoop(ro);
    }
  });
});

async function attachLoopReadOnly(file: string): Promise<string> {
  const dev = (await ok("losetup", ["-r", "-f", "--show", file])).trim();
  if (!/^\/dev\/loop\d+$/.test(dev)) throw new Error(`losetup gave ${dev}`);
  return dev;
}
