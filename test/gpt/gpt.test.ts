import { execFileSync } from "node:child_process";
import { mkdtemp, open, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProvisionError, UsageError } from "../../src/errors.js";
import { crc32, findPartition, readGpt } from "../../src/gpt/index.js";
import { fixture } from "../helpers/fixtures.js";

const PATH = `${process.env.PATH}:/usr/sbin:/sbin`;
const sh = (cmd: string, args: string[], input?: string) =>
  execFileSync(cmd, args, {
    encoding: "utf8",
    env: { ...process.env, PATH },
    input,
    stdio: ["pipe", "pipe", "pipe"],
  });

let work: string;
let base: string;

/** The shared FCOS-layout fixture (built by test/global-setup.ts), else built here with its script. */
async function fcosFixture(dir: string): Promise<string> {
  try {
    return fixture("fcos.img");
  } catch {
    const out = join(dir, "fcos-base.img");
    sh("bash", [resolve("fixtures/build-fcos-image.sh"), out, "256", "0"]);
    return out;
  }
}

async function copyOf(name: string): Promise<string> {
  const p = join(work, name);
  sh("cp", ["--sparse=always", base, p]);
  return p;
}

async function poke(path: string, offset: number, bytes: Buffer): Promise<void> {
  const fh = await open(path, "r+");
  try {
    await fh.write(bytes, 0, bytes.length, offset);
  } finally {
    await fh.close();
  }
}

async function peek(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, offset);
    return b;
  } finally {
    await fh.close();
  }
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-gpt-test-"));
  base = await fcosFixture(work);
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("crc32", () => {
  it("matches the standard check value", () => {
    expect(crc32(Buffer.from("123456789"))).toBe(0xcbf43926);
    expect(crc32(Buffer.alloc(0))).toBe(0);
  });
});

