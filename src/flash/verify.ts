/**
 * Read back what was written, from the device rather than the page cache, and compare it
 * block by block with the digests computed while writing. The cache is dropped with
 * posix_fadvise(DONTNEED) for files and BLKFLSBUF for block devices (disk's dropPageCache);
 * the written data was fsynced, so the pages are clean and go.
 */
import { open } from "node:fs/promises";
import { dropPageCache } from "../disk/index.js";
import { describeError, errnoText, ProvisionError } from "../errors.js";
import { formatBytes } from "../progress/index.js";
import { BLOCK_SIZE, blockDigest, nonZeroRuns } from "./blocks.js";

export class VerifyMismatchError extends ProvisionError {
  constructor(
    readonly path: string,
    readonly offset: number,
  ) {
    super(
      `verify failed: ${path} differs from the image in the 4 MiB block at byte ${offset}; the card or disk is not reliable`,
      {
        hint: "flash again; if it fails again, the medium is faulty or fake (check its real capacity)",
      },
    );
  }
}

export async function verifyTarget(
  path: string,
  imageSize: number,
  digests: Buffer[],
  opts: {
    signal?: AbortSignal;
    onProgress?: (done: number, total: number) => void;
    /**
     * The target was written sparsely (an image file, or a disk with --sparse): each block's
     * runs as written (writeToAll's `runs`). Only those bytes are checked: a block with none
     * is not read at all, and the grains in between hold what they held (holes in a file,
     * old data on a --sparse disk), which the image does not say anything about.
     */
    written?: Array<Array<[number, number]>>;
    /** A file: its size must be at least the image's (trailing all-zero blocks are holes). */
    file?: boolean;
    /** Two BLOCK_SIZE buffers to read into (the writer's, free by now); else new ones. */
    buffers?: Buffer[];
  } = {},
): Promise<void> {
  await dropPageCache(path);
  const fh = await open(path, "r");
  try {
    const bufs = [0, 1].map((i) => opts.buffers?.[i] ?? Buffer.allocUnsafe(BLOCK_SIZE));
    // Two buffers: block k is digested in one while block k+1 is read into the other.
    const readBlock = async (i: number, slot: number) => {
      const at = i * BLOCK_SIZE;
      const len = Math.min(BLOCK_SIZE, imageSize - at);
      const buf = bufs[slot % 2] as Buffer;
      let got = 0;
      while (got < len) {
        let bytesRead: number;
        try {
          ({ bytesRead } = await fh.read(buf, got, len - got, at + got));
        } catch (err) {
          throw new ProvisionError(
            `verify failed: reading ${path} back failed at ${formatBytes(at + got)}: ${errnoText(err) ?? describeError(err)}`,
            { hint: "the disk or card reader failed or was removed; try another card or reader" },
          );
        }
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return { buf, len, got };
    };
    if (opts.file) {
      const { size } = await fh.stat();
      if (size < imageSize)
        throw new ProvisionError(
          `verify failed: ${path} is ${size} bytes, shorter than the image (${imageSize})`,
        );
    }
    const count = Math.ceil(imageSize / BLOCK_SIZE);
    const blocks: number[] = [];
    for (let i = 0; i < count; i++) if (!opts.written || opts.written[i]?.length) blocks.push(i);
    let next = blocks.length > 0 ? readBlock(blocks[0] as number, 0) : undefined;
    for (let k = 0; k < blocks.length; k++) {
      const i = blocks[k] as number;
      opts.signal?.throwIfAborted();
      const { buf, len, got } = await (next as ReturnType<typeof readBlock>);
      // Read the next block while this one is digested.
      next = k + 1 < blocks.length ? readBlock(blocks[k + 1] as number, k + 1) : undefined;
      next?.catch(() => {}); // awaited in the next round; not unhandled if this one throws
      if (got !== len) {
        throw new ProvisionError(
          `verify failed: ${path} ended at byte ${i * BLOCK_SIZE + got}, before the end of the image`,
        );
      }
      const d = blockDigest(buf, len, opts.written?.[i] ?? nonZeroRuns(buf, len));
      if (!d.equals(digests[i] as Buffer)) throw new VerifyMismatchError(path, i * BLOCK_SIZE);
      opts.onProgress?.(i * BLOCK_SIZE + len, imageSize);
    }
    await next;
  } finally {
    await fh.close();
  }
}
