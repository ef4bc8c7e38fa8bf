/**
 * The ESP of a target (image file or whole block device), addressed with mtools by byte
 * offset: `-i 'target@@OFFSET'`. Nothing is mounted and no partition device node is needed
 * (this machine's kernel has no partition-table parsers and there is no udev).
 */
import { stat } from "node:fs/promises";
import { ProvisionError, permissionHint, UsageError } from "../errors.js";
import { lastLine, run } from "../exec/index.js";
import { findPartition, type GptPartition, readGpt } from "../gpt/index.js";

/** GPT type GUID of an EFI system partition (sgdisk EF00). */
export const ESP_TYPE_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/** GPT name of the ESP in FCOS and Flatcar images. */
export const ESP_NAME = "EFI-SYSTEM";

export interface Esp {
  target: string;
  partition: GptPartition;
  sectorSize: 512 | 4096;
  offsetBytes: number;
  sizeBytes: number;
  /** The mtools drive spec: `target@@offset`. */
  image: string;
  isBlockDevice: boolean;
}

/** Find the ESP of `target` by its GPT name EFI-SYSTEM, else by the EF00 type GUID. */
export async function locateEsp(target: string): Promise<Esp> {
  if (target.includes("@@")) {
    throw new UsageError(`${target}: a path containing '@@' cannot be given to mtools`);
  }
  const gpt = await readGpt(target);
  const partition =
    findPartition(gpt, ESP_NAME) ?? gpt.partitions.find((p) => p.typeGuid === ESP_TYPE_GUID);
  if (!partition) {
    throw new UsageError(
      `${target} has no EFI system partition (no GPT partition named ${ESP_NAME} or of type EF00)`,
      "write a Fedora CoreOS or Flatcar image to it first",
    );
  }
  const st = await stat(target);
  return {
    target,
    partition,
    sectorSize: gpt.sectorSize,
    offsetBytes: partition.offsetBytes,
    sizeBytes: partition.sizeBytes,
    image: `${target}@@${partition.offsetBytes}`,
    isBlockDevice: st.isBlockDevice(),
  };
}

/** Where the ESP is, for messages: "the ESP of X (partition 2 at byte offset N)". */
export function describeEsp(esp: Esp): string {
  return `the ESP of ${esp.target} (partition ${esp.partition.index} at byte offset ${esp.offsetBytes})`;
}

// ---------------------------------------------------------------------------------------------
// mtools

const MTOOLS_ENV = {
  // Images made by mkfs.vfat --offset often have geometry mtools would complain about.
  MTOOLS_SKIP_CHECK: "1",
  LC_ALL: "C",
};

/**
 * Run an mtools program on the ESP. stdin is empty, so a name-clash prompt can never wait
 * for input. Failure becomes a ProvisionError saying what was being done.
 */
export async function mtools(
  program: string,
  args: string[],
  what: string,
  opts: { allowFailure?: boolean } = {},
): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  const r = await run(program, args, { env: MTOOLS_ENV, input: "", allowFailure: true });
  if (r.exitCode !== 0 && !opts.allowFailure) throw mtoolsError(what, r.stderr || r.stdout);
  return r;
}

export function mtoolsError(what: string, output: string): ProvisionError {
  const lines = output
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  const last = lines[lines.length - 1] ?? "failed";
  const denied = /permission denied|operation not permitted/i.test(output);
  return new ProvisionError(`${what}: ${last}`, {
    hint: denied ? permissionHint("writing to the disk") : undefined,
  });
}

export interface EspEntry {
  /** Path inside the filesystem without a leading slash: `EFI/BOOT/BOOTAA64.EFI`, `overlays`. */
  path: string;
  dir: boolean;
}

/** Every file and directory on the FAT filesystem, hidden ones included. */
export async function listEsp(image: string, what: string): Promise<EspEntry[]> {
  const r = await mtools("mdir", ["-/", "-b", "-a", "-i", image, "::/"], what, {
    allowFailure: true,
  });
  const lines = r.stdout.split("\n").filter((l) => l.startsWith("::/"));
  if (r.exitCode !== 0) {
    // An empty root directory: mdir -b says `File "::/" not found` and exits 1.
    if (lines.length === 0 && /not found/i.test(r.stderr)) return [];
    throw mtoolsError(what, r.stderr || r.stdout);
  }
  const out: EspEntry[] = [];
  for (const line of lines) {
    const dir = line.endsWith("/");
    const path = line.slice(3, dir ? -1 : undefined);
    if (path !== "") out.push({ path, dir });
  }
  return out;
}

