/**
 * The one place provision speaks HTTP (undici, one connection pool, redirects followed).
 *
 * Every response body is handed, chunk by chunk and synchronously, to a sink chosen from the
 * response head, or the request is aborted: the HTTP/1 parser is never paused for
 * backpressure. A paused parser plus a FIN from the server (HTTP/1.0, `Connection: close`, a
 * server that drops mid-body) crashes undici 7 from a socket event no try/catch reaches
 * (nodejs/undici#5360, fixed only in undici 8). A synchronous sink (a hash update, a
 * writeSync into the page cache) keeps memory flat without pausing: the event loop reads the
 * next chunk only after the sink returned, and TCP holds the rest.
 */
import type { IncomingHttpHeaders } from "node:http";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { Dispatcher } from "undici";
import { describeError, InterruptedError, ProvisionError, UsageError } from "../errors.js";

export interface HttpHead {
  status: number;
  headers: IncomingHttpHeaders;
}

/** Receives the body; throwing aborts the request with that error. */
export type Sink = (chunk: Buffer) => void;

export interface GetOptions {
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Give up when the server sends nothing (headers or body bytes) for this long. */
  timeoutMs?: number;
}

let defaultTimeoutMs = 30_000;

/** `--net-timeout`: how long a silent server is waited for, for every request of this run. */
export function setNetTimeout(ms: number): void {
  defaultTimeoutMs = ms;
}

export function netTimeoutMs(): number {
  return defaultTimeoutMs;
}

// undici is loaded on the first request: a flash from the cache never pays for it.
let dispatcher: Promise<Dispatcher> | undefined;
function agent(): Promise<Dispatcher> {
  // undici parses HTTP/1 with llhttp compiled to WebAssembly, which V8 compiles twice: at
  // once with its baseline compiler (Liftoff), then in the background with its optimizing
  // one. The second copy costs ~9 MB of RSS for the life of the process (provision serve
  // has a memory goal) and CPU, and downloads are no faster for it (1-2 GB/s from 127.0.0.1
  // either way). Set before undici compiles its parser; nothing else here is WebAssembly.
  if (!dispatcher) setFlagsFromString("--liftoff-only");
  dispatcher ??= import("undici").then(({ Agent, interceptors }) =>
    new Agent({ connect: { timeout: 30_000 } }).compose(
      interceptors.redirect({ maxRedirections: 5 }),
    ),
  );
  return dispatcher;
}

/**
 * Body chunks are garbage once the sink returns, but V8 frees a chunk's memory (outside its
 * heap) only when a collection runs, and memory outside the heap alone starts one late: a
 * 1 GiB download held 35-50 MB of dead 64 KiB chunks at any time (provision serve's peak
 * RSS, while it fills its cache). A young-generation collection after every 8 MiB of body,
 * over all requests, keeps that near 10 MB; each costs well under a millisecond (1 GiB from
 * 127.0.0.1: RSS 115 -> 78 MB, and no slower). `gc` is exposed to a fresh context only.
 */
const COLLECT_EVERY = 8 << 20;
let sinceCollect = 0;
let collect: (() => void) | null | undefined;
function collectChunks(bytes: number): void {
  sinceCollect += bytes;
  if (sinceCollect < COLLECT_EVERY) return;
  sinceCollect = 0;
  if (collect === undefined) {
    try {
      setFlagsFromString("--expose-gc");
      const gc = runInNewContext("gc") as (o: { type: "minor" }) => void;
      collect = () => gc({ type: "minor" });
    } catch {
      collect = null; // a runtime without it: memory is freed later, nothing else changes
    }
  }
  collect?.();
}

/** A URL we can GET, or one line saying why not. */
export function parseHttpUrl(url: string, what = "URL"): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(
      `${what} ${url} is not a valid URL`,
      "give a full http:// or https:// URL",
    );
  }
  if (u.protocol !== "http:" && u.protocol !== "https:")
    throw new UsageError(
      `${what} ${url}: ${u.protocol.replace(/:$/, "")} is not supported`,
      "use an http:// or https:// URL (or a local path where one is allowed)",
    );
  return u;
}

const DISCARD = new Error("body discarded");

/**
 * GET `url`. `onHead` sees the status and headers and returns the sink for the body, or
 * undefined to drop the body (the request is aborted, never left unread). Resolves once the
 * body ended, with the head and the number of body bytes; rejects with the network error,
 * the sink's error, or an InterruptedError when `signal` aborts.
 */
