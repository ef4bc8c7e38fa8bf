/**
 * `provision pxe-stick`, run: the flags (./cli.ts) turned into a pxeStick() (./index.ts) and
 * its report printed. Loaded only when the command runs. Secret values are never printed:
 * the report has names only, and reproduce.sh is given the flags without
 * --secret/--ssh-key/--secrets-* (the secrets come back from the volume itself).
 */
import type { Command } from "commander";
import { pickDisk } from "../disk/index.js";
import { UsageError } from "../errors.js";
import { positiveInt } from "../options.js";
import { commandReporter, stopOnSignal } from "../progress/index.js";
import type { Arch, OsName } from "../source/index.js";
import { SECRETS_MOUNTPOINT } from "./fragment.js";
import { type BootMode, type PxeStickReport, pxeStick, secretsFragment } from "./index.js";

/** The flags reproduce.sh repeats: everything that shapes the stick, no secret inputs. */
function reproduceArgs(o: Record<string, unknown>): string[] {
  const a: string[] = ["--os", String(o.os), "--arch", String(o.arch), "--boot", String(o.boot)];
  if (o.os === "flatcar") a.push("--channel", String(o.channel), "--release", String(o.release));
  else a.push("--stream", String(o.stream));
  if (o.ignitionUrl) a.push("--ignition-url", String(o.ignitionUrl));
  if (o.fleet) a.push("--fleet", String(o.fleet));
  if (o.hostname) a.push("--hostname", String(o.hostname));
  for (const k of (o.kernelArg as string[] | undefined) ?? []) a.push("--kernel-arg", k);
  for (const [flag, key] of [
    ["--base-url", "baseUrl"],
    ["--flatcar-base-url", "flatcarBaseUrl"],
    ["--ipxe-efi", "ipxeEfi"],
    ["--ipxe-lkrn", "ipxeLkrn"],
  ] as const)
    if (o[key] !== undefined) a.push(flag, String(o[key]));
  if (o.os !== "flatcar" && o.streamBaseUrl !== "https://builds.coreos.fedoraproject.org")
    a.push("--stream-base-url", String(o.streamBaseUrl));
  if (o.espSize !== "64") a.push("--esp-size", String(o.espSize));
  if (o.secretsSize !== "32") a.push("--secrets-size", String(o.secretsSize));
  if (o.secretsWritable) a.push("--secrets-writable");
  if (o.attempts !== "5") a.push("--attempts", String(o.attempts));
  if (o.retryDelay !== "10") a.push("--retry-delay", String(o.retryDelay));
  return a;
}

/**
 * The outcome, for people: a dry run's plan is the output (stdout, as flash --dry-run; with
 * --json the report is, and there is no text plan); after writing, a summary on stderr.
 */
function printReport(r: PxeStickReport, quiet: boolean, json: boolean): void {
  const out = (s: string) => process.stderr.write(`${s}\n`);
  const s = r.secrets;
  const names = [
    ...s.files
      .filter((f) => !s.envFiles.some((e) => e.file === f))
      .map((f) =>
        f === "authorized_keys"
          ? `authorized_keys (${s.sshKeys} key${s.sshKeys === 1 ? "" : "s"})`
          : f,
      ),
    ...s.envFiles.map((e) => `${e.file} (${e.variables.join(", ")})`),
  ];
  if (r.dryRun) {
    if (json) return;
    const out = (s: string) => process.stdout.write(`${s}\n`);
    out(`plan for ${r.target} (${r.kind === "block" ? "disk" : "image file"}): nothing written`);
    if (!r.updateSecretsOnly) {
      out(`  boots: ${r.os} via ${r.boot.map((b) => b.toUpperCase()).join(" + ")}`);
      out(`  kernel: ${r.kernel}`);
      out(`  iPXE: ${[r.ipxeEfi, r.ipxeLkrn].filter(Boolean).join(", ")}`);
    }
    out(
      `  secrets volume (${s.readOnly ? "read-only" : "writable"}): ${names.join(", ") || "(empty)"}`,
    );
    if (r.script && !quiet) {
      out("  autoexec.ipxe:");
      for (const l of r.script.trimEnd().split("\n")) out(`    ${l}`);
    }
    return;
  }
  if (r.updateSecretsOnly)
    out(
      `✔ ${r.target}: secrets volume rewritten and read back (${s.readOnly ? "read-only" : "writable"})`,
    );
  else
    out(
      `✔ ${r.target}: boot stick for ${r.os} (${r.boot.map((b) => b.toUpperCase()).join(" + ")}), written and read back in ${r.seconds.toFixed(1)}s`,
    );
  if (quiet) return;
  out(`  secrets (${s.readOnly ? "read-only" : "writable"}): ${names.join(", ") || "(none)"}`);
  out(
    `  the booted OS mounts them on ${SECRETS_MOUNTPOINT} once your hosted config has the units from: provision pxe-stick --print-ignition`,
  );
}

