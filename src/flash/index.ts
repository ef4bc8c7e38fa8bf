/**
 * `provision flash`: resolve → fetch (cache) → decompress → write to every target → verify
 * → customize (Ignition, kernel args). This module owns cleanup: a target that was touched
 * and then failed is made unbootable (its partition tables wiped) unless preserveOnError,
 * and the result says so.
 */
import { mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type Board,
  boardInfo,
  checkFat32Fits,
  configTxt,
  ESP_NAME,
  ESP_TYPE_GUID,
  isPiBoard,
  loadFirmware,
  type StagedFirmware,
} from "../board/index.js";
import {
  evictBadEntry,
  fetchArtifact,
  findDistroKeyrings,
  type LocalArtifact,
} from "../cache/index.js";
import {
  checkTargetSafe,
  claimTargets,
  confirmWrite,
  describeTarget,
  inspectTarget,
  type Target,
  unmountPartitions,
  wipeOnUrgentExit,
} from "../disk/index.js";
import { describeError, EXIT, InterruptedError, ProvisionError, UsageError } from "../errors.js";
import { requirePrograms } from "../exec/index.js";
import { findPartition, readGpt } from "../gpt/index.js";
import {
  type IgnitionConfig,
  loadIgnitionConfig,
  mergeFragments,
  parseIgnitionText,
} from "../ignition/index.js";
import { repairUnitFragment } from "../mbr/index.js";
import { formatBytes, type Reporter, silentReporter } from "../progress/index.js";
import { type BootOptions, type BootResult, bootTest } from "../qemu/index.js";
import { type ImageRequest, type ResolvedImage, resolveImage } from "../source/index.js";
import { BLOCK_SIZE } from "./blocks.js";
import { type Customization, customizeTarget, hasCustomization } from "./customize.js";
import {
  CorruptImageError,
  decompressedSize,
  detectFileCompression,
  openDecompressed,
  programsFor,
} from "./decompress.js";
import { notADiskImage, SNIFF_BYTES } from "./sniff.js";
import { verifyTarget } from "./verify.js";
import { type Destination, writeToAll } from "./write.js";

export interface FlashOptions {
  targets: string[];
  image: ImageRequest;
  offline?: boolean;
  keyrings?: string[];
  requireSignature?: boolean;
  ignitionFile?: string;
  /**
   * A config already built (fleet: a host's, which carries the hybrid-MBR repair unit
   * itself when its board needs one).
   */
  ignitionConfig?: IgnitionConfig;
  ignitionUrl?: string;
  appendKargs?: string[];
  deleteKargs?: string[];
  /** Block devices: skip zero blocks too (files are always sparse). */
  sparse?: boolean;
  verify?: boolean;
  unmount?: boolean;
  yes?: boolean;
  isTTY?: boolean;
  /** For tests and the CLI: ask the user. */
  confirm?: (message: string) => Promise<boolean>;
  dryRun?: boolean;
  /** Keep a failed target as it is instead of wiping its partition tables. */
  preserveOnError?: boolean;
  /** Raspberry Pi support: firmware on the ESP, config.txt, hybrid MBR (rpi2/rpi3). */
  board?: Board;
  firmware?: string;
  uboot?: string;
  /** Lines appended to the generated config.txt. */
  configTxtFile?: string;
  /** rpi4: reformat the ESP as FAT32, keeping files, label and volume id. */
  espFat32?: boolean;
  /**
   * After a successful write, boot each good target in QEMU (read-only overlay) with the
   * same Ignition config, and report the verdict in its `boot` field.
   */
  thenTest?: ThenTestOptions;
  reporter?: Reporter;
  signal?: AbortSignal;
}

export interface TargetReport {
  path: string;
  kind: "file" | "block";
  ok: boolean;
  error?: string;
  exitCode?: number;
  bytesWritten: number;
  verified: boolean;
  ignition?: string;
  kernelArgs?: string[];
  hybridMbr?: string;
  /** Boot files put on the ESP (and those the image already had). */
  bootFiles?: { written: string[]; skipped: string[] };
  /** What happened to a target that failed after writing started. */
  incomplete?: "wiped" | "removed" | "left-as-is";
  /** flash --then-test: the boot test of what was written. */
  boot?: BootResult;
}

/** The qemu-test options flash --then-test passes on (the image and config are flash's). */
export type ThenTestOptions = Pick<
  BootOptions,
  "arch" | "bios" | "accel" | "memoryMiB" | "cpus" | "expect" | "fail" | "timeoutMs"
