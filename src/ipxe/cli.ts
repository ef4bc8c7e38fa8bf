/**
 * `provision pxe-stick`: its flags and the pairs that cannot go together. The run is in
 * ./run.ts (loaded when the command runs), the work in ./index.ts.
 */
import { type Command, Option } from "commander";
import { collect } from "../options.js";
import { addReleaseOptions } from "../source/options.js";

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

export function registerPxeStick(program: Command, version: string): Command {
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
      const { runPxeStick } = await import("./run.js");
      await runPxeStick(target, o, self, version);
    });
  cmd.hook("preAction", () => checkConflicts(cmd));
  return cmd;
}
