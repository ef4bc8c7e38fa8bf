/**
 * ext2/3/4 access through debugfs, addressing the filesystem by byte offset inside a disk or
 * image (`'disk?offset=N'`), so that no mount, loop device or partition node is needed.
 *
 * debugfs quirks handled here:
 *  - it exits 0 after most failed commands (with -f and -R); errors only show up as lines on
 *    stderr, after the version banner ("debugfs 1.47.0 (5-Feb-2023)"): every other stderr line
 *    is treated as an error;
 *  - `run()` strips the final newline of stdout, so file contents are read with `dump` into a
 *    temp file, never with `cat`;
 *  - `write` refuses to replace an existing file (so replacing is `rm` + `write`), takes the
 *    mode of the local file and needs `sif` for mode/uid/gid;
 *  - the e2fsprogs unix I/O manager splits the device name at the first '?', so a path that
 *    contains one cannot be used.
 */
import { rmSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProvisionError } from "../errors.js";
import { run } from "../exec/index.js";
import { onUrgentExit } from "../lifecycle.js";

/** A filesystem at a byte offset in a disk or image. */
export interface ExtLocation {
  target: string;
  offset: number;
}

export function deviceSpec(loc: ExtLocation): string {
  if (loc.target.includes("?")) {
    throw new ProvisionError(
      `${loc.target}: paths containing '?' cannot be used with e2fsprogs; rename or link the image`,
    );
  }
  return `${loc.target}?offset=${loc.offset}`;
}

/** Quote one argument for debugfs's command parser (ss library: double quotes group words). */
export function q(arg: string): string {
  if (/["\n\r]/.test(arg))
    throw new ProvisionError(`internal error: cannot pass ${JSON.stringify(arg)} to debugfs`);
  return `"${arg}"`;
}

function errorLines(stderr: string): string[] {
  return stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !/^debugfs \d+\.\d+/.test(l));
}

/** A temp directory removed after `fn`, whatever happens. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "provision-ext4-"));
  const off = onUrgentExit(() => {
    rmSync(dir, { recursive: true, force: true });
    return undefined;
  });
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
    off();
  }
}

/**
 * Run debugfs commands (from a command file) and fail on any error line. `what` names the
 * operation for messages.
 */
export async function debugfs(
  loc: ExtLocation,
  commands: string[],
  opts: { write: boolean; what: string },
): Promise<string> {
  return withTempDir(async (dir) => {
    const cmdfile = join(dir, "commands");
    await writeFile(cmdfile, `${commands.join("\n")}\n`, { mode: 0o600 });
    const args = [...(opts.write ? ["-w"] : []), "-f", cmdfile, deviceSpec(loc)];
    const r = await run("debugfs", args, { allowFailure: true });
    const errors = errorLines(r.stderr);
    if (r.exitCode !== 0 || errors.length > 0) {
      throw new ProvisionError(
        `${opts.what} failed: debugfs: ${errors[0] ?? `exit code ${r.exitCode}`}`,
      );
    }
    return r.stdout;
  });
}

export interface DirEntry {
  inode: number;
  /** Full st_mode, e.g. 0o100644, 0o40755, 0o120777. */
  mode: number;
  uid: number;
  gid: number;
  name: string;
}

/** List a directory with `ls -p`; undefined when it does not exist. Follows symlinks in the path. */
export async function listDir(loc: ExtLocation, dir: string): Promise<DirEntry[] | undefined> {
  const r = await run("debugfs", ["-R", `ls -p ${q(dir)}`, deviceSpec(loc)], {
    allowFailure: true,
  });
  const errors = errorLines(r.stderr);
  if (errors.some((l) => /File not found by ext2_lookup/.test(l))) return undefined;
  if (r.exitCode !== 0 || errors.length > 0) {
    throw new ProvisionError(
      `reading ${dir} on ${loc.target} at offset ${loc.offset} failed: debugfs: ${errors[0] ?? `exit code ${r.exitCode}`}`,
    );
  }
  // `/inode/mode/uid/gid/name/size/` — names cannot contain '/'.
  const out: DirEntry[] = [];
  for (const line of r.stdout.split("\n")) {
    const f = line.trim().split("/");
    if (f.length < 7 || f[0] !== "") continue;
    const name = f[5] as string;
    if (name === "." || name === "..") continue;
    out.push({
      inode: Number(f[1]),
      mode: Number.parseInt(f[2] as string, 8),
      uid: Number(f[3]),
      gid: Number(f[4]),
      name,
    });
  }
  return out;
}

export const isDir = (e: DirEntry) => (e.mode & 0o170000) === 0o040000;
export const isRegular = (e: DirEntry) => (e.mode & 0o170000) === 0o100000;

/** The bytes of a file (via `dump` to a temp file; `cat` through run() would lose a final newline). */
export async function readExtFile(loc: ExtLocation, path: string): Promise<Buffer> {
  return withTempDir(async (dir) => {
    const out = join(dir, "dump");
    await debugfs(loc, [`dump ${q(path)} ${q(out)}`], { write: false, what: `reading ${path}` });
    return readFile(out);
  });
}

/**
 * Create file `dir/name` (which must not exist) with `content` and the given mode/owner, in one
 * debugfs session. `replace` removes an existing file first.
 */
export async function writeExtFile(
  loc: ExtLocation,
  dir: string,
  name: string,
  content: string | Buffer,
  opts: { mode: number; uid: number; gid: number; replace?: boolean; what: string },
): Promise<void> {
  await withTempDir(async (tmp) => {
    const local = join(tmp, "content");
    await writeFile(local, content, { mode: 0o600 });
    const cmds = [`cd ${q(dir)}`];
    if (opts.replace) cmds.push(`rm ${q(name)}`);
    cmds.push(
      `write ${q(local)} ${q(name)}`,
      `sif ${q(name)} mode 0${(0o100000 | (opts.mode & 0o7777)).toString(8)}`,
      `sif ${q(name)} uid ${opts.uid}`,
      `sif ${q(name)} gid ${opts.gid}`,
    );
    await debugfs(loc, cmds, { write: true, what: opts.what });
  });
}
