/**
 * The MBR in sector 0 of a GPT disk, and the hybrid MBR that a Raspberry Pi 2/3 boots from.
 *
 * The Pi 2/3 boot ROM reads only the MBR, only slot 1, and needs a FAT type there (0x0C, or
 * 0x0B/0x0E); Linux keeps using the GPT as long as an 0xEE entry starts at LBA 1. So the
 * layout written here is (../shared/README.md, "Raspberry Pi 2/3 and the hybrid MBR"):
 *
 *   slot 1  0x80 (bootable)  type 0x0C  the ESP: same start and size as its GPT entry
 *   slot 2  0x00             type 0xEE  LBA 1 to the sector before the ESP
 *   slot 3  empty
 *   slot 4  empty
 *
 * CHS fields: every used entry gets FE FF FF as its first and last CHS address, the
 * conventional "beyond cylinder 1023, use the LBA fields" value (what sfdisk and most tools
 * write for large disks). A correct LBA→CHS conversion would need a made-up geometry, and
 * nothing that reads this table (the Pi boot ROM, Linux, U-Boot) looks at CHS. The repair
 * script (./repair-unit.ts) writes exactly the same 66 bytes, so the two never disagree.
 *
 * Only bytes 446–511 (the four entries and the 0x55AA signature) are ever written; bytes
 * 0–445 (boot code, disk signature at 440) stay as they are, and the GPT is never touched.
 * Plain reads and writes at offsets: the same code works on image files and block devices.
 */
import { type FileHandle, open, stat } from "node:fs/promises";
import { dropPageCache } from "../disk/index.js";
import { ProvisionError, permissionHint, UsageError } from "../errors.js";
import { requirePrograms } from "../exec/index.js";
import { findPartition, type Gpt, type GptPartition } from "../gpt/index.js";

export interface MbrEntry {
  /** 1–4. */
  slot: number;
  /** Status byte: 0x80 bootable ("active"), 0x00 not. */
  status: number;
  /** Partition type: 0x00 empty, 0x0C FAT32 (LBA), 0xEE GPT protective, 0xEF EFI System... */
  type: number;
  /** First and last sector in CHS form, the three raw bytes as stored. */
  chsFirst: [number, number, number];
  chsLast: [number, number, number];
  /** First sector (LBA, 32 bits). */
  lbaStart: number;
  /** Number of sectors (32 bits). */
  sectors: number;
}

export type MbrEntries = [MbrEntry, MbrEntry, MbrEntry, MbrEntry];

export interface Mbr {
  entries: MbrEntries;
  /** True when bytes 510–511 are 0x55 0xAA. */
  signatureOk: boolean;
  /** The 32-bit disk signature at byte 440 (Windows' "disk identifier"). */
  diskSignature: number;
}

export interface HybridOptions {
  /** GPT name of the partition for slot 1. Default: EFI-SYSTEM, else the first EF00 partition. */
  partition?: string;
}

/** Conventional CHS value for "use LBA": cylinder 1023, head 254, sector 63. */
export const CHS_LBA: [number, number, number] = [0xfe, 0xff, 0xff];
export const TYPE_FAT32_LBA = 0x0c;
export const TYPE_GPT_PROTECTIVE = 0xee;
export const STATUS_BOOTABLE = 0x80;
const ESP_TYPE_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const ENTRIES_OFFSET = 446;
const MAX_U32 = 0xffff_ffff;

/** MBR types the Pi 2/3 boot ROM accepts in slot 1. */
const PI_FAT_TYPES = new Set([0x0b, 0x0c, 0x0e]);

const TYPE_NAMES: Record<number, string> = {
  0x00: "empty",
  0x01: "FAT12",
  0x04: "FAT16 <32M",
  0x06: "FAT16",
  0x07: "NTFS/exFAT",
  0x0b: "FAT32 (CHS)",
  0x0c: "FAT32 (LBA)",
  0x0e: "FAT16 (LBA)",
  0x05: "extended",
  0x0f: "extended (LBA)",
  0x82: "Linux swap",
  0x83: "Linux",
  0xee: "GPT protective",
  0xef: "EFI System",
};

/** "0x0C FAT32 (LBA)". */
export function describeMbrType(type: number): string {
  const hex = `0x${type.toString(16).toUpperCase().padStart(2, "0")}`;
  const name = TYPE_NAMES[type];
  return name ? `${hex} ${name}` : hex;
}

