/**
 * The forced-exit wipe of a half-written target (flash, pxe-stick): synchronous, because it
 * runs from src/lifecycle's urgent cleanups right before the process exits. A file we
 * created is removed; a disk or an existing file loses its first MiB (MBR and primary GPT),
 * so neither firmware nor kernel sees partitions on it.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { describeError } from "../errors.js";
import { onUrgentExit } from "../lifecycle.js";

const MiB = 1 << 20;

/** Write zeros over `length` bytes at `offset`, and fsync. */
export function zeroSync(path: string, offset: number, length: number): void {
  const fd = openSync(path, "r+");
  try {
    const zeros = Buffer.alloc(length);
    let done = 0;
    while (done < length) done += writeSync(fd, zeros, done, length - done, offset + done);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Until the returned function is called, a forced exit wipes `target` and says so; `again`
 * is what to run to redo it ("flash it again").
 */
export function wipeOnUrgentExit(
  target: { path: string; kind: "file" | "block" },
  existed: boolean,
  again: string,
): () => void {
  return onUrgentExit(() => {
    try {
      if (target.kind === "file" && !existed) {
        if (!existsSync(target.path)) return undefined;
        unlinkSync(target.path);
        return `removed the partial ${target.path}`;
      }
      // An image file may be shorter than a MiB yet (just truncated): do not grow it.
      const length = target.kind === "file" ? Math.min(MiB, statSync(target.path).size) : MiB;
      zeroSync(target.path, 0, length);
      return `zeroed the first MiB of ${target.path}: it cannot boot; ${again}`;
    } catch (err) {
      return `could not wipe ${target.path} (${describeError(err)}): it is half-written; do not boot it`;
    }
  });
}
