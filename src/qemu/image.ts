/**
 * What the guest boots: turn the input (an image file, a block device, or an image source
 * like flash's) into a backing file QEMU can read, learn what it is (architecture, OS), and
 * put a qcow2 overlay on top, so the input itself is never written.
 */
import { open, stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { describeError, ProvisionError, UsageError } from "../errors.js";
import { hasProgram, run } from "../exec/index.js";
import { detectFileCompression, openDecompressed, programsFor } from "../flash/decompress.js";
import { writeToAll } from "../flash/write.js";
import { readGpt } from "../gpt/index.js";
import type { Reporter } from "../progress/index.js";
import type { Arch, ImageRequest, OsName } from "../source/index.js";

export type BootInput =
  /** An image file (raw, qcow2, xz/gz/zst/bz2) or a block device. */
  | { kind: "path"; path: string }
  /** The same image sources as flash: FCOS stream, Flatcar channel, --image-url. */
  | {
      kind: "source";
      request: ImageRequest;
      offline?: boolean;
      keyrings?: string[];
      requireSignature?: boolean;
    };

export interface BackingImage {
  /** Absolute path QEMU reads (never writes): the input, or a decompressed copy. */
  path: string;
  format: "raw" | "qcow2";
  kind: "file" | "block";
  /** For messages and reports. */
  description: string;
  /** Known from the image source (stream/channel), before looking inside. */
  os?: OsName;
  arch?: Arch;
}

const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]); // "QFI\xfb"

/** Make the input available as a raw or qcow2 file (decompressing into `tmpDir` if needed). */
export async function prepareBacking(
  input: BootInput,
  tmpDir: string,
  opts: { reporter: Reporter; signal?: AbortSignal },
): Promise<BackingImage> {
  if (input.kind === "source") return await fromSource(input, tmpDir, opts);
  const path = resolve(input.path);
  const s = await stat(path).catch((err: unknown) => {
    const code = (err as { code?: string }).code;
    throw new UsageError(
      code === "ENOENT"
        ? `${input.path}: no such file or device`
        : `${input.path}: ${describeError(err)}`,
    );
  });
  if (s.isBlockDevice()) return { path, format: "raw", kind: "block", description: input.path };
  if (!s.isFile())
    throw new UsageError(`${input.path} is neither an image file nor a block device`);
  return await fromFile(path, input.path, tmpDir, opts);
}

async function fromFile(
  path: string,
  description: string,
  tmpDir: string,
  opts: { reporter: Reporter; signal?: AbortSignal },
): Promise<BackingImage> {
  const head = await readHead(path, 16);
  if (head.subarray(0, 4).equals(QCOW2_MAGIC))
    return { path, format: "qcow2", kind: "file", description };
  const compression = await detectFileCompression(path);
  if (compression === "raw") {
    if (head.length === 0) throw new UsageError(`${description} is empty`);
    return { path, format: "raw", kind: "file", description };
  }
  // Through the flash pipeline: same decompressors, same sparse writer.
  const raw = join(tmpDir, `${basename(path).replace(/\.(xz|gz|zst|bz2)$/i, "")}.raw`);
  opts.reporter.info(`decompressing ${description} (${compression}) into ${raw}`);
  const input = await openDecompressed(path, { signal: opts.signal });
  const written = await writeToAll(input.reader, [{ path: raw, kind: "file", sparse: true }], {
    digests: false,
    signal: opts.signal,
    onProgress: (done, total) => opts.reporter.progress("decompress", done, total, description),
  });
  await input.done;
  const r = written.results[0];
  if (!r?.ok)
    throw new ProvisionError(`decompressing ${description} failed: ${describeError(r?.error)}`);
  opts.reporter.phaseDone("decompress", `decompressed ${description}`);
  return { path: raw, format: "raw", kind: "file", description };
}