const hex2 = (n: number) => `0x${n.toString(16).toUpperCase().padStart(2, "0")}`;

// ---------------------------------------------------------------------------------------------
// Encoding

function emptyEntry(slot: number): MbrEntry {
  return {
    slot,
    status: 0,
    type: 0,
    chsFirst: [0, 0, 0],
    chsLast: [0, 0, 0],
    lbaStart: 0,
    sectors: 0,
  };
}

function decodeEntry(b: Buffer, slot: number): MbrEntry {
  const at = (i: number) => b[i] as number;
  return {
    slot,
    status: at(0),
    chsFirst: [at(1), at(2), at(3)],
    type: at(4),
    chsLast: [at(5), at(6), at(7)],
    lbaStart: b.readUInt32LE(8),
    sectors: b.readUInt32LE(12),
  };
}

/** Bytes 446–511 of sector 0: the four 16-byte entries and 0x55 0xAA. */
export function encodeMbrEntries(entries: readonly MbrEntry[]): Buffer {
  if (entries.length !== 4) throw new ProvisionError("internal error: an MBR has 4 entries");
  const out = Buffer.alloc(66);
  entries.forEach((e, i) => {
    const o = i * 16;
    for (const [name, v] of [
      ["lbaStart", e.lbaStart],
      ["sectors", e.sectors],
    ] as const) {
      if (!Number.isInteger(v) || v < 0 || v > MAX_U32)
        throw new ProvisionError(`internal error: MBR slot ${i + 1} ${name} ${v} is not 32-bit`);
    }
    out[o] = e.status;
    out.set(e.chsFirst, o + 1);
    out[o + 4] = e.type;
    out.set(e.chsLast, o + 5);
    out.writeUInt32LE(e.lbaStart, o + 8);
    out.writeUInt32LE(e.sectors, o + 12);
  });
  out[64] = 0x55;
  out[65] = 0xaa;
  return out;
}

function decodeSector0(sector: Buffer): Mbr {
  const e = (i: number) =>
    decodeEntry(sector.subarray(ENTRIES_OFFSET + i * 16, ENTRIES_OFFSET + (i + 1) * 16), i + 1);
  return {
    entries: [e(0), e(1), e(2), e(3)],
    signatureOk: sector[510] === 0x55 && sector[511] === 0xaa,
    diskSignature: sector.readUInt32LE(440),
  };
}

// ---------------------------------------------------------------------------------------------
// Reading and writing

/** Read the MBR (sector 0) of an image file or block device. A missing 0x55AA is reported, not thrown. */
export async function readMbr(path: string): Promise<Mbr> {
  const fh = await openDisk(path, "r");
  try {
    return decodeSector0(await readSector0(fh, path));
  } finally {
    await fh.close();
  }
}

/**
 * Write the four entries (and 0x55AA) to bytes 446–511 of sector 0, keeping bytes 0–445,
 * fsync, drop the cached copy and read it back. Throws when the read-back differs.
 * Returns the MBR as read back.
 */
export async function writeHybridMbr(path: string, entries: readonly MbrEntry[]): Promise<Mbr> {
  const bytes = encodeMbrEntries(entries);
  // For the read-back: `blockdev --flushbufs` (devices) or `dd iflag=nocache` (files).
  const isBlock = (await stat(path).catch(() => undefined))?.isBlockDevice() ?? false;
  await requirePrograms([isBlock ? "blockdev" : "dd"]);
  const fh = await openDisk(path, "r+");
  let before: Buffer;
  try {
    before = await readSector0(fh, path);
    const { bytesWritten } = await fh.write(bytes, 0, bytes.length, ENTRIES_OFFSET);
    if (bytesWritten !== bytes.length)
      throw new ProvisionError(`${path}: short write to the MBR (${bytesWritten} of 66 bytes)`);
    await fh.sync();
  } catch (err) {
    if (err instanceof ProvisionError) throw err;
    throw new ProvisionError(`${path}: writing the MBR failed: ${(err as Error).message}`, {
      cause: err,
    });
  } finally {
    await fh.close();
  }

  // Read the medium, not the page cache we just wrote through.
  await dropPageCache(path);
  const check = await openDisk(path, "r");
  let after: Buffer;
  try {
    after = await readSector0(check, path);
  } finally {
    await check.close();
  }
  if (!after.subarray(ENTRIES_OFFSET, 512).equals(bytes)) {
    throw new ProvisionError(
      `${path}: the MBR read back after writing differs from what was written`,
      { hint: "the card or disk may be failing or write-protected; try another one" },
    );
  }
  if (!after.subarray(0, ENTRIES_OFFSET).equals(before.subarray(0, ENTRIES_OFFSET))) {
    throw new ProvisionError(
      `${path}: bytes 0–445 of sector 0 changed while writing the MBR entries`,
      { hint: "is another program writing to the disk at the same time?" },
    );
  }
  return decodeSector0(after);
}

