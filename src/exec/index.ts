/**
 * The one place that runs external programs. A missing program becomes a ProvisionError
 * that names the package to install (Debian/Ubuntu and Fedora) and points at `provision
 * doctor`; a failing one becomes an error carrying the last line of its stderr.
 */
import { execa, type Options, type ResultPromise } from "execa";
import { DOCTOR_COMMANDS, type DoctorCommand } from "../doctor/commands.js";
import { EXIT, ProvisionError } from "../errors.js";
import { onUrgentExit } from "../lifecycle.js";

export interface ProgramInfo {
  /** The Debian/Ubuntu package; undefined when Debian 12 has none (see `url`). */
  debian?: string;
  /** The Fedora package. */
  fedora: string;
  /** Where to get it when a distribution has no package. */
  url?: string;
  /** The commands that cannot work without it, and what for. */
  required?: Partial<Record<DoctorCommand, string>>;
  /** The commands that use it for some inputs or flags only, and which. */
  optional?: Partial<Record<DoctorCommand, string>>;
}

/**
 * Every program provision runs: the package that provides it on Debian/Ubuntu and on
 * Fedora, and which commands need it (`provision doctor` reads this; the missing-program
 * error names the packages). qemu-system-* are optional here: doctor makes the one for the
 * host's architecture (or `--arch`) required for qemu-test.
 */
