/**
 * `provision pxe-stick`: flags and output. The work is in ./index.ts. Secret values are
 * never printed: the report has names only, and reproduce.sh is given the flags without
 * --secret/--ssh-key/--secrets-* (the secrets come back from the volume itself).
 */
import { type Command, Option } from "commander";
import { pickDisk } from "../disk/index.js";
import { jsonError, UsageError } from "../errors.js";
import { finalExitCode } from "../lifecycle.js";
import { collect, positiveInt } from "../options.js";
import type { Reporter } from "../progress/index.js";
import type { Arch, OsName } from "../source/index.js";
import { addReleaseOptions } from "../source/options.js";
import { SECRETS_MOUNTPOINT } from "./fragment.js";
import { type BootMode, type PxeStickReport, pxeStick, secretsFragment } from "./index.js";

export interface CliHelpers {
  version: string;
  makeReporter(o: { quiet?: boolean }): Reporter;
  interruptSignal(reporter: Reporter): AbortSignal;
}

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

/** A flag as given on the command line. */
interface FlagUse {
  flag: string;
  key: string;
}

const UPDATE_SECRETS: FlagUse = { flag: "--update-secrets", key: "updateSecrets" };
const PRINT_IGNITION: FlagUse = { flag: "--print-ignition", key: "printIgnition" };
const PRINT_SCRIPT: FlagUse = { flag: "--print-script", key: "printScript" };
const JSON_FLAG: FlagUse = { flag: "--json", key: "json" };
const DRY_RUN: FlagUse = { flag: "--dry-run", key: "dryRun" };

/** What shapes the stick outside its secrets volume: --update-secrets leaves all that as it is. */
const STICK_FLAGS: [string, string][] = [
  ["--ignition-url", "ignitionUrl"],
  ["--hostname", "hostname"],
  ["--kernel-arg", "kernelArg"],
  ["--os", "os"],
  ["--arch", "arch"],
  ["--stream", "stream"],
  ["--channel", "channel"],
  ["--release", "release"],
  ["--stream-base-url", "streamBaseUrl"],
  ["--flatcar-base-url", "flatcarBaseUrl"],
  ["--base-url", "baseUrl"],
  ["--boot", "boot"],
  ["--attempts", "attempts"],
  ["--retry-delay", "retryDelay"],
  ["--ipxe-efi", "ipxeEfi"],
  ["--ipxe-lkrn", "ipxeLkrn"],
  ["--esp-size", "espSize"],
  ["--secrets-size", "secretsSize"],
];

/** Pairs that cannot go together (the first given pair is the error), why, and a hint. */
const CONFLICTS: [FlagUse, FlagUse, string, string?][] = [
  [PRINT_IGNITION, PRINT_SCRIPT, "each prints one thing and exits"],
  ...[PRINT_IGNITION, PRINT_SCRIPT].flatMap((p): [FlagUse, FlagUse, string][] => [
    [
      p,
      JSON_FLAG,
      `${p.flag} prints ${p === PRINT_SCRIPT ? "the iPXE script" : "the Ignition fragment"}, not a report`,
    ],
    [p, DRY_RUN, `${p.flag} writes nothing anyway and prints no plan`],
    [p, UPDATE_SECRETS, `${p.flag} writes nothing and --update-secrets writes the secrets volume`],
  ]),
  ...STICK_FLAGS.map(([flag, key]): [FlagUse, FlagUse, string, string] => [
    UPDATE_SECRETS,
    { flag, key },
    key === "secretsSize"
      ? "an existing secrets volume keeps its size"
      : "--update-secrets rewrites only the secrets volume and keeps the rest of the stick",
    `build the stick again with ${flag} (and without --update-secrets)`,
  ]),
];

/**
 * Refuse flags that cannot go together, before anything is read or written: the same error
 * as the image source flags' (checkSourceFlags), naming both.
 */
function checkConflicts(cmd: Command): void {
  const given = (f: FlagUse) => {
    const source = cmd.getOptionValueSource(f.key);
    if (source === undefined || source === "default") return false;
    const v = cmd.getOptionValue(f.key) as unknown;
    return v !== undefined && v !== false;
  };
  for (const [a, b, why, hint] of CONFLICTS)
    if (given(a) && given(b))
      cmd.error(
        `error: ${a.flag} and ${b.flag} cannot go together: ${why}${hint ? `; ${hint}` : ""}`,
        { code: "commander.conflictingOption" },
      );
}

