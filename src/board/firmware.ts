/**
 * Raspberry Pi boot files: find them in a directory or an archive, check that the board's
 * required ones are there, and describe what to copy onto the ESP.
 *
 * Sources understood:
 * - a directory: the files at its top, or in a well-known subdirectory of it (boot/efi/ of
 *   unpacked Fedora bcm283x-firmware RPMs, boot/ of the raspberrypi/firmware repository,
 *   usr/lib/raspi-firmware/ of Debian's raspi-firmware), or inside a single top directory;
 * - a tar archive, compressed or not (.tar, .tar.gz/.tgz, .tar.xz, .tar.bz2, .tar.zst: GNU
 *   tar detects the compression itself), unpacked into a 0700 temporary directory;
 * - a .zip (e.g. the Pi 4 EDK2 UEFI release), unpacked with unzip.
 *
 * Boot chain and what each board needs:
 * - Pi 2 (v1.2) / Pi 3: bootcode.bin → start.elf + fixup.dat → the device tree for the board
 *   → config.txt → `kernel=` U-Boot → EFI/BOOT/BOOTAA64.EFI.
 * - Pi 4: the boot ROM is in the EEPROM (no bootcode.bin) → start4.elf + fixup4.dat →
 *   bcm2711-rpi-4-b.dtb → U-Boot, or instead the EDK2 UEFI firmware RPI_EFI.fd (pftf/RPi4)
 *   loaded as `armstub=`. U-Boot is preferred when both are given: it is the same chain as on
 *   the Pi 2/3 (one rpi_arm64 binary runs on Pi 3, 3+, 4, 400, CM3/CM4: U-Boot's
 *   doc/board/broadcom/raspberrypi.rst) and what Fedora packages (uboot-images-armv8);
 *   EDK2 is used when the firmware has RPI_EFI.fd and no U-Boot is found.
 */
import { mkdir, mkdtemp, open, readdir, realpath, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ProvisionError, UsageError } from "../errors.js";
import { lastLine, requirePrograms, run } from "../exec/index.js";
import { type Board, boardInfo, isPiBoard, type PiBoard } from "./boards.js";

export interface FirmwareSource {
  /** Directory or archive (.tar[.gz|.xz|.bz2|.zst], .tgz, .zip) holding the Pi boot files. */
  firmware?: string;
  /** The U-Boot binary, when it is not in the firmware directory (`--uboot FILE`). */
  uboot?: string;
}

export interface StagedFile {
  /** Path on the ESP, `/`-separated, no leading slash: `start.elf`, `overlays/disable-bt.dtbo`. */
  path: string;
  /** Absolute path of the file to copy. */
  source: string;
  size: number;
}

export interface StagedFirmware {
  board: PiBoard;
  /** Everything to copy onto the ESP, sorted by path (the loader included). */
  files: StagedFile[];
  /** What the firmware starts: U-Boot (`kernel=`) or EDK2 (`armstub=`), and its name on the ESP. */
  loader: { kind: "u-boot" | "edk2"; path: string; source: string };
  /**
   * The board's device tree is there only under its upstream Linux name (bcm2837-rpi-3-b.dtb,
   * as Debian ships them), which the firmware looks for only with `upstream_kernel=1`.
   */
  upstreamDtbs: boolean;
  /** Files of the source deliberately not copied (its own config.txt, other boards' firmware…). */
  ignored: string[];
  /** The directory the firmware files were taken from. */
  root: string;
  /** The 0700 temporary directory an archive was unpacked into; undefined for a directory source. */
  tempDir: string | undefined;
  /** Remove the temporary directory (if any). Idempotent; call it in a `finally`. */
  dispose(): Promise<void>;
}

/** Names the loader may have on the ESP. */
export const UBOOT_ESP_NAME = "u-boot.bin";
export const EDK2_ESP_NAME = "RPI_EFI.fd";

