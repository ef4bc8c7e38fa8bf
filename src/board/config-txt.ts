/**
 * config.txt for the Raspberry Pi firmware (start*.elf reads it from the FAT partition).
 *
 * What goes in, and why (sources):
 * - `arm_64bit=1`: start the ARM cores in AArch64; FCOS and Flatcar are 64-bit only. U-Boot's
 *   Kconfig for the Pi 4 says the firmware does not switch to 64-bit by itself for a kernel
 *   not named kernel8.img (u-boot arch/arm/mach-bcm283x/Kconfig, TARGET_RPI_4).
 * - `kernel=<U-Boot>`: the firmware loads U-Boot where it would load Linux.
 * - `enable_uart=1`: U-Boot's Pi 3/4 builds assume the firmware set up the mini UART as the
 *   console, and "this is required for U-Boot to operate correctly, even if you only care
 *   about the HDMI/usbkbd console" (u-boot arch/arm/mach-bcm283x/Kconfig, TARGET_RPI_3 and
 *   TARGET_RPI_4). Fedora's bcm283x-firmware config.txt does the same ("Enable UART for all
 *   devices to work around firmware boot issues", bcm283x-firmware.spec changelog, 2020-10),
 *   and raspberrypi/firmware#1483 shows U-Boot hanging at the rainbow screen without it.
 * - Pi 3 UART stability: with the mini UART as console, enable_uart=1 makes the firmware lock
 *   the VPU core clock the mini UART's baud rate is derived from (to the maximum since 2020;
 *   it drops back only when the SoC throttles: pelwell in raspberrypi/linux#4123). So no
 *   `core_freq=250` by default (it costs performance for everyone: pftf/RPi3#32 chose to ship
 *   it commented out), but it is there, commented, for a console garbled under throttling.
 *   No `dtoverlay=miniuart-bt`/`disable-bt`: they move the console to the PL011, which
 *   U-Boot's Pi 3 build does not expect, and U-Boot 2020.10 was reported not to boot with
 *   either on a Pi 3B (raspberrypi/firmware#1499).
 * - `upstream_kernel=1` only when the device trees have upstream Linux names only
 *   (bcm2837-rpi-3-b.dtb, as Debian ships them): the firmware then prefers those names and
 *   falls back to the downstream ones (Raspberry Pi config.txt documentation, upstream_kernel).
 * - EDK2 on the Pi 4: the settings of the pftf/RPi4 release's own config.txt (armstub=,
 *   device tree address, GIC, miniuart-bt so that the PL011 is the UEFI console).
 * The user's `--config-txt` text comes last: for most settings the last one wins.
 */
import { UsageError } from "../errors.js";
import { type Board, boardInfo, isPiBoard } from "./boards.js";

export interface ConfigTxtOptions {
  /** File name of the loader on the ESP: the U-Boot binary (`u-boot.bin`) or `RPI_EFI.fd`. */
  kernel: string;
  /** `u-boot` (default): `kernel=`; `edk2`: `armstub=` with the pftf/RPi4 settings. */
  loader?: "u-boot" | "edk2";
  /** The device trees have upstream names only (StagedFirmware.upstreamDtbs). */
  upstreamDtbs?: boolean;
  /** The user's lines (`--config-txt FILE`), appended under a `# from --config-txt` marker. */
  userAdditions?: string;
}

export const USER_MARKER = "# from --config-txt";

export function configTxt(board: Board, opts: ConfigTxtOptions): string {
  if (!isPiBoard(board)) {
    throw new UsageError(
      "config.txt is only for Raspberry Pi boards",
      "use --board rpi2, rpi3 or rpi4 with --config-txt",
    );
  }
  const kernel = opts.kernel.trim();
  if (kernel === "" || /[\s=]/.test(kernel)) {
    throw new UsageError(`'${opts.kernel}' cannot be a file name in config.txt`);
  }
  const loader = opts.loader ?? "u-boot";
  if (loader === "edk2" && board !== "rpi4") {
    throw new UsageError(
      `the EDK2 UEFI firmware is for the Raspberry Pi 4, not the ${boardInfo(board).name}`,
      "use U-Boot (--uboot FILE)",
    );
  }
  const L: string[] = [
    `# config.txt for the ${boardInfo(board).name}, written by provision.`,
    loader === "u-boot"
      ? "# Boot chain: GPU firmware -> U-Boot (kernel= below) -> EFI/BOOT/BOOTAA64.EFI -> GRUB -> Linux."
      : "# Boot chain: GPU firmware -> EDK2 UEFI firmware (armstub= below) -> EFI/BOOT/BOOTAA64.EFI -> GRUB -> Linux.",
    "# For most settings the last occurrence wins.",
    "",
    "# FCOS and Flatcar are 64-bit only.",
    "arm_64bit=1",
  ];
  if (loader === "u-boot") {
    L.push(
      "# U-Boot, loaded in place of a Linux kernel.",
      `kernel=${kernel}`,
      "# U-Boot does not run without the UART enabled, even with no serial console in use.",
      "enable_uart=1",
    );
    if (board === "rpi3") {
      L.push(
        "# The console is the mini UART on GPIO 14/15, as U-Boot expects: no miniuart-bt or",
        "# disable-bt overlay. enable_uart=1 locks the core clock the mini UART follows; if the",
        "# console is still garbled when the Pi throttles, uncomment:",
        "#core_freq=250",
      );
    }
    if (opts.upstreamDtbs) {
      L.push("# The device trees here have upstream Linux names (bcm2837-*).", "upstream_kernel=1");
    }
  } else {
    L.push(
      "# EDK2 UEFI firmware (pftf/RPi4), loaded as the ARM stub.",
      `armstub=${kernel}`,
      "enable_uart=1",
      "uart_2ndstage=1",
      "enable_gic=1",
      "arm_boost=1",
      "disable_commandline_tags=1",
      "disable_overscan=1",
      "device_tree_address=0x1f0000",
      "device_tree_end=0x200000",
      "# The PL011 UART is the UEFI console; Bluetooth moves to the mini UART.",
      "dtoverlay=miniuart-bt",
      "dtoverlay=upstream-pi4",
    );
  }
  let text = `${L.join("\n")}\n`;
  const user = (opts.userAdditions ?? "").replace(/^\uFEFF/, "").replace(/\r\n?/g, "\n");
  if (user.trim() !== "") {
    text += `\n${USER_MARKER}\n${user.endsWith("\n") ? user : `${user}\n`}`;
  }
  return text;
}