>;

export interface FlashReport {
  dryRun: boolean;
  image: {
    description: string;
    url: string;
    sha256?: string;
    signature?: string;
    fromCache?: boolean;
    compressedSize?: number;
    imageSize?: number;
  };
  targets: TargetReport[];
  plan?: string[];
  seconds: number;
  /** Peak resident memory of this process (not its decompressor), bytes. */
  peakRssBytes?: number;
  /**
   * Seconds spent in each step (absent: the step did not run). startup: from the process
   * start to the flash; resolve: the image metadata and the verified local copy;
   * firstWrite: from the process start to the first block handed to the open targets (the
   * fixed cost: everything before writing begins);
   * write, verify, customize: those steps.
   */
  timings?: Partial<
    Record<"startup" | "resolve" | "firstWrite" | "write" | "verify" | "customize", number>
  >;
}

/** Exit code for a finished run: 0 when every target is OK, else the first failure's. */
export function exitCodeOf(report: FlashReport): number {
  const bad = report.targets.find((t) => !t.ok);
  if (bad) return bad.exitCode ?? EXIT.FAILED;
  // --then-test: written fine, but it did not boot (or could not be booted).
  return report.targets.some((t) => t.boot && t.boot.exitCode !== 0) ? EXIT.FAILED : EXIT.OK;
}

function guessPrograms(url: string): string[] {
  if (/\.xz$/i.test(url)) return ["xz"];
  if (/\.(gz|tgz)$/i.test(url)) return ["gzip"];
  if (/\.zst$/i.test(url)) return ["zstd"];
  if (/\.bz2$/i.test(url)) return ["bzip2"];
  return [];
}

export async function flash(opts: FlashOptions): Promise<FlashReport> {
  const board: Board = opts.board ?? "generic";
  const info = boardInfo(board);
  if (info.arch && opts.image.arch && opts.image.arch !== info.arch) {
    throw new UsageError(`--board ${board} needs --arch ${info.arch}, not ${opts.image.arch}`);
  }
  if (!isPiBoard(board) && (opts.firmware || opts.uboot || opts.configTxtFile)) {
    throw new UsageError(
      "--firmware, --uboot and --config-txt need a Raspberry Pi --board (rpi2, rpi3, rpi4)",
    );
  }
  if (opts.espFat32 && board !== "rpi4") throw new UsageError("--esp-fat32 is for --board rpi4");
  if (info.note) opts.reporter?.warn(info.note);
  let firmware: StagedFirmware | undefined;
  if (isPiBoard(board)) {
    if (!opts.firmware && !opts.uboot) {
      throw new UsageError(
        `--board ${board} needs the Raspberry Pi boot files`,
        "pass --firmware DIR|TARBALL (bootcode.bin, start*.elf, fixup*.dat, DTBs, U-Boot); see fixtures/build-rpi-firmware.sh for where to get them",
      );
    }
    firmware = await loadFirmware({ firmware: opts.firmware, uboot: opts.uboot }, board);
  }
  try {
    if (opts.targets.length === 0)
      throw new UsageError("no target given", "pass a disk (/dev/sdX) or an image file path");
    // Before anything is downloaded or written: each target once, and no other provision
    // process writing it.
    const release = await claimTargets(opts.targets);
    try {
      return await flashImpl(
        { ...opts, board, image: { ...opts.image, arch: opts.image.arch ?? info.arch } },
        firmware,
      );
    } finally {
      await release();
    }
  } finally {
    await firmware?.dispose();
  }
}