describe("readGpt", () => {
  it("matches sgdisk on the FCOS-layout image", async () => {
    const gpt = await readGpt(base);
    const p = sh("sgdisk", ["-p", base]);
    const diskGuid = /Disk identifier \(GUID\): (\S+)/.exec(p)?.[1];
    const usable = /First usable sector is (\d+), last usable sector is (\d+)/.exec(p);
    const totalSectors = Number(/: (\d+) sectors,/.exec(p)?.[1]);
    expect(gpt.sectorSize).toBe(512);
    expect(gpt.diskGuid).toBe(diskGuid);
    expect(gpt.firstUsableLba).toBe(Number(usable?.[1]));
    expect(gpt.lastUsableLba).toBe(Number(usable?.[2]));
    expect(gpt.backupLba).toBe(totalSectors - 1);
    expect(gpt.backupValid).toBe(true);
    expect(gpt.backupProblem).toBeUndefined();

    const rows = p
      .split("\n")
      .map((l) => /^\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+ \S+\s+[0-9A-F]{4}\s+(.*)$/.exec(l))
      .filter((m) => m !== null);
    expect(rows.length).toBe(4);
    expect(gpt.partitions.map((x) => x.name)).toEqual(["reserved", "EFI-SYSTEM", "boot", "root"]);
    for (const m of rows) {
      const index = Number(m[1]);
      const part = gpt.partitions.find((x) => x.index === index);
      expect(part, `partition ${index}`).toBeDefined();
      if (!part) continue;
      expect(part.firstLba).toBe(Number(m[2]));
      expect(part.lastLba).toBe(Number(m[3]));
      expect(part.name).toBe(m[4]);
      expect(part.offsetBytes).toBe(Number(m[2]) * 512);
      expect(part.sizeBytes).toBe((Number(m[3]) - Number(m[2]) + 1) * 512);
      const info = sh("sgdisk", ["-i", String(index), base]);
      expect(part.typeGuid).toBe(/Partition GUID code: (\S+)/.exec(info)?.[1]);
      expect(part.guid).toBe(/Partition unique GUID: (\S+)/.exec(info)?.[1]);
    }
  });

  it("finds partitions by name, ignoring case", async () => {
    const gpt = await readGpt(base);
    expect(findPartition(gpt, "boot")?.index).toBe(3);
    expect(findPartition(gpt, "efi-system")?.index).toBe(2);
    expect(findPartition(gpt, "BOOT")?.name).toBe("boot");
    expect(findPartition(gpt, "OEM")).toBeUndefined();
  });

  it("reads a GPT written for 4096-byte sectors", async () => {
    const img = join(work, "4k.img");
    await writeFile(img, "");
    await truncate(img, 64 * 1024 * 1024);
    // fdisk can write a 4Kn table into a plain file; sgdisk always uses 512 for files.
    sh(
      "fdisk",
      ["-b", "4096", img],
      "g\nn\n1\n\n+8M\nn\n2\n\n\nx\nn\n1\nEFI-SYSTEM\nn\n2\nboot\nr\nw\n",
    );
    const gpt = await readGpt(img);
    expect(gpt.sectorSize).toBe(4096);
    const listing = sh("fdisk", [
      "-b",
      "4096",
      "-l",
      "-o",
      "Device,Start,End,Name,Type-UUID,UUID",
      img,
    ]);
    const rows = listing
      .split("\n")
      .map((l) => /^\S+\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)$/.exec(l))
      .filter((m) => m !== null);
    expect(rows.length).toBe(2);
    expect(gpt.partitions.length).toBe(2);
    rows.forEach((m, i) => {
      const part = gpt.partitions[i];
      expect(part?.firstLba).toBe(Number(m[1]));
      expect(part?.lastLba).toBe(Number(m[2]));
      expect(part?.name).toBe(m[3]);
      expect(part?.typeGuid).toBe(m[4]);
      expect(part?.guid).toBe(m[5]);
      expect(part?.offsetBytes).toBe(Number(m[1]) * 4096);
    });
    expect(gpt.backupLba).toBe(64 * 256 - 1);
    expect(gpt.backupValid).toBe(true);
  });

  it("says so when there is no GPT", async () => {
    const img = join(work, "zeros.img");
    await writeFile(img, Buffer.alloc(1024 * 1024));
    const err = await readGpt(img).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toBe(
      `${img} has no GPT partition table (no 'EFI PART' signature at LBA 1)`,
    );
  });

  it("says so for a file too short to hold one", async () => {
    const img = join(work, "tiny.img");
    await writeFile(img, Buffer.alloc(100));
    await expect(readGpt(img)).rejects.toThrow(/has no GPT partition table/);
  });

  it("rejects a primary header whose CRC does not match", async () => {
    const img = await copyOf("badcrc.img");
    const b = await peek(img, 512 + 56, 1); // first byte of the disk GUID
    await poke(img, 512 + 56, Buffer.from([(b[0] as number) ^ 0xff]));
    const err = await readGpt(img).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toBe(
      `${img}: GPT header CRC mismatch; the partition table is damaged`,
    );
  });

  it("rejects a partition entry array whose CRC does not match", async () => {
    const img = await copyOf("badentries.img");
    await poke(img, 1024 + 56, Buffer.from("X\0", "latin1")); // first char of entry 1's name
    await expect(readGpt(img)).rejects.toThrow(
      `${img}: GPT partition entry array CRC mismatch; the partition table is damaged`,
    );
  });

  it("reports a damaged backup header without failing", async () => {
    const img = await copyOf("badbackup.img");
    const good = await readGpt(img);
    const at = good.backupLba * 512;
    const b = await peek(img, at + 56, 1);
    await poke(img, at + 56, Buffer.from([(b[0] as number) ^ 0xff]));
    const gpt = await readGpt(img);
    expect(gpt.backupValid).toBe(false);
    expect(gpt.backupProblem).toMatch(/backup header CRC mismatch/);
    expect(gpt.partitions).toEqual(good.partitions);
  });

  it("reports a missing backup (truncated image)", async () => {
    const img = await copyOf("truncated.img");
    const good = await readGpt(img);
    await truncate(img, good.backupLba * 512 - 1024 * 1024);
    const gpt = await readGpt(img);
    expect(gpt.backupValid).toBe(false);
    expect(gpt.backupProblem).toMatch(/beyond the end of the disk/);
  });

  it("reports a backup whose entries differ from the primary's", async () => {
    const img = await copyOf("backupentries.img");
    const good = await readGpt(img);
    // The backup entry array sits just before the backup header (33 sectors for 128 entries).
    const arrayLba = good.backupLba - 32;
    await poke(img, arrayLba * 512 + 56, Buffer.from("Z\0", "latin1"));
    const gpt = await readGpt(img);
    expect(gpt.backupValid).toBe(false);
    expect(gpt.backupProblem).toMatch(/backup partition entry array CRC mismatch/);
  });

  it("names a missing file", async () => {
    const err = await readGpt(join(work, "nope.img")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProvisionError);
    expect((err as Error).message).toMatch(/nope\.img: no such file or device$/);
  });
});
