/**
 * HTTP(S) downloads into a partial file, resumed with Range after a dropped connection (in
 * this run: a few retries) or after an interrupted run (the .part file and its validator
 * stay on disk). The sha256 is computed while the bytes arrive.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { Agent, type Dispatcher, interceptors, request } from "undici";
import { describeError, EXIT, ProvisionError, UsageError } from "../errors.js";

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

let dispatcher: Dispatcher | undefined;
/** One connection pool for the process, following redirects (mirrors redirect a lot). */
function agent(): Dispatcher {
  dispatcher ??= new Agent({ connect: { timeout: 30_000 } }).compose(
    interceptors.redirect({ maxRedirections: 5 }),
  );
  return dispatcher;
}

function httpError(url: string, status: number): ProvisionError {
  if (status === 404 || status === 410) {
    return new UsageError(
      `${url} was not found (HTTP ${status})`,
      "check the URL, stream, channel or release",
    );
  }
  return new ProvisionError(`${url}: server answered HTTP ${status}`, { exitCode: EXIT.FAILED });
}

/** GET a small document (metadata, version.txt, a signature) into memory. */
export async function fetchBytes(url: string, signal?: AbortSignal): Promise<Buffer> {
  const res = await request(url, {
    signal,
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
    dispatcher: agent(),
  });
  if (res.statusCode >= 300) {
    await res.body.dump();
    throw httpError(url, res.statusCode);
  }
  return Buffer.from(await res.body.arrayBuffer());
}

export async function fetchText(url: string, signal?: AbortSignal): Promise<string> {
  return (await fetchBytes(url, signal)).toString("utf8");
}

/** True when an error means "could not reach the server" rather than an HTTP answer. */
export function isNetworkError(err: unknown): boolean {
  if (err instanceof ProvisionError) return false;
  const code =
    (err as { code?: string; cause?: { code?: string } }).code ??
    (err as { cause?: { code?: string } }).cause?.code;
  return (
    typeof code === "string" &&
    /^(ECONN|ENOTFOUND|EAI_|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE|UND_ERR_(SOCKET|CONNECT_TIMEOUT|HEADERS_TIMEOUT|BODY_TIMEOUT|CLOSED)|UND_ERR_SHORT)/.test(
      code,
    )
  );
}

async function hashExisting(path: string, hash: Hash): Promise<number> {
  let n = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    n += (chunk as Buffer).length;
  }
  return n;
}

/**
 * Download `url` to `partPath`, resuming what is there when the server's validator still
 * matches. Returns the sha256 of the complete file. Leaves the .part on failure so the next
 * run resumes.
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
    try {
      const res = await request(url, {
        headers,
        signal: opts.signal,
        headersTimeout: 30_000,
        bodyTimeout: 60_000,
        dispatcher: agent(),
      });
      const etag = res.headers.etag as string | undefined;
      const lastModified = res.headers["last-modified"] as string | undefined;
      if (res.statusCode === 416 && have > 0) {
        // Our part is as long as (or longer than) the file: start over to be sure.
        await res.body.dump();
        have = 0;
        hash = createHash("sha256");
        continue;
      }
      if (res.statusCode >= 300) {
        await res.body.dump();
        throw httpError(url, res.statusCode);
      }
      const len = Number(res.headers["content-length"]);
      let fh: Awaited<ReturnType<typeof open>>;
      if (res.statusCode === 200) {
        // Full body: the server ignored or rejected our Range (or we had nothing).
        if (have > 0)
          opts.onRetry?.("server did not resume the download; starting from the beginning");
        hash = createHash("sha256");
        have = 0;
        fh = await open(partPath, "w");
        total = Number.isFinite(len) ? len : undefined;
      } else {
        const range = /bytes (\d+)-(\d+)\/(\d+|\*)/.exec(
          String(res.headers["content-range"] ?? ""),
        );
        if (!range || Number(range[1]) !== have) {
          await res.body.dump();
          throw new ProvisionError(
            `${url}: server sent an unexpected range (${res.headers["content-range"]})`,
          );
        }
        total = range[3] === "*" ? undefined : Number(range[3]);
        fh = await open(partPath, "a");
      }
      if (res.statusCode === 200 || !info) {
        info = { url, validator: etag ?? lastModified };
        await writeFile(infoPath, JSON.stringify(info));
      }
      try {
        for await (const chunk of res.body) {
          const b = chunk as Buffer;
          hash.update(b);
          await fh.write(b);
          have += b.length;
          opts.onProgress?.(have, total);
        }
      } finally {
        await fh.close();
      }
      if (total !== undefined && have !== total) {
        throw Object.assign(new Error(`connection closed after ${have} of ${total} bytes`), {
          code: "UND_ERR_SHORT",
        });
      }
      await rm(infoPath, { force: true });
      return { sha256: hash.digest("hex"), size: have, etag, lastModified };
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      if (err instanceof ProvisionError) throw err;
      if (attempt >= MAX_ATTEMPTS) {
        throw new ProvisionError(
          `download of ${url} failed after ${attempt} attempts: ${describeError(err)}`,
          {
            hint: "run the same command again to resume where it stopped",
          },
        );
      }
      opts.onRetry?.(`download interrupted at ${have} bytes (${describeError(err)}); resuming`);
      await sleep(Math.min(500 * attempt, 3000), undefined, { signal: opts.signal });
    }
  }
}