async function flashImpl(
  opts: FlashOptions & { board: Board },
  firmware?: StagedFirmware,
): Promise<FlashReport> {
  const started = Date.now();
  const timings: NonNullable<FlashReport["timings"]> = { startup: secondsSince(0) };
  const reporter = opts.reporter ?? silentReporter;
  const signal = opts.signal;
  const verify = opts.verify ?? true;
  const os = opts.image.os;

  // 1. Everything that can be checked without touching a target or the network.
  let ignition: IgnitionConfig | undefined;
  if (opts.ignitionFile || opts.ignitionUrl) {
    ignition = await loadIgnitionConfig(
      { file: opts.ignitionFile, url: opts.ignitionUrl },
      { signal },
    );
    reporter.info(`Ignition config ${ignition.origin} is valid (spec ${ignition.version})`);
    for (const w of ignition.warnings ?? []) reporter.warn(w);
  }
  if (opts.ignitionConfig) {
    if (ignition) throw new UsageError("give one Ignition config");
    ignition = opts.ignitionConfig;
  }
  if (boardInfo(opts.board).needsHybridMbr && !opts.ignitionConfig) {
    // Ignition rewrites the GPT on first boot and drops the hybrid MBR: ship the unit that
    // restores it. The user's config is kept byte for byte and wins on conflicts.
    ignition = ignition
      ? mergeFragments(ignition, [repairUnitFragment()])
      : await parseIgnitionText(JSON.stringify(repairUnitFragment()), "the hybrid-MBR repair unit");
  }
  const custom: Customization = {
    os,
    ignition,
    appendKargs: opts.appendKargs ?? [],
    deleteKargs: opts.deleteKargs ?? [],
    board: opts.board,
    firmware,
    configTxt: firmware
      ? configTxt(opts.board, {
          kernel: firmware.loader.path,
          loader: firmware.loader.kind,
          upstreamDtbs: firmware.upstreamDtbs,
          userAdditions: opts.configTxtFile ? await readConfigTxt(opts.configTxtFile) : undefined,
        })
      : undefined,
    espFat32: Boolean(opts.espFat32),
  };
  const wantsCustomize = hasCustomization(custom);
  const targets: Target[] = [];
  for (const p of opts.targets) targets.push(await inspectTarget(p));
  for (const t of targets) {
    await checkTargetSafe(t, { wholeDiskOnly: true }).catch((err: unknown) => {
      // With --unmount, mounted partitions are unmounted later, right before writing.
      if (opts.unmount && /mounted partitions/.test(describeError(err))) return;
      throw err;
    });
  }

  // 2. Resolve the image (metadata may come from the cache).
  const resolveStarted = performance.now();
  const resolved = await resolveImage(opts.image, { offline: opts.offline, reporter, signal });
  const report: FlashReport = {
    dryRun: Boolean(opts.dryRun),
    image: { description: resolved.description, url: resolved.url, sha256: resolved.sha256 },
    targets: targets.map((t) => ({
      path: t.path,
      kind: t.kind,
      ok: true,
      bytesWritten: 0,
      verified: false,
    })),
    seconds: 0,
    timings,
  };
  if (opts.dryRun) {
    report.plan = planLines(resolved, targets, opts, custom);
    report.seconds = (Date.now() - started) / 1000;
    return report;
  }

  await requirePrograms([
    ...guessPrograms(resolved.url),
    ...(verify ? ["dd"] : []),
    ...(wantsCustomize ? ["debugfs"] : []),
  ]);

  // 3. Confirmation before the (possibly long) download, so the user can walk away.
  for (const t of targets) {
    if (t.kind === "block")
      await confirmWrite(t, { yes: opts.yes, isTTY: Boolean(opts.isTTY), prompt: opts.confirm });
  }

  // 4. A verified local copy of the image.
  const keyrings = opts.keyrings?.length ? opts.keyrings : await findDistroKeyrings(os);
  const local: LocalArtifact = await fetchArtifact(resolved, {
    offline: opts.offline,
    policy: {
      keyrings,
      keyringsFromUser: Boolean(opts.keyrings?.length),
      requireSignature: Boolean(opts.requireSignature),
    },
    reporter,
    signal,
  });
  timings.resolve = secondsSince(resolveStarted);
  Object.assign(report.image, {
    signature: local.signature,
    fromCache: local.fromCache,
    compressedSize: local.size,
  });
  if (/^https?:/i.test(resolved.url) && !local.sha256Pinned && local.signature !== "verified")
    reporter.warn(
      `${resolved.url} is not pinned: no published sha256 and no verified signature, so nothing proves it is the image you meant (pass --sha256 to pin it)`,
    );
  const format = await detectFileCompression(local.path);
  await requirePrograms(programsFor(format));
  const imageSize = await decompressedSize(local.path, format, local.size);
  report.image.imageSize = imageSize;
  // The image is decompressed once. Its first block is read now, before anything is
  // written: it must be a disk image (a web page or a corrupt archive is named here, not
  // flashed), and --esp-fat32 must be possible. Then it is written like every other block.
  const stopInput = new AbortController();
  const input = await openDecompressed(local.path, {
    signal: signal ? AbortSignal.any([signal, stopInput.signal]) : stopInput.signal,
  });
  const stopReading = () => {
    stopInput.abort();
    input.reader.destroy();
  };
  const first = { buf: Buffer.allocUnsafe(BLOCK_SIZE), len: 0 };
  try {
    try {
      first.len = await input.reader.fill(first.buf, BLOCK_SIZE);
      // Shorter than a disk image's head: the image is tiny, or the decompressor failed.
      if (first.len < SNIFF_BYTES) await input.done;
    } catch (err) {
      await badImage(local, resolved.url, err);
    }
    const head = first.buf.subarray(0, Math.min(first.len, SNIFF_BYTES));
    const notImage = notADiskImage(head);
    if (notImage)
      await badImage(local, resolved.url, new UsageError(`${resolved.url} ${notImage}`));
    if (custom.espFat32) await checkImageEspFat32(head);
  } catch (err) {
    stopReading();
    throw err;
  }

  // 5. Per-target checks that need the image size; failures drop only that target.
  const reports = new Map(report.targets.map((r) => [r.path, r]));
  const failTarget = (path: string, err: unknown) => {
    const r = reports.get(path) as TargetReport;
    if (!r.ok) return;
    r.ok = false;
    r.error = describeError(err);
    r.exitCode = err instanceof ProvisionError ? err.exitCode : EXIT.FAILED;
  };
  const dests: Destination[] = [];
  for (const t of targets) {
    try {
      if (opts.unmount && t.kind === "block") {
        const gone = await unmountPartitions(t);
        if (gone.length > 0) reporter.info(`unmounted ${gone.join(", ")} (on ${t.path})`);
      }
      await checkTargetSafe(t, { imageSize, wholeDiskOnly: true });
      dests.push(
        t.kind === "block"
          ? { path: t.path, kind: "block", capacity: t.size, sparse: Boolean(opts.sparse) }
          : { path: t.path, kind: "file", sparse: true },
      );
    } catch (err) {
      failTarget(t.path, err);
    }
  }
  if (dests.length === 0) {
    stopReading();
    return finish(report, started);
  }

  // 6. Write.
  const fileExisted = new Map<string, boolean>();
  for (const d of dests)
    fileExisted.set(
      d.path,
      await stat(d.path).then(
        () => true,
        () => false,
      ),
    );
  const label = dests.length === 1 ? `to ${dests[0]?.path}` : `to ${dests.length} targets`;
  reporter.info(
    `writing ${resolved.description} (${imageSize ? formatBytes(imageSize) : "size unknown"}) ${label}`,
  );
  const writeStarted = Date.now();
  const writeStartedAt = performance.now();
  // Until each target is written (or wiped after a failure), a forced exit wipes it.
  const disarm = dests.map((d) =>
    wipeOnUrgentExit(d, fileExisted.get(d.path) ?? true, "flash it again"),
  );
  const written = await writeToAll(input.reader, dests, {
    digests: verify,
    head: first,
    expectedSize: imageSize,
    signal,
    onProgress: (done, total) => reporter.progress("write", done, total, label),
  });
  timings.write = secondsSince(writeStartedAt);
  if (written.firstWriteAt !== undefined) timings.firstWrite = round3(written.firstWriteAt / 1000);
  let sourceError: unknown;
  await input.done.catch((err) => {
    sourceError = err;
  });
  if (signal?.aborted) sourceError = new InterruptedError("interrupted");
  for (const r of written.results) {
    const rep = reports.get(r.path) as TargetReport;
    rep.bytesWritten = r.bytesWritten;
    // A target's own error first: when every target failed, the decompressor was stopped
    // on purpose and its exit says nothing about the image.
    if (signal?.aborted) failTarget(r.path, sourceError);
    else if (!r.ok) failTarget(r.path, r.error);
    else if (sourceError) failTarget(r.path, sourceError);
  }
  if (!sourceError && imageSize !== undefined && written.imageSize !== imageSize) {
    for (const d of dests)
      failTarget(
        d.path,
        new ProvisionError(`the image ended after ${written.imageSize} of ${imageSize} bytes`),
      );
  }
  const okDests = () => dests.filter((d) => reports.get(d.path)?.ok);
  if (okDests().length > 0) {
    reporter.phaseDone(
      "write",
      `wrote ${formatBytes(written.imageSize)} ${label} in ${((Date.now() - writeStarted) / 1000).toFixed(1)} s`,
    );
  }

  // 7. Verify (read back from the device) before changing anything on it.
  if (verify && written.digests) {
    const verifyStarted = performance.now();
    await Promise.all(
      okDests().map(async (d, i) => {
        try {
          await verifyTarget(d.path, written.imageSize, written.digests as Buffer[], {
            written: d.sparse ? written.runs : undefined,
            file: d.kind === "file",
            buffers: written.buffers.slice(2 * i, 2 * i + 2),
            signal,
            onProgress: (done, total) => reporter.progress("verify", done, total, d.path),
          });
          (reports.get(d.path) as TargetReport).verified = true;
          reporter.phaseDone(
            "verify",
            `verified ${d.path}: read back ${formatBytes(written.imageSize)}, identical to the image`,
          );
        } catch (err) {
          failTarget(d.path, signal?.aborted ? new InterruptedError() : err);
        }
      }),
    );
    timings.verify = secondsSince(verifyStarted);
  }

  // 8. Customize each good target.
  const customizeStarted = performance.now();
  if (wantsCustomize && okDests().length > 0) timings.customize = 0;
  for (const d of okDests()) {
    try {
      Object.assign(
        reports.get(d.path) as TargetReport,
        await customizeTarget(d.path, custom, reporter),
      );
    } catch (err) {
      failTarget(d.path, err);
    }
  }

  if (timings.customize !== undefined) timings.customize = secondsSince(customizeStarted);

  // 9. A target that was touched and failed must not boot by accident.
  for (const r of written.results) {
    const rep = reports.get(r.path) as TargetReport;
    if (rep.ok || !r.touched) continue;
    const d = dests.find((x) => x.path === r.path) as Destination;
    rep.incomplete = await makeUnbootable(
      d,
      Boolean(opts.preserveOnError),
      fileExisted.get(d.path) ?? true,
    );
    const how =
      rep.incomplete === "removed"
        ? "the partial file was removed"
        : rep.incomplete === "wiped"
          ? "its partition table was wiped so it cannot boot by accident; flash it again"
          : "it was left as is (--preserve-on-error); do not boot it";
    reporter.warn(`${d.path} is incomplete and must not be booted: ${how}`);
  }

  for (const off of disarm) off();
  if (sourceError instanceof CorruptImageError) {
    const found = await evictBadEntry(local.path);
    if (found)
      reporter.warn(
        found === "changed-since-download"
          ? `the cached copy of ${resolved.url} changed since it was downloaded; it was removed from the cache: run again to download it afresh`
          : `the image ${resolved.url} is corrupt as the server sent it; it was removed from the cache`,
      );
  }

  // 10. --then-test: boot what was written (through a read-only overlay) with the same config.
  if (opts.thenTest) {
    for (const d of okDests()) {
      if (signal?.aborted) break;
      const boot = await bootTest({
        ...opts.thenTest,
        input: { kind: "path", path: d.path },
        // Unless asked for, the architecture comes from the image (its ESP), as in qemu-test.
        arch: opts.thenTest.arch ?? opts.image.arch,
        os,
        ignition: custom.ignition,
        name: `boot ${d.path}`,
        reporter,
        signal,
      });
      (reports.get(d.path) as TargetReport).boot = boot;
    }
  }
  return finish(report, started);
}

