/**
 * The verified image cache, under $XDG_CACHE_HOME/provision (default ~/.cache/provision).
 *
 *   images/<key>/<file>        a verified artifact; key = sha256(URL + published sha256)
 *   images/<key>/<file>.sig    its detached signature, when one was published
 *   images/<key>/entry.json    what it is and how it was verified
 *   images/<key>/<file>.part   a download in progress (resumable), plus .part.json
 *   images/<key>.lock          held while one process downloads that entry
 *   meta/<hash>.json           stream/channel metadata with the time it was fetched
 *
 * Only a file whose checksum (and signature, when a key is available) was verified is
 * renamed into place, so an entry is always complete and trusted.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { basename, dirname, join } from "node:path";
import { describeError, errnoText, ProvisionError, UsageError } from "../errors.js";
import { withLock } from "../lock.js";
import { formatBytes, type Reporter, silentReporter } from "../progress/index.js";
import {
  cacheFsError,
  downloadResumable,
  fetchBytes,
  fetchText,
  isNetworkError,
} from "./download.js";
import { type SignatureStatus, verifySignature } from "./signature.js";

export { fetchText } from "./download.js";
export type { SignatureStatus } from "./signature.js";
export { findDistroKeyrings } from "./signature.js";

export function cacheRoot(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(base, "provision");
}

/**
 * Create a cache directory and its parents, one level at a time (node's recursive mkdir
 * spins forever under /proc); a failure names the directory and the fix.
 */
async function ensureCacheDir(dir: string): Promise<void> {
  const missing: string[] = [];
  let d = dir;
  for (;;) {
    const s = await stat(d).catch(() => undefined);
    if (s?.isDirectory()) break;
    if (s) throw cacheFsError(d, Object.assign(new Error("not a directory"), { code: "ENOTDIR" }));
    missing.unshift(d);
    const up = dirname(d);
    if (up === d) break;
    d = up;
  }
  for (const m of missing) {
    try {
      await mkdir(m);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw cacheFsError(m, err);
    }
  }
}

/** Something published at a URL (or a local path) that we want as a verified local file. */
export interface Artifact {
  url: string;
  /** sha256 of the file as published (compressed), when known. */
  sha256?: string;
  /** URL of a detached GPG signature, when the publisher has one. */
  signatureUrl?: string;
}

export interface VerifyPolicy {
  /** Keyring files to check signatures with. */
  keyrings: string[];
  /** True when the keyrings came from the user (--keyring): a missing key is then an error. */
  keyringsFromUser: boolean;
  requireSignature: boolean;
}

export interface LocalArtifact {
  path: string;
  size: number;
  fromCache: boolean;
  sha256?: string;
  /** The file was checked against a published or --sha256 checksum. */
  sha256Pinned: boolean;
  signature: SignatureStatus;
}

interface Entry {
  url: string;
  file: string;
  size: number;
  sha256: string;
  publishedSha256?: string;
  signature: SignatureStatus;
  created: string;
}

const isRemote = (url: string) => /^https?:\/\//i.test(url);

function entryKey(a: Artifact): string {
  return createHash("sha256")
    .update(`${a.url}\n${a.sha256?.toLowerCase() ?? ""}`)
    .digest("hex")
    .slice(0, 24);
}

function fileNameOf(url: string): string {
  const name = basename(new URL(url).pathname) || "image";
  return name.replace(/[^A-Za-z0-9._+-]/g, "_");
}

/** What was checked about an image, and only that. */
function checkedWording(publishedSha256: string | undefined, signature: SignatureStatus): string {
  const sha = publishedSha256 ? "sha256 matches the published one" : "no published sha256 to check";
  const sig =
    signature === "verified"
      ? "signature verified"
      : signature === "no-key"
        ? "signature not checked (no key)"
        : signature === "skipped"
          ? "signature not checked"
          : "no signature";
  return `${sha}, ${sig}`;
}

export async function sha256File(path: string, signal?: AbortSignal): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20, signal }))
    h.update(chunk as Buffer);
  return h.digest("hex");
}

function checksumMismatch(what: string, expected: string, actual: string): ProvisionError {
  return new ProvisionError(
    `checksum mismatch for ${what}: expected sha256 ${expected}, got ${actual}`,
    {
      hint: "the download is corrupt or the server sent a different file; nothing was written. Run again to download afresh",
      exitCode: 2,
    },
  );
}

