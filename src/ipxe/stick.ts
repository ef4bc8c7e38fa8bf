/**
 * Writing the stick, by byte offset, with nothing mounted (an image file needs no root):
 *
 *   GPT:  1 EFI-SYSTEM  FAT32, label PXEBOOT: /EFI/BOOT/BOOTX64.EFI (iPXE), /autoexec.ipxe,
 *                       and for BIOS /syslinux (ldlinux, syslinux.cfg, ipxe.lkrn);
 *                       legacy-BIOS-bootable attribute, syslinux's gptmbr.bin in the MBR
 *         2 secrets     ext4, label "secrets": files 0600, directories 0700, uid/gid 0,
 *                       the `read-only` feature (the kernel then refuses even mount -o rw)
 *
 * The backup GPT stays where sgdisk puts it, at the end of the disk or file.
 */
import { open, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { mtools } from "../board/esp.js";
import { ESP_NAME, fat32MkfsArgs } from "../board/index.js";
import { ProvisionError, UsageError } from "../errors.js";
import { lastLine, run } from "../exec/index.js";
import { debugfs, type ExtLocation, q } from "../ext4/index.js";
import { findPartition, readGpt } from "../gpt/index.js";
import type { Arch } from "../source/index.js";
import type { BiosBoot } from "./binaries.js";
import { SECRETS_LABEL } from "./fragment.js";
import { stagedSize } from "./secrets.js";

export const MiB = 1024 * 1024;
/** The GPT name of the secrets partition (the filesystem label is SECRETS_LABEL). */
const SECRETS_NAME = "secrets";
const ESP_LABEL = "PXEBOOT";

export interface Layout {
  espBytes: number;
  secretsBytes: number;
}

export const DEFAULT_LAYOUT: Layout = { espBytes: 64 * MiB, secretsBytes: 32 * MiB };

/** What an image file must hold: 1 MiB before, the partitions, 1 MiB for the backup GPT. */
export function stickBytes(l: Layout): number {
  return MiB + l.espBytes + l.secretsBytes + MiB;
}

export interface Located {
  offset: number;
  size: number;
  firstLba: number;
  sectorSize: number;
}

async function sgdisk(target: string, args: string[], what: string): Promise<void> {
  const r = await run("sgdisk", [...args, target], { allowFailure: true });
  if (r.exitCode !== 0)
    throw new ProvisionError(
      `sgdisk could not ${what} on ${target}: ${lastLine(r.stderr || r.stdout)}`,
    );
}

/**
 * A new GPT: the ESP (legacy-BIOS-bootable for gptmbr.bin) and the secrets partition.
 * `blank`: the target is all zeros (an image file just truncated), so there are no old
 * tables to clear (each sgdisk run that writes takes a second: it syncs, then sleeps).
 */
export async function partition(
  target: string,
  layout: Layout,
  opts: { blank?: boolean } = {},
): Promise<{ esp: Located; secrets: Located }> {
  if (!opts.blank) await sgdisk(target, ["--zap-all"], "clear the old partition tables");
  await sgdisk(
    target,
    [
      "-a",
      "2048",
      "-n",
      `1:1MiB:+${layout.espBytes / 1024}K`,
      "-t",
      "1:EF00",
      "-c",
      `1:${ESP_NAME}`,
      "-A",
      "1:set:2",
      "-n",
      `2:0:+${layout.secretsBytes / 1024}K`,
      "-t",
      "2:8300",
      "-c",
      `2:${SECRETS_NAME}`,
    ],
    "create the partitions",
  );
  return await locate(target);
}

/** Find both partitions of an existing stick, by their GPT names. */
export async function locate(target: string): Promise<{ esp: Located; secrets: Located }> {
  const gpt = await readGpt(target);
  const at = (name: string): Located => {
    const p = findPartition(gpt, name);
    if (!p)
      throw new ProvisionError(
        `${target} has no GPT partition named "${name}": is it a stick made by provision pxe-stick?`,
      );
    return {
      offset: p.offsetBytes,
      size: p.sizeBytes,
      firstLba: Number(p.firstLba),
      sectorSize: gpt.sectorSize,
    };
  };
  return { esp: at(ESP_NAME), secrets: at(SECRETS_NAME) };
}

/** The secrets filesystem, for the ext4 module. */
export function secretsLocation(target: string, part: Located): ExtLocation {
  return { target, offset: part.offset };
}

/** Write bytes at an offset of the target (gptmbr.bin into the MBR's boot code). */
async function writeAt(target: string, data: Buffer, offset: number): Promise<void> {
  const fh = await open(target, "r+");
  try {
    await fh.write(data, 0, data.length, offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export interface EspContents {
  arch: Arch;
  /** The iPXE EFI binary; none for a BIOS-only stick. */
  efiBinary?: string;
  /** The script file (autoexec.ipxe). */
  script: string;
  bios?: BiosBoot;
  /** A scratch directory for syslinux.cfg. */
  tmp: string;
  isBlockDevice: boolean;
  signal?: AbortSignal;
}

/** FAT32 on the ESP (explicit cluster size and geometry, see board/fat32.ts), then the files. */
export async function writeEsp(target: string, esp: Located, c: EspContents): Promise<void> {
  const mk = await run(
    "mkfs.vfat",
    [
      ...fat32MkfsArgs(esp.size, esp.sectorSize, ESP_LABEL),
      ...(c.isBlockDevice ? ["-I"] : []),
      `--offset=${esp.firstLba}`,
      "-h",
      String(esp.firstLba),
      target,
      String(esp.size / 1024),
    ],
    { allowFailure: true, signal: c.signal },
  );
  if (mk.exitCode !== 0)
    throw new ProvisionError(
      `mkfs.vfat failed on the ESP of ${target}: ${lastLine(mk.stderr || mk.stdout)}`,
    );
  const img = `${target}@@${esp.offset}`;
  const loader = c.arch === "aarch64" ? "BOOTAA64.EFI" : "BOOTX64.EFI";
  if (c.efiBinary) {
    await mtools("mmd", ["-i", img, "::/EFI", "::/EFI/BOOT"], "cannot make /EFI/BOOT on the ESP");
    await mtools(
      "mcopy",
      ["-i", img, c.efiBinary, `::/EFI/BOOT/${loader}`],
      `cannot copy ${c.efiBinary} to the ESP`,
    );
  }
  await mtools(
    "mcopy",
    ["-i", img, c.script, "::/autoexec.ipxe"],
    "cannot copy autoexec.ipxe to the ESP",
  );
  if (c.bios) {
    const cfg = join(c.tmp, "syslinux.cfg");
    // The script is ipxe.lkrn's initrd: iPXE runs a script it is given as an image.
    await writeFile(
      cfg,
      "DEFAULT ipxe\nPROMPT 0\nTIMEOUT 0\nLABEL ipxe\n  KERNEL /syslinux/ipxe.lkrn\n  INITRD /autoexec.ipxe\n",
    );
    await mtools("mmd", ["-i", img, "::/syslinux"], "cannot make /syslinux on the ESP");
    await mtools(
      "mcopy",
      ["-i", img, c.bios.lkrn, "::/syslinux/ipxe.lkrn"],
      `cannot copy ${c.bios.lkrn} to the ESP`,
    );
    await mtools(
      "mcopy",
      ["-i", img, cfg, "::/syslinux/syslinux.cfg"],
      "cannot copy syslinux.cfg to the ESP",
    );
    // The mtools-based installer: boot sector, ldlinux.sys and its own matching ldlinux.c32.
    const r = await run(
      "syslinux",
      ["--install", "--offset", String(esp.offset), "--directory", "/syslinux", target],
      { allowFailure: true, env: { MTOOLS_SKIP_CHECK: "1" } },
    );
    if (r.exitCode !== 0)
      throw new ProvisionError(
        `syslinux could not install on the ESP of ${target}: ${lastLine(r.stderr || r.stdout)}`,
      );
    const mbr = await readFile(c.bios.gptmbr);
    if (mbr.length > 440)
      throw new ProvisionError(`${c.bios.gptmbr} is ${mbr.length} bytes; the MBR boot code is 440`);
    await writeAt(target, mbr, 0);
  }
}

/** mke2fs -d ran out of blocks or inodes (or a directory could not grow). */
const NO_SPACE_RE =
  /Could not allocate (block|inode)|No free space in the directory|No space left on device/i;

/**
 * One line for secrets that do not fit, with a size that will: ext4 on a small volume takes
 * about a tenth for its metadata, up to 4 MiB of journal (8 MiB from 256 MiB) and an inode
 * per 4 KiB, plus rounding.
 */
async function secretsTooBig(
  dir: string,
  volumeBytes: number,
  advice = (mib: number) => `use --secrets-size ${mib} or more`,
): Promise<UsageError> {
  const { bytes, files } = await stagedSize(dir);
  const volumeMiB = Math.round(volumeBytes / MiB);
  // Should the estimate be below what just failed, it is wrong: double instead.
  const suggest = Math.max(Math.ceil((bytes * 1.1 + files * 4096) / MiB + 10), volumeMiB * 2);
  return new UsageError(
    `the secrets (${Math.ceil(bytes / 1024)} KiB in ${files} file${files === 1 ? "" : "s"}) do not fit the ${volumeMiB} MiB secrets volume; ${advice(suggest)}`,
  );
}

/**
 * ext4 labelled "secrets" from the staged directory, written straight into the partition
 * (mke2fs -E offset=), then every inode made root's with the modes we promise (mke2fs -d
 * copies the owner of the staged files, which is the user when not root), and the
 * read-only feature set unless `writable`.
 */
export async function writeSecrets(
  target: string,
  part: Located,
  staged: { dir: string; files: string[]; directories: string[] },
  opts: {
    writable: boolean;
    signal?: AbortSignal;
    /** What to do when the secrets do not fit (default: a larger --secrets-size). */
    tooBig?: (suggestMiB: number) => string;
  },
): Promise<void> {
  const mk = await run(
    "mke2fs",
    [
      "-q",
      "-F",
      "-t",
      "ext4",
      "-L",
      SECRETS_LABEL,
      "-d",
      staged.dir,
      "-E",
      `offset=${part.offset},root_owner=0:0`,
      target,
      `${part.size / 1024}k`,
    ],
    { allowFailure: true, signal: opts.signal },
  );
  if (mk.exitCode !== 0) {
    const output = mk.stderr || mk.stdout;
    if (NO_SPACE_RE.test(output)) throw await secretsTooBig(staged.dir, part.size, opts.tooBig);
    throw new ProvisionError(
      `mke2fs failed on the secrets partition of ${target}: ${lastLine(output)}`,
    );
  }
  const own = (path: string, mode: string) => [
    `sif ${q(path)} mode ${mode}`,
    `sif ${q(path)} uid 0`,
    `sif ${q(path)} gid 0`,
  ];
  const cmds = [
    ...own("/", "040700"),
    ...staged.directories.flatMap((d) => own(`/${d}`, "040700")),
    ...staged.files.flatMap((f) => own(`/${f}`, "0100600")),
  ];
  if (!opts.writable) cmds.push("feature read-only");
  await debugfs(secretsLocation(target, part), cmds, {
    write: true,
    what: `setting owners and modes on the secrets volume of ${target}`,
  });
}
