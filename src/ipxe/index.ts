/**
 * `provision pxe-stick`: a UEFI (and legacy BIOS) stick that netboots Flatcar or FCOS with
 * an Ignition URL on every boot, plus a read-only `secrets` volume; and
 * `--update-secrets`, which rewrites only that volume of an existing stick.
 *
 * Order: check every input (URL, names, keys, secrets; nothing is echoed back), the target
 * (the same safety rules as flash), the boot programs and the OS's PXE files; stage the
 * secrets in a 0700 temp dir that is always removed; confirm; write; read back. A failure
 * after writing started removes an image file we created, or clears the partition table of
 * a disk, and says so.
 */
import { existsSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mtools } from "../board/esp.js";
import {
  checkTargetSafe,
  claimTargets,
  confirmWrite,
  formatSize,
  inspectTarget,
  type Target,
  unmountPartitions,
  wipeOnUrgentExit,
  zeroSync,
} from "../disk/index.js";
import {
  describeError,
  InterruptedError,
  ProvisionError,
  RefusedError,
  UsageError,
} from "../errors.js";
import { requirePrograms, run, shellQuote } from "../exec/index.js";
import { debugfs, listDir, readExtFile } from "../ext4/index.js";
import { onUrgentExit } from "../lifecycle.js";
import { type Reporter, silentReporter } from "../progress/index.js";
import { type Arch, type OsName, type PxeBoot, resolvePxe } from "../source/index.js";
import { type BiosBoot, findBiosBoot, findIpxeEfi } from "./binaries.js";
import { fleetBootUrl, fleetScript, ipxeScript } from "./script.js";
import { defaultSshKeys, parseSecretArg, type StagedSecrets, stageSecrets } from "./secrets.js";
import {
  DEFAULT_LAYOUT,
  type Layout,
  type Located,
  locate,
  MiB,
  partition,
  secretsLocation,
  stickBytes,
  writeEsp,
  writeSecrets,
} from "./stick.js";

export { secretsFragment } from "./fragment.js";

export type BootMode = "uefi" | "bios" | "both";

export interface PxeStickOptions {
  target: string;
  /** provision serve's URL with its token: the stick chains to its /boot.ipxe. */
  fleetUrl?: string;
  os: OsName;
  arch: Arch;
  stream?: string;
  channel?: string;
  release?: string;
  streamBaseUrl?: string;
  flatcarBaseUrl?: string;
  baseUrl?: string;
  ignitionUrl?: string;
  hostname?: string;
  kernelArgs?: string[];
  attempts?: number;
  retryDelay?: number;
  /** Default "both" (UEFI only, with a warning, when the BIOS pieces are missing). */
  boot?: BootMode;
  ipxeEfi?: string;
  ipxeLkrn?: string;
  /** Undefined: ~/.ssh/id_*.pub (unless --secrets-dir has an authorized_keys). */
  sshKeys?: string[];
  /** --secret NAME=VALUE, as given. */
  secrets?: string[];
  secretsEnv?: string[];
  secretsDir?: string;
  secretsWritable?: boolean;
  espMiB?: number;
  secretsMiB?: number;
  /** Only make the script (--print-script): no target, no secrets, no binaries. */
  scriptOnly?: boolean;
  /** Rewrite only the secrets volume of an existing stick. */
  updateSecrets?: boolean;
  /** The command line for reproduce.sh (no secret values: the caller leaves them out). */
  reproduceArgs: string[];
  version: string;
  dryRun?: boolean;
  yes?: boolean;
  isTTY?: boolean;
  confirm?: (question: string) => Promise<boolean>;
  unmount?: boolean;
  offline?: boolean;
  env?: NodeJS.ProcessEnv;
  home?: string;
  reporter?: Reporter;
  signal?: AbortSignal;
}

