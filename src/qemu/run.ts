/**
 * `provision qemu-test`, run: the flags (./cli.ts) turned into a bootTest (./boot.ts) and its
 * verdict printed. Loaded only when the command runs.
 */
import type { Command } from "commander";
import { EXIT, ProvisionError } from "../errors.js";
import { shellQuote } from "../exec/index.js";
import { normalizeMac, parseDuration, positiveInt } from "../options.js";
import { commandReporter, stopOnSignal } from "../progress/index.js";
import type { Arch, ImageRequest, OsName } from "../source/index.js";
import { imageSourceFrom } from "../source/options.js";
import type { AccelChoice } from "./accel.js";
import { type BootResult, bootTest } from "./boot.js";
import { QEMU_EXIT } from "./exit.js";
import type { BootInput } from "./image.js";
import type { RemoteOptions } from "./remote.js";

/** --mac in any common spelling, as QEMU wants it (lower case, colons). */
function macOption(v: unknown): string | undefined {
  if (v === undefined) return undefined;
  const mac = normalizeMac(String(v));
  if (!mac) throw notStarted(`--mac ${String(v)}: not a MAC address (52:54:00:12:34:56)`);
  if (Number.parseInt(mac.slice(0, 2), 16) & 1)
    throw notStarted(`--mac ${String(v)}: a multicast address cannot be a NIC's`);
  return mac;
}

function notStarted(message: string, hint?: string): ProvisionError {
  return new ProvisionError(message, { hint, exitCode: QEMU_EXIT.NOT_STARTED });
}

/** --timeout: a bare number is seconds; 90s, 10m, 1h. */
export function timeoutOption(value: unknown, flag = "--timeout"): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDuration(String(value));
  if (ms === undefined)
    throw notStarted(`${flag} must be a duration like 600, 90s or 10m, got "${value}"`);
  return ms;
}

const MARK: Record<BootResult["verdict"], string> = {
  pass: "✔ PASS",
  fail: "✖ FAIL",
  timeout: "✖ TIMEOUT",
  error: "✖ NOT STARTED",
  interactive: "•",
  prepared: "•",
};

/** The one-line verdict (and, for a failed boot, the console lines before it). */
export function verdictLines(
  r: BootResult,
  opts: { tail?: number; prefix?: string } = {},
): string[] {
  const p = opts.prefix ?? "";
  const lines = [`${p}${MARK[r.verdict]} ${r.image}: ${r.reason}`];
  if (r.verdict === "fail" || r.verdict === "timeout") {
    const n = opts.tail ?? 10;
    const tail = n > 0 ? r.consoleTail.slice(-n) : [];
    if (tail.length > 0) {
      lines.push(`${p}  last console lines:`);
      for (const l of tail) lines.push(`${p}  | ${l}`);
    }
  }
  if (r.consoleLog) lines.push(`${p}  console log: ${r.consoleLog}`);
  if (r.keptDir) lines.push(`${p}  kept: ${r.keptDir} (overlay.qcow2, firmware VARS, config.ign)`);
  if (r.remote?.kept)
    lines.push(
      `${p}  kept on ${r.remote.host}: domain ${r.remote.domain} (virsh undefine --nvram ${r.remote.domain}) and ${r.remote.dir}`,
    );
  return lines;
}

