// Paths to the fixtures built by fixtures/build-all.sh (run by test/global-setup.ts).
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** Repository root (the directory holding package.json). */
export const repoRoot: string = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Where fixtures are built when PROVISION_FIXTURES is unset. */
export const defaultFixturesDir: string = path.join(repoRoot, ".cache", "fixtures");

/** Directory holding the fixtures: $PROVISION_FIXTURES, else `<repo>/.cache/fixtures`. */
export function fixturesDir(): string {
  const fromEnv = process.env.PROVISION_FIXTURES;
  return fromEnv ? path.resolve(fromEnv) : defaultFixturesDir;
}

/** Absolute path of a fixture (e.g. "fcos.img.xz", "gnupg"); throws if it does not exist. */
export function fixture(name: string): string {
  const p = path.join(fixturesDir(), name);
  if (!existsSync(p)) {
    throw new Error(
      `fixture ${name} not found at ${p}; run: bash fixtures/build-all.sh ${fixturesDir()}`,
    );
  }
  return p;
}

export interface ManifestArtifact {
  name: string;
  size: number;
  sha256: string;
  /** Set for fcos.img, fcos.img.{xz,gz,zst,bz2} (hash of fcos.img) and big.img, big.img.xz. */
  uncompressedSha256?: string;
  uncompressedSize?: number;
}

export interface ManifestPartition {
  number: number;
  /** GPT partition name: reserved, EFI-SYSTEM, boot, root. */
  name: string;
  /** First and last sector (inclusive), 512-byte sectors. */
  start: number;
  end: number;
  sectors: number;
  /** Byte offset of the partition in the image, and its size in bytes. */
  offset: number;
  size: number;
}

export interface ManifestImage {
  sectorSize: number;
  partitions: ManifestPartition[];
}

/** Every file listed in manifest.json (and SHA256SUMS). */
export type ArtifactName =
  | "fcos.img"
  | "fcos.img.xz"
  | "fcos.img.gz"
  | "fcos.img.zst"
  | "fcos.img.bz2"
  | "big.img"
  | "big.img.xz"
  | "corrupt.img.xz"
  | "keyring.gpg"
  | "other-keyring.gpg"
  | "fcos.img.xz.sig"
  | "fcos.img.xz.badsig"
  | "fcos.img.bz2.sig";

export interface Manifest {
  /** Keyed by file name (see fixtures/build-all.sh). */
  artifacts: Record<ArtifactName, ManifestArtifact> & Record<string, ManifestArtifact | undefined>;
  /** GPT layout of fcos.img and big.img. */
  images: Record<"fcos.img" | "big.img", ManifestImage> & Record<string, ManifestImage | undefined>;
  gpg: { fingerprint: string; otherFingerprint: string; uid: string; otherUid: string };
}

let cached: { dir: string; manifest: Manifest } | undefined;

/** The parsed manifest.json of the fixtures directory. */
export function manifest(): Manifest {
  const dir = fixturesDir();
  if (cached?.dir !== dir) {
    const manifest = JSON.parse(readFileSync(fixture("manifest.json"), "utf8")) as Manifest;
    cached = { dir, manifest };
  }
  return cached.manifest;
}

/** The manifest entry of one artifact; throws if unknown. */
export function artifact(name: string): ManifestArtifact {
  const a = manifest().artifacts[name];
  if (!a) throw new Error(`no artifact ${name} in ${fixture("manifest.json")}`);
  return a;
}

/** A partition of fcos.img (or another image in the manifest) by GPT name; throws if unknown. */
export function partition(name: string, image = "fcos.img"): ManifestPartition {
  const p = manifest().images[image]?.partitions.find((x) => x.name === name);
  if (!p) throw new Error(`no partition ${name} in ${image}`);
  return p;
}
