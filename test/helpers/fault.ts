// LD_PRELOAD fault injection for child processes (fixtures/fault-shim/fault.c, built by
// fixtures/build-fault-shim.sh into .cache/fault-shim): makes reads, writes or fsyncs on ONE file
// or block device fail with a chosen errno, in the child and everything it starts.
//
//   await faultShim(); // builds fault.so once
//   const r = await execa("node", ["bin/provision.js", ...args], {
//     env: faultEnv({ path: dev, op: "write", errno: "EIO", afterBytes: 4 << 20 }),
//     reject: false,
//   }); // execa adds process.env; with spawn() pass { ...process.env, ...faultEnv(...) }
//
// The shim goes in at exec time: it cannot be added to the running test process.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { repoRoot } from "./fixtures.js";

/** Where fixtures/build-fault-shim.sh puts fault.so. */
export const faultShimDir: string = path.join(repoRoot, ".cache", "fault-shim");

let built: Promise<string> | undefined;

/** Build the shim (once per test process; the script itself caches by a hash of its inputs)
 * and return the absolute path of fault.so. */
export function faultShim(): Promise<string> {
  built ??= (async () => {
    const script = path.join(repoRoot, "fixtures", "build-fault-shim.sh");
    try {
      await promisify(execFile)("bash", [script, faultShimDir], { cwd: repoRoot });
    } catch (err) {
      const e = err as Error & { stderr?: string; stdout?: string };
      throw new Error(
        `fixtures/build-fault-shim.sh failed: ${e.stderr || e.stdout || e.message}`.trim(),
      );
    }
    const so = path.join(faultShimDir, "fault.so");
    if (!existsSync(so)) throw new Error(`fixtures/build-fault-shim.sh made no ${so}`);
    return so;
  })();
  built.catch(() => {
    built = undefined; // let a later call try again
  });
  return built;
}

export type FaultOp = "write" | "read" | "fsync";

export interface FaultOptions {
  /** The file or block device whose I/O fails (made absolute here). Other files are untouched. */
  path: string;
  /** write: write/pwrite/pwritev/... ; read: read/pread/preadv/... ; fsync: fsync/fdatasync. */
  op: FaultOp;
  /** errno name as in <errno.h>: "EIO", "ENOSPC", "EROFS", "EDQUOT", ... */
  errno: string;
  /** Fail only once this many bytes went through `op` on the target in the child process (for
   * fsync: bytes written to it). Default 0: the first call fails. */
  afterBytes?: number;
  /** The call that crosses afterBytes transfers only up to it (a short write, as a full disk
   * does) and the next one fails. false: that call fails as a whole. Default true. */
  short?: boolean;
  /** Append a line per target open and per injected failure to this file (to prove the failure
   * the product reports is the injected one). */
  log?: string;
  /** Every matching call first sleeps this long (a slow card): with an afterBytes that is never
   * reached, the I/O is only slow. */
  delayMs?: number;
}

/**
 * The environment variables that arm the shim in a child process: merge them into its env, e.g.
 * `{ ...process.env, ...faultEnv(o) }` (execa/spawn merge with process.env by default).
 * Requires `await faultShim()` to have run first (it builds fault.so).
 */
export function faultEnv(opts: FaultOptions): Record<string, string> {
  if (!/^E[A-Z0-9]+$/.test(opts.errno)) throw new Error(`faultEnv: bad errno ${opts.errno}`);
  const after = opts.afterBytes ?? 0;
  if (!Number.isSafeInteger(after) || after < 0)
    throw new Error(`faultEnv: bad afterBytes ${after}`);
  const so = path.join(faultShimDir, "fault.so");
  if (!existsSync(so)) throw new Error(`faultEnv: no ${so}; await faultShim() first`);
  const preload = process.env.LD_PRELOAD;
  const env: Record<string, string> = {
    LD_PRELOAD: preload ? `${so}:${preload}` : so,
    FAULT_PATH: path.resolve(opts.path),
    FAULT_OP: opts.op,
    FAULT_ERRNO: opts.errno,
    FAULT_AFTER_BYTES: String(after),
    FAULT_SHORT: opts.short === false ? "0" : "1",
    // libuv can do file I/O through io_uring (off by default in Node 20; UV_USE_IO_URING=1 turns
    // it on), which no preload sees: keep it on the plain syscalls.
    UV_USE_IO_URING: "0",
  };
  if (opts.log) env.FAULT_LOG = path.resolve(opts.log);
  if (opts.delayMs) env.FAULT_DELAY_MS = String(opts.delayMs);
  return env;
}
