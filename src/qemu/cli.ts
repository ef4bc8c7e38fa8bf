/**
 * `provision qemu-test`: argument definitions and output. The logic is in ./boot.ts.
 * Every error before the guest runs exits 3 ("could not start"), also commander's usage
 * errors (see cli.ts main), so a CI job can tell a broken pipeline from a broken image.
 */
import { Command, Option } from "commander";
import { EXIT, ProvisionError } from "../errors.js";
import { shellQuote } from "../exec/index.js";
import { DEFAULT_REMOTE_DIR } from "../libvirt/uri.js";
import { interruptSignal as lifecycleSignal } from "../lifecycle.js";
import { normalizeMac, positiveInt } from "../options.js";
import { createReporter, type Reporter } from "../progress/index.js";
import type { Arch, ImageRequest, OsName } from "../source/index.js";
import { addImageSourceOptions, collect, imageSourceFrom } from "../source/options.js";
import type { AccelChoice } from "./accel.js";
import { type BootResult, bootTest, QEMU_EXIT } from "./boot.js";
import type { BootInput } from "./image.js";
import { parseDuration } from "./index.js";
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

export { positiveInt } from "../options.js";

/** --timeout: a bare number is seconds; 90s, 10m, 1h. */
export function timeoutOption(value: unknown, flag = "--timeout"): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDuration(String(value));
  if (ms === undefined)
    throw notStarted(`${flag} must be a duration like 600, 90s or 10m, got "${value}"`);
  return ms;
}

function makeReporter(quiet: boolean): Reporter {
  const tty = Boolean(process.stderr.isTTY) && !process.env.CI;
  return createReporter({ mode: quiet ? "quiet" : tty ? "tty" : "plain" });
}

