/**
 * Claiming write targets before anything is written: the same target given twice under
 * two names (a symlink, `./x.img` and `x.img`, /dev/loop3 and a by-id link) is refused, and
 * each target is locked against a second provision process writing it at the same time.
 * Identity is the device number for block devices and the resolved path for files.
 */
import { chmod, mkdir, realpath, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { RefusedError, UsageError } from "../errors.js";
import { tryLock } from "../lock.js";
import { majMin } from "./sys.js";

async function identity(given: string): Promise<string> {
  const st = await stat(given, { bigint: true }).catch(() => undefined);
  if (st?.isBlockDevice()) return `block:${majMin(st.rdev)}`;
  // A file by its resolved path, whether it exists yet or not (it does once the first
  // writer created it), so every process computes the same key.
  const real = await realpath(given).catch(async () => {
    const dir = await realpath(dirname(resolve(given))).catch(() => dirname(resolve(given)));
    return join(dir, basename(given));
  });
  return `path:${real}`;
}

/**
 * Directory of target locks: one fixed place for every provision process whatever its
 * TMPDIR, so two of them with different environments still see each other.
 */
function lockDir(): string {
  return "/tmp/provision-target-locks";
}

/**
 * Refuse duplicates (UsageError) and targets another provision process is writing
 * (RefusedError); returns the function that releases the locks taken.
 */
export async function claimTargets(targets: string[]): Promise<() => Promise<void>> {
  const seen = new Map<string, string>();
  const keys: string[] = [];
  for (const given of targets) {
    const key = await identity(given);
    const first = seen.get(key);
    if (first !== undefined)
      throw new UsageError(
        `${first} and ${given} are the same target`,
        "give each disk or file once",
      );
    seen.set(key, given);
    keys.push(key);
  }
  const dir = lockDir();
  // Sticky and world-writable, like /tmp: any user's provision can lock its own targets.
  if (
    await mkdir(dir).then(
      () => true,
      () => false,
    )
  )
    await chmod(dir, 0o1777).catch(() => {});
  const releases: (() => Promise<void>)[] = [];
  const releaseAll = async () => {
    for (const r of releases.splice(0)) await r();
  };
  for (const [i, key] of keys.entries()) {
    const lock = await tryLock(join(dir, `${key.replace(/[^A-Za-z0-9._-]/g, "_")}.lock`));
    if ("heldBy" in lock) {
      await releaseAll();
      throw new RefusedError(
        `${targets[i]} is being written by another provision process (pid ${lock.heldBy}); nothing was written`,
        "wait for it to finish, or stop it first",
      );
    }
    releases.push(lock.release);
  }
  return releaseAll;
}