export interface PxeStickReport {
  target: string;
  kind: "file" | "block";
  updateSecretsOnly: boolean;
  dryRun: boolean;
  os?: string;
  boot: ("uefi" | "bios")[];
  script?: string;
  kernel?: string;
  ipxeEfi?: string;
  ipxeLkrn?: string;
  layout?: { esp?: { offset: number; size: number }; secrets: { offset: number; size: number } };
  /** Names only. */
  secrets: {
    files: string[];
    directories: string[];
    envFiles: { file: string; variables: string[] }[];
    sshKeys: number;
    readOnly: boolean;
  };
  warnings: string[];
  /** When something failed after writing started: what was done about it. */
  incomplete?: string;
  seconds: number;
}

const HOSTNAME_RE =
  /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

function checkInputs(o: PxeStickOptions): void {
  if (o.fleetUrl !== undefined) {
    for (const [flag, v] of [
      ["--ignition-url", o.ignitionUrl],
      ["--hostname", o.hostname],
      ["--base-url", o.baseUrl],
      ["--kernel-arg", o.kernelArgs?.length ? "x" : undefined],
    ] as const)
      if (v !== undefined)
        throw new UsageError(
          `--fleet and ${flag} cannot go together: provision serve decides per machine`,
        );
    fleetBootUrl(o.fleetUrl);
  } else if (!o.updateSecrets) {
    if (!o.ignitionUrl)
      throw new UsageError(
        "--ignition-url is required: the URL every boot fetches its Ignition config from",
        "host the config (it must not contain secrets: they go on the stick) and pass its http(s) URL",
      );
    let u: URL;
    try {
      u = new URL(o.ignitionUrl);
    } catch {
      throw new UsageError(`--ignition-url ${o.ignitionUrl}: not a URL`);
    }
    if (!/^(https?|tftp):$/.test(u.protocol))
      throw new UsageError(`--ignition-url ${o.ignitionUrl}: use http, https or tftp`);
    if (/\s/.test(o.ignitionUrl)) throw new UsageError("--ignition-url: no spaces");
  }
  if (o.hostname !== undefined && !HOSTNAME_RE.test(o.hostname))
    throw new UsageError(
      `--hostname ${o.hostname}: not a valid host name (letters, digits, -, dots)`,
    );
  for (const a of o.kernelArgs ?? [])
    if (!a || /\s/.test(a)) throw new UsageError(`--kernel-arg "${a}": one argument, no spaces`);
  if (o.baseUrl !== undefined && !/^(https?|tftp):\/\//.test(o.baseUrl))
    throw new UsageError(`--base-url ${o.baseUrl}: use an http(s) or tftp URL`);
}

function layoutOf(o: PxeStickOptions): Layout {
  const esp = (o.espMiB ?? DEFAULT_LAYOUT.espBytes / MiB) * MiB;
  const secrets = (o.secretsMiB ?? DEFAULT_LAYOUT.secretsBytes / MiB) * MiB;
  // FAT32 needs 65525 clusters: with 512-byte clusters that is a 33 MiB ESP at least.
  if (esp < 34 * MiB) throw new UsageError("--esp-size must be at least 34 (MiB) for FAT32");
  if (secrets < 2 * MiB) throw new UsageError("--secrets-size must be at least 2 (MiB)");
  return { espBytes: esp, secretsBytes: secrets };
}

export async function pxeStick(o: PxeStickOptions): Promise<PxeStickReport> {
  const started = Date.now();
  const reporter = o.reporter ?? silentReporter;
  const signal = o.signal;
  checkInputs(o);
  const report: PxeStickReport = {
    target: o.target,
    kind: "file",
    updateSecretsOnly: Boolean(o.updateSecrets),
    dryRun: Boolean(o.dryRun),
    boot: [],
    secrets: { files: [], directories: [], envFiles: [], sshKeys: 0, readOnly: !o.secretsWritable },
    warnings: [],
    seconds: 0,
  };
  if (o.scriptOnly) {
    Object.assign(report, await stickScript(o));
    return done(report, started);
  }
  const secretArgs = (o.secrets ?? []).map(parseSecretArg);
  await requirePrograms(
    o.updateSecrets
      ? ["mke2fs", "debugfs"]
      : ["sgdisk", "mkfs.vfat", "mmd", "mcopy", "mtype", "mke2fs", "debugfs"],
  );

  // The staging dir: 0700 (mkdtemp), removed whatever happens; on a forced exit (a second
  // Ctrl-C, an internal error) too, by the urgent cleanup, since it holds the secret values.
  const tmp = await mkdtemp(join(tmpdir(), "provision-pxe-"));
  const forgetTmp = onUrgentExit(() => {
    if (!existsSync(tmp)) return undefined;
    try {
      rmSync(tmp, { recursive: true, force: true });
      return `removed the staged secrets in ${tmp}`;
    } catch (err) {
      return `could not remove ${tmp} (${describeError(err)}): it holds secret values; delete it`;
    }
  });
  const staging = join(tmp, "secrets");
  let staged: StagedSecrets;
  let releaseClaim: (() => Promise<void>) | undefined;
  try {
    await mkdir(staging, { mode: 0o700 });
    // Default keys (~/.ssh/id_*.pub) only when none were given and --secrets-dir brings none.
    const sshKeys =
      o.sshKeys ??
      (o.secretsDir && existsSync(join(o.secretsDir, "authorized_keys"))
        ? []
        : await defaultSshKeys(o.home));
    staged = await stageSecrets(
      {
        sshKeys,
        secrets: secretArgs,
        envPrefixes: o.secretsEnv ?? [],
        secretsDir: o.secretsDir,
        env: o.env ?? process.env,
      },
      staging,
    );
    report.secrets = {
      files: staged.files,
      directories: staged.directories,
      envFiles: staged.envFiles,
      sshKeys: staged.sshKeyCount,
      readOnly: !o.secretsWritable,
    };
    report.warnings.push(...staged.warnings);

    if (signal?.aborted) throw new InterruptedError();
    const target = await inspectTarget(o.target);
    report.kind = target.kind;
    // No other provision process may write this stick while we do (src/disk/claim).
    releaseClaim = await claimTargets([o.target]);
    await checkTargetSafe(target, { wholeDiskOnly: true }).catch((err: unknown) => {
      if (o.unmount && /mounted partitions/.test(describeError(err))) return;
      throw err;
    });
    if (o.updateSecrets) return await updateSecrets(o, target, staged, staging, report, started);

    const layout = layoutOf(o);
    const need = stickBytes(layout);
    if (target.kind === "block" && target.size < need)
      throw new RefusedError(
        `${target.path} is ${formatSize(target.size)}; the stick needs ${formatSize(need)}`,
      );

    // Boot programs and the OS's PXE files (or the fleet server that decides per machine).
    const chosen = await stickScript(o);
    const mode = o.boot ?? "both";
    const efi =
      mode === "bios"
        ? undefined
        : await findIpxeEfi(o.arch, o.ipxeEfi, { offline: o.offline, reporter, signal });
    let bios: BiosBoot | undefined;
    if (mode !== "uefi") {
      if (o.arch !== "x86_64") {
        if (mode === "bios") throw new UsageError("--boot bios is for x86_64 sticks only");
      } else {
        const b = await findBiosBoot(o.ipxeLkrn, { offline: o.offline, reporter, signal });
        if ("missing" in b) {
          if (mode === "bios")
            throw new ProvisionError(`--boot bios: no ${b.missing}`, { hint: b.hint });
          report.warnings.push(`UEFI only: no ${b.missing} for legacy BIOS boot (${b.hint})`);
        } else bios = b;
      }
    }
    report.boot = [...(efi ? (["uefi"] as const) : []), ...(bios ? (["bios"] as const) : [])];
    report.ipxeEfi = efi;
    report.ipxeLkrn = bios?.lkrn;
    Object.assign(report, chosen);
    const script = chosen.script;
    if (o.dryRun) return done(report, started);

    await confirmAndUnmount(o, target, reporter);
    const scriptFile = join(tmp, "autoexec.ipxe");
    await writeFile(scriptFile, script);
    await writeFile(join(staging, "reproduce.sh"), reproduceScript(o, staged, undefined), {
      mode: 0o600,
    });
    staged.files.push("reproduce.sh");

    // Writing starts: from here a failure must leave nothing that looks like a stick, and so
    // must a forced exit.
    const existed = target.kind === "file" && target.exists;
    const forgetTarget = wipeOnUrgentExit(target, existed, "run pxe-stick again");
    try {
      if (signal?.aborted) throw new InterruptedError();
      if (target.kind === "file") {
        const fh = await open(target.path, "w");
        await fh.truncate(need);
        await fh.close();
      }
      reporter.info("partitioning");
      // An image file was just truncated to nothing and back (open "w"): all zeros.
      const parts = await partition(target.path, layout, { blank: target.kind === "file" });
      report.layout = {
        esp: { offset: parts.esp.offset, size: parts.esp.size },
        secrets: { offset: parts.secrets.offset, size: parts.secrets.size },
      };
      reporter.info("writing the boot partition");
      await writeEsp(target.path, parts.esp, {
        arch: o.arch,
        efiBinary: efi,
        script: scriptFile,
        bios,
        tmp,
        isBlockDevice: target.kind === "block",
        signal,
      });
      if (signal?.aborted) throw new InterruptedError();
      reporter.info("writing the secrets volume");
      await writeSecrets(
        target.path,
        parts.secrets,
        { dir: staging, ...staged },
        { writable: Boolean(o.secretsWritable), signal },
      );
      if (signal?.aborted) throw new InterruptedError();
      reporter.info("reading back");
      await verifyStick(target.path, script, staged, !o.secretsWritable);
    } catch (err) {
      report.incomplete = await undoPartialStick(target, existed);
      throw annotate(signal?.aborted ? new InterruptedError() : err, report.incomplete);
    } finally {
      forgetTarget();
    }
    return done(report, started);
  } finally {
    await rm(tmp, { recursive: true, force: true });
    forgetTmp();
    await releaseClaim?.();
  }
}

async function resolveBoot(o: PxeStickOptions): Promise<PxeBoot> {
  return await resolvePxe(
    {
      os: o.os,
      arch: o.arch,
      stream: o.stream,
      channel: o.channel,
      release: o.release,
      streamBaseUrl: o.streamBaseUrl,
      flatcarBaseUrl: o.flatcarBaseUrl,
      baseUrl: o.baseUrl,
    },
    { offline: o.offline, reporter: o.reporter, signal: o.signal },
  );
}

/**
 * The stick's script: one OS with its Ignition URL, or (--fleet) a chain to provision serve,
 * which answers each machine by its MAC.
 */
async function stickScript(
  o: PxeStickOptions,
): Promise<{ os: string; kernel: string; script: string }> {
  if (o.fleetUrl) {
    const f = fleetBootUrl(o.fleetUrl);
    return {
      os: `the fleet of ${f.shown}`,
      kernel: `${f.shown} (per machine)`,
      script: fleetScript({
        bootUrl: f.bootUrl,
        shown: f.shown,
        attempts: o.attempts,
        retryDelay: o.retryDelay,
        generator: `provision ${o.version} pxe-stick --fleet`,
      }),
    };
  }
  const boot = await resolveBoot(o);
  return { os: boot.description, kernel: boot.kernel, script: makeScript(o, boot) };
}

function makeScript(o: PxeStickOptions, boot: PxeBoot): string {
  return ipxeScript({
    boot,
    ignitionUrl: o.ignitionUrl as string,
    hostname: o.hostname,
    kernelArgs: o.kernelArgs,
    attempts: o.attempts,
    retryDelay: o.retryDelay,
    generator: `provision ${o.version} pxe-stick`,
  });
}

function done(report: PxeStickReport, started: number): PxeStickReport {
  report.seconds = (Date.now() - started) / 1000;
  return report;
}

/** A disk: ask (or --yes), then with --unmount unmount its partitions and check again. */
async function confirmAndUnmount(
  o: PxeStickOptions,
  target: Target,
  reporter: Reporter,
): Promise<void> {
  if (target.kind !== "block") return;
  await confirmWrite(target, { yes: o.yes, isTTY: Boolean(o.isTTY), prompt: o.confirm });
  if (!o.unmount) return;
  const gone = await unmountPartitions(target);
  if (gone.length) reporter.info(`unmounted ${gone.join(", ")} (on ${target.path})`);
  await checkTargetSafe(target, { wholeDiskOnly: true });
}

async function updateSecrets(
  o: PxeStickOptions,
  target: Target,
  staged: StagedSecrets,
  staging: string,
  report: PxeStickReport,
  started: number,
): Promise<PxeStickReport> {
  const parts = await locate(target.path);
  report.layout = { secrets: { offset: parts.secrets.offset, size: parts.secrets.size } };
  // The build command from the stick's own reproduce.sh is kept; only the secrets change.
  const old = await readExtFile(secretsLocation(target.path, parts.secrets), "/reproduce.sh").then(
    (b) => b.toString("utf8"),
    () => "",
  );
  if (o.dryRun) return done(report, started);
  await confirmAndUnmount(o, target, o.reporter ?? silentReporter);
  await writeFile(join(staging, "reproduce.sh"), reproduceScript(o, staged, old), { mode: 0o600 });
  staged.files.push("reproduce.sh");
  // A forced exit while the volume is half-written: make it no filesystem at all.
  const forgetVolume = onUrgentExit(() => {
    try {
      zeroSync(target.path, parts.secrets.offset, Math.min(MiB, parts.secrets.size));
      return `zeroed the first MiB of the secrets volume of ${target.path}: run --update-secrets again`;
    } catch (err) {
      return `could not wipe the secrets volume of ${target.path} (${describeError(err)}): it is half-written; run --update-secrets again`;
    }
  });
  try {
    await writeSecrets(
      target.path,
      parts.secrets,
      { dir: staging, ...staged },
      {
        writable: Boolean(o.secretsWritable),
        signal: o.signal,
        tooBig: () =>
          "leave some out, or build a new stick with a larger --secrets-size (the volume keeps its size here)",
      },
    );
    await verifySecrets(target.path, parts.secrets, staged, !o.secretsWritable);
  } catch (err) {
    report.incomplete = `the secrets volume of ${target.path} is incomplete; run --update-secrets again`;
    throw annotate(o.signal?.aborted ? new InterruptedError() : err, report.incomplete);
  } finally {
    forgetVolume();
  }
  return done(report, started);
}

function annotate(err: unknown, incomplete: string): unknown {
  if (err instanceof InterruptedError) return new InterruptedError(`interrupted: ${incomplete}`);
  if (err instanceof ProvisionError)
    return new ProvisionError(`${err.message} (${incomplete})`, {
      hint: err.hint,
      exitCode: err.exitCode,
    });
  return new ProvisionError(`${describeError(err)} (${incomplete})`);
}

/** A file we created goes; a disk or existing file loses its partition table. */
async function undoPartialStick(target: Target, existed: boolean): Promise<string> {
  try {
    if (target.kind === "file" && !existed) {
      await rm(target.path, { force: true });
      return `removed the partial ${target.path}`;
    }
    await run("sgdisk", ["--zap-all", target.path], { allowFailure: true });
    return `${target.path} is incomplete and its partition table was cleared: it will not boot; run pxe-stick again`;
  } catch {
    return `${target.path} is incomplete: it may not boot; run pxe-stick again`;
  }
}

/** Read back what was written: the partition table, the script on the ESP, the secrets volume. */
async function verifyStick(
  target: string,
  script: string,
  staged: StagedSecrets,
  readOnly: boolean,
): Promise<void> {
  const parts = await locate(target);
  const r = await mtools(
    "mtype",
    ["-i", `${target}@@${parts.esp.offset}`, "::/autoexec.ipxe"],
    `read-back: cannot read /autoexec.ipxe on the ESP of ${target}`,
  );
  if (r.stdout.trim() !== script.trim())
    throw new ProvisionError(
      `read-back: /autoexec.ipxe on the ESP of ${target} is not the script written`,
    );
  await verifySecrets(target, parts.secrets, staged, readOnly);
}

async function verifySecrets(
  target: string,
  part: Located,
  staged: StagedSecrets,
  readOnly: boolean,
): Promise<void> {
  const loc = secretsLocation(target, part);
  const features = await debugfs(loc, ["features"], {
    write: false,
    what: `read-back of the secrets volume of ${target}`,
  });
  const hasRo = /features:.*\bread-only\b/.test(features);
  if (readOnly !== hasRo)
    throw new ProvisionError(
      `read-back: the secrets filesystem of ${target} is ${hasRo ? "" : "not "}marked read-only`,
    );
  const entries = new Map((await listDir(loc, "/"))?.map((e) => [e.name, e]));
  for (const f of staged.files.filter((x) => !x.includes("/"))) {
    const e = entries.get(f);
    if (!e)
      throw new ProvisionError(`read-back: ${f} is missing from the secrets volume of ${target}`);
    if (e.mode !== 0o100600 || e.uid !== 0 || e.gid !== 0)
      throw new ProvisionError(
        `read-back: ${f} on the secrets volume of ${target} is mode ${e.mode.toString(8)} uid ${e.uid} gid ${e.gid}, not 100600 root`,
      );
  }
}

const BUILD_BEGIN = "# --- build command ---";
const BUILD_END = "# --- end of build command ---";

/**
 * reproduce.sh: how the stick was built (names of secrets, never values) and a command
 * that builds another one like it, taking the secrets from this very volume.
 */
export function reproduceScript(
  o: PxeStickOptions,
  s: StagedSecrets,
  previous: string | undefined,
): string {
  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  let build: string;
  const kept = previous
    ? previous.slice(previous.indexOf(BUILD_BEGIN), previous.indexOf(BUILD_END) + BUILD_END.length)
    : "";
  if (o.updateSecrets && kept.startsWith(BUILD_BEGIN)) build = kept;
  else
    build = [
      BUILD_BEGIN,
      `exec provision pxe-stick "$target" ${shellQuote(o.reproduceArgs)} --secrets-dir "$here"`,
      BUILD_END,
    ].join("\n");
  const names = [
    ...s.files
      .filter((f) => f !== "reproduce.sh" && !s.envFiles.some((e) => e.file === f))
      .map((f) => `#   ${f}`),
    ...s.envFiles.map((e) => `#   ${e.file}: ${e.variables.join(", ")}`),
  ];
  return [
    "#!/bin/sh",
    `# ${o.updateSecrets ? `Secrets updated by provision ${o.version} pxe-stick --update-secrets on ${now}.` : `Built by provision ${o.version} pxe-stick on ${now}.`}`,
    `# Secrets on this volume (names only${s.sshKeyCount ? `; authorized_keys holds ${s.sshKeyCount} key${s.sshKeyCount > 1 ? "s" : ""}` : ""}):`,
    ...(names.length ? names : ["#   (none)"]),
    "#",
    "# To build another stick like this one, with these secrets (this volume mounted, e.g. at /secrets):",
    "#   sh /secrets/reproduce.sh /dev/sdX",
    "set -eu",
    "target=${1:?usage: reproduce.sh TARGET (a disk like /dev/sdX, or an image file)}",
    'here=$(cd "$(dirname "$0")" && pwd)',
    build,
    "",
  ].join("\n");
}
