/**
 * `--esp-fat32` for the Pi 4: reformat the ESP as FAT32 keeping its files, attributes, label
 * and volume id (some Pi 4 EEPROM bootloaders do not read a FAT16 ESP:
 * coreos/fedora-coreos-tracker#993). In place, by byte offset, on an image file or a whole
 * block device; nothing is mounted.
 *
 * 1. Read the boot sector (minfo): label, volume id, FAT type. Already FAT32: nothing to do.
 * 2. Dry run: format a sparse scratch file of the ESP's size the same way and check it has
 *    at least 65525 clusters, the FAT32 minimum by which every FAT driver (and the spec) tells
 *    the type. mkfs.vfat only warns below it; with 512-byte sectors and 1-sector clusters that
 *    means an ESP of at least ~32.6 MiB (66581 sectors). The real FCOS ESP is 127 MiB.
 * 3. Copy every file out (mcopy -s -m), record attributes (mattrib), hash the copies.
 * 4. mkfs.vfat -F 32 -S <sector size> -s <sectors per cluster> -g 64/32 --mbr=n [-n LABEL]
 *    -i VOLID --offset=<first LBA> -h <first LBA> TARGET <size in KiB>: it writes only inside
 *    [offset, offset+size) (the tests hash the rest of the image). -s and -g are explicit
 *    because mkfs.vfat otherwise picks them from the size of the whole file or disk (see
 *    mkfsCommon). --mbr=n: no fake MBR in the boot sector. -I on a block device: without it
 *    mkfs refuses any whole disk that has partitions, which is exactly what we address.
 * 5. Copy the files back, restore attributes, and verify: FAT32, same label and volume id,
 *    the same list of files and directories, same attributes, same contents (copied out
 *    again and hashed).
 * If anything fails after step 4 the copies are kept and the error says where.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ProvisionError, UsageError } from "../errors.js";
import { lastLine, requirePrograms, run } from "../exec/index.js";
import { describeEsp, fatInfo, listEsp, locateEsp, mib, mtools } from "./esp.js";

/** Fewest clusters a FAT32 filesystem may have (Microsoft FAT specification). */
export const FAT32_MIN_CLUSTERS = 65525;

export interface ReformatResult {
  /** False when the ESP already was FAT32 (nothing written). */
  changed: boolean;
  /** FAT type before. */
  before: 12 | 16 | 32;
  label: string;
  volumeId: string;
  files: number;
  directories: number;
}

