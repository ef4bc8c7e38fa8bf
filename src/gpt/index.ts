/**
 * Read a GUID partition table from an image file or a block device.
 *
 * This machine's kernel has no partition-table parsers (no /dev/sdX1 nodes, no udev labels),
 * so callers find partitions here and address them by byte offset in the whole disk:
 * `debugfs 'disk?offset=N'`, `mcopy -i 'disk@@N'` and friends.
 *
 * Only reads: fs.open + read at offsets, which works the same on files and block devices.
 * Both the primary and the backup header are CRC-checked; a damaged primary is an error,
 * a damaged or missing backup is reported through `backupValid`.
 */
import { type FileHandle, open } from "node:fs/promises";
import { ProvisionError, permissionHint, UsageError } from "../errors.js";

export interface GptPartition {
  /** 1-based slot number in the partition entry array (`sda3`, `sgdisk -i 3`). */
  index: number;
  /** GPT partition name (UTF-16LE in the entry), e.g. `boot`, `EFI-SYSTEM`, `OEM`. */
  name: string;
  /** Partition type GUID, canonical upper-case form as printed by sgdisk. */
  typeGuid: string;
  /** Unique partition GUID (PARTUUID). */
  guid: string;
  firstLba: number;
  /** Inclusive. */
  lastLba: number;
  /** Byte offset of the partition in the whole disk: firstLba * sectorSize. */
  offsetBytes: number;
  /** (lastLba - firstLba + 1) * sectorSize. */
  sizeBytes: number;
}

export interface Gpt {
  /** Logical sector size the table was written for (found where "EFI PART" is). */
  sectorSize: 512 | 4096;
  diskGuid: string;
  firstUsableLba: number;
  lastUsableLba: number;
  /** Where the primary header says the backup header is. */
  backupLba: number;
  /** True when the backup header and its entry array are present, CRC-valid and agree with the primary. */
  backupValid: boolean;
  /** Why the backup is not valid (one line), when it is not. */
  backupProblem?: string;
  /** Used entries only (non-zero type GUID), in slot order. */
  partitions: GptPartition[];
}

