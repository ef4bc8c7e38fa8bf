/**
 * `provision doctor [COMMAND]`: argument definitions only. The checks (./index.ts) load when
 * the command runs: start-up time matters for every other command.
 */
import { type Command, Option } from "commander";
import { UsageError } from "../errors.js";
import { DOCTOR_COMMANDS, type DoctorCommand } from "./commands.js";

export function registerDoctor(program: Command): void {
  program
    .command("doctor")
    .description(
      "check what the commands need on this machine: programs (and their Debian/Fedora packages), firmware, iPXE, KVM, Node.js, the cache",
    )
    .argument("[command]", `check only this command: ${DOCTOR_COMMANDS.join(", ")}`)
    .addOption(
      new Option(
        "--arch <arch>",
        "check QEMU, firmware and iPXE for this architecture only (default: both; this host's is required for qemu-test, x86_64 for pxe-stick)",
      ).choices(["x86_64", "aarch64"]),
    )
    .option(
      "--ipxe-efi <file>",
      "judge this iPXE EFI binary instead of the distribution's (as pxe-stick --ipxe-efi)",
    )
    .option(
      "--connect <uri>",
      "qemu-test: check that this libvirt host is reachable (qemu+ssh://user@host/system)",
    )
    .option("--json", "print one JSON document on stdout")
    .addHelpText(
      "after",
      `
Each line is one check: ✔ there, ✖ missing and needed, ! missing but optional (a flag or
an input format needs it) or a warning. The last line says what to install.

Exit codes: 0 everything the command (or every command) needs is here, 1 something is
missing, 2 bad input.`,
    )
    .action(async (command: string | undefined, o: Record<string, unknown>) => {
      if (command !== undefined && !(DOCTOR_COMMANDS as readonly string[]).includes(command))
        throw new UsageError(
          `doctor: no command "${command}"; one of ${DOCTOR_COMMANDS.join(", ")}`,
        );
      if (o.connect !== undefined && command !== undefined && command !== "qemu-test")
        throw new UsageError(`doctor: --connect is for qemu-test, not ${command}`);
      const { runDoctor, formatDoctor } = await import("./index.js");
      const report = await runDoctor({
        command: command as DoctorCommand | undefined,
        arch: o.arch as "x86_64" | "aarch64" | undefined,
        ipxeEfi: o.ipxeEfi as string | undefined,
        connect: o.connect as string | undefined,
      });
      if (o.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else for (const line of formatDoctor(report)) process.stdout.write(`${line}\n`);
      process.exitCode = report.ok ? 0 : 1;
    });
}