async function checkSignature(
  dataPath: string,
  sigPath: string | undefined,
  what: string,
  policy: VerifyPolicy,
  reporter: Reporter,
  signal?: AbortSignal,
): Promise<SignatureStatus> {
  if (!sigPath) {
    if (policy.requireSignature) {
      throw new ProvisionError(
        `${what} has no published signature and --require-signature was given`,
        { exitCode: 2 },
      );
    }
    return "unsigned";
  }
  if (policy.keyrings.length === 0) {
    if (policy.requireSignature) {
      throw new ProvisionError(
        `no key to check the signature of ${what} and --require-signature was given`,
        {
          hint: "pass the publisher's public key with --keyring FILE",
          exitCode: 2,
        },
      );
    }
    reporter.warn(
      `no signing key available for ${what}; relying on the sha256 checksum only (pass --keyring FILE to check the signature)`,
    );
    return "no-key";
  }
  const status = await verifySignature(dataPath, sigPath, policy.keyrings, {
    keyIsOptional: !policy.keyringsFromUser && !policy.requireSignature,
    what,
    signal,
  });
  if (status === "no-key") {
    reporter.warn(
      `the key that signed ${what} is not in ${policy.keyrings.join(", ")}; relying on the sha256 checksum only`,
    );
  }
  return status;
}

/**
 * Make `artifact` available as a verified local file: from the cache when it is there (no
 * network), else downloaded (resumable), checksummed, signature-checked and put into the
 * cache atomically. A local path is checked in place, not copied.
 */
export async function fetchArtifact(
  artifact: Artifact,
  opts: { offline?: boolean; policy: VerifyPolicy; reporter?: Reporter; signal?: AbortSignal },
): Promise<LocalArtifact> {
  const reporter = opts.reporter ?? silentReporter;
  const { policy, signal } = opts;
  if (!isRemote(artifact.url)) return await checkLocal(artifact, policy, reporter, signal);

  const dir = join(cacheRoot(), "images", entryKey(artifact));
  const name = fileNameOf(artifact.url);
  const file = join(dir, name);
  const sigFile = `${file}.sig`;

  const hit = await readEntry(dir);
  if (hit) return await useEntry(hit, dir, artifact, policy, reporter, signal);
  if (opts.offline) {
    throw new UsageError(
      `${artifact.url} is not in the cache and --offline was given`,
      "run once without --offline to download it",
    );
  }

  await ensureCacheDir(dir);
  return await withCacheLock(
    `${dir}.lock`,
    async () => {
      const again = await readEntry(dir);
      if (again) return await useEntry(again, dir, artifact, policy, reporter, signal);
      const part = `${file}.part`;
      reporter.info(`downloading ${artifact.url}`);
      const dl = await downloadResumable(artifact.url, part, {
        signal,
        onProgress: (done, total) => reporter.progress("download", done, total, name),
        onRetry: (msg) => reporter.warn(msg),
      });
      if (artifact.sha256 && dl.sha256 !== artifact.sha256.toLowerCase()) {
        await rm(part, { force: true });
        throw checksumMismatch(artifact.url, artifact.sha256.toLowerCase(), dl.sha256);
      }
      let sigPath: string | undefined;
      if (artifact.signatureUrl) {
        try {
          await writeFile(sigFile, await fetchBytes(artifact.signatureUrl, signal));
          sigPath = sigFile;
        } catch (err) {
          if (!(err instanceof UsageError)) throw err; // 404: the publisher has no signature
        }
      }
      let signature: SignatureStatus;
      try {
        signature = await checkSignature(part, sigPath, artifact.url, policy, reporter, signal);
      } catch (err) {
        await rm(part, { force: true });
        await rm(sigFile, { force: true });
        throw err;
      }
      const entry: Entry = {
        url: artifact.url,
        file: name,
        size: dl.size,
        sha256: dl.sha256,
        publishedSha256: artifact.sha256?.toLowerCase(),
        signature,
        created: new Date().toISOString(),
      };
      await rename(part, file);
      await writeFile(join(dir, "entry.json"), JSON.stringify(entry, null, 2));
      reporter.phaseDone(
        "download",
        `downloaded ${name} (${formatBytes(dl.size)}; ${checkedWording(artifact.sha256, signature)})`,
      );
      return {
        path: file,
        size: dl.size,
        fromCache: false,
        sha256: dl.sha256,
        sha256Pinned: Boolean(artifact.sha256),
        signature,
      };
    },
    {
      signal,
      onWait: (pid) =>
        reporter.info(
          `waiting for another provision process (pid ${pid}) downloading the same image`,
        ),
    },
  );
}

/**
 * The entry's lock, with a cache that cannot hold it (read-only, full) named as such rather
 * than as a raw errno.
 */
