/**
 * Entry point for `provision qemu-test` alone (bin/provision.js picks it when qemu-test is the
 * command). Its boot time is measured against QEMU run by hand, and loading the whole CLI
 * (HTTP client, disk picker, flash, boards) costs a good part of Node's start-up: this loads
 * only what qemu-test needs. Same command definition and error handling as src/cli.ts.
 */
import { Command } from "commander";
import { EXIT, jsonError, jsonRequested, parserErrorOutput, reportError } from "../errors.js";
import { finalExitCode, installLastResort, runUrgentCleanups } from "../lifecycle.js";
import { applySourceOptions } from "../source/options.js";
import { QEMU_EXIT } from "./boot.js";
import { registerQemuTest } from "./cli.js";

export async function main(argv: string[]): Promise<number> {
  installLastResort();
  if (argv.includes("--debug")) process.env.PROVISION_DEBUG = "1";
  const program = new Command()
    .configureOutput({ outputError: parserErrorOutput(argv, QEMU_EXIT.NOT_STARTED) })
    .name("provision")
    .option("--debug", "on an internal error, also print its stack trace")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  registerQemuTest(program);
  applySourceOptions(program);
  try {
    await program.parseAsync(argv);
    return finalExitCode(typeof process.exitCode === "number" ? process.exitCode : EXIT.OK);
  } catch (err) {
    const e = err as { code?: string };
    if (typeof e.code === "string" && e.code.startsWith("commander.")) {
      return e.code === "commander.helpDisplayed" || e.code === "commander.help"
        ? EXIT.OK
        : QEMU_EXIT.NOT_STARTED;
    }
    const cleaned = runUrgentCleanups();
    if (jsonRequested(argv)) process.stdout.write(jsonError(err, finalExitCode));
    return finalExitCode(reportError(err, cleaned));
  }
}
