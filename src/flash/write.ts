/**
 * One decompressed stream written to N destinations at once. Blocks are read once, checked
 * for zero grains once, digested once, and written to every destination with positioned
 * writes (a few blocks in flight, so reading and writing overlap). The slowest destination
 * sets the pace; one that fails is dropped and reported, the others go on.
 */
import { constants } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { describeError, errnoText, ProvisionError, RefusedError } from "../errors.js";
import { formatBytes } from "../progress/index.js";
import { BLOCK_SIZE, blockDigest, nonZeroRuns } from "./blocks.js";
import type { BlockReader } from "./reader.js";

export interface Destination {
  path: string;
  kind: "file" | "block";
  /** Capacity in bytes (block devices). */
  capacity?: number;
  /** Skip all-zero grains instead of writing them. Files: always; block devices: --sparse. */
  sparse: boolean;
}

export interface DestinationResult {
  path: string;
  ok: boolean;
  error?: Error;
  /** True once any byte may have reached the target (it is no longer what it was). */
  touched: boolean;
  bytesWritten: number;
}

export interface WriteResult {
  imageSize: number;
  /** One digest per block, when requested (for verify). */
  digests?: Buffer[];
  /**
   * With digests: each block's non-zero runs, what a sparse target got written (verify of a
   * sparse target checks those and nothing else).
   */
  runs?: Array<Array<[number, number]>>;
  /** The block buffers, free now: verify reads into them rather than into new ones. */
  buffers: Buffer[];
  /**
   * performance.now() when the targets were open and the first block was handed to them
   * (written, or held back when it is block 0, whose partition table goes last): writing
   * has begun, and the fixed cost ends there.
   */
  firstWriteAt?: number;
  results: DestinationResult[];
}

interface Slot {
  dest: Destination;
  fh?: FileHandle;
  result: DestinationResult;
  /** The target's last write: its writes run one at a time, in order (see writeBlock). */
  tail: Promise<void>;
}

const IN_FLIGHT = 3;
const FIRST_MIB = 1 << 20;

async function openDestination(d: Destination): Promise<FileHandle> {
  if (d.kind === "block") {
    // O_EXCL on a block device: the kernel refuses if it is mounted or otherwise claimed.
    return await open(d.path, constants.O_WRONLY | constants.O_EXCL);
  }
  return await open(d.path, "w", 0o644);
}

/** A positioned write of all `len` bytes: a short write is continued (and its error seen). */
async function writeFully(fh: FileHandle, buf: Buffer, off: number, len: number, pos: number) {
  let done = 0;
  while (done < len) {
    const { bytesWritten } = await fh.write(buf, off + done, len - done, pos + done);
    if (bytesWritten <= 0)
      throw Object.assign(new Error("no space left on device"), { code: "ENOSPC" });
    done += bytesWritten;
  }
}

/**
 * A failed write or sync on a target, as one line naming the target, where and the errno: a
 * full file system, an I/O error, a device that went away. Never blamed on the image.
 */