async function withCacheLock<T>(
  lockPath: string,
  fn: () => Promise<T>,
  opts: Parameters<typeof withLock>[2],
): Promise<T> {
  let inside = false;
  try {
    return await withLock(
      lockPath,
      () => {
        inside = true;
        return fn();
      },
      opts,
    );
  } catch (err) {
    if (!inside && errnoText(err)) throw cacheFsError(dirname(lockPath), err);
    throw err;
  }
}

async function readEntry(dir: string): Promise<Entry | undefined> {
  try {
    const e = JSON.parse(await readFile(join(dir, "entry.json"), "utf8")) as Entry;
    const s = await stat(join(dir, e.file));
    if (s.size !== e.size) return undefined;
    return e;
  } catch {
    return undefined;
  }
}

async function useEntry(
  e: Entry,
  dir: string,
  artifact: Artifact,
  policy: VerifyPolicy,
  reporter: Reporter,
  signal?: AbortSignal,
): Promise<LocalArtifact> {
  const path = join(dir, e.file);
  let signature = e.signature;
  // A cached entry verified without a key can be upgraded when a key is given now.
  if (signature !== "verified" && (policy.requireSignature || policy.keyringsFromUser)) {
    const sig = `${path}.sig`;
    const hasSig = await stat(sig).then(
      () => true,
      () => false,
    );
    signature = await checkSignature(
      path,
      hasSig ? sig : undefined,
      artifact.url,
      policy,
      reporter,
      signal,
    );
    if (signature !== e.signature)
      await writeFile(join(dir, "entry.json"), JSON.stringify({ ...e, signature }, null, 2));
  }
  const now = new Date();
  await utimes(join(dir, "entry.json"), now, now).catch(() => {});
  reporter.info(`using cached ${e.file} (${checkedWording(e.publishedSha256, signature)})`);
  return {
    path,
    size: e.size,
    fromCache: true,
    sha256: e.sha256,
    sha256Pinned: Boolean(e.publishedSha256),
    signature,
  };
}

