/**
 * Detached GPG signature checks with gpgv against explicit keyring files. Armored keys are
 * dearmored into a temp file first (gpgv reads binary keyrings only).
 */
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProvisionError, UsageError } from "../errors.js";
import { run } from "../exec/index.js";

export type SignatureStatus = "verified" | "no-key" | "unsigned" | "skipped";

/** Keyrings a host may already have for each OS. */
const DISTRO_KEYRING_DIRS: Record<string, { dir: string; match: RegExp }[]> = {
  fcos: [{ dir: "/etc/pki/rpm-gpg", match: /^RPM-GPG-KEY-fedora-.*(primary|x86_64|aarch64)?$/ }],
  flatcar: [
    { dir: "/usr/share/keyrings", match: /flatcar.*\.(gpg|asc)$/i },
    { dir: "/etc/pki/rpm-gpg", match: /flatcar/i },
  ],
};

export async function findDistroKeyrings(os: string): Promise<string[]> {
  const found: string[] = [];
  for (const { dir, match } of DISTRO_KEYRING_DIRS[os] ?? []) {
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const n of names.sort()) if (match.test(n)) found.push(join(dir, n));
  }
  return found;
}

/**
 * Verify `sigPath` over `dataPath` with the given keyrings. Returns "verified", or
 * "no-key" when gpgv could not find the signing key and `keyIsOptional` (keyrings came from
 * the host, not from the user). A bad signature always throws.
 */
export async function verifySignature(
  dataPath: string,
  sigPath: string,
  keyrings: string[],
  opts: { keyIsOptional: boolean; what: string; signal?: AbortSignal },
): Promise<Exclude<SignatureStatus, "unsigned" | "skipped">> {
  const tmp = await mkdtemp(join(tmpdir(), "provision-gpg-"));
  try {
    const args = ["--homedir", tmp, "--status-fd", "1"];
    let i = 0;
    for (const k of keyrings) {
      await stat(k).catch(() => {
        throw new UsageError(`keyring ${k} does not exist`, "pass an existing file to --keyring");
      });
      const head = (await readFile(k)).subarray(0, 64).toString("latin1");
      if (head.includes("-----BEGIN PGP")) {
        const out = join(tmp, `key${i++}.gpg`);
        await run("gpg", ["--homedir", tmp, "--batch", "--yes", "--dearmor", "-o", out, k]);
        args.push("--keyring", out);
      } else {
        args.push("--keyring", k);
      }
    }
    const r = await run("gpgv", [...args, sigPath, dataPath], {
      allowFailure: true,
      signal: opts.signal,
    });
    const status = r.stdout;
    if (
      r.exitCode === 0 &&
      /\[GNUPG:\] GOODSIG/.test(status) &&
      /\[GNUPG:\] VALIDSIG/.test(status)
    ) {
      return "verified";
    }
    if (/\[GNUPG:\] BADSIG/.test(status)) {
      throw new ProvisionError(`BAD signature on ${opts.what}: the file is not what was signed`, {
        hint: "the download or the mirror is corrupt or tampered with; do not use it",
        exitCode: 2,
      });
    }
    if (/\[GNUPG:\] (NO_PUBKEY|ERRSIG)/.test(status)) {
      const keyId =
        /NO_PUBKEY ([0-9A-F]+)/.exec(status)?.[1] ?? /ERRSIG ([0-9A-F]+)/.exec(status)?.[1];
      if (opts.keyIsOptional) return "no-key";
      throw new ProvisionError(
        `signature on ${opts.what} is by key ${keyId ?? "(unknown)"}, which is not in the given keyring`,
        { hint: "pass the keyring holding the publisher's key with --keyring", exitCode: 2 },
      );
    }
    const why = r.stderr.trim().split("\n").pop() ?? `gpgv exit code ${r.exitCode}`;
    throw new ProvisionError(`could not verify the signature on ${opts.what}: ${why}`, {
      exitCode: 2,
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