export interface FatInfo {
  /** 32 when the boot sector is a FAT32 one (16-bit sectors-per-FAT is 0), else 12 or 16 by cluster count. */
  bits: 12 | 16 | 32;
  sectorSize: number;
  clusterSectors: number;
  reservedSectors: number;
  fats: number;
  totalSectors: number;
  /** Sectors per FAT (the FAT32 field for FAT32). */
  fatSectors: number;
  rootEntries: number;
  /** Data clusters; the FAT type is defined by this count (FAT32: at least 65525). */
  clusters: number;
  /** Volume serial number, 8 upper-case hex digits (what `mkfs.vfat -i` takes). */
  volumeId: string;
  /** Boot-sector volume label, trailing spaces removed; "" when it is NO NAME. */
  label: string;
}

/** Parse `minfo` of a FAT filesystem; ProvisionError when it is not one. */
export async function fatInfo(image: string, what: string): Promise<FatInfo> {
  const r = await mtools("minfo", ["-i", image, "::"], what, { allowFailure: true });
  if (r.exitCode !== 0) {
    const msg = r.stderr || r.stdout;
    if (/non DOS media|not a DOS|init/i.test(msg)) {
      throw new ProvisionError(`${what}: it is not a FAT filesystem (${lastLine(msg)})`);
    }
    throw mtoolsError(what, msg);
  }
  const text = r.stdout;
  const num = (re: RegExp): number | undefined => {
    const m = re.exec(text);
    return m?.[1] === undefined ? undefined : Number(m[1]);
  };
  const sectorSize = num(/^sector size: (\d+) bytes/m);
  const clusterSectors = num(/^cluster size: (\d+) sectors/m);
  const reservedSectors = num(/^reserved \(boot\) sectors: (\d+)/m);
  const fats = num(/^fats: (\d+)/m);
  const fat16Sectors = num(/^sectors per fat: (\d+)/m);
  const small = num(/^small size: (\d+) sectors/m);
  const big = num(/^big size: (\d+) sectors/m);
  const bigFat = num(/^Big fatlen=(\d+)/m);
  const rootEntries = num(/^max available root directory slots: (\d+)/m) ?? 0;
  const serial = /^serial number: ([0-9A-Fa-f]+)/m.exec(text)?.[1];
  const label = /^disk label="([^"]*)"/m.exec(text)?.[1];
  if (
    sectorSize === undefined ||
    clusterSectors === undefined ||
    reservedSectors === undefined ||
    fats === undefined ||
    fat16Sectors === undefined ||
    serial === undefined
  ) {
    throw new ProvisionError(
      `${what}: could not read the FAT boot sector (unexpected minfo output)`,
    );
  }
  const totalSectors = small ? small : (big ?? 0);
  const isFat32 = fat16Sectors === 0;
  const fatSectors = isFat32 ? (bigFat ?? 0) : fat16Sectors;
  const rootDirSectors = Math.ceil((rootEntries * 32) / sectorSize);
  const dataSectors = totalSectors - reservedSectors - fats * fatSectors - rootDirSectors;
  const clusters = Math.max(0, Math.floor(dataSectors / Math.max(1, clusterSectors)));
  const trimmed = (label ?? "").replace(/ +$/, "");
  return {
    bits: isFat32 ? 32 : clusters < 4085 ? 12 : 16,
    sectorSize,
    clusterSectors,
    reservedSectors,
    fats,
    totalSectors,
    fatSectors,
    rootEntries,
    clusters,
    volumeId: serial.toUpperCase().padStart(8, "0"),
    label: trimmed === "NO NAME" ? "" : trimmed,
  };
}

/** Free bytes on the filesystem, from the last line of `mdir`. */
export async function freeBytes(image: string, what: string): Promise<number | undefined> {
  const r = await mtools("mdir", ["-i", image, "::/"], what, { allowFailure: true });
  const m = /([\d ]+) bytes free/.exec(r.stdout);
  return m?.[1] === undefined ? undefined : Number(m[1].replace(/ /g, ""));
}

/** Bytes as MiB with one decimal, for messages. */
export function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}