export async function runPxeStick(
  target: string | undefined,
  o: Record<string, unknown>,
  self: Command,
  version: string,
): Promise<void> {
  if (o.printIgnition) {
    process.stdout.write(`${JSON.stringify(secretsFragment(), null, 2)}\n`);
    return;
  }
  // --host: the inventory's fields as defaults (a flag wins and says so), the host name,
  // and its secrets read now for the volume (never printed, never in argv).
  const hostSecrets: string[] = [];
  if (o.host !== undefined) {
    const { useHost } = await import("../fleet/use.js");
    const { readSecret } = await import("../fleet/secrets.js");
    const used = await useHost(self, o, {
      secrets: "placeholder",
      warn: (l) => process.stderr.write(`warning: ${l}\n`),
      kargsOption: "kernelArg",
    });
    if (o.hostname === undefined) o.hostname = used.host.name;
    for (const [name, src] of Object.entries(used.host.secrets))
      hostSecrets.push(`${name}=${await readSecret(name, src)}`);
  } else if (o.inventory !== undefined) throw new UsageError("--inventory needs --host");
  const printScript = Boolean(o.printScript);
  const isTTY = Boolean(process.stdin.isTTY && process.stderr.isTTY);
  if (!target && !printScript) {
    // As flash: on a terminal, pick one of the removable disks; in a script, say what is missing.
    if (!isTTY)
      throw new UsageError("pxe-stick needs a target: a disk (/dev/sdX) or an image file");
    target = await pickDisk({});
  }
  const reporter = commandReporter(Boolean(o.quiet) || printScript);
  const signal = stopOnSignal(reporter);
  let report: PxeStickReport;
  try {
    report = await pxeStick({
      target: target ?? "/dev/null",
      os: o.os as OsName,
      arch: o.arch as Arch,
      stream: o.stream as string,
      channel: o.channel as string,
      release: o.release as string,
      streamBaseUrl: o.streamBaseUrl as string,
      flatcarBaseUrl: o.flatcarBaseUrl as string | undefined,
      baseUrl: o.baseUrl as string | undefined,
      ignitionUrl: o.ignitionUrl as string | undefined,
      fleetUrl: o.fleet as string | undefined,
      hostname: o.hostname as string | undefined,
      kernelArgs: o.kernelArg as string[] | undefined,
      attempts: positiveInt(o.attempts, "--attempts"),
      retryDelay: positiveInt(o.retryDelay, "--retry-delay"),
      boot: o.boot as BootMode,
      ipxeEfi: o.ipxeEfi as string | undefined,
      ipxeLkrn: o.ipxeLkrn as string | undefined,
      sshKeys: o.sshKey as string[] | undefined,
      secrets: [...((o.secret as string[] | undefined) ?? []), ...hostSecrets],
      secretsEnv: o.secretsEnv as string[] | undefined,
      secretsDir: o.secretsDir as string | undefined,
      secretsWritable: Boolean(o.secretsWritable),
      espMiB: positiveInt(o.espSize, "--esp-size"),
      secretsMiB: positiveInt(o.secretsSize, "--secrets-size"),
      updateSecrets: Boolean(o.updateSecrets),
      reproduceArgs: reproduceArgs(o),
      version,
      dryRun: Boolean(o.dryRun) || printScript,
      scriptOnly: printScript,
      yes: Boolean(o.yes),
      isTTY,
      unmount: Boolean(o.unmount),
      offline: Boolean(o.offline),
      reporter,
      signal,
    });
  } finally {
    reporter.stop();
  }
  if (printScript) {
    process.stdout.write(report.script ?? "");
    return;
  }
  for (const w of report.warnings) reporter.warn(w);
  if (o.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  printReport(report, Boolean(o.quiet), Boolean(o.json));
}
