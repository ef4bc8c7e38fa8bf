/**
 * UEFI firmware for the guest: a read-only CODE image and a VARS template the guest gets a
 * writable copy of (two pflash drives). Looked for in the usual distribution paths; CODE and
 * VARS are only used in the pairs the distributions ship (a 2 MiB OVMF CODE does not work
 * with 4 MiB VARS).
 */
import { access, constants } from "node:fs/promises";
import { ProvisionError } from "../errors.js";
import type { Arch } from "../source/index.js";

export type Firmware =
  | { kind: "uefi"; code: string; vars: string }
  /** SeaBIOS, QEMU's built-in default on x86_64 (`--bios`). */
  | { kind: "bios" };

const UEFI_PAIRS: Record<Arch, [code: string, vars: string][]> = {
  aarch64: [
    // Debian, Ubuntu: qemu-efi-aarch64
    ["/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"],
    // Fedora: edk2-aarch64
    [
      "/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw",
      "/usr/share/edk2/aarch64/vars-template-pflash.raw",
    ],
    // Arch: edk2-aarch64
    ["/usr/share/edk2/aarch64/QEMU_CODE.fd", "/usr/share/edk2/aarch64/QEMU_VARS.fd"],
    // QEMU's own build (upstream, Homebrew, some distributions)
    ["/usr/share/qemu/edk2-aarch64-code.fd", "/usr/share/qemu/edk2-arm-vars.fd"],
  ],
  x86_64: [
    // Debian 11+, Ubuntu: ovmf
    ["/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"],
    ["/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"],
    // Fedora: edk2-ovmf
    ["/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"],
    // Arch: edk2-ovmf
    ["/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"],
    ["/usr/share/qemu/edk2-x86_64-code.fd", "/usr/share/qemu/edk2-i386-vars.fd"],
  ],
};

/** The package with each architecture's UEFI firmware for QEMU guests. */
export const FIRMWARE_PACKAGES: Record<Arch, { debian: string; fedora: string }> = {
  aarch64: { debian: "qemu-efi-aarch64", fedora: "edk2-aarch64" },
  x86_64: { debian: "ovmf", fedora: "edk2-ovmf" },
};

/** Where findFirmware looks, in order: [CODE, VARS] pairs (for `provision doctor`). */
export function firmwareCandidates(arch: Arch): readonly (readonly [string, string])[] {
  return UEFI_PAIRS[arch];
}

const readable = (p: string) =>
  access(p, constants.R_OK).then(
    () => true,
    () => false,
  );

/** The firmware to boot `arch` with; `bios` asks for SeaBIOS (x86_64 only). */
export async function findFirmware(arch: Arch, bios = false): Promise<Firmware> {
  if (bios) {
    if (arch !== "x86_64")
      throw new ProvisionError("--bios (SeaBIOS) is for x86_64 only; aarch64 boots with UEFI");
    return { kind: "bios" };
  }
  for (const [code, vars] of UEFI_PAIRS[arch]) {
    if ((await readable(code)) && (await readable(vars))) return { kind: "uefi", code, vars };
  }
  const first = UEFI_PAIRS[arch][0] as [string, string];
  throw new ProvisionError(`no UEFI firmware for ${arch} guests found (looked for ${first[0]})`, {
    hint: `apt-get install ${FIRMWARE_PACKAGES[arch].debian} (Fedora: dnf install ${FIRMWARE_PACKAGES[arch].fedora})`,
  });
}

/** One line for messages: "AAVMF_CODE.fd (UEFI)" or "SeaBIOS". */
export function describeFirmware(f: Firmware): string {
  return f.kind === "bios" ? "SeaBIOS" : `UEFI ${f.code}`;
}