export function httpGet(
  url: string,
  onHead: (head: HttpHead) => Sink | undefined,
  opts: GetOptions = {},
): Promise<HttpHead & { bytes: number }> {
  const u = parseHttpUrl(url);
  const timeout = opts.timeoutMs ?? defaultTimeoutMs;
  const { signal } = opts;
  return new Promise((resolve, reject) => {
    let head: HttpHead | undefined;
    let sink: Sink | undefined;
    let bytes = 0;
    let settled = false;
    let controller: Dispatcher.DispatchController | undefined;
    const onAbort = () => controller?.abort(new InterruptedError());
    const settle = (err?: unknown) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener("abort", onAbort);
      if (err !== undefined && err !== DISCARD)
        reject(signal?.aborted ? new InterruptedError() : err);
      else if (!head) reject(new ProvisionError(`${url}: the server sent no response`));
      else resolve({ ...head, bytes });
    };
    if (signal?.aborted) {
      reject(new InterruptedError());
      return;
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c;
        if (signal?.aborted) c.abort(new InterruptedError());
      },
      onResponseStart(c, status, headers) {
        head = { status, headers };
        try {
          sink = onHead(head);
        } catch (err) {
          c.abort(err as Error);
          return;
        }
        if (!sink) c.abort(DISCARD);
      },
      onResponseData(c, chunk) {
        bytes += chunk.length;
        try {
          sink?.(chunk);
        } catch (err) {
          c.abort(err as Error);
        }
        collectChunks(chunk.length);
      },
      onResponseEnd() {
        settle();
      },
      onResponseError(_c, err) {
        settle(err);
      },
    };
    agent()
      .then((d) => {
        if (signal?.aborted) return settle(new InterruptedError());
        d.dispatch(
          {
            origin: u.origin,
            path: `${u.pathname}${u.search}`,
            method: "GET",
            headers: { "user-agent": "provision", ...opts.headers },
            headersTimeout: timeout,
            bodyTimeout: timeout,
          },
          handler,
        );
      })
      .catch((err: unknown) => settle(err));
  });
}

/** Status codes that mean "this URL is wrong", as opposed to "the server has a problem". */
export function isNotFound(status: number): boolean {
  return status === 404 || status === 410;
}

/** The one-line error for a non-2xx answer. */
export function httpStatusError(url: string, status: number): ProvisionError {
  if (isNotFound(status))
    return new UsageError(
      `${url} was not found (HTTP ${status})`,
      "check the URL, stream, channel or release",
    );
  return new ProvisionError(`${url}: the server answered HTTP ${status}`, {
    hint: status >= 500 ? "the server has a problem; try again later" : undefined,
  });
}

/**
 * GET a small document (metadata, version.txt, a signature, an Ignition config) into memory;
 * more than `maxBytes` is an error, not a memory hog.
 */
export async function getBytes(
  url: string,
  opts: GetOptions & { maxBytes?: number } = {},
): Promise<Buffer> {
  const max = opts.maxBytes ?? 64 << 20;
  const chunks: Buffer[] = [];
  let have = 0;
  const head = await httpGet(
    url,
    (h) => {
      if (h.status < 200 || h.status >= 300) return undefined;
      const len = Number(h.headers["content-length"]);
      if (Number.isFinite(len) && len > max) throw tooBig(url, max);
      return (c) => {
        have += c.length;
        if (have > max) throw tooBig(url, max);
        chunks.push(c);
      };
    },
    opts,
  ).catch((err: unknown) => {
    throw networkError(url, err, opts.timeoutMs ?? defaultTimeoutMs);
  });
  if (head.status < 200 || head.status >= 300) throw httpStatusError(url, head.status);
  const len = Number(head.headers["content-length"]);
  if (Number.isFinite(len) && len !== have)
    throw new ProvisionError(`${url}: the connection closed after ${have} of ${len} bytes`, {
      hint: "try again; the server or the network dropped it",
    });
  return Buffer.concat(chunks);
}

function tooBig(url: string, max: number): ProvisionError {
  return new ProvisionError(
    `${url} is bigger than ${max >> 20} MiB; this is not the document expected`,
    {
      hint: "check the URL",
    },
  );
}

const CODE_TEXT: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "the connection was reset",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "name lookup failed (no DNS?)",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ETIMEDOUT: "connection timed out",
  EPIPE: "the connection was closed",
  UND_ERR_SOCKET: "the server closed the connection",
  UND_ERR_CLOSED: "the connection was closed",
  UND_ERR_CONNECT_TIMEOUT: "connecting timed out",
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: "the connection closed before the whole body came",
  HPE_INVALID_CONSTANT: "the answer is not HTTP",
};

function codeOf(err: unknown): string | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown } };
  const c = typeof e?.code === "string" ? e.code : e?.cause?.code;
  return typeof c === "string" ? c : undefined;
}

/** True when an error means "the transfer failed" (worth a retry), not an HTTP answer. */
export function isNetworkError(err: unknown): boolean {
  if (err instanceof ProvisionError) return err.name === "NetworkError";
  const code = codeOf(err);
  return (
    typeof code === "string" &&
    /^(ECONN|ENOTFOUND|EAI_|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE|UND_ERR_|HPE_)/.test(code)
  );
}

/** A transfer failure, as one line naming the server (and kept retryable). */
export class NetworkError extends ProvisionError {
  constructor(message: string, hint?: string) {
    super(message, { hint });
    this.name = "NetworkError";
  }
}

/**
 * One line for a failed transfer: a silent server names the timeout and the flag; typed
 * errors (interruptions, the sink's own) pass through.
 */
export function networkError(url: string, err: unknown, timeoutMs = defaultTimeoutMs): unknown {
  if (err instanceof ProvisionError) return err;
  const code = codeOf(err);
  let host = url;
  try {
    host = new URL(url).host;
  } catch {}
  if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT")
    return new NetworkError(
      `${host} sent nothing for ${Math.round(timeoutMs / 1000)} s (${url})`,
      "the server stalled; try again, or wait longer with --net-timeout",
    );
  if (code && isNetworkError(err))
    return new NetworkError(
      `${url}: ${CODE_TEXT[code] ?? describeError(err)}`,
      "check the network and the URL, then run again (or use --image-url with a local file)",
    );
  return err;
}