export const PROGRAMS: Record<string, ProgramInfo> = {
  xz: {
    debian: "xz-utils",
    fedora: "xz",
    required: { flash: "FCOS images (.raw.xz)" },
    optional: { "qemu-test": "xz-compressed images" },
  },
  bzip2: { debian: "bzip2", fedora: "bzip2", required: { flash: "Flatcar images (.bin.bz2)" } },
  gzip: { debian: "gzip", fedora: "gzip", optional: { flash: "gzip-compressed images" } },
  zstd: { debian: "zstd", fedora: "zstd", optional: { flash: "zstd-compressed images" } },
  pigz: { debian: "pigz", fedora: "pigz" },
  lbzip2: { debian: "lbzip2", fedora: "lbzip2" },
  pbzip2: { debian: "pbzip2", fedora: "pbzip2" },
  gpgv: {
    debian: "gpgv",
    fedora: "gnupg2",
    required: { flash: "image signatures", serve: "boot file signatures" },
  },
  gpg: { debian: "gnupg", fedora: "gnupg2", optional: { flash: "ASCII-armored --keyring files" } },
  dd: {
    debian: "coreutils",
    fedora: "coreutils",
    required: { flash: "the read-back check", mbr: "image files" },
  },
  lsblk: {
    debian: "util-linux",
    fedora: "util-linux",
    required: { flash: "disk details and safety checks", "pxe-stick": "disk details" },
  },
  blockdev: {
    debian: "util-linux",
    fedora: "util-linux",
    required: { flash: "disks", "pxe-stick": "disks", mbr: "disks" },
  },
  blkid: {
    debian: "util-linux",
    fedora: "util-linux",
    optional: { flash: "filesystem labels without udev" },
  },
  umount: { debian: "mount", fedora: "util-linux", optional: { flash: "--unmount" } },
  mount: {
    debian: "mount",
    fedora: "util-linux",
    optional: { flash: "Ignition on Flatcar's OEM partition (root)" },
  },
  losetup: {
    debian: "mount",
    fedora: "util-linux",
    optional: { flash: "Ignition on Flatcar's OEM partition (root)" },
  },
  partx: { debian: "util-linux", fedora: "util-linux" },
  sgdisk: { debian: "gdisk", fedora: "gdisk", required: { "pxe-stick": "the partition table" } },
  sfdisk: { debian: "fdisk", fedora: "util-linux" },
  debugfs: {
    debian: "e2fsprogs",
    fedora: "e2fsprogs",
    required: {
      flash: "Ignition and kernel arguments on FCOS's boot partition",
      "pxe-stick": "the secrets volume",
    },
  },
  mke2fs: {
    debian: "e2fsprogs",
    fedora: "e2fsprogs",
    required: { "pxe-stick": "the secrets volume" },
  },
  "mkfs.ext4": { debian: "e2fsprogs", fedora: "e2fsprogs" },
  tune2fs: { debian: "e2fsprogs", fedora: "e2fsprogs" },
  dumpe2fs: { debian: "e2fsprogs", fedora: "e2fsprogs" },
  "mkfs.vfat": {
    debian: "dosfstools",
    fedora: "dosfstools",
    required: { "pxe-stick": "the boot partition" },
    optional: { flash: "--esp-fat32" },
  },
  mmd: {
    debian: "mtools",
    fedora: "mtools",
    required: { "pxe-stick": "the boot partition" },
    optional: { flash: "--board rpi2|rpi3|rpi4" },
  },
  mcopy: {
    debian: "mtools",
    fedora: "mtools",
    required: { "pxe-stick": "the boot partition" },
    optional: { flash: "--board rpi2|rpi3|rpi4" },
  },
  mtype: {
    debian: "mtools",
    fedora: "mtools",
    required: { "pxe-stick": "the boot partition" },
    optional: { flash: "--board rpi2|rpi3|rpi4" },
  },
  mdir: {
    debian: "mtools",
    fedora: "mtools",
    optional: { flash: "--board rpi2|rpi3|rpi4", "qemu-test": "telling an image's architecture" },
  },
  minfo: { debian: "mtools", fedora: "mtools", optional: { flash: "--board rpi2|rpi3|rpi4" } },
  mattrib: { debian: "mtools", fedora: "mtools", optional: { flash: "--esp-fat32" } },
  tar: { debian: "tar", fedora: "tar", optional: { flash: "--firmware TARBALL" } },
  unzip: { debian: "unzip", fedora: "unzip", optional: { flash: "--firmware ZIP" } },
  syslinux: {
    debian: "syslinux",
    fedora: "syslinux",
    optional: { "pxe-stick": "legacy BIOS boot (--boot both|bios)" },
  },
  "ignition-validate": {
    debian: "ignition",
    fedora: "ignition-validate",
    optional: {
      flash: "Ignition's own check of configs",
      serve: "Ignition's own check of configs",
      fleet: "Ignition's own check of configs",
    },
  },
  butane: {
    fedora: "butane",
    url: "https://coreos.github.io/butane/getting-started/",
    optional: { flash: "Butane configs (.bu)", serve: "Butane sources", fleet: "Butane sources" },
  },
  "qemu-system-x86_64": {
    debian: "qemu-system-x86",
    fedora: "qemu-system-x86",
    optional: { "qemu-test": "x86_64 guests", flash: "--then-test of x86_64 images" },
  },
  "qemu-system-aarch64": {
    debian: "qemu-system-arm",
    fedora: "qemu-system-aarch64",
    optional: { "qemu-test": "aarch64 guests", flash: "--then-test of aarch64 images" },
  },
  "qemu-img": {
    debian: "qemu-utils",
    fedora: "qemu-img",
    required: { "qemu-test": "overlays" },
    optional: { flash: "--then-test" },
  },
  "ssh-keygen": {
    debian: "openssh-client",
    fedora: "openssh-clients",
    optional: { "qemu-test": "--ssh" },
  },
  ssh: { debian: "openssh-client", fedora: "openssh-clients", optional: { "qemu-test": "--ssh" } },
};

/** The Debian package that provides `program`, if we know it. */
export function packageFor(program: string): string | undefined {
  return PROGRAMS[program]?.debian;
}