async function fromSource(
  input: Extract<BootInput, { kind: "source" }>,
  tmpDir: string,
  opts: { reporter: Reporter; signal?: AbortSignal },
): Promise<BackingImage> {
  // Loaded here, not at start-up: the HTTP client costs time a local run does not need.
  const { resolveImage } = await import("../source/index.js");
  const { fetchArtifact, findDistroKeyrings } = await import("../cache/index.js");
  const resolved = await resolveImage(input.request, {
    offline: input.offline,
    reporter: opts.reporter,
    signal: opts.signal,
  });
  const keyrings = input.keyrings?.length
    ? input.keyrings
    : await findDistroKeyrings(input.request.os);
  const local = await fetchArtifact(resolved, {
    offline: input.offline,
    policy: {
      keyrings,
      keyringsFromUser: Boolean(input.keyrings?.length),
      requireSignature: Boolean(input.requireSignature),
    },
    reporter: opts.reporter,
    signal: opts.signal,
  });
  const backing = await fromFile(resolve(local.path), resolved.description, tmpDir, opts);
  return { ...backing, description: resolved.description, os: resolved.os, arch: resolved.arch };
}

/** Programs needed to decompress `path`, for the start-up check. */
export async function decompressPrograms(path: string): Promise<string[]> {
  return programsFor(await detectFileCompression(path));
}

async function readHead(path: string, n: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// What is inside: architecture and OS, from the GPT and the ESP.

const ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649";

export interface ImageFacts {
  arch?: Arch;
  /** How the architecture was found, for messages. */
  archFrom?: string;
  os?: OsName;
}

/**
 * Read the GPT of a raw image or device: the ESP's removable-media loader names the
 * architecture (BOOTAA64.EFI / BOOTX64.EFI); a BIOS-BOOT partition means x86_64; Flatcar
 * has USR-A and OEM partitions. Nothing found (or a qcow2): no facts, no error.
 */
export async function inspectImage(b: BackingImage): Promise<ImageFacts> {
  if (b.format !== "raw") return {};
  let gpt: Awaited<ReturnType<typeof readGpt>>;
  try {
    gpt = await readGpt(b.path);
  } catch {
    return {};
  }
  const names = new Set(gpt.partitions.map((p) => p.name.toUpperCase()));
  const facts: ImageFacts = {};
  if (names.has("USR-A") || (names.has("OEM") && !names.has("BOOT"))) facts.os = "flatcar";
  else if (names.has("BOOT") && names.has("ROOT")) facts.os = "fcos";
  const esp =
    gpt.partitions.find((p) => p.typeGuid === ESP_TYPE) ??
    gpt.partitions.find((p) => /^EFI[- ]SYSTEM$/i.test(p.name));
  if (esp && (await hasProgram("mdir"))) {
    const r = await run("mdir", ["-b", "-i", `${b.path}@@${esp.offsetBytes}`, "::/EFI/BOOT"], {
      allowFailure: true,
    }).catch(() => undefined);
    const files = (r?.exitCode === 0 ? r.stdout : "").toUpperCase();
    if (/BOOTAA64\.EFI/.test(files))
      return { ...facts, arch: "aarch64", archFrom: "BOOTAA64.EFI on the ESP" };
    if (/BOOTX64\.EFI/.test(files))
      return { ...facts, arch: "x86_64", archFrom: "BOOTX64.EFI on the ESP" };
  }
  if (gpt.partitions.some((p) => p.typeGuid === BIOS_BOOT_TYPE))
    return { ...facts, arch: "x86_64", archFrom: "a BIOS-BOOT partition" };
  return facts;
}

/** A qcow2 overlay over `backing`: the guest writes there, the backing file stays as it was. */
export async function createOverlay(
  b: BackingImage,
  overlay: string,
  signal?: AbortSignal,
): Promise<void> {
  await run("qemu-img", ["create", "-q", "-f", "qcow2", "-F", b.format, "-b", b.path, overlay], {
    signal,
  });
}
