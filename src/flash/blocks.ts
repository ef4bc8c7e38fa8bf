/**
 * The image is handled in 4 MiB blocks. Within a block, 4 KiB grains that are all zero are
 * found once and used twice: the writer skips them on sparse targets, and the block digest
 * covers only the non-zero runs plus their offsets (so zeros cost a memcmp, not a hash).
 * The same digest function runs over the source while writing and over the target while
 * verifying: equal digests mean equal bytes.
 */
import { createHash } from "node:crypto";

export const BLOCK_SIZE = 4 << 20;
export const GRAIN = 4096;
const ZERO = Buffer.alloc(BLOCK_SIZE);

/** Half-open [start, end) ranges of `buf[0..len)` that are not all zero, at GRAIN granularity. */
export function nonZeroRuns(buf: Buffer, len: number): Array<[number, number]> {
  if (buf.compare(ZERO, 0, len, 0, len) === 0) return [];
  const runs: Array<[number, number]> = [];
  let start = -1;
  for (let off = 0; off < len; off += GRAIN) {
    const end = Math.min(off + GRAIN, len);
    const zero = buf.compare(ZERO, 0, end - off, off, end) === 0;
    if (!zero && start < 0) start = off;
    if (zero && start >= 0) {
      runs.push([start, off]);
      start = -1;
    }
  }
  if (start >= 0) runs.push([start, len]);
  return runs;
}

/** Digest of one block: sha256 over (offset, length, bytes) of each non-zero run, and its length. */
export function blockDigest(buf: Buffer, len: number, runs: Array<[number, number]>): Buffer {
  const h = createHash("sha256");
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32LE(len, 0);
  h.update(hdr);
  for (const [s, e] of runs) {
    hdr.writeUInt32LE(s, 0);
    hdr.writeUInt32LE(e - s, 4);
    h.update(hdr);
    h.update(buf.subarray(s, e));
  }
  return h.digest();
}
