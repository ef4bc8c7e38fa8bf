/**
 * Command-line wiring: parse arguments, render progress, map errors to one line and an exit
 * code. No logic of its own beyond that.
 */
import { Command, Option } from "commander";
import { registerCompletion } from "./completion/cli.js";
import { registerDoctor } from "./doctor/cli.js";
import {
  EXIT,
  jsonError,
  jsonRequested,
  parserErrorOutput,
  reportError,
  UsageError,
} from "./errors.js";
import { registerFleet } from "./fleet/cli.js";
import { registerPxeStick } from "./ipxe/cli.js";
import { finalExitCode, installLastResort, runUrgentCleanups } from "./lifecycle.js";
import { registerQemuTest } from "./qemu/cli.js";
import { isQemuTestArgv, QEMU_EXIT } from "./qemu/exit.js";
import { registerFleetStatus, registerServe } from "./serve/cli.js";
import { addImageSourceOptions, applySourceOptions, collect } from "./source/options.js";
import { VERSION, versionText } from "./version.js";

function buildProgram(argv: string[]): Command {
  const program = new Command();
  // With --json, a parser error (a bad value, an unknown flag, flags that cannot go
  // together) is a JSON document on stdout too. Set before the commands: they inherit it.
  program.configureOutput({
    outputError: parserErrorOutput(argv, isQemuTestArgv(argv) ? QEMU_EXIT.NOT_STARTED : EXIT.USAGE),
  });
  program
    .name("provision")
    .description(
      "Bring up Fedora CoreOS and Flatcar machines: flash SD cards and disks, build iPXE sticks, boot-test in QEMU.",
    )
    .version(versionText(), "-V, --version")
    .option("--debug", "on an internal error, also print its stack trace")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();

  addImageSourceOptions(
    program.command("flash"),
    "use this image (http, https or a local path) instead of a stream/channel",
  )
    .description(
      "download (once, verified), decompress and write an OS image to disks or image files, with Ignition",
    )
    .argument(
      "[targets...]",
      "whole disks (/dev/sdX, /dev/mmcblkN, /dev/loopN) or image files; none on a TTY: pick one",
    )
    .addOption(
      new Option("--os <os>", "operating system").choices(["fcos", "flatcar"]).default("fcos"),
    )
    .addOption(
      new Option("--arch <arch>", "image architecture (default: this host's)").choices([
        "x86_64",
        "aarch64",
      ]),
    )
    .option("--4k", "FCOS: the image for disks with 4096-byte sectors")
    .option(
      "-i, --ignition <file>",
      "Ignition config (.ign JSON; Butane .bu is compiled when butane is installed)",
    )
    .option("--ignition-url <url>", "fetch the Ignition config from this URL and embed it")
    .option(
      "--host <name>",
      "a host of the inventory (provision.yaml): its OS, arch, board, firmware, kernel args, disk and config",
    )
    .option(
      "--inventory <file>",
      "with --host: the inventory (default: provision.yaml here or above)",
    )
    .option("--append-karg <arg>", "add a kernel argument (repeatable)", collect)
    .option(
      "--delete-karg <arg>",
      "remove a kernel argument, KEY or KEY=VALUE (repeatable)",
      collect,
    )
    .addOption(
      new Option(
        "--board <board>",
        "target board: Pi boards get firmware, config.txt and (rpi2/3) a hybrid MBR",
      )
        .choices(["generic", "rpi2", "rpi3", "rpi4"])
        .default("generic"),
    )
    .option(
      "--firmware <dir|tarball>",
      "Raspberry Pi boot files (bootcode.bin, start*.elf, fixup*.dat, DTBs, overlays/, U-Boot)",
    )
    .option("--uboot <file>", "U-Boot binary for the Pi (when not in --firmware)")
    .option("--config-txt <file>", "lines to append to the generated config.txt")
    .option("--esp-fat32", "rpi4: reformat the ESP as FAT32 (some Pi 4 EEPROMs do not boot FAT16)")
    .option(
      "--sparse",
      "block devices: skip all-zero blocks (faster; stale data stays between filesystems)",
    )
    .option("--no-verify", "do not read the target back after writing")
    .option("--unmount", "unmount the target's mounted partitions first")
    .option("-y, --yes", "do not ask for confirmation before writing a disk")
    .option("--dry-run", "print what would be downloaded and written; change nothing")
    .option(
      "--preserve-on-error",
      "leave a failed target as it is instead of wiping its partition table",
    )
    .option(
      "--then-test",
      "after writing, boot each target in QEMU (read-only overlay) with the same Ignition config",
    )
    .option("--expect <regex>", "--then-test: must appear on the console (repeatable)", collect)
    .option("--fail <regex>", "--then-test: fails the boot at once (repeatable)", collect)
    .option(
      "--test-timeout <duration>",
      "--then-test: give up after 600 (seconds), 90s, 10m",
      "10m",
    )
    .option("--test-memory <MiB>", "--then-test: guest memory", "2048")
    .option("--test-cpus <n>", "--then-test: guest CPUs", "2")
    .option("--bios", "--then-test, x86_64: boot with SeaBIOS instead of UEFI")
    .option("-q, --quiet", "no progress output (warnings and errors still go to stderr)")
    .option("--json", "print a machine-readable summary on stdout")
    .addHelpText(
      "after",
      `
Examples:
  provision flash /dev/sdb -i config.ign                    FCOS stable for this host's arch
  provision flash /dev/mmcblk0 --arch aarch64 -i pi.ign     FCOS for a Raspberry Pi
  provision flash --os flatcar --channel beta /dev/sdb -i node.ign
  provision flash disk.img --image-url ./fcos.raw.xz --sha256 <hex> -i config.ign
  provision flash /dev/sdb /dev/sdc -i config.ign --yes     two cards from one download
  provision flash /dev/mmcblk0 --board rpi3 --firmware ./rpi-firmware -i pi.ign
  provision flash /dev/sdb --dry-run                        show the plan, write nothing
  provision flash card.img --arch aarch64 -i pi.ign --then-test   write, then boot it in QEMU

Exit codes: 0 ok, 1 failed (download/write/verify), 2 bad input (flags, Ignition,
checksum, signature), 3 refused (system disk, mounted, too small, not confirmed),
4 a required program is missing, 130 interrupted. With --then-test, a target that was
written but did not boot (or could not be booted) makes the exit code 1.`,
    )
    .action(async (targets: string[], o: Record<string, unknown>, cmd: Command) => {
      const { runFlash } = await import("./flash/run.js");
      await runFlash(targets, o, cmd);
    });

  registerQemuTest(program);
  applySourceOptions(program);
  registerFleetStatus(registerFleet(program));
  registerServe(program);
  registerPxeStick(program, VERSION);
  // More commands: one register call per line below (doctor, completion).
  registerDoctor(program);
  registerCompletion(program);

  const cache = program
    .command("cache")
    .description("manage the image cache ($XDG_CACHE_HOME/provision)");
  cache
    .command("list")
    .description("list cached images")
    .option("--json", "machine-readable output")
    .action(async (o: { json?: boolean }) => {
      const { listCache } = await import("./cache/index.js");
      const { formatBytes } = await import("./progress/index.js");
      const entries = await listCache();
      if (o.json) {
        process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
        return;
      }
      if (entries.length === 0) process.stdout.write("the cache is empty\n");
      for (const e of entries) {
        process.stdout.write(
          `${e.partial ? "partial " : ""}${e.file}  ${formatBytes(e.size)}  last used ${e.lastUsed.slice(0, 10)}  signature ${e.signature}\n  ${e.url}\n`,
        );
      }
    });
  const prune = cache.command("prune");
  prune
    .description("remove cached images not used for --older-than days, and partial downloads")
    .option("--older-than <days>", "age in days", "30")
    .option("--all", "remove everything")
    .option("--json", "machine-readable output")
    .action(async (o: { olderThan: string; all?: boolean; json?: boolean }) => {
      const days = Number(o.olderThan);
      if (o.olderThan.trim() === "" || !Number.isFinite(days) || days < 0)
        throw new UsageError(`--older-than must be a number of days, got "${o.olderThan}"`);
      if (o.all && prune.getOptionValueSource("olderThan") === "cli")
        throw new UsageError("--all and --older-than cannot go together: --all removes everything");
      const { pruneCache } = await import("./cache/index.js");
      const { formatBytes } = await import("./progress/index.js");
      const removed = await pruneCache({ all: o.all, olderThanDays: days });
      if (o.json) {
        process.stdout.write(`${JSON.stringify({ removed }, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        `removed ${removed.length} entr${removed.length === 1 ? "y" : "ies"} (${formatBytes(removed.reduce((a, e) => a + e.size, 0))})\n`,
      );
    });

  const mbr = program
    .command("mbr")
    .description("show, write and keep the hybrid MBR a Raspberry Pi 2/3 boots from");
  mbr
    .command("show")
    .description("print the GPT and the MBR of a disk or image and check the MBR for a Pi 2/3")
    .argument("<target>", "disk (/dev/sdX, /dev/mmcblkN, /dev/loopN) or image file")
    .option("--partition <name>", "GPT partition for slot 1 (default: EFI-SYSTEM)")
    .option("--json", "machine-readable output")
    .addHelpText(
      "after",
      `
Exit codes: 0 the hybrid MBR is correct for a Raspberry Pi 2/3, 1 it is not (the problems
are listed), 2 no GPT or a damaged one, or bad input.`,
    )
    .action(async (target: string, o: { partition?: string; json?: boolean }) => {
      const { showMbr, formatTables } = await import("./mbr/index.js");
      const r = await showMbr(target, { partition: o.partition });
      const error = r.problems.length
        ? { message: r.problems[0], exitCode: EXIT.FAILED }
        : undefined;
      if (o.json)
        process.stdout.write(`${JSON.stringify({ ...r, ...(error ? { error } : {}) }, null, 2)}\n`);
      else
        for (const l of formatTables(r, { partition: o.partition })) process.stdout.write(`${l}\n`);
      process.exitCode = r.problems.length === 0 ? EXIT.OK : EXIT.FAILED;
    });
  mbr
    .command("fix")
    .description(
      "write the hybrid MBR (slot 1 = the ESP as 0x0C, bootable; slot 2 = 0xEE from LBA 1); the GPT is not touched",
    )
    .argument("<target>", "whole disk (/dev/sdX, /dev/mmcblkN, /dev/loopN) or image file")
    .option("--partition <name>", "GPT partition for slot 1 (default: EFI-SYSTEM)")
    .option("-y, --yes", "do not ask for confirmation before writing a disk")
    .option("--json", "machine-readable output")
    .addHelpText(
      "after",
      `
Same safety checks as flash: never the running system's disk, whole disks only, nothing
mounted or in use; a block device needs confirmation (--yes without a terminal). Writes
only bytes 446-511 of sector 0, and nothing when they are already right.

Exit codes: 0 written (or already correct), 1 failed, 2 no GPT / no such partition,
3 refused (system disk, mounted, not confirmed), 4 a required program is missing.`,
    )
    .action(async (target: string, o: { partition?: string; yes?: boolean; json?: boolean }) => {
      const { fixMbr, formatTables } = await import("./mbr/index.js");
      const r = await fixMbr(target, {
        partition: o.partition,
        yes: Boolean(o.yes),
        isTTY: Boolean(process.stdin.isTTY && process.stderr.isTTY),
      });
      process.exitCode = r.problems.length === 0 ? EXIT.OK : EXIT.FAILED;
      if (o.json) {
        const error = r.problems.length
          ? { message: r.problems[0], exitCode: EXIT.FAILED }
          : undefined;
        process.stdout.write(`${JSON.stringify({ ...r, ...(error ? { error } : {}) }, null, 2)}\n`);
        return;
      }
      for (const l of formatTables(r, { partition: o.partition })) process.stdout.write(`${l}\n`);
      process.stderr.write(
        r.written
          ? `✔ ${r.path}: hybrid MBR written and read back\n`
          : `✔ ${r.path}: hybrid MBR already correct; nothing written\n`,
      );
      process.exitCode = r.problems.length === 0 ? EXIT.OK : EXIT.FAILED;
    });
  mbr
    .command("repair-unit")
    .description(
      "print the Ignition fragment (spec 3.3.0) with the unit that restores the hybrid MBR on every boot",
    )
    .option("--butane", "print it as a Butane config (variant fcos 1.4.0) instead")
    .addHelpText(
      "after",
      `
flash --board rpi2|rpi3 merges this fragment into the Ignition config by itself; this is
for configs managed elsewhere (add it to ignition.config.merge, or merge the Butane).`,
    )
    .action(async (o: { butane?: boolean }) => {
      const { repairUnitButane, repairUnitFragment } = await import("./mbr/index.js");
      process.stdout.write(
        o.butane ? repairUnitButane() : `${JSON.stringify(repairUnitFragment(), null, 2)}\n`,
      );
    });
  return program;
}

export async function main(argv: string[]): Promise<number> {
  installLastResort();
  if (argv.includes("--debug")) process.env.PROVISION_DEBUG = "1";
  const program = buildProgram(argv);
  try {
    await program.parseAsync(argv);
    return finalExitCode(typeof process.exitCode === "number" ? process.exitCode : EXIT.OK);
  } catch (err) {
    const e = err as { code?: string; exitCode?: number };
    if (typeof e.code === "string" && e.code.startsWith("commander.")) {
      // Help and version exit 0; usage errors were already printed by commander, and so
      // was the help for a bare `provision` (or `provision cache`): that is a usage error.
      if (
        e.code === "commander.helpDisplayed" ||
        e.code === "commander.version" ||
        (e.code === "commander.help" && e.exitCode === 0)
      )
        return EXIT.OK;
      // qemu-test: 2 means "timed out"; bad flags are "could not start".
      return isQemuTestArgv(argv) ? QEMU_EXIT.NOT_STARTED : EXIT.USAGE;
    }
    const cleaned = runUrgentCleanups();
    if (jsonRequested(argv)) process.stdout.write(jsonError(err, finalExitCode));
    return finalExitCode(reportError(err, cleaned));
  }
}
