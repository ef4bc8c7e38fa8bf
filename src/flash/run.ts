/**
 * `provision flash`, run: the flags (src/cli.ts) turned into a flash() and its report
 * printed. Loaded only when the command runs.
 */
import type { Command } from "commander";
import type { Board } from "../board/index.js";
import { pickDisk } from "../disk/index.js";
import { EXIT, ProvisionError, UsageError } from "../errors.js";
import { finalExitCode } from "../lifecycle.js";
import { positiveInt } from "../options.js";
import { commandReporter, type Reporter, stopOnSignal } from "../progress/index.js";
import { timeoutOption, verdictLines } from "../qemu/run.js";
import type { Arch, OsName } from "../source/index.js";
import { imageSourceFrom } from "../source/options.js";
import { exitCodeOf, type FlashReport, flash, type ThenTestOptions } from "./index.js";

function printFlashReport(report: FlashReport, reporter: Reporter, json: boolean, quiet: boolean) {
  reporter.stop();
  if (json) {
    // A failed run carries its first failure as `error`, like every --json failure.
    const bad = report.targets.find((t) => !t.ok);
    const code = exitCodeOf(report);
    const error =
      code === EXIT.OK
        ? undefined
        : {
            message: bad ? `${bad.path}: ${bad.error}` : "a target did not boot (--then-test)",
            exitCode: finalExitCode(code),
          };
    process.stdout.write(
      `${JSON.stringify({ ...report, ...(error ? { error } : {}) }, null, 2)}\n`,
    );
    // stderr keeps its one line per failed target.
    for (const t of report.targets) if (!t.ok) process.stderr.write(`✖ ${t.path}: ${t.error}\n`);
    return;
  }
  if (report.plan) {
    for (const l of report.plan) process.stdout.write(`${l}\n`);
    return;
  }
  for (const t of report.targets) {
    if (t.ok && !quiet) {
      const parts = [t.verified ? "verified" : "not verified (--no-verify)"];
      if (t.ignition) parts.push(`Ignition at ${t.ignition}`);
      process.stderr.write(`✔ ${t.path}: ready (${parts.join(", ")})\n`);
    } else if (!t.ok) {
      process.stderr.write(`✖ ${t.path}: ${t.error}\n`);
    }
    if (t.boot) {
      const lines = verdictLines(t.boot, { prefix: "  boot: ", tail: quiet ? 0 : 10 });
      process.stderr.write(`${(quiet && t.boot.exitCode === 0 ? [] : lines).join("\n")}\n`);
    }
  }
}

/** flash --then-test and its qemu-test options; bad values are usage errors (exit 2) here. */
function thenTestOptions(o: Record<string, unknown>): ThenTestOptions | undefined {
  if (!o.thenTest) {
    if (o.expect || o.fail)
      throw new ProvisionError("--expect and --fail need --then-test", { exitCode: EXIT.USAGE });
    return undefined;
  }
  for (const re of [...((o.expect as string[]) ?? []), ...((o.fail as string[]) ?? [])]) {
    try {
      new RegExp(re);
    } catch (err) {
      throw new ProvisionError(`not a valid regex: ${re}: ${(err as Error).message}`, {
        exitCode: EXIT.USAGE,
      });
    }
  }
  try {
    return {
      arch: o.arch as Arch | undefined,
      bios: Boolean(o.bios),
      memoryMiB: positiveInt(o.testMemory, "--test-memory"),
      cpus: positiveInt(o.testCpus, "--test-cpus"),
      expect: o.expect as string[] | undefined,
      fail: o.fail as string[] | undefined,
      timeoutMs: timeoutOption(o.testTimeout, "--test-timeout"),
    };
  } catch (err) {
    if (err instanceof ProvisionError)
      throw new ProvisionError(err.message, { hint: err.hint, exitCode: EXIT.USAGE });
    throw err;
  }
}

export async function runFlash(
  targetArgs: string[],
  o: Record<string, unknown>,
  cmd: Command,
): Promise<void> {
  const reporter = commandReporter(Boolean(o.quiet));
  const signal = stopOnSignal(reporter);
  const isTTY = Boolean(process.stdin.isTTY && process.stderr.isTTY);
  let targets = targetArgs;
  // --host: the inventory's host gives the defaults and the config (built now, with its
  // secret values: this config goes onto the target and nowhere else).
  let fromHost: Awaited<ReturnType<typeof import("../fleet/use.js").useHost>> | undefined;
  if (o.host !== undefined) {
    if (o.ignition !== undefined || o.ignitionUrl !== undefined)
      throw new UsageError(
        `--host and ${o.ignition !== undefined ? "--ignition" : "--ignition-url"} cannot go together: the host's config comes from the inventory`,
        "add the fragment to the host's ignition list instead",
      );
    const { useHost } = await import("../fleet/use.js");
    fromHost = await useHost(cmd, o, {
      secrets: "values",
      warn: (l) => reporter.warn(l),
      kargsOption: "appendKarg",
      signal,
    });
    reporter.info(
      `host ${fromHost.host.name}: config ${fromHost.fingerprint.sha256.slice(0, 12)} built from ${fromHost.fingerprint.sources.length} source file(s)`,
    );
    if (targets.length === 0 && fromHost.host.disk) targets = [fromHost.host.disk];
  } else if (o.inventory !== undefined) {
    throw new UsageError("--inventory needs --host");
  }
  if (targets.length === 0) {
    if (!isTTY)
      throw new ProvisionError("no target given", {
        hint: "pass a disk (/dev/sdX) or an image file path",
        exitCode: EXIT.USAGE,
      });
    targets = [await pickDisk({})];
  }
  const source = imageSourceFrom(o);
  const report = await flash({
    targets,
    image: {
      ...source.request,
      os: o.os as OsName,
      arch: o.arch as Arch | undefined,
      sector4k: Boolean(o["4k"]),
    },
    offline: source.offline,
    keyrings: source.keyrings,
    requireSignature: source.requireSignature,
    ignitionFile: o.ignition as string | undefined,
    ignitionUrl: o.ignitionUrl as string | undefined,
    ignitionConfig: fromHost?.config,
    appendKargs: o.appendKarg as string[] | undefined,
    deleteKargs: o.deleteKarg as string[] | undefined,
    sparse: Boolean(o.sparse),
    verify: o.verify !== false,
    unmount: Boolean(o.unmount),
    yes: Boolean(o.yes),
    isTTY,
    dryRun: Boolean(o.dryRun),
    preserveOnError: Boolean(o.preserveOnError),
    board: o.board as Board,
    firmware: o.firmware as string | undefined,
    uboot: o.uboot as string | undefined,
    configTxtFile: o.configTxt as string | undefined,
    espFat32: Boolean(o.espFat32),
    thenTest: thenTestOptions(o),
    reporter,
    signal,
  });
  printFlashReport(report, reporter, Boolean(o.json), Boolean(o.quiet));
  process.exitCode = exitCodeOf(report);
}
