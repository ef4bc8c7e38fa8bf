/**
 * The boot programs that go on the stick: an iPXE EFI binary that runs /autoexec.ipxe,
 * and for legacy BIOS iPXE's ipxe.lkrn with syslinux (gptmbr.bin, ldlinux, the installer).
 * Taken from --ipxe-efi / --ipxe-lkrn (a path, or a URL downloaded once into the cache),
 * else from the usual distribution paths.
 */
import { access, constants, readFile } from "node:fs/promises";
import { fetchArtifact } from "../cache/index.js";
import { EXIT, ProvisionError, UsageError } from "../errors.js";
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

/**
 * Does this EFI build run /autoexec.ipxe? iPXE's EFI code names the file as a UTF-16
 * string (efi_autoexec.c); builds without the feature do not contain it.
 */
export async function supportsAutoexec(efi: string): Promise<boolean> {
  const bytes = await readFile(efi);
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
  if (!(await supportsAutoexec(path)))
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
