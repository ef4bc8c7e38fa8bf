/**
 * HTTP(S) downloads into a partial file, resumed with Range after a dropped connection (in
 * this run: a few retries) or after an interrupted run (the .part file and its validator
 * stay on disk). The sha256 is computed while the bytes arrive; both the hash and the write
 * are synchronous in the body's sink (see src/http), so the parser never pauses.
 *
 * A file-system error (a full or read-only cache) is never retried as if it were the
 * network: it names the directory, the errno and the space needed.
 */
import { createHash, type Hash } from "node:crypto";
import {
  closeSync,
  createReadStream,
  openSync,
  statfsSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { readFile, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describeError, InterruptedError, ProvisionError } from "../errors.js";
import {
  getBytes,
  httpGet,
  httpStatusError,
  isNetworkError,
  NetworkError,
  networkError,
} from "../http/index.js";
import { formatBytes } from "../progress/index.js";

export { isNetworkError } from "../http/index.js";

export interface DownloadResult {
  sha256: string;
  size: number;
  etag?: string;
  lastModified?: string;
}

interface PartInfo {
  url: string;
  validator?: string;
}

const MAX_ATTEMPTS = 6;

/** GET a small document (metadata, version.txt, a signature) into memory. */
export async function fetchBytes(url: string, signal?: AbortSignal): Promise<Buffer> {
  return await getBytes(url, { signal });
}

export async function fetchText(url: string, signal?: AbortSignal): Promise<string> {
  return (await fetchBytes(url, signal)).toString("utf8");
}

async function hashExisting(path: string, hash: Hash): Promise<number> {
  let n = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    n += (chunk as Buffer).length;
  }
  return n;
}

/** A local file error while downloading: the cache's problem, not the network's. */
export function cacheFsError(dir: string, err: unknown, size?: number): ProvisionError {
  const e = err as NodeJS.ErrnoException & { free?: number; needed?: number };
  const code = e.code ?? "";
  const need =
    e.needed !== undefined
      ? `: ${formatBytes(e.needed)} needed, ${formatBytes(e.free ?? 0)} free`
      : size !== undefined
        ? `; the image is ${formatBytes(size)}`
        : "";
  if (code === "ENOSPC" || code === "EDQUOT")
    return new ProvisionError(`the cache directory ${dir} is full (${code})${need}`, {
      hint: "free space there, or point XDG_CACHE_HOME at a bigger disk; provision cache prune removes old images",
    });
  if (code === "ENOTDIR" || code === "ENOENT")
    return new ProvisionError(`cannot create the cache directory ${dir} (${code})`, {
      hint: "set XDG_CACHE_HOME to a directory you can write",
    });
  if (code === "EROFS" || code === "EACCES" || code === "EPERM")
    return new ProvisionError(`cannot write to the cache directory ${dir} (${code})`, {
      hint: "make it writable, or set XDG_CACHE_HOME to a directory you can write",
    });
  return new ProvisionError(
    `writing the download into ${dir} failed (${code || describeError(err)})`,
  );
}

/** Free bytes under `dir` for an unprivileged writer, or undefined when unknown. */
function freeBytes(dir: string): number | undefined {
  try {
    const s = statfsSync(dir);
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return undefined;
  }
}

/**
 * Download `url` to `partPath`, resuming what is there when the server's validator still
 * matches. Returns the sha256 of the complete file. Leaves the .part on a network failure so
 * the next run resumes; removes it when the cache's disk is the problem.
 */