export async function reformatEspFat32(
  target: string,
  opts: { tmpDir?: string } = {},
): Promise<ReformatResult> {
  await requirePrograms(["minfo", "mdir", "mcopy", "mattrib", "mkfs.vfat"]);
  const esp = await locateEsp(target);
  const where = describeEsp(esp);
  const before = await fatInfo(esp.image, `cannot read ${where}`);
  const entriesBefore = await listEsp(esp.image, `cannot list ${where}`);
  const counts = {
    files: entriesBefore.filter((e) => !e.dir).length,
    directories: entriesBefore.filter((e) => e.dir).length,
  };
  if (before.bits === 32) {
    return {
      changed: false,
      before: 32,
      label: before.label,
      volumeId: before.volumeId,
      ...counts,
    };
  }
  if (esp.sizeBytes % 1024 !== 0) {
    throw new ProvisionError(`${where}: its size ${esp.sizeBytes} is not a whole number of KiB`);
  }
  const sizeKiB = esp.sizeBytes / 1024;
  // Cluster size and geometry explicit: left to itself mkfs.vfat derives both from the size
  // of the whole device or file (not of the range it formats), which on a big disk gives
  // clusters so large that the "FAT32" has too few of them to be one (mtools then reads it
  // as FAT16 and fails with "No directory slots"), and rounds the size to the track length.
  const mkfsCommon = fat32MkfsArgs(esp.sizeBytes, esp.sectorSize, before.label, before.volumeId);

  const work = await mkdtemp(path.join(opts.tmpDir ?? tmpdir(), "provision-fat32-"));
  let keep = false;
  try {
    // 2. Dry run on a scratch file of the same size.
    await checkFat32Fits(esp.sizeBytes, esp.sectorSize, where, work, mkfsCommon);

    // 3. Copy everything out.
    const saved = path.join(work, "esp");
    await mkdir(saved, { mode: 0o700 });
    const attrsBefore = await attributes(esp.image, where);
    if (entriesBefore.length > 0) {
      await mtools(
        "mcopy",
        ["-s", "-m", "-i", esp.image, "::/*", `${saved}/`],
        `cannot copy the files out of ${where}`,
      );
    }
    const treeBefore = await hashTree(saved);
    checkSameEntries(
      entriesBefore.map((e) => e.path),
      [...treeBefore.keys()],
      `the files copied out of ${where} do not match its listing`,
    );

    // 4. Reformat. From here on the copies are the only ones: keep them on failure.
    keep = true;
    const mkfsArgs = [
      ...mkfsCommon,
      ...(esp.isBlockDevice ? ["-I"] : []),
      `--offset=${esp.partition.firstLba}`,
      "-h",
      String(esp.partition.firstLba),
      target,
      String(sizeKiB),
    ];
    const mk = await run("mkfs.vfat", mkfsArgs, { allowFailure: true });
    if (mk.exitCode !== 0) {
      throw failed(
        `mkfs.vfat failed on ${where}: ${lastLine(mk.stderr || mk.stdout)}`,
        saved,
        esp.image,
      );
    }

    // 5. Copy back, restore attributes, verify.
    const top = await readdir(saved);
    if (top.length > 0) {
      const r = await mtools(
        "mcopy",
        ["-s", "-m", "-D", "s", "-i", esp.image, ...top.map((n) => path.join(saved, n)), "::/"],
        `copying the files back onto ${where} failed`,
        { allowFailure: true },
      );
      if (r.exitCode !== 0) {
        throw failed(
          `copying the files back onto ${where} failed: ${lastLine(r.stderr || r.stdout)}`,
          saved,
          esp.image,
        );
      }
    }
    for (const [p, a] of attrsBefore) {
      const flags = [...a].map((c) => `+${c.toLowerCase()}`);
      await mtools(
        "mattrib",
        ["-i", esp.image, ...flags, `::/${p}`],
        `cannot set attributes of ${p}`,
      );
    }

    const after = await fatInfo(esp.image, `cannot read ${where} after formatting`);
    const problems: string[] = [];
    if (after.bits !== 32) problems.push(`it is FAT${after.bits}, not FAT32`);
    if (after.clusters < FAT32_MIN_CLUSTERS)
      problems.push(`it has ${after.clusters} clusters, too few for FAT32`);
    if (after.label !== before.label)
      problems.push(`label '${after.label}' instead of '${before.label}'`);
    if (after.volumeId !== before.volumeId)
      problems.push(`volume id ${after.volumeId} instead of ${before.volumeId}`);
    const entriesAfter = await listEsp(esp.image, `cannot list ${where}`);
    const diff = entryDiff(
      entriesBefore.map((e) => `${e.path}${e.dir ? "/" : ""}`),
      entriesAfter.map((e) => `${e.path}${e.dir ? "/" : ""}`),
    );
    if (diff) problems.push(`its listing differs: ${diff}`);
    const attrsAfter = await attributes(esp.image, where);
    if (!sameMap(attrsBefore, attrsAfter)) problems.push("file attributes differ");
    const check = path.join(work, "check");
    await mkdir(check, { mode: 0o700 });
    if (entriesAfter.length > 0) {
      await mtools(
        "mcopy",
        ["-s", "-m", "-i", esp.image, "::/*", `${check}/`],
        `cannot read the files back from ${where}`,
      );
    }
    const treeAfter = await hashTree(check);
    const changedFiles = [...treeBefore].filter(([p, h]) => treeAfter.get(p) !== h).map(([p]) => p);
    if (changedFiles.length > 0 || treeAfter.size !== treeBefore.size) {
      problems.push(`contents differ: ${changedFiles.slice(0, 5).join(", ") || "extra files"}`);
    }
    if (problems.length > 0) {
      throw failed(
        `${where} did not verify after formatting as FAT32: ${problems.join("; ")}`,
        saved,
        esp.image,
      );
    }
    keep = false;
    return {
      changed: true,
      before: before.bits,
      label: before.label,
      volumeId: before.volumeId,
      ...counts,
    };
  } finally {
    if (!keep) await rm(work, { recursive: true, force: true });
  }
}

/** mkfs.vfat's FAT32 arguments, with the cluster size and geometry explicit (see above). */
export function fat32MkfsArgs(
  sizeBytes: number,
  sectorSize: number,
  label?: string,
  volumeId?: string,
): string[] {
  return [
    "-F",
    "32",
    "-S",
    String(sectorSize),
    "-s",
    String(fat32ClusterSectors(sizeBytes, sectorSize)),
    "-g",
    "64/32",
    "--mbr=n",
    ...(label ? ["-n", label] : []),
    ...(volumeId ? ["-i", volumeId] : []),
  ];
}

/**
 * Would an ESP of this size be a valid FAT32? Formats a sparse scratch file of the same size
 * the same way and counts the clusters (at least 65525). Throws a UsageError naming the
 * smallest size that works. flash calls it before writing anything, reformatEspFat32 again
 * before it touches the ESP.
 */