function targetError(d: Destination, err: unknown, at: number): unknown {
  if (err instanceof ProvisionError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const what = errnoText(err) ?? describeError(err);
  if (code === "ENOSPC" || code === "EFBIG" || code === "EDQUOT")
    return new RefusedError(
      `${d.path}: ${what} after ${formatBytes(at)}; the image does not fit there`,
      d.kind === "file"
        ? "write the image file to a file system with more room"
        : "use a bigger disk",
    );
  return new ProvisionError(`writing ${d.path} failed at ${formatBytes(at)}: ${what}`, {
    hint:
      code === "EIO" || code === "ENXIO" || code === "ENODEV"
        ? "the disk or card reader failed or was removed; try another card or reader"
        : undefined,
  });
}

export async function writeToAll(
  reader: BlockReader,
  dests: Destination[],
  opts: {
    digests: boolean;
    /** The image's first block, already read from `reader` (BLOCK_SIZE bytes unless shorter). */
    head?: { buf: Buffer; len: number };
    expectedSize?: number;
    signal?: AbortSignal;
    onProgress?: (done: number, total?: number) => void;
  },
): Promise<WriteResult> {
  let firstWriteAt: number | undefined;
  const slots: Slot[] = dests.map((dest) => ({
    dest,
    result: { path: dest.path, ok: true, touched: false, bytesWritten: 0 },
    tail: Promise.resolve(),
  }));
  const fail = (s: Slot, err: unknown) => {
    if (!s.result.ok) return;
    s.result.ok = false;
    s.result.error = err instanceof Error ? err : new Error(String(err));
  };
  await Promise.all(
    slots.map(async (s) => {
      try {
        s.fh = await openDestination(s.dest);
        // Opening a file truncates it: its old content is gone from here on. A disk loses
        // its old partition table first (the new one is written last).
        if (s.dest.kind === "file") s.result.touched = true;
        else {
          s.result.touched = true;
          await writeFully(s.fh, Buffer.alloc(FIRST_MIB), 0, FIRST_MIB, 0);
        }
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        fail(
          s,
          code === "EBUSY"
            ? new RefusedError(
                `${s.dest.path} is in use (mounted or held by another program); nothing was written`,
              )
            : new ProvisionError(
                `cannot open ${s.dest.path} for writing: ${errnoText(err) ?? describeError(err)}`,
                {
                  hint:
                    code === "EPERM" && s.dest.kind === "file"
                      ? `is it immutable? \`lsattr ${s.dest.path}\` shows an i; \`chattr -i\` clears it`
                      : undefined,
                },
              ),
        );
      }
    }),
  );
  const alive = () => slots.filter((s) => s.result.ok && s.fh);

  const digests: Buffer[] | undefined = opts.digests ? [] : undefined;
  const blockRuns: Array<Array<[number, number]>> | undefined = opts.digests ? [] : undefined;
  const pool: Buffer[] = Array.from({ length: IN_FLIGHT + 1 }, () =>
    Buffer.allocUnsafe(BLOCK_SIZE),
  );
  // Resolves to the buffer to use again, or undefined for block 0's (kept until the end).
  const inFlight: Promise<Buffer | undefined>[] = [];
  let position = 0;

  // The first block (MBR, primary GPT) is written last, after every other block landed, as
  // coreos-installer does: until then the target's first MiB is zeros, so an interrupted
  // write (kill -9, a pulled card, power loss) never leaves a partition table that points at
  // half-written partitions, and a forced exit's wipe is not undone by a write in flight.
  let first: { buf: Buffer; len: number; runs: [number, number][] } | undefined;
  const dispatch = (buf: Buffer, len: number, at: number): Promise<Buffer | undefined> => {
    firstWriteAt ??= performance.now();
    const runs = nonZeroRuns(buf, len);
    digests?.push(blockDigest(buf, len, runs));
    blockRuns?.push(runs);
    if (at === 0) {
      first = { buf, len, runs };
      return Promise.resolve(undefined);
    }
    return writeBlock(buf, len, at, runs);
  };
  const writeBlock = (
    buf: Buffer,
    len: number,
    at: number,
    runs: [number, number][],
  ): Promise<Buffer> => {
    // One write at a time per target: the blocks in flight overlap reading with writing, not
    // writes with each other. Buffered writes to one file take its inode lock, and writers
    // waiting for it spin on it: on the bench's image with 860 MiB of data, 3 at once cost
    // ~0.2 s more system CPU (1.8 against 1.6 s) on 2 cores that the decompressor needs.
    const writes = alive().map((s) => {
      s.tail = s.tail.then(() => writeOne(s, buf, len, at, runs));
      return s.tail;
    });
    return Promise.all(writes).then(() => buf);
  };
  const writeOne = async (
    s: Slot,
    buf: Buffer,
    len: number,
    at: number,
    runs: [number, number][],
  ): Promise<void> => {
    if (!s.result.ok) return;
    const fh = s.fh as FileHandle;
    try {
      if (s.dest.capacity !== undefined && at + len > s.dest.capacity) {
        throw new RefusedError(
          `the image is bigger than ${s.dest.path} (${formatBytes(s.dest.capacity)}); it does not fit`,
          "use a bigger disk",
        );
      }
      if (s.dest.sparse) {
        for (const [a, b] of runs) {
          s.result.touched = true;
          await writeFully(fh, buf, a, b - a, at + a);
        }
      } else {
        s.result.touched = true;
        await writeFully(fh, buf, 0, len, at);
      }
      s.result.bytesWritten = Math.max(s.result.bytesWritten, at + len);
    } catch (err) {
      fail(s, targetError(s.dest, err, at));
    }
  };

  let readError: unknown;
  try {
    for (let head = opts.head; ; head = undefined) {
      opts.signal?.throwIfAborted();
      const cur = head ? head.buf : (pool.pop() as Buffer);
      const fill = head ? head.len : await reader.fill(cur, BLOCK_SIZE);
      if (fill === 0) break;
      inFlight.push(dispatch(cur, fill, position));
      position += fill;
      opts.onProgress?.(position, opts.expectedSize);
      if (fill < BLOCK_SIZE) break;
      while (pool.length === 0 && inFlight.length > 0) {
        const free = await inFlight.shift();
        if (free) pool.push(free);
      }
      if (pool.length === 0) pool.push(Buffer.allocUnsafe(BLOCK_SIZE));
      if (alive().length === 0) throw new Error("every target failed");
    }
  } catch (err) {
    readError = err;
    reader.destroy();
  }
  for (const free of await Promise.all(inFlight)) if (free) pool.push(free);

  if (readError && !(readError instanceof Error && readError.message === "every target failed")) {
    for (const s of slots) fail(s, readError);
  }
  // Everything else is on every good target: now the partition table.
  if (first && alive().length > 0) await writeBlock(first.buf, first.len, 0, first.runs);
  // Sparse files end at the image size even when the image ends in zeros.
  await Promise.all(
    alive().map(async (s) => {
      try {
        if (s.dest.kind === "file") await s.fh?.truncate(position);
        await s.fh?.sync();
      } catch (err) {
        fail(s, targetError(s.dest, err, position));
      }
    }),
  );
  await Promise.all(slots.map((s) => s.fh?.close().catch(() => {})));
  const buffers = [...pool, ...(first ? [first.buf] : [])];
  return {
    imageSize: position,
    digests,
    runs: blockRuns,
    buffers,
    firstWriteAt,
    results: slots.map((s) => s.result),
  };
}
