/**
 * `bootTest`: boot an image in QEMU with an Ignition config through fw_cfg and decide from
 * the serial console whether it came up. Owns its temp dir (0700: overlay, VARS copy,
 * config, SSH key) and the QEMU process: both are gone when it returns or throws, also on
 * Ctrl-C (the AbortSignal), unless `keep`.
 *
 * Everything that can fail before the guest runs (input, config, firmware, programs) is
 * checked first, concurrently, and ends as verdict "error" (exit 3) without starting QEMU.
 */
import { createWriteStream } from "node:fs";
import { access, chmod, constants, copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import type { Readable } from "node:stream";
import { describeError, InterruptedError, ProvisionError, UsageError } from "../errors.js";
import { killedOnUrgentExit, requirePrograms, spawnStreaming } from "../exec/index.js";
import {
  type IgnitionConfig,
  loadIgnitionConfig,
  mergeFragments,
  parseIgnitionText,
} from "../ignition/index.js";
import { type Reporter, silentReporter } from "../progress/index.js";
import type { Arch, OsName } from "../source/index.js";
import { type AccelChoice, chooseAccel, hostArch } from "./accel.js";
import { type Accel, FW_CFG_NAME, QEMU_PROGRAM, type QemuSpec, qemuArgs } from "./command.js";
import {
  ConsoleWatcher,
  compilePatterns,
  DEFAULT_EXPECT,
  failureRules,
  type Match,
  type Rule,
} from "./console.js";
import { QEMU_EXIT } from "./exit.js";
import { describeFirmware, type Firmware, findFirmware } from "./firmware.js";
import {
  type BackingImage,
  type BootInput,
  createOverlay,
  type ImageFacts,
  inspectImage,
  prepareBacking,
} from "./image.js";
import { junitXml } from "./junit.js";
import type { RemoteOptions, RemoteReport } from "./remote.js";
import { freeLocalPort, generateKey, type SshKey, sshKeyFragment, waitAndRun } from "./ssh.js";

export { QEMU_EXIT };

export const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;

/** A QEMU this process started: SIGKILLed on a forced exit, so no guest outlives us. */
function track<T extends { kill(signal?: NodeJS.Signals): boolean } & PromiseLike<unknown>>(
  child: T,
): T {
  return killedOnUrgentExit(child, "QEMU killed");
}

export interface BootOptions {
  input: BootInput;
  /** Default: the image's (ESP loader, GPT), else the image source's, else the host's. */
  arch?: Arch;
  /** Which fw_cfg name carries the config. Default: detected from the partitions, else fcos. */
  os?: OsName;
  /** x86_64: SeaBIOS instead of UEFI. */
  bios?: boolean;
  accel?: AccelChoice;
  /** An Ignition config already loaded and validated (flash --then-test passes its own). */
  ignition?: IgnitionConfig;
  /** Or a file (.ign or Butane), loaded and validated exactly as flash does. */
  ignitionFile?: string;
  memoryMiB?: number;
  cpus?: number;
  /** Attach the disk as a USB stick instead of virtio-blk (a pxe-stick, a live USB). */
  usb?: boolean;
  net?: "none" | "user";
  /** The guest's MAC address on the user network (fleet: the host's first MAC). */
  mac?: string;
  /** Run this command over SSH as `core` once sshd answers (implies net "user"). */
  ssh?: string;
  /** Regexes that must all appear on the console. Default: a login prompt (none with ssh). */
  expect?: string[];
  /** Regexes that fail the boot at once, in addition to the built-in ones. */
  fail?: string[];
  timeoutMs?: number;
  consoleLog?: string;
  junit?: string;
  /** JUnit testcase name (default "boot <image>"). */
  name?: string;
  /** Keep the temp dir (overlay, VARS, config) and report where it is. */
  keep?: boolean;
  /** Console on the terminal, no verdict. */
  interactive?: boolean;
  /** Prepare everything and return the QEMU command without running it (keeps the files). */
  printCommand?: boolean;
  /** Run on a libvirt host over SSH instead of QEMU here (see ./remote.ts). */
  remote?: RemoteOptions;
  reporter?: Reporter;
  signal?: AbortSignal;
}

export type Verdict = "pass" | "fail" | "timeout" | "error" | "interactive" | "prepared";

export interface BootResult {
  verdict: Verdict;
  exitCode: number;
  /** One line: why it passed or failed. */
  reason: string;
  hint?: string;
  /** The pattern and console line that decided a failure (or the last expect seen). */
  matchedPattern?: string;
  matchedLine?: string;
  expects: { pattern: string; seen: boolean; line?: string; seconds?: number }[];
  image: string;
  arch?: Arch;
  archFrom?: string;
  os?: OsName;
  accel?: Accel;
  accelWhy?: string;
  firmware?: string;
  memoryMiB: number;
  cpus: number;
  sshPort?: number;
  ssh?: { command: string; exitCode?: number; output?: string };
  startedAt: string;
  /** Whole run, preparation and cleanup included. */
  seconds: number;
  /** From starting QEMU to the verdict. */
  bootSeconds?: number;
  /** The QEMU command line (program first). */
  command?: string[];
  consoleLog?: string;
  junit?: string;
  keptDir?: string;
  qemu?: { exitCode?: number; signal?: string; stderr?: string };
  /** A remote run: where, which domain, what was uploaded. */
  remote?: RemoteReport;
  consoleTail: string[];
}

export function describeInput(input: BootInput): string {
  if (input.kind === "path") return input.path;
  const r = input.request;
  if (r.imageUrl) return r.imageUrl;
  return r.os === "flatcar"
    ? `Flatcar ${r.channel ?? "stable"} ${r.release ?? "current"}`
    : `Fedora CoreOS ${r.stream ?? "stable"}`;
}

export async function bootTest(opts: BootOptions): Promise<BootResult> {
  const started = Date.now();
  const reporter = opts.reporter ?? silentReporter;
  const result: BootResult = {
    verdict: "error",
    exitCode: QEMU_EXIT.NOT_STARTED,
    reason: "",
    expects: [],
    image: describeInput(opts.input),
    memoryMiB: opts.memoryMiB ?? 2048,
    cpus: opts.cpus ?? 2,
    startedAt: new Date(started).toISOString(),
    seconds: 0,
    consoleTail: [],
  };
  // mkdtemp creates the directory 0700: the SSH key and the config stay private.
  const tmp = await mkdtemp(join(tmpdir(), "provision-qemu-"));
  const run: RunState = { tmp, reporter, cleanups: [] };
  let interrupted = false;
  try {
    // Loaded only for --connect: it brings in ssh2.
    if (opts.remote) await (await import("./remote.js")).bootRemote(opts, opts.remote, result, run);
    else await prepareAndBoot(opts, result, run);
  } catch (err) {
    if (opts.signal?.aborted || err instanceof InterruptedError) interrupted = true;
    else {
      result.verdict = "error";
      result.exitCode = QEMU_EXIT.NOT_STARTED;
      result.reason = describeError(err);
      if (err instanceof ProvisionError && err.hint) result.hint = err.hint;
    }
  } finally {
    await run.stopQemu?.();
    await run.closeLog?.();
    // Remote cleanup (domain, uploaded files, the SSH connection), newest first.
    for (const cleanup of run.cleanups.reverse()) await cleanup().catch(() => {});
    if (opts.keep || (opts.printCommand && result.verdict === "prepared")) {
      result.keptDir = tmp;
    } else {
      await rm(tmp, { recursive: true, force: true }).catch(() => {});
    }
  }
  result.consoleTail = run.watcher?.tail() ?? [];
  result.seconds = (Date.now() - started) / 1000;
  if (interrupted) {
    // CI still gets a report: the run was stopped before a verdict.
    result.verdict = "error";
    result.exitCode = QEMU_EXIT.INTERRUPTED;
    result.reason = `interrupted after ${result.seconds.toFixed(0)}s, before a verdict`;
  }
  if (opts.junit && !result.reason.startsWith("--junit")) {
    try {
      await writeFile(opts.junit, junitXml(result, run.watcher?.text() ?? "", { name: opts.name }));
      result.junit = opts.junit;
    } catch (err) {
      reporter.warn(`--junit ${opts.junit}: cannot write it: ${describeError(err)}`);
    }
  }
  if (interrupted) throw new InterruptedError();
  return result;
}

export interface RunState {
  tmp: string;
  reporter: Reporter;
  /** Run after the guest stopped, last added first; errors are ignored. */
  cleanups: (() => Promise<void>)[];
  watcher?: ConsoleWatcher;
  stopQemu?: () => Promise<void>;
  closeLog?: () => Promise<void>;
}

export interface Prepared {
  spec: QemuSpec;
  program: string;
  rules: { expects: Rule[]; fails: Rule[] };
  key?: SshKey;
}

async function prepareAndBoot(opts: BootOptions, result: BootResult, run: RunState) {
  const prepared = await prepare(opts, result, run);
  const args = qemuArgs(prepared.spec);
  result.command = [prepared.program, ...args];
  if (opts.printCommand) {
    result.verdict = "prepared";
    result.exitCode = QEMU_EXIT.PASS;
    result.reason = "prepared; QEMU was not started";
    return;
  }
  run.reporter.info(
    `booting ${result.image} (${result.arch}, ${result.accel === "kvm" ? "KVM" : "TCG"}, ${result.cpus} CPUs, ${result.memoryMiB} MiB${result.sshPort ? `, ssh on 127.0.0.1:${result.sshPort}` : ""})`,
  );
  if ((opts.accel ?? "auto") === "auto" && result.accel === "tcg" && result.arch === hostArch())
    run.reporter.info(result.accelWhy ?? "TCG");
  if (opts.interactive) return await runInteractive(prepared.program, args, opts, result, run);
  await runWatched(prepared, args, opts, result, run);
}

/** Everything before QEMU starts, the independent parts at the same time. */
async function prepare(opts: BootOptions, result: BootResult, run: RunState): Promise<Prepared> {
  const { tmp, reporter } = run;
  const rules = verdictRules(opts, result);
  const net = opts.ssh !== undefined ? "user" : (opts.net ?? "none");
  await checkOutputs(opts);

  // One failure stops the other branch (a slow decompression when the config is invalid).
  const inner = new AbortController();
  const onAbort = () => inner.abort(opts.signal?.reason);
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  const branch = <T>(p: Promise<T>) =>
    p.catch((err: unknown) => {
      inner.abort(err);
      throw err;
    });
  try {
    const [config, disk, sshPort] = await settleAll([
      branch(prepareConfig(opts, tmp, inner.signal)),
      branch(prepareDisk(opts, result, run, inner.signal)),
      branch(net === "user" ? freeLocalPort() : Promise.resolve(undefined)),
    ]);
    const os = opts.os ?? disk.backing.os ?? disk.facts.os ?? "fcos";
    result.os = os;
    result.sshPort = sshPort;
    const spec: QemuSpec = {
      arch: disk.arch,
      accel: disk.accel,
      firmware: disk.firmware,
      varsCopy: disk.varsCopy,
      memoryMiB: result.memoryMiB,
      cpus: result.cpus,
      disk: disk.overlay,
      usb: opts.usb,
      ignition: config.file ? { file: config.file, fwCfgName: FW_CFG_NAME[os] } : undefined,
      net: net === "user" ? { sshPort, mac: opts.mac } : undefined,
      interactive: opts.interactive,
    };
    if (config.config && opts.ignitionFile !== undefined)
      reporter.info(
        `Ignition config ${config.config.origin} is valid (spec ${config.config.version})`,
      );
    if (opts.ssh !== undefined) result.ssh = { command: opts.ssh };
    return { spec, program: QEMU_PROGRAM[disk.arch], rules, key: config.key };
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
  }
}

/** The --expect and --fail rules (compiled: a bad regex is an error before anything runs). */
export function verdictRules(opts: BootOptions, result: BootResult): Prepared["rules"] {
  const expects = compilePatterns(
    opts.expect?.length ? opts.expect : opts.ssh !== undefined ? [] : [DEFAULT_EXPECT],
    "--expect",
  );
  result.expects = expects.map((r) => ({ pattern: r.pattern, seen: false }));
  return { expects, fails: failureRules(opts.fail ?? []) };
}

/** --console-log and --junit must be writable before the guest runs, not after. */
export async function checkOutputs(opts: BootOptions): Promise<void> {
  for (const [flag, file] of [
    ["--console-log", opts.consoleLog],
    ["--junit", opts.junit],
  ] as const) {
    if (file === undefined) continue;
    try {
      await access(dirname(resolve(file)), constants.W_OK);
    } catch (err) {
      throw new UsageError(`${flag} ${file}: cannot write there: ${describeError(err)}`);
    }
  }
}

/** Like Promise.all, but settles only when every promise has (so nothing runs on after). */
export async function settleAll<T extends readonly unknown[]>(
  ps: { [K in keyof T]: Promise<T[K]> },
): Promise<T> {
  const rs = await Promise.allSettled(ps);
  const bad = rs.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (bad) {
    // The branch that failed first aborted the others; report the real cause, not the abort.
    const real = rs.find(
      (r): r is PromiseRejectedResult =>
        r.status === "rejected" && !/abort|cancel/i.test(describeError(r.reason)),
    );
    throw (real ?? bad).reason;
  }
  return rs.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

export async function prepareConfig(
  opts: BootOptions,
  tmp: string,
  signal: AbortSignal,
): Promise<{ config?: IgnitionConfig; file?: string; key?: SshKey }> {
  let config = opts.ignition;
  if (opts.ignitionFile !== undefined) {
    config = await loadIgnitionConfig({ file: opts.ignitionFile }, { signal });
  }
  let key: SshKey | undefined;
  if (opts.ssh !== undefined) {
    key = await generateKey(tmp, signal);
    const fragment = sshKeyFragment(key.publicKey);
    // The user's config is kept byte for byte and wins on conflicts; the result is validated
    // again, with the same checks, before it reaches the guest.
    config = config
      ? await parseIgnitionText(
          mergeFragments(config, [fragment]).text,
          `${config.origin} (with the qemu-test SSH key)`,
          { signal },
        )
      : await parseIgnitionText(JSON.stringify(fragment), "the qemu-test SSH key fragment", {
          signal,
        });
  }
  if (!config) return {};
  const file = join(tmp, "config.ign");
  await writeFile(file, config.text, { mode: 0o600 });
  await chmod(file, 0o600);
  return { config, file, key };
}

interface PreparedDisk {
  backing: BackingImage;
  facts: ImageFacts;
  arch: Arch;
  firmware: Firmware;
  varsCopy?: string;
  overlay: string;
  accel: Accel;
}

async function prepareDisk(
  opts: BootOptions,
  result: BootResult,
  run: RunState,
  signal: AbortSignal,
): Promise<PreparedDisk> {
  const { tmp, reporter } = run;
  await requirePrograms(["qemu-img"]);
  const backing = await prepareBacking(opts.input, tmp, { reporter, signal });
  // The overlay needs nothing else: create it while the image is inspected.
  const overlay = join(tmp, "overlay.qcow2");
  const overlayDone = createOverlay(backing, overlay, signal);
  overlayDone.catch(() => {}); // awaited below; do not let an early throw leave it unhandled
  const facts = await inspectImage(backing);
  const arch = opts.arch ?? facts.arch ?? backing.arch ?? hostArch();
  if (!arch)
    throw new ProvisionError("cannot tell the image's architecture on this host", {
      hint: "pass --arch aarch64 or --arch x86_64",
    });
  if (opts.arch && facts.arch && facts.arch !== opts.arch)
    reporter.warn(
      `--arch ${opts.arch}, but the image looks like ${facts.arch} (${facts.archFrom})`,
    );
  result.arch = arch;
  result.archFrom = opts.arch
    ? "--arch"
    : facts.arch
      ? facts.archFrom
      : backing.arch
        ? "the image source"
        : "this host's (nothing in the image told)";
  const program = QEMU_PROGRAM[arch];
  const [firmware] = await Promise.all([findFirmware(arch, opts.bios), requirePrograms([program])]);
  result.firmware = describeFirmware(firmware);
  const varsCopy = firmware.kind === "uefi" ? join(tmp, basename(firmware.vars)) : undefined;
  const [choice] = await Promise.all([
    chooseAccel(opts.accel ?? "auto", arch, firmware, tmp),
    overlayDone,
    varsCopy && firmware.kind === "uefi" ? copyFile(firmware.vars, varsCopy) : undefined,
  ]);
  result.accel = choice.accel;
  result.accelWhy = choice.why;
  return { backing, facts, arch, firmware, varsCopy, overlay, accel: choice.accel };
}

// ---------------------------------------------------------------------------------------------

async function runInteractive(
  program: string,
  args: string[],
  opts: BootOptions,
  result: BootResult,
  run: RunState,
): Promise<void> {
  run.reporter.stop();
  process.stderr.write("provision: console attached; Ctrl-A X quits QEMU, Ctrl-A C its monitor\n");
  const started = Date.now();
  const child = track(
    spawnStreaming(program, args, { stdin: "inherit", stdout: "inherit", stderr: "inherit" }),
  );
  const onAbort = () => child.kill("SIGTERM");
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  run.stopQemu = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await child;
  };
  const r = await child;
  opts.signal?.removeEventListener("abort", onAbort);
  if (opts.signal?.aborted) throw new InterruptedError();
  result.bootSeconds = (Date.now() - started) / 1000;
  result.qemu = { exitCode: r.exitCode, signal: r.signal };
  result.verdict = "interactive";
  result.exitCode = r.exitCode === 0 ? QEMU_EXIT.PASS : QEMU_EXIT.FAILED;
  result.reason = `QEMU exited (${r.exitCode ?? r.signal}); interactive runs have no verdict`;
}

type Outcome =
  | { kind: "pass" }
  | { kind: "fail"; reason: string; match?: Match }
  | { kind: "timeout" }
  | { kind: "exited"; exitCode?: number; signal?: string; description?: string }
  | { kind: "interrupted" };

/**
 * A running guest, wherever it runs: its serial console as a byte stream (handed over
 * paused, so nothing is lost before the watcher listens), how it ended, and how to stop it.
 * Local QEMU and a remote libvirt domain both become one of these.
 */
export interface Guest {
  console: Readable;
  /** Settles when the guest is gone (QEMU exited, domain shut off). */
  exited: Promise<{ exitCode?: number; signal?: string; description?: string }>;
  /** The last of QEMU's stderr, for messages. */
  stderr(): string;
  /** Stop the guest (idempotent); resolves once it is gone. */
  stop(): Promise<void>;
}

function startLocalQemu(program: string, args: string[]): Guest {
  const child = track(
    spawnStreaming(program, args, { stdin: "ignore", stdout: "pipe", stderr: "pipe" }),
  );
  let stderr = "";
  child.stderr?.on("data", (b: Buffer) => {
    stderr = (stderr + b.toString()).slice(-8192);
  });
  const exited = (async () => {
    const r = await child;
    // Let the console stream deliver its last bytes first.
    if (child.stdout && !child.stdout.readableEnded)
      await new Promise<void>((r) => {
        child.stdout?.once("close", r);
        child.stdout?.once("end", r);
        if (child.stdout?.readableEnded || child.stdout?.destroyed) r();
      });
    return { exitCode: r.exitCode, signal: r.signal };
  })();
  return {
    console: child.stdout as Readable,
    exited,
    stderr: () => stderr,
    stop: async () => {
      // SIGTERM, and execa follows up with SIGKILL after 5 s.
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await child;
    },
  };
}

async function runWatched(
  prepared: Prepared,
  args: string[],
  opts: BootOptions,
  result: BootResult,
  run: RunState,
): Promise<void> {
  const guest = startLocalQemu(prepared.program, args);
  run.stopQemu = () => guest.stop();
  await superviseGuest(guest, prepared, opts, result, run);
}

/** Watch a started guest's console to a verdict (and run --ssh), then stop it. */
export async function superviseGuest(
  guest: Guest,
  prepared: Pick<Prepared, "rules" | "key">,
  opts: BootOptions,
  result: BootResult,
  run: RunState,
): Promise<void> {
  const { reporter, tmp } = run;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const log = opts.consoleLog ? createWriteStream(opts.consoleLog) : undefined;
  if (log) {
    log.on("error", (err) =>
      reporter.warn(`--console-log ${opts.consoleLog}: ${describeError(err)}`),
    );
    result.consoleLog = opts.consoleLog;
    run.closeLog = () => new Promise<void>((resolve) => log.end(resolve));
  }
  const started = Date.now();
  const elapsed = () => Math.round((Date.now() - started) / 1000);
  let sshOk = opts.ssh === undefined;
  const sshAbort = new AbortController();

  const outcome = await new Promise<Outcome>((resolve) => {
    let done = false;
    const finish = (o: Outcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(ticker);
      sshAbort.abort();
      opts.signal?.removeEventListener("abort", onAbort);
      resolve(o);
    };
    const decide = (w: ConsoleWatcher) => {
      if (w.failure) finish({ kind: "fail", reason: "", match: w.failure });
      else if (w.allSeen && sshOk) finish({ kind: "pass" });
    };
    const watcher = new ConsoleWatcher(prepared.rules, (w) => {
      reporter.status?.(`boot ${elapsed()}s: ${w.lastLine}`);
      decide(w);
    });
    run.watcher = watcher;
    guest.console.on("data", (b: Buffer) => {
      log?.write(b);
      watcher.push(b);
    });
    guest.console.resume();
    const timer = setTimeout(() => finish({ kind: "timeout" }), timeoutMs);
    const ticker = setInterval(
      () => reporter.status?.(`boot ${elapsed()}s: ${watcher.lastLine}`),
      1000,
    );
    ticker.unref();
    const onAbort = () => finish({ kind: "interrupted" });
    if (opts.signal?.aborted) onAbort();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    guest.exited.then((r) => {
      watcher.end();
      decide(watcher);
      finish({ kind: "exited", ...r });
    });
    if (opts.ssh !== undefined && prepared.key && result.sshPort) {
      const command = opts.ssh;
      waitAndRun(prepared.key, result.sshPort, command, tmp, sshAbort.signal).then((o) => {
        if (!o || !result.ssh) return;
        result.ssh.exitCode = o.exitCode;
        result.ssh.output = o.output;
        if (o.exitCode === 0) {
          sshOk = true;
          decide(watcher);
        } else {
          finish({ kind: "fail", reason: `ssh core@127.0.0.1 ${command} exited ${o.exitCode}` });
        }
      });
    }
  });
  result.bootSeconds = (Date.now() - started) / 1000;
  const watcher = run.watcher as ConsoleWatcher;
  // The verdict is known; let the line that decided it finish (for the log), briefly.
  if (outcome.kind === "pass" || outcome.kind === "fail") await watcher.lineEnd(250);
  await guest.stop();
  result.expects = prepared.rules.expects.map((r, i) => {
    const m = watcher.seen[i];
    return { pattern: r.pattern, seen: m !== undefined, line: m?.line, seconds: m?.seconds };
  });
  const r = await guest.exited;
  const stderr = guest.stderr();
  result.qemu = {
    exitCode: r.exitCode,
    signal: r.signal,
    stderr: stderr.trim() ? stderr.trim().split("\n").slice(-10).join("\n") : undefined,
  };
  const missing = () =>
    result.expects
      .filter((e) => !e.seen)
      .map((e) => JSON.stringify(e.pattern))
      .join(", ");
  const took = `${result.bootSeconds.toFixed(1)}s`;
  switch (outcome.kind) {
    case "interrupted":
      throw new InterruptedError();
    case "pass": {
      result.verdict = "pass";
      result.exitCode = QEMU_EXIT.PASS;
      const last = [...watcher.seen].sort((a, b) => (b?.seconds ?? 0) - (a?.seconds ?? 0))[0];
      result.matchedPattern = last?.pattern;
      result.matchedLine = last?.line;
      const what = result.expects.map((e) => JSON.stringify(e.pattern));
      if (result.ssh) what.push(`ssh ${JSON.stringify(result.ssh.command)} exited 0`);
      result.reason = `booted in ${took}: ${what.join(", ")}`;
      return;
    }
    case "fail":
      result.verdict = "fail";
      result.exitCode = QEMU_EXIT.FAILED;
      if (outcome.match) {
        result.matchedPattern = outcome.match.pattern;
        result.matchedLine = outcome.match.line;
        result.reason = `boot failed after ${took}: ${outcome.match.line}`;
      } else result.reason = `boot failed after ${took}: ${outcome.reason}`;
      return;
    case "timeout":
      result.verdict = "timeout";
      result.exitCode = QEMU_EXIT.TIMEOUT;
      result.reason = `timed out after ${(timeoutMs / 1000).toFixed(0)}s waiting for ${missing() || "ssh"}${watcher.lastLine ? `; last console line: ${watcher.lastLine}` : ""}`;
      return;
    case "exited": {
      const how =
        outcome.exitCode !== undefined
          ? `exit code ${outcome.exitCode}`
          : `signal ${outcome.signal}`;
      if (outcome.description) {
        result.verdict = "fail";
        result.exitCode = QEMU_EXIT.FAILED;
        result.reason = `${outcome.description} after ${took}, before ${missing() || "ssh answered"} was seen${watcher.lastLine ? `; last console line: ${watcher.lastLine}` : ""}`;
        return;
      }
      if (watcher.bytes === 0 && outcome.exitCode !== 0) {
        // Nothing reached the console: QEMU itself refused (bad option, image, firmware).
        result.verdict = "error";
        result.exitCode = QEMU_EXIT.NOT_STARTED;
        result.reason = `QEMU could not start the guest (${how}): ${lastStderrLine(stderr) || "no message"}`;
        return;
      }
      result.verdict = "fail";
      result.exitCode = QEMU_EXIT.FAILED;
      result.reason = `QEMU exited (${how}) after ${took} before ${missing() || "ssh answered"} was seen${watcher.lastLine ? `; last console line: ${watcher.lastLine}` : ""}`;
      return;
    }
  }
}

function lastStderrLine(s: string): string {
  return (
    s
      .trim()
      .split("\n")
      .filter((l) => l.trim() !== "" && !/warning:/i.test(l))
      .pop() ?? ""
  ).trim();
}
