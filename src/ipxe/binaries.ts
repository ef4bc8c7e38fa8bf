/**
 * The boot programs that go on the stick: an iPXE EFI binary that runs /autoexec.ipxe,
 * and for legacy BIOS iPXE's ipxe.lkrn with syslinux (gptmbr.bin, ldlinux, the installer).
 * Taken from --ipxe-efi / --ipxe-lkrn (a path, or a URL downloaded once into the cache),
 * else from the usual distribution paths.
 */
import { access, constants, readFile } from "node:fs/promises";
import { fetchArtifact } from "../cache/index.js";
import { describeError, EXIT, ProvisionError, UsageError } from "../errors.js";
import { hasProgram } from "../exec/index.js";
import type { Reporter } from "../progress/index.js";
import type { Arch } from "../source/index.js";

const EFI_PATHS: Record<Arch, string[]> = {
  x86_64: [
    "/usr/lib/ipxe/ipxe-amd64.efi", // Debian trixie and later
    "/usr/lib/ipxe/ipxe.efi", // Debian, Ubuntu
    "/usr/share/ipxe/ipxe-x86_64.efi", // Fedora ipxe-bootimgs-x86
  ],
  aarch64: [
    "/usr/lib/ipxe/ipxe-arm64.efi", // Debian trixie and later
    "/usr/share/ipxe/arm64-efi/ipxe.efi", // Fedora ipxe-bootimgs-aarch64
  ],
};
const LKRN_PATHS = ["/usr/lib/ipxe/ipxe.lkrn", "/usr/share/ipxe/ipxe.lkrn"];
const SYSLINUX_DIRS = [
  { mbr: "/usr/lib/syslinux/mbr/gptmbr.bin", modules: "/usr/lib/syslinux/modules/bios" }, // Debian
  { mbr: "/usr/share/syslinux/gptmbr.bin", modules: "/usr/share/syslinux" }, // Fedora, Arch
];

/** Where findIpxeEfi looks when no --ipxe-efi is given (for `provision doctor`). */
export function ipxeEfiCandidates(arch: Arch): readonly string[] {
  return EFI_PATHS[arch];
}

/**
 * The packages with those files. Debian's has an EFI build that runs /autoexec.ipxe from
 * trixie on; bookworm's (2019) does not.
 */
export const IPXE_PACKAGES: Record<Arch | "bios", { debian: string; fedora: string }> = {
  x86_64: { debian: "ipxe", fedora: "ipxe-bootimgs-x86" },
  aarch64: { debian: "ipxe", fedora: "ipxe-bootimgs-aarch64" },
  bios: { debian: "ipxe syslinux syslinux-common", fedora: "ipxe-bootimgs-x86 syslinux" },
};

/** Prebuilt upstream binaries (iPXE's own site), for the hint. */
const UPSTREAM_EFI: Record<Arch, string> = {
  x86_64: "https://boot.ipxe.org/x86_64-efi/ipxe.efi",
  aarch64: "https://boot.ipxe.org/arm64-efi/ipxe.efi",
};

async function exists(path: string): Promise<boolean> {
  return await access(path, constants.R_OK).then(
    () => true,
    () => false,
  );
}

async function localOrCached(
  spec: string,
  flag: string,
  opts: { offline?: boolean; reporter?: Reporter; signal?: AbortSignal },
): Promise<string> {
  if (/^https?:\/\//.test(spec)) {
    // No published checksum or signature for these: fetched once over TLS, then cached.
    const a = await fetchArtifact(
      { url: spec },
      { ...opts, policy: { keyrings: [], keyringsFromUser: false, requireSignature: false } },
    );
    return a.path;
  }
  if (!(await exists(spec))) throw new UsageError(`${flag} ${spec}: no such file`);
  return spec;
}

/** PE machine types (IMAGE_FILE_MACHINE_*) of the EFI executables a stick may carry. */
const PE_MACHINE: Record<number, string> = {
  0x8664: "x86_64",
  0xaa64: "aarch64",
  0x14c: "i386",
  0x1c2: "arm",
  0x1c4: "arm",
  0x5064: "riscv64",
  0x6264: "loongarch64",
};

/**
 * What kind of executable this is: an EFI application/driver (the PE signature after the
 * "MZ" header, and an EFI subsystem, 10-13, in its optional header) for which architecture;
 * null when it is not one at all.
 */
