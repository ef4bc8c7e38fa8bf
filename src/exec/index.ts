/**
 * The one place that runs external programs. A missing program becomes a ProvisionError
 * that names the Debian package to install; a failing one becomes an error carrying the
 * last line of its stderr.
 */
import { execa, type Options, type ResultPromise } from "execa";
import { EXIT, ProvisionError } from "../errors.js";
import { onUrgentExit } from "../lifecycle.js";

/** Which Debian package provides each program we use. */
const PACKAGE_OF: Record<string, string> = {
  xz: "xz-utils",
  gzip: "gzip",
  zstd: "zstd",
  bzip2: "bzip2",
  gpg: "gnupg",
  gpgv: "gpgv",
  sgdisk: "gdisk",
  sfdisk: "fdisk",
  partx: "util-linux",
  losetup: "mount",
  lsblk: "util-linux",
  blockdev: "util-linux",
  umount: "mount",
  debugfs: "e2fsprogs",
  mke2fs: "e2fsprogs",
  "mkfs.ext4": "e2fsprogs",
  tune2fs: "e2fsprogs",
  mcopy: "mtools",
  mdir: "mtools",
  mmd: "mtools",
  mtype: "mtools",
  minfo: "mtools",
  mattrib: "mtools",
  tar: "tar",
  unzip: "unzip",
  "mkfs.vfat": "dosfstools",
  syslinux: "syslinux",
  dumpe2fs: "e2fsprogs",
  dd: "coreutils",
  "ignition-validate": "ignition",
  "qemu-system-aarch64": "qemu-system-arm",
  "qemu-system-x86_64": "qemu-system-x86",
  "qemu-img": "qemu-utils",
  "ssh-keygen": "openssh-client",
  ssh: "openssh-client",
};

export function packageFor(program: string): string | undefined {
  return PACKAGE_OF[program];
}

function missingTool(program: string): ProvisionError {
  const pkg = PACKAGE_OF[program];
  return new ProvisionError(`${program} is not installed`, {
    hint: pkg ? `install it with: apt-get install ${pkg}` : `install ${program} and retry`,
    exitCode: EXIT.MISSING_TOOL,
  });
}

/** True when `program` is on PATH (or is an existing absolute path). */
export async function hasProgram(program: string): Promise<boolean> {
  const { access, constants } = await import("node:fs/promises");
  const dirs = program.includes("/") ? [""] : (process.env.PATH ?? "").split(":");
  // /sbin and /usr/sbin hold e2fsprogs, losetup, sgdisk; a non-root PATH often lacks them.
  if (!program.includes("/")) dirs.push("/usr/sbin", "/sbin");
  for (const dir of dirs) {
    try {
      await access(dir ? `${dir}/${program}` : program, constants.X_OK);
      return true;
    } catch {}
  }
  return false;
}

/** Fail with one line naming every missing program and its package. */
export async function requirePrograms(programs: string[]): Promise<void> {
  const missing: string[] = [];
  for (const p of new Set(programs)) if (!(await hasProgram(p))) missing.push(p);
  if (missing.length === 0) return;
  if (missing.length === 1) throw missingTool(missing[0] as string);
  const pkgs = [...new Set(missing.map((p) => PACKAGE_OF[p] ?? p))];
  throw new ProvisionError(`required programs are not installed: ${missing.join(", ")}`, {
    hint: `install them with: apt-get install ${pkgs.join(" ")}`,
    exitCode: EXIT.MISSING_TOOL,
  });
}

const SBIN_PATH = `${process.env.PATH ?? "/usr/bin:/bin"}:/usr/sbin:/sbin`;

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/**
 * Run a program to completion and return its output. Throws ProvisionError when it is
 * missing, or when it exits non-zero (unless `allowFailure`).
 */
export async function run(
  program: string,
  args: readonly string[],
  opts: {
    input?: string | Buffer;
    allowFailure?: boolean;
    signal?: AbortSignal;
    env?: Record<string, string>;
    cwd?: string;
  } = {},
): Promise<RunResult> {
  try {
    const r = await killedOnUrgentExit(
      execa(program, args, {
        input: opts.input,
        reject: false,
        cancelSignal: opts.signal,
        env: { PATH: SBIN_PATH, ...opts.env },
        cwd: opts.cwd,
        stripFinalNewline: true,
      }),
    );
    if (
      (r as { code?: string }).code === "ENOENT" ||
      (r.failed && /ENOENT/.test(String(r.message)) && r.exitCode === undefined)
    ) {
      throw missingTool(program);
    }
    if (r.isCanceled)
      throw new ProvisionError(`${program} was cancelled`, { exitCode: EXIT.INTERRUPTED });
    const exitCode = r.exitCode ?? -1;
    if (exitCode !== 0 && !opts.allowFailure) {
      const last =
        lastLine(String(r.stderr)) || lastLine(String(r.stdout)) || `exit code ${exitCode}`;
      throw new ProvisionError(`${program} ${args.slice(0, 3).join(" ")} failed: ${last}`);
    }
    return { stdout: String(r.stdout), stderr: String(r.stderr), exitCode };
  } catch (err) {
    if (err instanceof ProvisionError) throw err;
    if ((err as { code?: string }).code === "ENOENT") throw missingTool(program);
    throw err;
  }
}

/**
 * A child that must not outlive a forced exit (a second Ctrl-C, an internal error): it is
 * SIGKILLed by the urgent cleanups until it has exited.
 */
export function killedOnUrgentExit<
  T extends { kill(signal?: NodeJS.Signals): boolean } & PromiseLike<unknown>,
>(child: T, what?: string): T {
  const remove = onUrgentExit(() => {
    child.kill("SIGKILL");
    return what;
  });
  child.then(remove, remove);
  return child;
}

/**
 * Start a long-running program whose stdin/stdout are streams (decompressors, dd).
 * The caller pipes into/out of it and awaits the returned promise for its exit.
 */
export function spawnStreaming(
  program: string,
  args: readonly string[],
  opts: Pick<Options, "stdin" | "stdout" | "stderr"> & { signal?: AbortSignal } = {},
): ResultPromise {
  const child = killedOnUrgentExit(
    execa(program, args, {
      stdin: opts.stdin ?? "pipe",
      stdout: opts.stdout ?? "pipe",
      stderr: opts.stderr ?? "pipe",
      buffer: { stdout: false, stderr: true },
      cancelSignal: opts.signal,
      env: { PATH: SBIN_PATH },
      reject: false,
    }),
  );
  // execa leaves an unbuffered stdout flowing: bytes that arrive before the caller starts
  // reading would be dropped (seen: the first MiBs of a decompressed image). Hold them.
  child.stdout?.pause();
  return child;
}

export function lastLine(s: string): string {
  const lines = s
    .trim()
    .split("\n")
    .filter((l) => l.trim() !== "");
  return (lines[lines.length - 1] ?? "").trim();
}

/** One argument for a POSIX shell (sh -c, a script, a remote command over SSH). */
export function shellArg(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A command line for a POSIX shell. */
export function shellQuote(argv: readonly string[]): string {
  return argv.map(shellArg).join(" ");
}