async function openDisk(path: string, flags: "r" | "r+"): Promise<FileHandle> {
  try {
    const fh = await open(path, flags);
    if ((await fh.stat()).isDirectory()) {
      await fh.close();
      throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
    }
    return fh;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "ENOENT") throw new UsageError(`${path}: no such file or device`);
    if (code === "EISDIR") throw new UsageError(`${path} is a directory, not a disk or image`);
    if (code === "EACCES" || code === "EPERM")
      throw new ProvisionError(`${path}: permission denied`, {
        hint: permissionHint(`${flags === "r" ? "reading" : "writing"} a disk`),
        cause: err,
      });
    if (code === "EROFS")
      throw new ProvisionError(`${path} is read-only`, {
        hint: "check the card's write-protect switch",
        cause: err,
      });
    throw new ProvisionError(`${path}: cannot open: ${(err as Error).message}`, { cause: err });
  }
}

async function readSector0(fh: FileHandle, path: string): Promise<Buffer> {
  const buf = Buffer.alloc(512);
  let done = 0;
  while (done < 512) {
    const { bytesRead } = await fh.read(buf, done, 512 - done, done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  if (done < 512) throw new UsageError(`${path} is shorter than one sector; it holds no MBR`);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Building and checking

/** The GPT partition that goes into slot 1, or undefined when there is none. */
export function hybridPartition(gpt: Gpt, opts: HybridOptions = {}): GptPartition | undefined {
  if (opts.partition !== undefined) return findPartition(gpt, opts.partition);
  return (
    findPartition(gpt, "EFI-SYSTEM") ?? gpt.partitions.find((p) => p.typeGuid === ESP_TYPE_GUID)
  );
}

/**
 * A GPT name as read from the disk, safe to print on one line: control characters (a name
 * is 36 arbitrary UTF-16 units) become \n, \t, \x1b, \u2028...
 */
export function printableName(name: string): string {
  const named: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
  return name.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    const code = c.charCodeAt(0);
    return (
      named[c] ??
      (code < 0x100
        ? `\\x${code.toString(16).padStart(2, "0")}`
        : `\\u${code.toString(16).padStart(4, "0")}`)
    );
  });
}

function partitionLabel(p: GptPartition): string {
  return `GPT partition ${p.index}${p.name ? ` (${printableName(p.name)})` : ""}`;
}

function noPartition(gpt: Gpt, opts: HybridOptions): string {
  const names = gpt.partitions.map((p) => printableName(p.name) || `#${p.index}`).join(", ");
  return opts.partition !== undefined
    ? `the GPT has no partition named ${printableName(opts.partition)} (it has: ${names || "none"})`
    : `the GPT has no EFI-SYSTEM partition (nor one of type EF00) for slot 1 (it has: ${names || "none"})`;
}

const SECTOR_4K_MESSAGE =
  "the disk has 4096-byte sectors; the Raspberry Pi 2/3 boot ROM reads MBRs of 512-byte-sector disks (SD cards, USB sticks) only";

/**
 * The hybrid MBR entries for `gpt` (see the top of this file). Throws UsageError when the
 * partition is missing, the disk has 4096-byte sectors, or the partition lies beyond 2 TiB.
 */
export function buildHybridMbr(gpt: Gpt, opts: HybridOptions = {}): MbrEntries {
  if (gpt.sectorSize !== 512) throw new UsageError(`${SECTOR_4K_MESSAGE}; not supported`);
  const p = hybridPartition(gpt, opts);
  if (!p)
    throw new UsageError(noPartition(gpt, opts), "pass --partition NAME to choose another one");
  const sectors = p.lastLba - p.firstLba + 1;
  if (p.firstLba + sectors - 1 > MAX_U32) {
    throw new UsageError(
      `${partitionLabel(p)} ends beyond sector 2^32 (2 TiB); an MBR entry cannot describe it`,
    );
  }
  if (p.firstLba < 2)
    throw new UsageError(`${partitionLabel(p)} starts at LBA ${p.firstLba}, inside the GPT`);
  return [
    {
      slot: 1,
      status: STATUS_BOOTABLE,
      type: TYPE_FAT32_LBA,
      chsFirst: [...CHS_LBA],
      chsLast: [...CHS_LBA],
      lbaStart: p.firstLba,
      sectors,
    },
    {
      slot: 2,
      status: 0,
      type: TYPE_GPT_PROTECTIVE,
      chsFirst: [...CHS_LBA],
      chsLast: [...CHS_LBA],
      lbaStart: 1,
      sectors: p.firstLba - 1,
    },
    emptyEntry(3),
    emptyEntry(4),
  ];
}

/** True when the MBR already holds exactly these entries (CHS bytes included) and 0x55AA. */
export function mbrEquals(mbr: Mbr, entries: readonly MbrEntry[]): boolean {
  return mbr.signatureOk && encodeMbrEntries(mbr.entries).equals(encodeMbrEntries(entries));
}

const range = (e: MbrEntry) =>
  `LBA ${e.lbaStart}–${e.lbaStart + e.sectors - 1} (${e.sectors} sectors)`;

/**
 * What keeps this disk from booting on a Raspberry Pi 2/3, one line each; empty when the
 * hybrid MBR is right. CHS fields are not checked (nothing reads them); slot 1 may have
 * any FAT type the boot ROM accepts (0x0B, 0x0C, 0x0E).
 */
export function checkHybridForPi(mbr: Mbr, gpt: Gpt, opts: HybridOptions = {}): string[] {
  const problems: string[] = [];
  if (!mbr.signatureOk) problems.push("no MBR signature (0x55AA) at bytes 510–511");
  if (gpt.sectorSize !== 512) problems.push(SECTOR_4K_MESSAGE);
  const [s1, s2, s3, s4] = mbr.entries;
  const p = hybridPartition(gpt, opts);

  // Slot 1: the FAT partition the boot ROM loads from.
  const othersEmpty = s2.type === 0 && s3.type === 0 && s4.type === 0;
  if (s1.type === TYPE_GPT_PROTECTIVE && othersEmpty) {
    problems.push(
      "MBR is protective only (0xEE in slot 1); the Pi boot ROM needs the ESP in slot 1 with type 0x0C",
    );
  } else if (s1.type === TYPE_GPT_PROTECTIVE) {
    problems.push(
      "slot 1 has type 0xEE; the Pi boot ROM needs the ESP there with type 0x0C (0xEE belongs in slot 2)",
    );
  } else if (s1.type === 0) {
    problems.push("slot 1 is empty; the Pi boot ROM boots only from slot 1");
  } else {
    if (!PI_FAT_TYPES.has(s1.type))
      problems.push(`slot 1 has type ${hex2(s1.type)}; the Pi boot ROM needs 0x0C`);
    if (s1.status !== STATUS_BOOTABLE)
      problems.push(`slot 1 is not marked bootable (status ${hex2(s1.status)}, want 0x80)`);
    if (p && (s1.lbaStart !== p.firstLba || s1.sectors !== p.lastLba - p.firstLba + 1)) {
      problems.push(
        `slot 1 covers ${range(s1)} but ${partitionLabel(p)} is LBA ${p.firstLba}–${p.lastLba} (${p.lastLba - p.firstLba + 1} sectors)`,
      );
    }
  }
  if (!p) problems.push(noPartition(gpt, opts));

  // Slot 2: 0xEE from LBA 1 up to the ESP, so that Linux keeps reading the GPT.
  const want2 = p ? `LBA 1–${p.firstLba - 1}` : "LBA 1 up to the ESP";
  if (s1.type === TYPE_GPT_PROTECTIVE && othersEmpty) {
    // Already reported as "protective only".
  } else if (s2.type === 0) {
    problems.push(`slot 2 is empty; it needs 0xEE from ${want2} so that Linux keeps using the GPT`);
  } else if (s2.type !== TYPE_GPT_PROTECTIVE) {
    problems.push(`slot 2 has type ${hex2(s2.type)}; want 0xEE (GPT protective) from ${want2}`);
  } else if (s2.lbaStart !== 1 || (p && s2.sectors !== p.firstLba - 1)) {
    problems.push(`slot 2 (0xEE) covers ${range(s2)}; want ${want2}`);
  }
  for (const e of [s3, s4]) {
    if (e.type !== 0) problems.push(`slot ${e.slot} has type ${hex2(e.type)}; it must be empty`);
  }
  return problems;
}
