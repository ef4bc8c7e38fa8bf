/**
 * Decompression by magic bytes, through the system's tools (multi-threaded where the format
 * allows: xz -T0, zstd -T0, pigz/lbzip2 when installed). The output is one stream of raw
 * image bytes; its exit is checked so a corrupt archive is an error, never a short image.
 */
import { open } from "node:fs/promises";
import { ProvisionError } from "../errors.js";
import { hasProgram, requirePrograms, run, spawnStreaming } from "../exec/index.js";
import { type BlockReader, fifoReader, fileReader } from "./reader.js";

export type Compression = "xz" | "gzip" | "zstd" | "bzip2" | "raw";

export function detectCompression(head: Buffer): Compression {
  if (
    head.length >= 6 &&
    head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))
  )
    return "xz";
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return "zstd";
  if (head.length >= 3 && head.subarray(0, 3).toString("latin1") === "BZh") return "bzip2";
  return "raw";
}

export async function detectFileCompression(path: string): Promise<Compression> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(16);
    const { bytesRead } = await fh.read(buf, 0, 16, 0);
    return detectCompression(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

async function command(format: Exclude<Compression, "raw">): Promise<[string, string[]]> {
  switch (format) {
    case "xz":
      return ["xz", ["-dc", "-T0"]];
    case "zstd":
      return ["zstd", ["-dc", "-T0", "-q"]];
    case "gzip":
      return (await hasProgram("pigz")) ? ["pigz", ["-dc"]] : ["gzip", ["-dc"]];
    case "bzip2":
      if (await hasProgram("lbzip2")) return ["lbzip2", ["-dc"]];
      if (await hasProgram("pbzip2")) return ["pbzip2", ["-dc"]];
      return ["bzip2", ["-dc"]];
  }
}

/** Programs a format needs, for the start-up check. */
export function programsFor(format: Compression): string[] {
  return format === "raw" ? [] : [format === "gzip" ? "gzip" : format];
}

/**
 * Size of the decompressed image when the format records it (xz index, zstd frame
 * header); undefined when only decompressing would tell (gzip > 4 GiB, bzip2).
 */
export async function decompressedSize(
  path: string,
  format: Compression,
  fileSize: number,
): Promise<number | undefined> {
  if (format === "raw") return fileSize;
  if (format === "xz") {
    const r = await run("xz", ["--robot", "--list", path], { allowFailure: true });
    const totals = r.stdout.split("\n").find((l) => l.startsWith("totals\t"));
    const n = totals ? Number(totals.split("\t")[4]) : Number.NaN;
    return Number.isFinite(n) && n > 0 ? n : undefined;
  }
  if (format === "zstd") {
    const r = await run("zstd", ["-lv", path], { allowFailure: true });
    const m = /Decompressed Size:\s*[\d.]+\s*\S+\s*\((\d+) B\)/.exec(r.stdout + r.stderr);
    return m?.[1] ? Number(m[1]) : undefined;
  }
  return undefined;
}

/** The compressed image could not be decompressed (the caller knows where it came from). */
export class CorruptImageError extends ProvisionError {
  constructor(
    readonly path: string,
    readonly why: string,
  ) {
    super(`the image ${path} is corrupt: ${why}`, {
      hint: `check it with the decompressor's test mode (e.g. xz -t ${path})`,
    });
    this.name = "CorruptImageError";
  }
}

export interface DecompressedStream {
  format: Compression;
  /** The image's bytes, read into the caller's buffers (./reader.ts). */
  reader: BlockReader;
  /** Resolves when the decompressor exited cleanly; rejects with its error otherwise. */
  done: Promise<void>;
}

export async function openDecompressed(
  path: string,
  opts: { signal?: AbortSignal } = {},
): Promise<DecompressedStream> {
  const format = await detectFileCompression(path);
  if (format === "raw") {
    const reader = await fileReader(path);
    return { format, reader, done: Promise.resolve() };
  }
  const [prog, args] = await command(format);
  await requirePrograms([prog]);
  const pipe = await fifoReader();
  let child: ReturnType<typeof spawnStreaming>;
  try {
    child = spawnStreaming(prog, [...args, path], {
      stdin: "ignore",
      stdout: pipe.writeFd,
      signal: opts.signal,
    });
  } finally {
    pipe.release(); // the child has its copy; the reader sees the end when the child exits
  }
  const done = (async () => {
    const r = await child;
    if (r.isCanceled) throw new ProvisionError(`${prog} was stopped`);
    if (r.exitCode !== 0) {
      const why =
        String(r.stderr ?? "")
          .trim()
          .split("\n")
          .pop() || `exit code ${r.exitCode}`;
      throw new CorruptImageError(path, `${prog} failed: ${why.replace(/^[^:]*: /, "")}`);
    }
  })();
  // Mark handled; the writer awaits it after the stream ends.
  done.catch(() => {});
  return { format, reader: pipe.reader, done };
}
