/**
 * `provision qemu-test`: argument definitions. The run is in ./run.ts (loaded when the
 * command runs), the logic in ./boot.ts. Every error before the guest runs exits 3 ("could
 * not start"), also commander's usage errors (see cli.ts main), so a CI job can tell a
 * broken pipeline from a broken image.
 */
import { type Command, Option } from "commander";
import { DEFAULT_REMOTE_DIR } from "../libvirt/uri.js";
import { addImageSourceOptions, collect } from "../source/options.js";

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
      const { runQemuTest } = await import("./run.js");
      await runQemuTest(image, o, cmd);
    });
}