const SIGNATURE = Buffer.from("EFI PART", "latin1");
const MIN_HEADER_SIZE = 92;
/** Sanity cap on the entry array (the usual one is 128 × 128 bytes = 16 KiB). */
const MAX_ENTRY_ARRAY_BYTES = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// CRC32 (IEEE 802.3, reflected, polynomial 0xEDB88320) as the UEFI spec uses for GPT.
// node:zlib only has crc32 from Node 22 on.

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC32 of `data` (same as zlib's crc32 / the GPT header and entry-array checksums). */
export function crc32(data: Uint8Array, seed = 0): number {
  let c = (seed ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) {
    c = (CRC_TABLE[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------------------------

/** Read the GPT of an image file or block device. Throws UsageError on a missing/damaged table. */
export async function readGpt(path: string): Promise<Gpt> {
  const fh = await openForRead(path);
  try {
    let sectorSize: 512 | 4096 | undefined;
    let headerSector: Buffer | undefined;
    for (const ss of [512, 4096] as const) {
      const buf = await readAt(fh, ss, ss);
      if (buf.length >= 8 && buf.subarray(0, 8).equals(SIGNATURE)) {
        sectorSize = ss;
        headerSector = buf;
        break;
      }
    }
    if (sectorSize === undefined || headerSector === undefined) {
      throw new UsageError(`${path} has no GPT partition table (no 'EFI PART' signature at LBA 1)`);
    }

    const primary = parseHeader(headerSector, sectorSize);
    if (typeof primary === "string") {
      throw new UsageError(`${path}: GPT ${primary}; the partition table is damaged`, DAMAGED_HINT);
    }
    if (primary.myLba !== 1) {
      throw new UsageError(
        `${path}: GPT header at LBA 1 says it is at LBA ${primary.myLba}; the partition table is damaged`,
        DAMAGED_HINT,
      );
    }
    const entries = await readAt(fh, primary.entriesLba * sectorSize, primary.entryArrayBytes);
    if (entries.length < primary.entryArrayBytes) {
      throw new UsageError(
        `${path}: GPT partition entry array is cut off (file too short)`,
        DAMAGED_HINT,
      );
    }
    if (crc32(entries) !== primary.entriesCrc) {
      throw new UsageError(
        `${path}: GPT partition entry array CRC mismatch; the partition table is damaged`,
        DAMAGED_HINT,
      );
    }
    const partitions = parseEntries(entries, primary, sectorSize, path);

    const backupProblem = await checkBackup(fh, primary, sectorSize);
    const gpt: Gpt = {
      sectorSize,
      diskGuid: formatGuid(primary.diskGuid),
      firstUsableLba: primary.firstUsableLba,
      lastUsableLba: primary.lastUsableLba,
      backupLba: primary.alternateLba,
      backupValid: backupProblem === undefined,
      partitions,
    };
    if (backupProblem !== undefined) gpt.backupProblem = backupProblem;
    return gpt;
  } finally {
    await fh.close();
  }
}

/** The first partition whose GPT name equals `name`, ignoring case. */
export function findPartition(gpt: Gpt, name: string): GptPartition | undefined {
  const want = name.toLowerCase();
  return gpt.partitions.find((p) => p.name.toLowerCase() === want);
}

// ---------------------------------------------------------------------------------------------

const DAMAGED_HINT =
  "rewrite the image, or repair the table with gdisk (recovery menu: use the backup header)";

interface Header {
  myLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: Buffer;
  entriesLba: number;
  numEntries: number;
  entrySize: number;
  entriesCrc: number;
  entryArrayBytes: number;
}

/** Parse and CRC-check one header sector; a string is the problem found. */
function parseHeader(sector: Buffer, sectorSize: number): Header | string {
  if (!sector.subarray(0, 8).equals(SIGNATURE)) return "header has no 'EFI PART' signature";
  if (sector.length < sectorSize)
    return `header sector is cut off after ${sector.length} of ${sectorSize} bytes (file too short)`;
  const headerSize = sector.readUInt32LE(12);
  if (headerSize < MIN_HEADER_SIZE || headerSize > sectorSize)
    return `header size ${headerSize} is invalid`;
  const copy = Buffer.from(sector.subarray(0, headerSize));
  const storedCrc = copy.readUInt32LE(16);
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) !== storedCrc) return "header CRC mismatch";
  const numEntries = sector.readUInt32LE(80);
  const entrySize = sector.readUInt32LE(84);
  if (entrySize < 128 || entrySize % 8 !== 0) return `partition entry size ${entrySize} is invalid`;
  const entryArrayBytes = numEntries * entrySize;
  if (entryArrayBytes > MAX_ENTRY_ARRAY_BYTES)
    return `partition entry array of ${numEntries} × ${entrySize} bytes is implausible`;
  const lbas = [24, 32, 40, 48, 72].map((off) => u64(sector, off));
  if (lbas.some((v) => v === undefined)) return "header has an LBA beyond 2^53";
  const [myLba, alternateLba, firstUsableLba, lastUsableLba, entriesLba] = lbas as number[];
  // Node reads at an inexact position (past 2^53) from the wrong place instead of failing.
  if ((entriesLba as number) * sectorSize + entryArrayBytes > Number.MAX_SAFE_INTEGER)
    return `partition entry array at LBA ${entriesLba} is beyond 2^53 bytes`;
  return {
    myLba: myLba as number,
    alternateLba: alternateLba as number,
    firstUsableLba: firstUsableLba as number,
    lastUsableLba: lastUsableLba as number,
    diskGuid: Buffer.from(sector.subarray(56, 72)),
    entriesLba: entriesLba as number,
    numEntries,
    entrySize,
    entriesCrc: sector.readUInt32LE(88),
    entryArrayBytes,
  };
}

function parseEntries(
  entries: Buffer,
  h: Header,
  sectorSize: number,
  path: string,
): GptPartition[] {
  const out: GptPartition[] = [];
  for (let i = 0; i < h.numEntries; i++) {
    const e = entries.subarray(i * h.entrySize, (i + 1) * h.entrySize);
    const type = e.subarray(0, 16);
    if (type.every((b) => b === 0)) continue;
    const firstLba = u64(e, 32);
    const lastLba = u64(e, 40);
    if (firstLba === undefined || lastLba === undefined || lastLba < firstLba) {
      throw new UsageError(
        `${path}: GPT partition ${i + 1} has an invalid extent; the partition table is damaged`,
        DAMAGED_HINT,
      );
    }
    // Callers address partitions by byte offset: past 2^53 bytes a number is no longer exact.
    if ((lastLba + 1) * sectorSize > Number.MAX_SAFE_INTEGER) {
      throw new UsageError(
        `${path}: GPT partition ${i + 1} ends at LBA ${lastLba}, beyond 2^53 bytes; the partition table is damaged`,
        DAMAGED_HINT,
      );
    }
    out.push({
      index: i + 1,
      name: decodeName(e.subarray(56, 128)),
      typeGuid: formatGuid(type),
      guid: formatGuid(e.subarray(16, 32)),
      firstLba,
      lastLba,
      offsetBytes: firstLba * sectorSize,
      sizeBytes: (lastLba - firstLba + 1) * sectorSize,
    });
  }
  return out;
}

/** Undefined when the backup is fine, else what is wrong with it. */
async function checkBackup(
  fh: FileHandle,
  primary: Header,
  sectorSize: number,
): Promise<string | undefined> {
  if (primary.alternateLba <= 1)
    return `primary header points to the backup at LBA ${primary.alternateLba}`;
  if ((primary.alternateLba + 1) * sectorSize > Number.MAX_SAFE_INTEGER)
    return `primary header points to the backup at LBA ${primary.alternateLba}, beyond 2^53 bytes`;
  const sector = await readAt(fh, primary.alternateLba * sectorSize, sectorSize);
  if (sector.length < sectorSize)
    return `backup header at LBA ${primary.alternateLba} is beyond the end of the disk (image truncated?)`;
  const backup = parseHeader(sector, sectorSize);
  if (typeof backup === "string") return `backup ${backup} (LBA ${primary.alternateLba})`;
  if (backup.myLba !== primary.alternateLba || backup.alternateLba !== 1) {
    return `backup header at LBA ${primary.alternateLba} does not point back to the primary`;
  }
  if (
    backup.entriesCrc !== primary.entriesCrc ||
    backup.entryArrayBytes !== primary.entryArrayBytes
  ) {
    return "backup partition entries differ from the primary ones";
  }
  const entries = await readAt(fh, backup.entriesLba * sectorSize, backup.entryArrayBytes);
  if (entries.length < backup.entryArrayBytes)
    return "backup partition entry array is cut off (image truncated?)";
  if (crc32(entries) !== backup.entriesCrc) return "backup partition entry array CRC mismatch";
  return undefined;
}

// ---------------------------------------------------------------------------------------------

async function openForRead(path: string): Promise<FileHandle> {
  try {
    const fh = await open(path, "r");
    // open(2) takes a directory for reading; only the first read would say EISDIR.
    if ((await fh.stat()).isDirectory()) {
      await fh.close();
      throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
    }
    return fh;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "ENOENT") throw new UsageError(`${path}: no such file or device`);
    if (code === "EISDIR") throw new UsageError(`${path} is a directory, not a disk or image`);
    if (code === "EACCES" || code === "EPERM") {
      throw new ProvisionError(`${path}: permission denied`, {
        hint: permissionHint("reading a disk"),
        cause: err,
      });
    }
    throw new ProvisionError(`${path}: cannot open: ${(err as Error).message}`, { cause: err });
  }
}

/** Read up to `length` bytes at `position`; shorter only at end of file/device. */
async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return buf.subarray(0, done);
}

function u64(buf: Buffer, offset: number): number | undefined {
  const v = buf.readBigUInt64LE(offset);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? undefined : Number(v);
}

/** GUIDs are stored mixed-endian: the first three fields little-endian, the rest as bytes. */
function formatGuid(b: Uint8Array): string {
  const hex = (idx: number[]) =>
    idx.map((i) => (b[i] as number).toString(16).padStart(2, "0")).join("");
  return [hex([3, 2, 1, 0]), hex([5, 4]), hex([7, 6]), hex([8, 9]), hex([10, 11, 12, 13, 14, 15])]
    .join("-")
    .toUpperCase();
}

function decodeName(b: Buffer): string {
  const s = b.toString("utf16le");
  const nul = s.indexOf("\u0000");
  return nul === -1 ? s : s.slice(0, nul);
}