export function registerPxeStick(program: Command, h: CliHelpers): Command {
  const cmd = program
    .command("pxe-stick")
    .description(
      "make a USB stick that netboots Flatcar or FCOS with iPXE (UEFI and BIOS) and carries a read-only secrets volume",
    )
    .argument("[target]", "whole disk (/dev/sdX) or image file (created)")
    .option(
      "--ignition-url <url>",
      "the Ignition config every boot fetches (required; no secrets in it)",
    )
    .addOption(
      new Option("--os <os>", "what to netboot").choices(["flatcar", "fcos"]).default("flatcar"),
    )
    .addOption(
      new Option("--arch <arch>", "the machines' architecture")
        .choices(["x86_64", "aarch64"])
        .default("x86_64"),
    );
  addReleaseOptions(cmd)
    .option(
      "--base-url <url>",
      "a mirror: the directory with the kernel and initramfs (same file names)",
    )
    .option("--hostname <name>", "the node's host name (kernel argument systemd.hostname=)")
    .option(
      "--fleet <url>",
      "one stick for every machine: chain to provision serve (the URL with ?token= it prints)",
    )
    .option(
      "--host <name>",
      "an inventory host (provision.yaml): its OS, arch, stream/channel, kernel args, host name and secrets",
    )
    .option(
      "--inventory <file>",
      "with --host: the inventory (default: provision.yaml here or above)",
    )
    .option(
      "--kernel-arg <arg>",
      "an extra kernel argument (repeatable), e.g. console=ttyS0,115200",
      collect,
    )
    .addOption(
      new Option(
        "--boot <mode>",
        "firmware to boot from; both = UEFI, plus BIOS when syslinux and ipxe.lkrn are here",
      )
        .choices(["uefi", "bios", "both"])
        .default("both"),
    )
    .option(
      "--attempts <n>",
      "network boot attempts before the stick stops and shows the error",
      "5",
    )
    .option("--retry-delay <seconds>", "pause between attempts", "10")
    .option(
      "--ipxe-efi <path|url>",
      "iPXE EFI binary that runs /autoexec.ipxe (a URL is downloaded once into the cache)",
    )
    .option("--ipxe-lkrn <path|url>", "iPXE ipxe.lkrn for BIOS (default: the distribution's)")
    .option(
      "--ssh-key <file>",
      "public key for the volume's authorized_keys (repeatable; default ~/.ssh/id_*.pub)",
      collect,
    )
    .option(
      "--secret <NAME=VALUE>",
      "a file NAME holding VALUE (repeatable; visible in ps: prefer the two below)",
      collect,
    )
    .option(
      "--secrets-env <PREFIX>",
      "the PREFIX_* environment variables into PREFIX_env (repeatable)",
      collect,
    )
    .option("--secrets-dir <dir>", "copy this directory's files onto the volume as they are")
    .option("--secrets-writable", "do not set the ext4 read-only feature")
    .option("--esp-size <MiB>", "boot partition size", "64")
    .option("--secrets-size <MiB>", "secrets partition size", "32")
    .option("--update-secrets", "rewrite only the secrets volume of an existing stick")
    .option(
      "--print-ignition",
      "print the Ignition fragment that mounts the volume on /secrets, and exit",
    )
    .option("--print-script", "print the iPXE script, and exit")
    .option("--dry-run", "check everything and show the plan; write nothing")
    .option("--unmount", "unmount the target's mounted partitions first")
    .option("-y, --yes", "do not ask before writing a disk")
    .option(
      "--json",
      'print a machine-readable report on stdout (on failure: {"error": {"message", "hint", "exitCode"}})',
    )
    .option("-q, --quiet", "no progress output")
    .addHelpText(
      "after",
      `
Examples:
  provision pxe-stick /dev/sdb --ignition-url https://example.com/node.ign --hostname node1 \\
      --secrets-env K3S --secrets-env HEARTBEAT
  provision pxe-stick stick.img --os fcos --stream stable --ignition-url http://10.0.0.1/fcos.ign
  provision pxe-stick /dev/sdb --update-secrets --secrets-env K3S      new secrets, same stick
  provision pxe-stick --print-ignition > secrets.ign                  merge into the hosted config

Layout: GPT with EFI-SYSTEM (FAT32: /EFI/BOOT/BOOTX64.EFI = iPXE, /autoexec.ipxe, syslinux
for BIOS) and "secrets" (ext4 labelled secrets: files 0600, directories 0700, root; marked
read-only so even mount -o rw fails). reproduce.sh on the volume says how it was built.

Exit codes: 0 ok, 1 failed, 2 bad input (flags, secrets, iPXE binary), 3 refused (system
disk, mounted, too small, not confirmed), 4 a required program is missing, 130 interrupted
(143 by SIGTERM, 129 by SIGHUP).`,
    )
    .action(async (target: string | undefined, o: Record<string, unknown>, self: Command) => {
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
      const reporter = h.makeReporter({ quiet: Boolean(o.quiet) || printScript });
      const signal = h.interruptSignal(reporter);
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
          version: h.version,
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
    });
  cmd.hook("preAction", () => checkConflicts(cmd));
  return cmd;
}