/** Ctrl-C / SIGTERM / SIGHUP stop QEMU and clean up once; a second one exits at once. */
function interruptSignal(reporter: Reporter): AbortSignal {
  return lifecycleSignal({
    onFirst(sig) {
      reporter.stop();
      process.stderr.write(
        `provision: ${sig === "SIGINT" ? "Ctrl-C" : sig}: stopping QEMU (press Ctrl-C again to exit at once)\n`,
      );
    },
  });
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

export function registerQemuTest(program: Command): Command {
  return addImageSourceOptions(
    program.command("qemu-test"),
    "no image argument: boot this image (http, https or a local path), cached like flash",
  )
    .description(
      "boot an image in QEMU with its Ignition config (fw_cfg) and decide from the serial console whether it came up",
    )
    .argument(
      "[image]",
      "image file (raw, qcow2, .xz/.gz/.zst/.bz2) or block device, attached through an overlay: never modified; none: an image source like flash (--stream, --os flatcar, --image-url)",
    )
    .option(
      "-i, --ignition <file>",
      "Ignition config (.ign; Butane .bu when butane is installed), validated as flash does",
    )
    .option(
      "--host <name>",
      "boot an inventory host's config (provision.yaml), with its first MAC as the guest's",
    )
    .option(
      "--inventory <file>",
      "with --host: the inventory (default: provision.yaml here or above)",
    )
    .addOption(
      new Option(
        "--arch <arch>",
        "guest architecture (default: the image's, else this host's)",
      ).choices(["aarch64", "x86_64"]),
    )
    .addOption(
      new Option(
        "--os <os>",
        "fcos or flatcar: image source and fw_cfg name (default: detected from the partitions)",
      ).choices(["fcos", "flatcar"]),
    )
    .option("--bios", "x86_64: boot with SeaBIOS instead of UEFI (OVMF)")
    .option("--usb", "attach the disk as a USB stick (xHCI) instead of virtio, e.g. a pxe-stick")
    .addOption(
      new Option("--accel <accel>", "accelerator; auto = KVM only when a probe shows it works")
        .choices(["auto", "kvm", "tcg"])
        .default("auto"),
    )
    .option("--memory <MiB>", "guest memory", "2048")
    .option("--cpus <n>", "guest CPUs", "2")
    .addOption(
      new Option("--mac <address>", "with --net user: the guest's MAC address (netboot tests)"),
    )
    .addOption(
      new Option(
        "--net <mode>",
        "user: QEMU user networking with the guest's SSH port forwarded to 127.0.0.1",
      )
        .choices(["none", "user"])
        .default("none"),
    )
    .option(
      "--ssh [command]",
      "wait until SSH answers (as core, with a generated key merged into the config), run COMMAND (default true): its exit status decides",
    )
    .option(
      "--expect <regex>",
      "must appear on the console (repeatable; default: a login prompt, login:, none with --ssh)",
      collect,
    )
    .option(
      "--fail <regex>",
      "fails the boot at once (repeatable; added to the built-in failure patterns)",
      collect,
    )
    .option("--timeout <duration>", "give up after this long: 600 (seconds), 90s, 10m", "10m")
    .option("--console-log <file>", "write the serial console to this file as it streams")
    .option("--junit <file>", "write a JUnit XML report (one testcase, console in system-out)")
    .option("--json", "print a machine-readable result on stdout")
    .option("--keep", "keep the temp dir (overlay, VARS copy, config) and print where it is")
    .option("--interactive", "attach the serial console to this terminal instead; no verdict")
    .option(
      "--print-command",
      "prepare everything, print the QEMU command line and exit (files kept)",
    )
    .option(
      "--connect <uri>",
      "run on a libvirt host instead: qemu+ssh://user@host/system (the image argument is then a path there, unless --upload-image)",
    )
    .option(
      "--upload-image",
      "with --connect: send the local image (decompressed, as qcow2) over SFTP",
    )
    .option(
      "--remote-dir <dir>",
      "with --connect: where run directories go on the host",
      DEFAULT_REMOTE_DIR,
    )
    .option(
      "--identity <file>",
      "with --connect: SSH private key (repeatable; default: the agent, then ~/.ssh/id_*)",
      collect,
    )
    .option("--known-hosts <file>", "with --connect: check the host key against this file")
    .option("--insecure-host-key", "with --connect: do not check the host key (warns)")
    .option("-q, --quiet", "no progress output")
    .addHelpText(
      "after",
      `
Examples:
  provision qemu-test disk.img -i config.ign                  boot to a login prompt
  provision qemu-test card.img -i config.ign --expect 'PROVISION-BOOT-OK' --timeout 5m
  provision qemu-test /dev/sdb -i config.ign                  the card, read-only
  provision qemu-test --stream next --arch aarch64 -i config.ign --junit boot.xml
  provision qemu-test disk.img -i config.ign --ssh 'systemctl is-system-running --wait'
  provision qemu-test disk.img -i config.ign --interactive    try a config by hand
  provision flash disk.img -i config.ign --then-test          write, then boot what was written
  provision qemu-test --connect qemu+ssh://root@virthost/system --upload-image disk.img -i config.ign

The guest boots from a qcow2 overlay in a private temp dir, so the image or disk is never
written. aarch64: -M virt -cpu cortex-a57 with AAVMF; x86_64: q35 with OVMF (--bios:
SeaBIOS). Failure patterns built in (as coreos-assembler's kola): emergency shell, dracut
giving up, kernel panic, Oops, Go panic, SIGSEGV, systemd ordering cycle, OOM killer,
Ignition failing to fetch its config.

--connect: one SSH connection (host key checked against known_hosts first); the config
(and with --upload-image the image) go over SFTP into a 0711 run directory under
--remote-dir; virsh on the host defines and starts a domain with the config on fw_cfg
(<qemu:commandline>) and the serial console in a file that is streamed back. The domain is
destroyed and undefined and the directory removed afterwards, unless --keep.

Exit codes: 0 pass, 1 boot failed (a failure pattern, QEMU exited early, --ssh command
failed), 2 timeout, 3 could not start (missing qemu or firmware, bad input, invalid
Ignition config), 130 interrupted.`,
    )
    .action(async (image: string | undefined, o: Record<string, unknown>, cmd: Command) => {
      const reporter = makeReporter(Boolean(o.quiet) || Boolean(o.printCommand));
      const signal = interruptSignal(reporter);
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
        if (!o.quiet)
          process.stderr.write(`files kept in ${result.keptDir}; remove it when done\n`);
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
    });
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

/** For cli.ts: commander's own usage errors for qemu-test are "could not start" too. */
export function isQemuTestArgv(argv: readonly string[]): boolean {
  return argv.slice(2).find((a) => !a.startsWith("-")) === "qemu-test";
}