async function readConfigTxt(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read --config-txt ${path}: ${describeError(err)}`);
  }
}

const round3 = (s: number) => Math.round(s * 1000) / 1000;
/** Seconds from `t0` (performance.now(); 0 is the process start) to now. */
const secondsSince = (t0: number) => round3((performance.now() - t0) / 1000);

function finish(report: FlashReport, started: number): FlashReport {
  report.seconds = (Date.now() - started) / 1000;
  report.peakRssBytes = process.resourceUsage().maxRSS * 1024;
  return report;
}

/**
 * The image is bad (not an image, or corrupt): one line saying so, and where it came from
 * the cache, the entry is re-checked against its recorded sha256 and evicted.
 */
async function badImage(local: LocalArtifact, url: string, err: unknown): Promise<never> {
  if (!(err instanceof CorruptImageError) && !(err instanceof UsageError)) throw err;
  const found = await evictBadEntry(local.path);
  if (found === undefined) throw err; // a local file: the error names it
  const how =
    found === "changed-since-download"
      ? "the cached copy changed since it was downloaded (disk trouble?)"
      : "it is what the server sent";
  throw new ProvisionError(
    `${err instanceof CorruptImageError ? `the image ${url} is corrupt: ${err.why}` : err.message}; ${how}; it was removed from the cache and nothing was written`,
    {
      exitCode: err instanceof UsageError ? EXIT.USAGE : EXIT.FAILED,
      hint:
        found === "changed-since-download"
          ? "run again to download it afresh"
          : "check the URL or the mirror; pass --sha256 to pin the image you expect",
    },
  );
}

/** Read the image's GPT from its first MiB (decompressed) and dry-run FAT32 on its ESP. */
async function checkImageEspFat32(headBytes: Buffer): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "provision-head-"));
  try {
    const head = join(dir, "head.img");
    await writeFile(head, headBytes);
    const gpt = await readGpt(head);
    const esp =
      gpt.partitions.find((p) => p.typeGuid === ESP_TYPE_GUID) ?? findPartition(gpt, ESP_NAME);
    if (!esp) throw new UsageError("--esp-fat32: the image has no EFI system partition");
    await checkFat32Fits(
      esp.sizeBytes,
      gpt.sectorSize,
      `the image's ESP (partition ${esp.index}, ${esp.name})`,
      dir,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Zero the first and last MiB (MBR, primary and backup GPT), or remove a file we created. */
async function makeUnbootable(
  d: Destination,
  preserve: boolean,
  existed: boolean,
): Promise<"wiped" | "removed" | "left-as-is"> {
  if (preserve) return "left-as-is";
  try {
    if (d.kind === "file" && !existed) {
      await rm(d.path, { force: true });
      return "removed";
    }
    const fh = await open(d.path, "r+");
    try {
      const size = d.kind === "file" ? (await fh.stat()).size : (d.capacity ?? 0);
      const zero = Buffer.alloc(1 << 20);
      await fh.write(zero, 0, Math.min(zero.length, size), 0);
      if (size > 2 * zero.length) await fh.write(zero, 0, zero.length, size - zero.length);
      await fh.sync();
    } finally {
      await fh.close();
    }
    return "wiped";
  } catch {
    return "left-as-is";
  }
}

function planLines(
  img: ResolvedImage,
  targets: Target[],
  opts: FlashOptions,
  custom: Customization,
): string[] {
  const ignition = custom.ignition;
  const lines = [
    `image: ${img.description}`,
    `  from ${img.url}`,
    `  sha256 ${img.sha256 ?? "(not published; pass --sha256 to pin)"}, signature ${img.signatureUrl ?? "(none)"}`,
  ];
  for (const t of targets) {
    lines.push(
      `target: ${t.kind === "file" ? `${t.path} (image file, ${t.exists ? "truncated" : "created"}, sparse)` : ""}`,
    );
    if (t.kind === "block") for (const l of describeTarget(t)) lines.push(`  ${l}`);
    lines.push(
      `  write: the whole image from byte 0${t.kind === "block" && !opts.sparse ? ", every byte" : ", zero blocks skipped"}`,
    );
    if (opts.verify ?? true) lines.push("  verify: read back and compare with the image");
    if (ignition) {
      const where =
        opts.image.os === "flatcar"
          ? "OEM:/config.ign"
          : "boot:/ignition/config.ign (dir 0700, file 0600)";
      lines.push(`  ignition: ${ignition.origin} → partition ${where}`);
    }
    if (opts.appendKargs?.length) lines.push(`  kernel args: append ${opts.appendKargs.join(" ")}`);
    if (opts.deleteKargs?.length) lines.push(`  kernel args: delete ${opts.deleteKargs.join(" ")}`);
    if (custom.espFat32)
      lines.push("  ESP: reformatted as FAT32 keeping its files, label and volume id");
    if (custom.firmware) {
      const names = custom.firmware.files.map((f) => f.path);
      lines.push(
        `  boot files onto the ESP (files the image has are kept): ${names.join(", ")}, config.txt`,
      );
    }
    if (boardInfo(custom.board).needsHybridMbr) {
      lines.push("  hybrid MBR: slot 1 = the ESP (type 0x0C, bootable), slot 2 = 0xEE from LBA 1");
      lines.push(`  Ignition: + the first-boot unit that restores the hybrid MBR`);
    }
  }
  if (opts.thenTest)
    lines.push("then: boot each target in QEMU (read-only overlay) with the same Ignition config");
  lines.push("dry run: nothing was downloaded or written");
  return lines;
}
