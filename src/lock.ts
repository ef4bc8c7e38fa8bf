/**
 * Lock files between provision processes: one per cache entry (two processes sharing the
 * cache never write the same partial download; the second waits) and one per write target
 * (the second refuses). Created with O_EXCL; holds the owner's pid; a lock whose pid is gone
 * is stale and taken over.
 */
import { open, readFile, unlink } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Take `lockPath` now or report who holds it: returns a release function, or the pid of the
 * live process holding it.
 */
export async function tryLock(
  lockPath: string,
): Promise<{ release: () => Promise<void> } | { heldBy: number }> {
  for (;;) {
    try {
      const fh = await open(lockPath, "wx", 0o644);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return { release: () => unlink(lockPath).catch(() => {}) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const pid = Number.parseInt(await readFile(lockPath, "utf8").catch(() => ""), 10);
      if (Number.isFinite(pid) && alive(pid)) return { heldBy: pid };
      await unlink(lockPath).catch(() => {});
    }
  }
}

export async function withLock<T>(
  lockPath: string,
  fn: () => Promise<T>,
  opts: { signal?: AbortSignal; onWait?: (pid: number) => void } = {},
): Promise<T> {
  let warned = false;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      const fh = await open(lockPath, "wx", 0o644);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const pid = Number.parseInt(await readFile(lockPath, "utf8").catch(() => ""), 10);
      if (!Number.isFinite(pid) || !alive(pid)) {
        // Stale: the owner died. Remove and retry (another waiter may win; that's fine).
        await unlink(lockPath).catch(() => {});
        continue;
      }
      if (!warned) {
        opts.onWait?.(pid);
        warned = true;
      }
      await sleep(300, undefined, { signal: opts.signal });
    }
  }
  try {
    return await fn();
  } finally {
    await unlink(lockPath).catch(() => {});
  }
}