export async function checkFat32Fits(
  sizeBytes: number,
  sectorSize: number,
  where: string,
  workDir?: string,
  args = fat32MkfsArgs(sizeBytes, sectorSize),
): Promise<void> {
  const work = await mkdtemp(path.join(workDir ?? tmpdir(), "provision-fat32-probe-"));
  try {
    const probe = path.join(work, "probe.img");
    await run("mkfs.vfat", [...args, "-C", probe, String(Math.floor(sizeBytes / 1024))]);
    const probed = await fatInfo(probe, "cannot read the FAT32 dry run");
    if (probed.bits !== 32 || probed.clusters < FAT32_MIN_CLUSTERS) {
      const minSectors = minFat32Sectors(sectorSize);
      throw new UsageError(
        `${where} is too small for FAT32: ${mib(sizeBytes)} gives ${probed.clusters} clusters, ` +
          `FAT32 needs at least ${FAT32_MIN_CLUSTERS} (an ESP of at least ${mib(minSectors * sectorSize)})`,
        "leave out --esp-fat32 (the ESP stays FAT16), or use an image with a bigger ESP (Fedora CoreOS's is 127 MiB)",
      );
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Sectors per cluster for a FAT32 volume of `sizeBytes`: Microsoft's defaults (512-byte
 * clusters up to 260 MiB, 4 KiB up to 8 GiB, 8 KiB to 16 GiB, 16 KiB to 32 GiB, then 32 KiB),
 * which keep the cluster count above the FAT32 minimum; never less than one sector.
 */
export function fat32ClusterSectors(sizeBytes: number, sectorSize: number): number {
  const MiB = 1024 * 1024;
  const GiB = 1024 * MiB;
  const bytes =
    sizeBytes <= 260 * MiB
      ? 512
      : sizeBytes <= 8 * GiB
        ? 4096
        : sizeBytes <= 16 * GiB
          ? 8192
          : sizeBytes <= 32 * GiB
            ? 16384
            : 32768;
  return Math.max(1, bytes / sectorSize);
}

/** Smallest FAT32 volume (in sectors) mkfs.vfat can make with 1-sector clusters, 32 reserved sectors, 2 FATs. */
export function minFat32Sectors(sectorSize: number): number {
  const fatSectors = Math.ceil(((FAT32_MIN_CLUSTERS + 2) * 4) / sectorSize);
  return 32 + 2 * fatSectors + FAT32_MIN_CLUSTERS;
}

function failed(message: string, saved: string, image: string): ProvisionError {
  return new ProvisionError(message, {
    hint:
      `the ESP's files are saved in ${saved}; once the ESP is a FAT filesystem again, restore ` +
      `them with: mcopy -s -m -i '${image}' ${saved}/* ::/`,
  });
}

/** Attribute letters R, S, H (archive and directory flags are not worth keeping) by path. */
async function attributes(image: string, where: string): Promise<Map<string, string>> {
  const r = await mtools(
    "mattrib",
    ["-/", "-X", "-i", image, "::/"],
    `cannot read attributes on ${where}`,
  );
  const out = new Map<string, string>();
  for (const line of r.stdout.split("\n")) {
    const m = /^(\S*) ::\/(.*)$/.exec(line.trimEnd());
    if (!m || m[2] === undefined || m[2] === "") continue;
    const flags = (m[1] ?? "").replace(/[^RSH]/g, "");
    if (flags) out.set(m[2], [...flags].sort().join(""));
  }
  return out;
}

/** sha256 of every file under `dir` by relative path; directories map to "dir". */
async function hashTree(dir: string, prefix = "", out = new Map<string, string>()) {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const abs = path.join(dir, e.name);
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) {
      out.set(rel, "dir");
      await hashTree(abs, rel, out);
    } else {
      const h = createHash("sha256");
      for await (const c of createReadStream(abs)) h.update(c as Buffer);
      out.set(rel, `${(await stat(abs)).size}:${h.digest("hex")}`);
    }
  }
  return out;
}

function checkSameEntries(a: string[], b: string[], message: string): void {
  const diff = entryDiff(a, b);
  if (diff) throw new ProvisionError(`${message}: ${diff}`);
}

function entryDiff(a: string[], b: string[]): string | undefined {
  const sa = new Set(a.map((x) => x.toLowerCase()));
  const sb = new Set(b.map((x) => x.toLowerCase()));
  const gone = [...sa].filter((x) => !sb.has(x));
  const extra = [...sb].filter((x) => !sa.has(x));
  if (gone.length === 0 && extra.length === 0) return undefined;
  const parts: string[] = [];
  if (gone.length) parts.push(`missing ${gone.slice(0, 5).join(", ")}`);
  if (extra.length) parts.push(`unexpected ${extra.slice(0, 5).join(", ")}`);
  return parts.join("; ");
}

function sameMap(a: Map<string, string>, b: Map<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}