export function efiExecutableArch(bytes: Buffer): string | null {
  if (bytes.length < 0x40 || bytes.toString("latin1", 0, 2) !== "MZ") return null;
  const pe = bytes.readUInt32LE(0x3c);
  // COFF header (20 bytes) after "PE\0\0", then the optional header; Subsystem is at 68 in
  // both the PE32 and the PE32+ layout.
  if (pe + 24 + 70 > bytes.length || bytes.toString("latin1", pe, pe + 4) !== "PE\0\0") return null;
  const subsystem = bytes.readUInt16LE(pe + 24 + 68);
  if (subsystem < 10 || subsystem > 13) return null;
  const machine = bytes.readUInt16LE(pe + 4);
  return PE_MACHINE[machine] ?? `machine 0x${machine.toString(16)}`;
}

/**
 * Does this EFI build run /autoexec.ipxe? iPXE's EFI code names the file as a UTF-16
 * string (efi_autoexec.c); builds without the feature do not contain it.
 */
export async function supportsAutoexec(efi: string | Buffer): Promise<boolean> {
  const bytes = typeof efi === "string" ? await readFile(efi) : efi;
  return (
    bytes.includes(Buffer.from("autoexec.ipxe", "utf16le")) ||
    bytes.includes(Buffer.from("autoexec.ipxe", "latin1"))
  );
}

export async function findIpxeEfi(
  arch: Arch,
  given: string | undefined,
  opts: { offline?: boolean; reporter?: Reporter; signal?: AbortSignal },
): Promise<string> {
  let path: string | undefined;
  if (given) path = await localOrCached(given, "--ipxe-efi", opts);
  else {
    for (const p of EFI_PATHS[arch])
      if (await exists(p)) {
        path = p;
        break;
      }
  }
  const howToGet = `pass --ipxe-efi ${UPSTREAM_EFI[arch]} (iPXE's own build, downloaded once into the cache), or a file from Debian trixie's ipxe package (usr/lib/ipxe/ipxe-${arch === "x86_64" ? "amd64" : "arm64"}.efi)`;
  if (!path)
    throw new ProvisionError(
      `no iPXE EFI binary for ${arch} (looked in ${EFI_PATHS[arch].join(", ")})`,
      {
        hint: howToGet,
      },
    );
  const bytes = await readFile(path).catch((err: unknown) => {
    throw new UsageError(`--ipxe-efi ${path}: ${describeError(err)}`);
  });
  const efiArch = efiExecutableArch(bytes);
  if (efiArch === null)
    throw new ProvisionError(`${path} is not an EFI executable`, {
      hint: howToGet,
      exitCode: EXIT.USAGE,
    });
  if (efiArch !== arch)
    throw new ProvisionError(`${path} is an EFI executable for ${efiArch}, not ${arch}`, {
      hint: howToGet,
      exitCode: EXIT.USAGE,
    });
  if (!(await supportsAutoexec(bytes)))
    throw new ProvisionError(
      `${path} is an iPXE build that does not run /autoexec.ipxe from the stick (Debian bookworm's ipxe is from 2019)`,
      { hint: howToGet, exitCode: EXIT.USAGE },
    );
  return path;
}

export interface BiosBoot {
  lkrn: string;
  gptmbr: string;
  /** ldlinux.c32 and the other modules syslinux loads. */
  modulesDir: string;
}

/**
 * The BIOS pieces, or why they are missing (`--boot both` then warns and makes a
 * UEFI-only stick; `--boot bios` fails).
 */
export async function findBiosBoot(
  givenLkrn: string | undefined,
  opts: { offline?: boolean; reporter?: Reporter; signal?: AbortSignal },
): Promise<BiosBoot | { missing: string; hint: string }> {
  let lkrn: string | undefined;
  if (givenLkrn) lkrn = await localOrCached(givenLkrn, "--ipxe-lkrn", opts);
  else
    for (const p of LKRN_PATHS)
      if (await exists(p)) {
        lkrn = p;
        break;
      }
  if (!lkrn)
    return {
      missing: `ipxe.lkrn (looked in ${LKRN_PATHS.join(", ")})`,
      hint: "install the ipxe package (Debian, Fedora) or pass --ipxe-lkrn PATH|URL",
    };
  if (!(await hasProgram("syslinux")))
    return {
      missing: "the syslinux installer",
      hint: "install syslinux (Debian: apt-get install syslinux syslinux-common)",
    };
  for (const d of SYSLINUX_DIRS) {
    if ((await exists(d.mbr)) && (await exists(`${d.modules}/ldlinux.c32`)))
      return { lkrn, gptmbr: d.mbr, modulesDir: d.modules };
  }
  return {
    missing: "syslinux's gptmbr.bin and ldlinux.c32",
    hint: "install syslinux-common (Debian) or syslinux (Fedora)",
  };
}