async function checkLocal(
  a: Artifact,
  policy: VerifyPolicy,
  reporter: Reporter,
  signal?: AbortSignal,
): Promise<LocalArtifact> {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(a.url)?.[1];
  if (scheme && scheme.toLowerCase() !== "file")
    throw new UsageError(
      `image ${a.url}: ${scheme} is not supported`,
      "use an http:// or https:// URL, or a local path",
    );
  const path = a.url.replace(/^file:\/\//, "");
  const s = await stat(path).catch(() => undefined);
  if (s?.isDirectory()) throw new UsageError(`image ${path} is a directory, not an image file`);
  if (!s?.isFile())
    throw new UsageError(
      `image ${path} does not exist`,
      "pass an existing file or an http(s) URL to --image-url",
    );
  let sha256: string | undefined;
  if (a.sha256) {
    sha256 = await sha256File(path, signal);
    if (sha256 !== a.sha256.toLowerCase())
      throw checksumMismatch(path, a.sha256.toLowerCase(), sha256);
  }
  const sig = `${path}.sig`;
  const hasSig = await stat(sig).then(
    () => true,
    () => false,
  );
  let signature: SignatureStatus = "unsigned";
  if (hasSig && (policy.keyrings.length > 0 || policy.requireSignature)) {
    signature = await checkSignature(path, sig, path, policy, reporter, signal);
  } else if (policy.requireSignature) {
    signature = await checkSignature(path, undefined, path, policy, reporter, signal);
  }
  return {
    path,
    size: s.size,
    fromCache: false,
    sha256,
    sha256Pinned: Boolean(a.sha256),
    signature,
  };
}

// ---------------------------------------------------------------- metadata

/**
 * Fetch a small metadata document (stream JSON, version.txt) with a cached copy: fresh
 * within `maxAgeSeconds` it is used without a request; when the server cannot be reached
 * the cached copy is used with a warning naming its age; `offline` never asks the network.
 */
export async function fetchMetadata(
  url: string,
  opts: {
    offline?: boolean;
    maxAgeSeconds?: number;
    reporter?: Reporter;
    signal?: AbortSignal;
  } = {},
): Promise<string> {
  const reporter = opts.reporter ?? silentReporter;
  const file = join(
    cacheRoot(),
    "meta",
    `${createHash("sha256").update(url).digest("hex").slice(0, 24)}.json`,
  );
  const cached = await readFile(file, "utf8").then(
    (t) => JSON.parse(t) as { url: string; fetchedAt: string; body: string },
    () => undefined,
  );
  const ageSeconds = cached
    ? (Date.now() - Date.parse(cached.fetchedAt)) / 1000
    : Number.POSITIVE_INFINITY;
  if (cached && (opts.offline || ageSeconds < (opts.maxAgeSeconds ?? 3600))) return cached.body;
  if (opts.offline)
    throw new UsageError(
      `${url} is not in the cache and --offline was given`,
      "run once without --offline",
    );
  try {
    const body = await fetchText(url, opts.signal);
    try {
      await ensureCacheDir(join(cacheRoot(), "meta"));
      await writeFile(
        `${file}.tmp`,
        JSON.stringify({ url, fetchedAt: new Date().toISOString(), body }),
      );
      await rename(`${file}.tmp`, file);
    } catch (err) {
      // The document is here; only the offline copy is lost. Say so once and go on.
      reporter.warn(`could not keep a copy of ${url} in the cache: ${describeError(err)}`);
    }
    return body;
  } catch (err) {
    if (cached && isNetworkError(err)) {
      reporter.warn(
        `could not reach ${new URL(url).host} (${describeError(err).replace(`${url}: `, "")}); using the copy of ${url} cached ${formatAge(ageSeconds)} ago`,
      );
      return cached.body;
    }
    throw err; // src/http's errors already name the host and the fix
  }
}

function formatAge(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)} seconds`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} minutes`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} hours`;
  return `${Math.round(seconds / 86400)} days`;
}

// ---------------------------------------------------------------- list / prune

export interface CacheEntryInfo {
  key: string;
  url: string;
  file: string;
  path: string;
  size: number;
  created: string;
  lastUsed: string;
  signature: SignatureStatus;
  partial: boolean;
}

export async function listCache(): Promise<CacheEntryInfo[]> {
  const root = join(cacheRoot(), "images");
  const keys = await readdir(root).catch(() => [] as string[]);
  const out: CacheEntryInfo[] = [];
  for (const key of keys.sort()) {
    if (key.endsWith(".lock")) continue;
    const dir = join(root, key);
    const e = await readEntry(dir);
    if (e) {
      const used = await stat(join(dir, "entry.json"));
      out.push({
        key,
        url: e.url,
        file: e.file,
        path: join(dir, e.file),
        size: e.size,
        created: e.created,
        lastUsed: used.mtime.toISOString(),
        signature: e.signature,
        partial: false,
      });
      continue;
    }
    const files = await readdir(dir).catch(() => [] as string[]);
    const part = files.find((f) => f.endsWith(".part"));
    if (part) {
      const s = await stat(join(dir, part));
      const info = await readFile(join(dir, `${part}.json`), "utf8").then(
        (t) => JSON.parse(t) as { url: string },
        () => ({ url: "?" }),
      );
      out.push({
        key,
        url: info.url,
        file: part,
        path: join(dir, part),
        size: s.size,
        created: s.mtime.toISOString(),
        lastUsed: s.mtime.toISOString(),
        signature: "unsigned",
        partial: true,
      });
    }
  }
  return out;
}

/** Remove entries not used for `olderThanDays` (all with `all`); partial downloads too. */
export async function pruneCache(
  opts: { all?: boolean; olderThanDays?: number } = {},
): Promise<CacheEntryInfo[]> {
  const cutoff = Date.now() - (opts.olderThanDays ?? 30) * 86400_000;
  const removed: CacheEntryInfo[] = [];
  for (const e of await listCache()) {
    if (opts.all || e.partial || Date.parse(e.lastUsed) < cutoff) {
      await rm(join(cacheRoot(), "images", e.key), { recursive: true, force: true });
      removed.push(e);
    }
  }
  if (opts.all) await rm(join(cacheRoot(), "meta"), { recursive: true, force: true });
  return removed;
}

// ---------------------------------------------------------------- corrupt entries

/** The cache entry directory holding `path`, when `path` is a cached image. */
function entryDirOf(path: string): string | undefined {
  const dir = dirname(path);
  return dirname(dir) === join(cacheRoot(), "images") ? dir : undefined;
}

/**
 * An image in the cache failed to decompress or is not an image: re-check it against the
 * sha256 recorded when it was downloaded, and evict it either way (a later run downloads it
 * afresh). Returns what was found, for the error line; undefined for a file not in the cache.
 */
export async function evictBadEntry(
  path: string,
): Promise<"changed-since-download" | "as-downloaded" | undefined> {
  const dir = entryDirOf(path);
  if (!dir) return undefined;
  const e = await readEntry(dir);
  const now = e ? await sha256File(path).catch(() => "") : "";
  await rm(dir, { recursive: true, force: true });
  return e && now === e.sha256 ? "as-downloaded" : "changed-since-download";
}