export async function runQemuTest(
  image: string | undefined,
  o: Record<string, unknown>,
  cmd: Command,
): Promise<void> {
  const reporter = commandReporter(Boolean(o.quiet) || Boolean(o.printCommand));
  const signal = stopOnSignal(reporter, "stopping QEMU");
  let result: BootResult;
  try {
    if (image !== undefined && o.imageUrl !== undefined)
      throw notStarted("give an image argument or --image-url, not both");
    if (o.mac !== undefined && o.net !== "user")
      throw notStarted("--mac needs --net user: the guest has no network card otherwise");
    // --host: the host's config (secret values as placeholders: a test VM is not the
    // machine) and its first MAC; its os/arch/stream are the defaults.
    let fromHost: Awaited<ReturnType<typeof import("../fleet/use.js").useHost>> | undefined;
    if (o.host !== undefined) {
      if (o.ignition !== undefined)
        throw notStarted(
          "--host and --ignition cannot go together: the host's config comes from the inventory",
        );
      const { useHost } = await import("../fleet/use.js");
      fromHost = await useHost(cmd, o, {
        secrets: "placeholder",
        warn: (l) => reporter.warn(l),
        signal,
      });
    } else if (o.inventory !== undefined) throw notStarted("--inventory needs --host");
    const source = imageSourceFrom(o);
    const input: BootInput =
      image !== undefined
        ? { kind: "path", path: image }
        : {
            kind: "source",
            ...source,
            request: {
              ...source.request,
              os: (o.os as OsName | undefined) ?? "fcos",
              arch: o.arch as Arch | undefined,
            } satisfies ImageRequest,
          };
    result = await bootTest({
      input,
      arch: o.arch as Arch | undefined,
      os: o.os as OsName | undefined,
      bios: Boolean(o.bios),
      usb: Boolean(o.usb),
      accel: o.accel as AccelChoice,
      ignitionFile: o.ignition as string | undefined,
      ignition: fromHost?.config,
      mac: macOption(o.mac) ?? fromHost?.host.macs[0],
      memoryMiB: positiveInt(o.memory, "--memory"),
      cpus: positiveInt(o.cpus, "--cpus"),
      net: o.net as "none" | "user",
      ssh: o.ssh === undefined ? undefined : o.ssh === true ? "true" : String(o.ssh),
      expect: o.expect as string[] | undefined,
      fail: o.fail as string[] | undefined,
      timeoutMs: timeoutOption(o.timeout),
      consoleLog: o.consoleLog as string | undefined,
      junit: o.junit as string | undefined,
      keep: Boolean(o.keep),
      interactive: Boolean(o.interactive),
      printCommand: Boolean(o.printCommand),
      remote: remoteOptions(o),
      reporter,
      signal,
    });
  } catch (err) {
    reporter.stop();
    if (err instanceof ProvisionError && err.exitCode === EXIT.INTERRUPTED) throw err;
    if (err instanceof ProvisionError) throw notStarted(err.message, err.hint);
    throw err;
  }
  reporter.stop();
  if (o.printCommand && !o.json && result.verdict === "prepared" && result.command) {
    // Only the command on stdout, so that `$(provision qemu-test ... --print-command)` works.
    process.stdout.write(`${shellQuote(result.command)}\n`);
    if (!o.quiet) process.stderr.write(`files kept in ${result.keptDir}; remove it when done\n`);
    return;
  }
  if (o.json) {
    const error =
      result.exitCode === QEMU_EXIT.PASS
        ? undefined
        : {
            message: result.reason,
            ...(result.hint ? { hint: result.hint } : {}),
            exitCode: result.exitCode,
          };
    process.stdout.write(
      `${JSON.stringify({ ...result, ...(error ? { error } : {}) }, null, 2)}\n`,
    );
  }
  if (result.verdict === "error") {
    process.stderr.write(`provision: ${result.reason}\n`);
    if (result.hint) process.stderr.write(`  hint: ${result.hint}\n`);
  } else if (result.verdict !== "prepared" && result.verdict !== "interactive") {
    const lines = verdictLines(result, { tail: o.quiet ? 0 : 10 });
    process.stderr.write(`${(o.quiet ? lines.slice(0, 1) : lines).join("\n")}\n`);
  } else if (result.keptDir && !o.quiet) {
    process.stderr.write(`kept: ${result.keptDir}\n`);
  }
  process.exitCode = result.exitCode;
}

function remoteOptions(o: Record<string, unknown>): RemoteOptions | undefined {
  const only = ["uploadImage", "identity", "knownHosts", "insecureHostKey"] as const;
  if (o.connect === undefined) {
    const stray = only.find((k) => o[k] !== undefined);
    if (stray)
      throw notStarted(
        `--${stray.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} only means something with --connect`,
      );
    return undefined;
  }
  return {
    connect: String(o.connect),
    remoteDir: o.remoteDir as string | undefined,
    uploadImage: Boolean(o.uploadImage),
    identities: o.identity as string[] | undefined,
    knownHosts: o.knownHosts as string | undefined,
    insecureHostKey: Boolean(o.insecureHostKey),
  };
}