const FETCH_HINT =
  "get the Raspberry Pi firmware (Fedora: bcm283x-firmware, bcm2835-firmware/bcm2711-firmware, " +
  "bcm283x-overlays and uboot-images-armv8 for rpi_arm64/u-boot.bin; Debian: raspi-firmware and " +
  "u-boot-rpi) and pass it as --firmware DIR|TARBALL, U-Boot as --uboot FILE if it is elsewhere";

/**
 * Find and check the boot files for `board`. Every missing required file is named in one
 * UsageError. An archive is unpacked into a 0700 temporary directory that is removed on any
 * error and by `dispose()`.
 */
export async function loadFirmware(
  source: FirmwareSource,
  board: Board,
  opts: { tmpDir?: string } = {},
): Promise<StagedFirmware> {
  if (!isPiBoard(board)) {
    throw new UsageError(
      "--firmware and --uboot are only for Raspberry Pi boards",
      "add --board rpi2, rpi3 or rpi4",
    );
  }
  const ubootGiven = source.uboot === undefined ? undefined : await checkUboot(source.uboot);
  if (source.firmware === undefined) {
    throw new UsageError(
      `--board ${board} needs the ${boardInfo(board).name} boot files: --firmware DIR|TARBALL is missing`,
      FETCH_HINT,
    );
  }
  const fw = path.resolve(source.firmware);
  const st = await statOrNull(fw);
  if (!st) throw new UsageError(`--firmware ${source.firmware}: no such file or directory`);

  let tempDir: string | undefined;
  const dispose = async () => {
    if (tempDir !== undefined) {
      const dir = tempDir;
      tempDir = undefined;
      await rm(dir, { recursive: true, force: true });
    }
  };
  try {
    let top: string;
    if (st.isDirectory()) {
      top = fw;
    } else if (st.isFile()) {
      tempDir = await mkdtemp(path.join(opts.tmpDir ?? tmpdir(), "provision-firmware-"));
      top = path.join(tempDir, "files");
      await unpack(fw, source.firmware, top);
      await checkLinksInside(top, source.firmware);
    } else {
      throw new UsageError(`--firmware ${source.firmware} is neither a directory nor an archive`);
    }
    const staged = await stage(board, top, source.firmware, ubootGiven);
    const tmp = tempDir;
    return {
      ...staged,
      tempDir: tmp,
      dispose,
    };
  } catch (err) {
    await dispose();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------

interface Requirement {
  /** How to name it in the "missing" message. */
  label: string;
  ok: boolean;
}

async function stage(
  board: PiBoard,
  top: string,
  shown: string,
  ubootGiven: string | undefined,
): Promise<Omit<StagedFirmware, "tempDir" | "dispose">> {
  const root = await findRoot(top);
  const entries = await readdir(root, { withFileTypes: true });
  const rootFiles = new Map<string, string>(); // name -> absolute path (regular files only)
  let overlaysDir: string | undefined;
  for (const e of entries) {
    const abs = path.join(root, e.name);
    const s = await statOrNull(abs); // follows symlinks
    if (!s) continue;
    if (s.isFile()) rootFiles.set(e.name, abs);
    else if (s.isDirectory() && e.name.toLowerCase() === "overlays") overlaysDir = abs;
  }
  const has = (name: string) => rootFiles.has(name);
  const pi4 = board === "rpi4";

  // Device trees the firmware loads for the board: the downstream (Raspberry Pi kernel) name,
  // else the upstream Linux one, found with upstream_kernel=1.
  const dtb = DTBS[board];
  const names = [...rootFiles.keys()];
  const downstream = names.filter((n) => dtb.downstream.test(n));
  const upstream = names.filter((n) => dtb.upstream.test(n));

  // The loader.
  let loader: StagedFirmware["loader"] | undefined;
  const loaderNames = new Set<string>();
  const ubootFound = ubootGiven ?? (await findUboot(root, top, board, rootFiles));
  for (const n of names) if (isLoaderName(n)) loaderNames.add(n);
  if (ubootFound) {
    loader = { kind: "u-boot", path: UBOOT_ESP_NAME, source: ubootFound };
  } else if (pi4 && has(EDK2_ESP_NAME)) {
    loader = { kind: "edk2", path: EDK2_ESP_NAME, source: rootFiles.get(EDK2_ESP_NAME) as string };
  }

  const required: Requirement[] = pi4
    ? [
        { label: "start4.elf", ok: has("start4.elf") },
        { label: "fixup4.dat", ok: has("fixup4.dat") },
      ]
    : [
        { label: "bootcode.bin", ok: has("bootcode.bin") },
        { label: "start.elf", ok: has("start.elf") },
        { label: "fixup.dat", ok: has("fixup.dat") },
      ];
  required.push({ label: dtb.label, ok: downstream.length + upstream.length > 0 });
  required.push({
    label: pi4
      ? "U-Boot (u-boot.bin, rpi_arm64/u-boot.bin or u-boot-rpi*.bin in the firmware, or --uboot FILE) or the EDK2 UEFI firmware RPI_EFI.fd"
      : "U-Boot (u-boot.bin, rpi_arm64/u-boot.bin or u-boot-rpi*.bin in the firmware, or --uboot FILE)",
    ok: loader !== undefined,
  });
  const missing = required.filter((r) => !r.ok).map((r) => r.label);
  if (missing.length > 0 || loader === undefined) {
    let hint = FETCH_HINT;
    if (board === "rpi2" && names.some((n) => /^bcm(2709|2836)-rpi-2-b\.dtb$/.test(n))) {
      hint =
        "bcm2709-rpi-2-b.dtb/bcm2836-rpi-2-b.dtb describe the 32-bit BCM2836 Pi 2, which cannot run " +
        `FCOS or Flatcar; the Pi 2 v1.2 needs bcm2710-rpi-2-b.dtb or bcm2837-rpi-2-b.dtb. ${hint}`;
    }
    const where = root === top ? shown : `${shown} (${path.relative(top, root) || "."})`;
    throw new UsageError(
      `the ${boardInfo(board).name} boot files in ${where} are incomplete: missing ${missing.join("; ")}`,
      hint,
    );
  }

  // What to copy: the board's firmware, every device tree, licences, overlays/, the loader.
  const files: StagedFile[] = [];
  const ignored: string[] = [];
  for (const [name, abs] of rootFiles) {
    if (isLoaderName(name) || name === EDK2_ESP_NAME) {
      if (abs !== loader.source) ignored.push(name);
      continue;
    }
    if (wanted(name, pi4)) files.push(await staged(name, abs));
    else ignored.push(name);
  }
  if (overlaysDir) {
    for (const rel of await walkFiles(overlaysDir)) {
      files.push(await staged(`overlays/${rel}`, path.join(overlaysDir, rel)));
    }
  }
  files.push(await staged(loader.path, loader.source));

  // FAT names are case-insensitive: two files that differ only in case cannot both go.
  const seen = new Map<string, string>();
  for (const f of files) {
    const key = f.path.toLowerCase();
    const other = seen.get(key);
    if (other !== undefined) {
      throw new UsageError(
        `the firmware has both ${other} and ${f.path}, which are the same name on a FAT filesystem`,
        "remove one of them",
      );
    }
    seen.set(key, f.path);
  }
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  ignored.sort();
  return {
    board,
    files,
    loader,
    upstreamDtbs: downstream.length === 0 && upstream.length > 0,
    ignored,
    root,
  };
}

const DTBS: Record<PiBoard, { downstream: RegExp; upstream: RegExp; label: string }> = {
  // Pi 2 v1.2 (BCM2837). bcm2709/bcm2836-rpi-2-b are the 32-bit BCM2836 board: not enough.
  rpi2: {
    downstream: /^bcm2710-rpi-2-b\.dtb$/,
    upstream: /^bcm2837-rpi-2-b\.dtb$/,
    label: "the device tree bcm2710-rpi-2-b.dtb (or bcm2837-rpi-2-b.dtb)",
  },
  rpi3: {
    downstream: /^bcm2710-rpi-3-.+\.dtb$/,
    upstream: /^bcm2837-rpi-3-.+\.dtb$/,
    label: "a device tree bcm2710-rpi-3-b*.dtb (or bcm2837-rpi-3-b*.dtb)",
  },
  rpi4: {
    downstream: /^bcm2711-rpi-4-b\.dtb$/,
    upstream: /^bcm2711-rpi-4-b\.dtb$/,
    label: "the device tree bcm2711-rpi-4-b.dtb",
  },
};

/** Top-level firmware files worth copying for the board. */
function wanted(name: string, pi4: boolean): boolean {
  if (/\.dtb$/.test(name)) return true;
  if (name === "LICENCE.broadcom" || name === "COPYING.linux") return true;
  if (pi4) return /^start4.*\.elf$/.test(name) || /^fixup4.*\.dat$/.test(name);
  if (name === "bootcode.bin") return true;
  return (
    (/^start.*\.elf$/.test(name) && !/^start4/.test(name)) ||
    (/^fixup.*\.dat$/.test(name) && !/^fixup4/.test(name))
  );
}

function isLoaderName(name: string): boolean {
  return name === "u-boot.bin" || name === "rpi-u-boot.bin" || /^u-boot-rpi.*\.bin$/.test(name);
}

/** U-Boot in the firmware: well-known names and package layouts, first match wins. */
async function findUboot(
  root: string,
  top: string,
  board: PiBoard,
  rootFiles: Map<string, string>,
): Promise<string | undefined> {
  const perBoard = board === "rpi4" ? ["rpi_4"] : board === "rpi3" ? ["rpi_3"] : [];
  const rels = [
    "u-boot.bin",
    "rpi-u-boot.bin", // what the FCOS Pi 4 docs name it on the ESP
    "rpi_arm64/u-boot.bin",
    "usr/share/uboot/rpi_arm64/u-boot.bin", // Fedora uboot-images-armv8
    "usr/lib/u-boot/rpi_arm64/u-boot.bin", // Debian u-boot-rpi
    ...perBoard.flatMap((d) => [
      `${d}/u-boot.bin`,
      `usr/share/uboot/${d}/u-boot.bin`,
      `usr/lib/u-boot/${d}/u-boot.bin`,
    ]),
  ];
  for (const base of root === top ? [root] : [root, top]) {
    for (const rel of rels) {
      const abs = path.join(base, rel);
      if ((await statOrNull(abs))?.isFile()) return abs;
    }
  }
  const globbed = [...rootFiles.keys()].filter((n) => /^u-boot-rpi.*\.bin$/.test(n)).sort();
  if (globbed.length === 1) return rootFiles.get(globbed[0] as string);
  if (globbed.length > 1) {
    const digit = board.slice(-1);
    const pick =
      globbed.filter((n) => /arm64/.test(n)).length === 1
        ? globbed.find((n) => /arm64/.test(n))
        : globbed.filter((n) => n.includes(digit)).length === 1
          ? globbed.find((n) => n.includes(digit))
          : undefined;
    if (pick) return rootFiles.get(pick);
    throw new UsageError(
      `the firmware has several U-Boot binaries (${globbed.join(", ")}) and none is clearly for the ${boardInfo(board).name}`,
      "choose one with --uboot FILE (the rpi_arm64 build runs on the Pi 3 and 4)",
    );
  }
  return undefined;
}

const ROOT_MARKERS = ["bootcode.bin", "start.elf", "start4.elf", EDK2_ESP_NAME];
const ROOT_SUBDIRS = ["boot/efi", "boot/firmware", "boot", "usr/lib/raspi-firmware", "firmware"];

/** The directory holding the firmware files: `top`, a well-known subdirectory, or a single wrapper directory. */
async function findRoot(top: string, depth = 0): Promise<string> {
  for (const rel of ["", ...ROOT_SUBDIRS]) {
    const dir = path.join(top, rel);
    for (const m of ROOT_MARKERS) {
      if ((await statOrNull(path.join(dir, m)))?.isFile()) return dir;
    }
  }
  if (depth === 0) {
    const entries = (await readdir(top, { withFileTypes: true })).filter(
      (e) => !e.name.startsWith("."),
    );
    const only = entries[0];
    if (entries.length === 1 && only?.isDirectory()) {
      const inner = await findRoot(path.join(top, only.name), 1);
      if (await hasMarker(inner)) return inner;
    }
  }
  return top;
}

async function hasMarker(dir: string): Promise<boolean> {
  for (const m of ROOT_MARKERS) if ((await statOrNull(path.join(dir, m)))?.isFile()) return true;
  return false;
}

async function checkUboot(file: string): Promise<string> {
  const abs = path.resolve(file);
  const s = await statOrNull(abs);
  if (!s) throw new UsageError(`--uboot ${file}: no such file`);
  if (!s.isFile()) throw new UsageError(`--uboot ${file} is not a regular file`);
  if (s.size === 0) throw new UsageError(`--uboot ${file} is empty`);
  return abs;
}

async function unpack(archive: string, shown: string, dest: string): Promise<void> {
  await mkdir(dest, { mode: 0o700 });
  if (await isZip(archive)) {
    await requirePrograms(["unzip"]);
    // -o: no prompts (the directory is empty anyway). unzip strips leading "/" and "../".
    const r = await run("unzip", ["-q", "-o", archive, "-d", dest], { allowFailure: true });
    if (r.exitCode !== 0) {
      throw new UsageError(
        `--firmware ${shown} could not be unpacked as a zip archive: ${lastLine(r.stderr || r.stdout)}`,
      );
    }
    return;
  }
  await requirePrograms(["tar"]);
  // GNU tar recognises gzip/xz/bzip2/zstd compression by itself when extracting from a file,
  // and refuses members with ".." or absolute names.
  const r = await run(
    "tar",
    ["-x", "-f", archive, "-C", dest, "--no-same-owner", "--no-same-permissions"],
    { allowFailure: true },
  );
  if (r.exitCode !== 0) {
    throw new UsageError(
      `--firmware ${shown} could not be unpacked: ${lastLine(r.stderr || r.stdout)}`,
      "give a directory, a tar archive (.tar, .tar.gz, .tar.xz, .tar.bz2, .tar.zst) or a .zip",
    );
  }
}

async function isZip(file: string): Promise<boolean> {
  const fh = await open(file, "r");
  try {
    const b = Buffer.alloc(4);
    await fh.read(b, 0, 4, 0);
    return b.equals(Buffer.from([0x50, 0x4b, 0x03, 0x04]));
  } finally {
    await fh.close();
  }
}

/** Symbolic links in an unpacked archive must stay inside it (we copy what they point to). */
async function checkLinksInside(dir: string, shown: string): Promise<void> {
  const base = await realpath(dir);
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const abs = path.join(d, e.name);
      if (e.isSymbolicLink()) {
        const target = await realpath(abs).catch(() => undefined);
        if (target !== undefined && target !== base && !target.startsWith(`${base}/`)) {
          throw new UsageError(
            `--firmware ${shown}: ${path.relative(dir, abs)} is a link to ${target}, outside the archive`,
          );
        }
      } else if (e.isDirectory()) {
        await walk(abs);
      }
    }
  };
  await walk(dir);
}

/** Regular files under `dir` (following links), as `/`-separated relative paths. */
async function walkFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const abs = path.join(dir, e.name);
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    const s = await statOrNull(abs);
    if (s?.isDirectory()) out.push(...(await walkFiles(abs, rel)));
    else if (s?.isFile()) out.push(rel);
  }
  return out;
}

async function staged(espPath: string, source: string): Promise<StagedFile> {
  const s = await stat(source);
  return { path: espPath, source, size: s.size };
}

async function statOrNull(p: string) {
  try {
    return await stat(p);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "ENOENT" || code === "ENOTDIR" || code === "ELOOP") return null;
    if (code === "EACCES")
      throw new ProvisionError(`${p}: permission denied`, { hint: "check the file's permissions" });
    throw err;
  }
}