/** "apt-get install gdisk (Fedora: dnf install gdisk)" for these programs. */
export function installCommand(programs: readonly string[]): string {
  const debian = new Set<string>();
  const fedora = new Set<string>();
  const urls: string[] = [];
  for (const p of programs) {
    const info = PROGRAMS[p];
    if (!info) {
      debian.add(p);
      fedora.add(p);
      continue;
    }
    if (info.debian) debian.add(info.debian);
    else if (info.url) urls.push(`${p}: ${info.url}`);
    fedora.add(info.fedora);
  }
  const apt = debian.size ? `apt-get install ${[...debian].join(" ")}` : "";
  const parts = [apt, `(Fedora: dnf install ${[...fedora].join(" ")})`];
  if (urls.length) parts.push(`(Debian: ${urls.join(", ")})`);
  return parts.filter(Boolean).join(" ");
}

/**
 * Which command this process runs, for the hint: the first word of the command line that
 * is one of DOCTOR_COMMANDS.
 */
function runningCommand(): DoctorCommand | undefined {
  const word = process.argv.slice(2).find((a) => !a.startsWith("-"));
  return (DOCTOR_COMMANDS as readonly string[]).includes(word ?? "")
    ? (word as DoctorCommand)
    : undefined;
}

function doctorHint(): string {
  const cmd = runningCommand();
  return cmd
    ? `\`provision doctor ${cmd}\` checks everything ${cmd} needs`
    : "`provision doctor` checks everything each command needs";
}

function missingTool(program: string): ProvisionError {
  return new ProvisionError(`${program} is not installed`, {
    hint: `install it with: ${installCommand([program])}; ${doctorHint()}`,
    exitCode: EXIT.MISSING_TOOL,
  });
}

/**
 * Directories searched after PATH: /usr/sbin and /sbin hold e2fsprogs, losetup, sgdisk, and
 * a non-root PATH often lacks them. PROVISION_SBIN_DIRS (colon-separated) replaces them;
 * set it empty to search PATH alone (the tests do, to make a program missing).
 */
function sbinDirs(): string[] {
  const env = process.env.PROVISION_SBIN_DIRS;
  return (env ?? "/usr/sbin:/sbin").split(":").filter((d) => d !== "");
}

/** Where a program is looked for: PATH, then the sbin directories. */
export function programSearchDirs(): string[] {
  const dirs: string[] = [];
  for (const d of [...(process.env.PATH ?? "").split(":"), ...sbinDirs()])
    if (d !== "" && !dirs.includes(d)) dirs.push(d);
  return dirs;
}

/** The executable `program` would run (searching programSearchDirs()), or undefined. */
export async function findProgram(program: string): Promise<string | undefined> {
  const { access, constants } = await import("node:fs/promises");
  const candidates = program.includes("/")
    ? [program]
    : programSearchDirs().map((d) => `${d}/${program}`);
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {}
  }
  return undefined;
}

/** True when `program` is on PATH (or in the sbin directories, or an existing absolute path). */
export async function hasProgram(program: string): Promise<boolean> {
  return (await findProgram(program)) !== undefined;
}

/** Fail with one line naming every missing program and its package. */
export async function requirePrograms(programs: string[]): Promise<void> {
  const missing: string[] = [];
  for (const p of new Set(programs)) if (!(await hasProgram(p))) missing.push(p);
  if (missing.length === 0) return;
  if (missing.length === 1) throw missingTool(missing[0] as string);
  throw new ProvisionError(`required programs are not installed: ${missing.join(", ")}`, {
    hint: `install them with: ${installCommand(missing)}; ${doctorHint()}`,
    exitCode: EXIT.MISSING_TOOL,
  });
}

const SBIN_PATH = [process.env.PATH ?? "/usr/bin:/bin", ...sbinDirs()].join(":");

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
  opts: Pick<Options, "stdin" | "stderr"> & {
    /** As execa's, or a file descriptor the child writes to (e.g. a FIFO's write end). */
    stdout?: Options["stdout"] | number;
    signal?: AbortSignal;
  } = {},
): ResultPromise {
  const child = killedOnUrgentExit(
    execa(program, args, {
      stdin: opts.stdin ?? "pipe",
      stdout: (opts.stdout ?? "pipe") as Options["stdout"],
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