export async function downloadResumable(
  url: string,
  partPath: string,
  opts: {
    signal?: AbortSignal;
    onProgress?: (done: number, total?: number) => void;
    onRetry?: (msg: string) => void;
  } = {},
): Promise<DownloadResult> {
  const dir = dirname(partPath);
  const infoPath = `${partPath}.json`;
  let info: PartInfo | undefined;
  try {
    info = JSON.parse(await readFile(infoPath, "utf8")) as PartInfo;
    if (info.url !== url) info = undefined;
  } catch {}
  let have = info
    ? await stat(partPath).then(
        (s) => s.size,
        () => 0,
      )
    : 0;
  if (have === 0) await rm(partPath, { force: true });

  let hash = createHash("sha256");
  if (have > 0) await hashExisting(partPath, hash);

  let attempt = 0;
  for (;;) {
    attempt++;
    const headers: Record<string, string> = {};
    if (have > 0) {
      headers.range = `bytes=${have}-`;
      if (info?.validator) headers["if-range"] = info.validator;
    }
    let total: number | undefined;
    let fd: number | undefined;
    let restart = false;
    let fsError: unknown;
    const fsFailed = (err: unknown) => {
      fsError = err;
      return err;
    };
    try {
      const res = await httpGet(
        url,
        (h) => {
          if (h.status === 416 && have > 0) {
            restart = true; // our part is as long as the file (or longer): start over
            return undefined;
          }
          if (h.status < 200 || h.status >= 300) return undefined;
          const len = Number(h.headers["content-length"]);
          if (h.status === 200) {
            // Full body: the server ignored or rejected our Range (or we had nothing).
            if (have > 0)
              opts.onRetry?.("the server did not resume the download; starting from the beginning");
            hash = createHash("sha256");
            have = 0;
            total = Number.isFinite(len) ? len : undefined;
          } else {
            const range = /bytes (\d+)-(\d+)\/(\d+|\*)/.exec(
              String(h.headers["content-range"] ?? ""),
            );
            if (h.status !== 206 || !range || Number(range[1]) !== have)
              throw new ProvisionError(
                `${url}: the server sent an unexpected range (${h.headers["content-range"] ?? `HTTP ${h.status}`})`,
              );
            total = range[3] === "*" ? undefined : Number(range[3]);
          }
          const needed = total !== undefined ? total - have : undefined;
          const free = freeBytes(dir);
          if (needed !== undefined && free !== undefined && free < needed)
            throw fsFailed(Object.assign(new Error("no space"), { code: "ENOSPC", free, needed }));
          try {
            fd = openSync(partPath, have > 0 ? "a" : "w", 0o644);
            if (h.status === 200 || !info) {
              info = {
                url,
                validator: (h.headers.etag ?? h.headers["last-modified"]) as string | undefined,
              };
              writeFileSync(infoPath, JSON.stringify(info));
            }
          } catch (err) {
            throw fsFailed(err);
          }
          return (chunk) => {
            try {
              writeSync(fd as number, chunk);
            } catch (err) {
              throw fsFailed(err);
            }
            hash.update(chunk);
            have += chunk.length;
            opts.onProgress?.(have, total);
          };
        },
        { headers, signal: opts.signal },
      ).finally(() => {
        if (fd !== undefined) closeSync(fd);
      });
      if (restart) {
        have = 0;
        hash = createHash("sha256");
        continue;
      }
      if (res.status < 200 || res.status >= 300) throw httpStatusError(url, res.status);
      if (total !== undefined && have !== total)
        throw new NetworkError(
          `${url}: the connection closed after ${formatBytes(have)} of ${formatBytes(total)}`,
        );
      await rm(infoPath, { force: true });
      return {
        sha256: hash.digest("hex"),
        size: have,
        etag: res.headers.etag as string | undefined,
        lastModified: res.headers["last-modified"] as string | undefined,
      };
    } catch (err) {
      if (opts.signal?.aborted) throw new InterruptedError();
      if (fsError !== undefined) {
        await rm(partPath, { force: true });
        await rm(infoPath, { force: true });
        throw cacheFsError(dir, fsError, total !== undefined ? total : undefined);
      }
      const e = networkError(url, err);
      if (!isNetworkError(e)) throw e;
      if (attempt >= MAX_ATTEMPTS) {
        throw new ProvisionError(
          `download of ${url} failed after ${attempt} attempts: ${describeError(e).replace(`${url}: `, "")}`,
          { hint: "run the same command again to resume where it stopped" },
        );
      }
      opts.onRetry?.(
        `download interrupted at ${formatBytes(have)} (${describeError(e).replace(`${url}: `, "")}); resuming`,
      );
      await sleep(Math.min(500 * attempt, 3000), undefined, { signal: opts.signal }).catch(() => {
        throw new InterruptedError();
      });
    }
  }
}
