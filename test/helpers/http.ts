// A real HTTP server on 127.0.0.1 for tests: static routes, byte ranges, fault injection, and
// route builders for fake Fedora CoreOS stream metadata and Flatcar release servers.
import { createHash } from "node:crypto";
import { createReadStream, readFileSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

/** Faults injected on one path. */
export interface Fault {
  /**
   * First GET of this path only: send the headers (full Content-Length of the response), then
   * this many body bytes, then destroy the socket. Later requests are served normally.
   */
  dropAfterBytes?: number;
  /** Answer with this status (and a short text body) instead of the content. */
  status?: number;
  /** Only the first `statusTimes` requests get `status` (default: every request). */
  statusTimes?: number;
  /** Wait this long before answering. */
  delayMs?: number;
}

/** A route: content plus per-path options. */
export interface Route extends Fault {
  /** Serve this file (absolute path), read at request time. */
  file?: string;
  /** Or serve these bytes. */
  body?: Buffer | string;
  /** Default: from the extension (.json, .txt, .sig …), else application/octet-stream. */
  contentType?: string;
  /** Extra response headers. */
  headers?: Record<string, string>;
  /** false: behave like a server without range support (ignore Range, no Accept-Ranges). */
  ranges?: boolean;
}

/**
 * What a path serves: an absolute file path (a string for which path.isAbsolute() is true),
 * a Buffer, any other string (served as UTF-8 text), or a Route.
 */
export type RouteSpec = string | Buffer | Route;
export type Routes = Record<string, RouteSpec>;

export interface RequestLog {
  method: string;
  /** Path without the query string. */
  path: string;
  /** The Range header, if any. */
  range?: string;
  headers: http.IncomingHttpHeaders;
}

export interface ServerOptions {
  /** Initial routes, or a function of the base URL (e.g. for fcosStreamRoutes). */
  routes?: Routes | ((baseUrl: string) => Routes);
}

export interface TestServer {
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:41234 */
  url: string;
  port: number;
  /** Live route table: add, replace or delete entries at any time. */
  routes: Routes;
  /** Every request received, in order. */
  requests: RequestLog[];
  /** Merge routes into the table. */
  addRoutes(routes: Routes): void;
  /** Add or replace the faults of an existing path (the count for dropAfterBytes restarts). */
  setFault(urlPath: string, fault: Fault): void;
  /** Stop listening and close every open connection. */
  close(): Promise<void>;
}

const contentTypes: Record<string, string> = {
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
  ".ign": "application/json",
  ".ipxe": "text/plain; charset=utf-8",
  ".sig": "application/pgp-signature",
  ".asc": "application/pgp-signature",
};

function toRoute(spec: RouteSpec): Route {
  if (Buffer.isBuffer(spec)) return { body: spec };
  if (typeof spec === "string") return path.isAbsolute(spec) ? { file: spec } : { body: spec };
  return spec;
}

/** Parses a single-range `bytes=` header: `N-`, `N-M` or `-S`. null: ignore (serve all). */
function parseRange(
  header: string,
  size: number,
): { start: number; end: number } | "unsatisfiable" | null {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return null; // multiple ranges or other units: ignore, as RFC 9110 allows
  const [, a = "", b = ""] = m;
  if (a === "" && b === "") return null;
  let start: number;
  let end: number;
  if (a === "") {
    const suffix = Number(b);
    if (suffix === 0) return "unsatisfiable";
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(a);
    end = b === "" ? size - 1 : Math.min(Number(b), size - 1);
    if (b !== "" && Number(b) < start) return null; // invalid: ignore
  }
  if (start >= size) return "unsatisfiable";
  return { start, end };
}

async function readSlice(route: Route, start: number, length: number): Promise<Buffer> {
  if (route.body !== undefined) {
    const buf = Buffer.isBuffer(route.body) ? route.body : Buffer.from(route.body);
    return buf.subarray(start, start + length);
  }
  const fh = await open(route.file as string, "r");
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, start);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Starts a server on 127.0.0.1 with an ephemeral port. */
export async function startServer(opts: ServerOptions = {}): Promise<TestServer> {
  const routes: Routes = {};
  const requests: RequestLog[] = [];
  const getCounts = new Map<string, number>(); // GETs per path, for dropAfterBytes
  const counts = new Map<string, number>(); // requests per path, for statusTimes

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const method = req.method ?? "GET";
    const urlPath = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    const range = req.headers.range;
    requests.push({ method, path: urlPath, ...(range ? { range } : {}), headers: req.headers });

    const spec = routes[urlPath];
    if (spec === undefined) {
      res.writeHead(404, { "Content-Type": "text/plain" }).end(`not found: ${urlPath}\n`);
      return;
    }
    const route = toRoute(spec);
    const n = (counts.get(urlPath) ?? 0) + 1;
    counts.set(urlPath, n);
    if (route.delayMs) await sleep(route.delayMs);
    if (method !== "GET" && method !== "HEAD") {
      res.writeHead(405, { Allow: "GET, HEAD" }).end();
      return;
    }
    if (route.status !== undefined && n <= (route.statusTimes ?? Number.POSITIVE_INFINITY)) {
      res.writeHead(route.status, { "Content-Type": "text/plain" });
      res.end(method === "HEAD" ? undefined : `injected status ${route.status}\n`);
      return;
    }

    let size: number;
    if (route.body !== undefined) {
      size = Buffer.byteLength(route.body);
    } else if (route.file !== undefined) {
      try {
        size = statSync(route.file).size;
      } catch {
        res.writeHead(404, { "Content-Type": "text/plain" }).end(`missing file for ${urlPath}\n`);
        return;
      }
    } else {
      throw new Error(`route ${urlPath} has neither file nor body`);
    }

    const name = route.file ?? urlPath;
    const headers: Record<string, string | number> = {
      "Content-Type":
        route.contentType ?? contentTypes[path.extname(name)] ?? "application/octet-stream",
      ...route.headers,
    };
    const rangesOn = route.ranges !== false;
    if (rangesOn) headers["Accept-Ranges"] = "bytes";

    let start = 0;
    let end = size - 1;
    let status = 200;
    if (rangesOn && range) {
      const r = parseRange(range, size);
      if (r === "unsatisfiable") {
        res.writeHead(416, { ...headers, "Content-Range": `bytes */${size}` }).end();
        return;
      }
      if (r) {
        ({ start, end } = r);
        status = 206;
        headers["Content-Range"] = `bytes ${start}-${end}/${size}`;
      }
    }
    const length = Math.max(0, end - start + 1);
    headers["Content-Length"] = length;

    if (method === "HEAD") {
      res.writeHead(status, headers).end();
      return;
    }
    const gets = (getCounts.get(urlPath) ?? 0) + 1;
    getCounts.set(urlPath, gets);

    if (route.dropAfterBytes !== undefined && gets === 1) {
      const chunk = await readSlice(route, start, Math.min(route.dropAfterBytes, length));
      res.writeHead(status, headers);
      res.flushHeaders();
      res.write(chunk, () => {
        // Written to the kernel: now cut the connection mid-body.
        res.socket?.destroy();
      });
      return;
    }

    res.writeHead(status, headers);
    if (length === 0) {
      res.end();
    } else if (route.body !== undefined) {
      res.end(await readSlice(route, start, length));
    } else {
      const stream = createReadStream(route.file as string, { start, end });
      stream.on("error", () => res.destroy());
      stream.pipe(res);
    }
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { "Content-Type": "text/plain" }).end(`${String(err)}\n`);
      } else {
        res.destroy();
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;

  if (opts.routes)
    Object.assign(routes, typeof opts.routes === "function" ? opts.routes(url) : opts.routes);

  return {
    url,
    port,
    routes,
    requests,
    addRoutes(more) {
      Object.assign(routes, more);
    },
    setFault(urlPath, fault) {
      const spec = routes[urlPath];
      if (spec === undefined) throw new Error(`no route ${urlPath}`);
      routes[urlPath] = { ...toRoute(spec), ...fault };
      getCounts.delete(urlPath);
      counts.delete(urlPath);
    },
    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
    },
  };
}

function sha256File(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

// ---------------------------------------------------------------------------------------------
// Fedora CoreOS stream metadata

export interface FcosStreamOptions {
  /** stable, testing or next. Default stable. */
  stream?: string;
  /** aarch64 or x86_64. Default aarch64. */
  arch?: string;
  /** The raw.xz image to serve (absolute path). */
  imagePath: string;
  /** Detached signature of the image (absolute path). Omit: the .sig URL is listed but 404s. */
  sigPath?: string;
  /** sha256 of the compressed image; default: computed from imagePath. */
  sha256?: string;
  /** sha256 of the uncompressed image; omitted from the metadata when unset (like some builds). */
  uncompressedSha256?: string;
  /** Default 40.20240101.3.0. */
  release?: string;
  /** Default 2024-01-15T12:00:00Z. */
  lastModified?: string;
}

export interface FcosStreamInfo {
  /** URL of /streams/<stream>.json */
  streamUrl: string;
  /** URL paths (relative to the server) of the stream JSON, image and signature. */
  streamPath: string;
  imagePath: string;
  signaturePath: string;
  /** Absolute URLs of the image (raw.xz "location") and its signature. */
  imageUrl: string;
  signatureUrl: string;
  release: string;
  /** The stream metadata document served at streamPath. */
  metadata: FcosStreamMetadata;
}

export interface FcosDisk {
  location: string;
  signature: string;
  sha256: string;
  "uncompressed-sha256"?: string;
}

export interface FcosStreamMetadata {
  stream: string;
  metadata: { "last-modified": string; generator: string };
  architectures: Record<
    string,
    {
      artifacts: Record<
        string,
        { release: string; formats: Record<string, Record<string, FcosDisk>> }
      >;
    }
  >;
}

/** URLs and the metadata document of a fake FCOS stream served from baseUrl. */
export function fcosStreamInfo(baseUrl: string, opts: FcosStreamOptions): FcosStreamInfo {
  const stream = opts.stream ?? "stable";
  const arch = opts.arch ?? "aarch64";
  const release = opts.release ?? "40.20240101.3.0";
  const base = baseUrl.replace(/\/+$/, "");
  const dir = `/prod/streams/${stream}/builds/${release}/${arch}`;
  const name = (suffix: string) => `${dir}/fedora-coreos-${release}-${suffix}`;
  const imagePath = name(`metal.${arch}.raw.xz`);
  const signaturePath = `${imagePath}.sig`;
  const disk = (p: string, sha256: string, uncompressed?: string): FcosDisk => ({
    location: base + p,
    signature: `${base}${p}.sig`,
    sha256,
    ...(uncompressed ? { "uncompressed-sha256": uncompressed } : {}),
  });
  const zeros = "0".repeat(64);
  const sha256 = opts.sha256 ?? sha256File(opts.imagePath);
  const metadata: FcosStreamMetadata = {
    stream,
    metadata: {
      "last-modified": opts.lastModified ?? "2024-01-15T12:00:00Z",
      generator: "fedora-coreos-stream-generator v0.4.0",
    },
    architectures: {
      [arch]: {
        artifacts: {
          metal: {
            release,
            formats: {
              // Not served (404): a client picking the wrong format fails visibly.
              "4k.raw.xz": { disk: disk(name(`metal4k.${arch}.raw.xz`), zeros, zeros) },
              iso: { disk: disk(name(`live.${arch}.iso`), zeros) },
              pxe: {
                kernel: disk(name(`live-kernel-${arch}`), zeros),
                initramfs: disk(name(`live-initramfs.${arch}.img`), zeros),
                rootfs: disk(name(`live-rootfs.${arch}.img`), zeros),
              },
              "raw.xz": { disk: disk(imagePath, sha256, opts.uncompressedSha256) },
            },
          },
          qemu: {
            release,
            formats: { "qcow2.xz": { disk: disk(name(`qemu.${arch}.qcow2.xz`), zeros, zeros) } },
          },
        },
      },
    },
  };
  return {
    streamUrl: `${base}/streams/${stream}.json`,
    streamPath: `/streams/${stream}.json`,
    imagePath,
    signaturePath,
    imageUrl: base + imagePath,
    signatureUrl: base + signaturePath,
    release,
    metadata,
  };
}

/**
 * Routes of a fake FCOS stream: `/streams/<stream>.json` (same shape as
 * builds.coreos.fedoraproject.org) and the raw.xz image plus `.sig` at the URLs it lists.
 */
export function fcosStreamRoutes(baseUrl: string, opts: FcosStreamOptions): Routes {
  const info = fcosStreamInfo(baseUrl, opts);
  const routes: Routes = {
    [info.streamPath]: {
      body: `${JSON.stringify(info.metadata, null, 2)}\n`,
      contentType: "application/json",
    },
    [info.imagePath]: { file: opts.imagePath },
  };
  if (opts.sigPath) routes[info.signaturePath] = { file: opts.sigPath };
  return routes;
}

// ---------------------------------------------------------------------------------------------
// Flatcar release server

export interface FlatcarOptions {
  /** stable, beta or alpha; only used in version.txt (the host name carries it for real). */
  channel?: string;
  /** amd64-usr or arm64-usr. Default arm64-usr. */
  board?: string;
  /** X.Y.Z. Default 3815.2.0. */
  version?: string;
  /** The flatcar_production_image.bin.bz2 to serve (absolute path). */
  imagePath: string;
  /** Its detached signature (absolute path); omitted: the .sig 404s. */
  sigPath?: string;
}

export interface FlatcarInfo {
  versionTxtPath: string;
  imagePath: string;
  signaturePath: string;
  versionTxtUrl: string;
  imageUrl: string;
  signatureUrl: string;
  version: string;
  versionTxt: string;
}

/** URLs and version.txt of a fake Flatcar release server at baseUrl (the `--flatcar-base-url`). */
export function flatcarInfo(baseUrl: string, opts: FlatcarOptions): FlatcarInfo {
  const board = opts.board ?? "arm64-usr";
  const version = opts.version ?? "3815.2.0";
  const [build = "0", branch = "0", patch = "0"] = version.split(".");
  const base = baseUrl.replace(/\/+$/, "");
  const versionTxt = [
    `FLATCAR_BUILD=${build}`,
    `FLATCAR_BRANCH=${branch}`,
    `FLATCAR_PATCH=${patch}`,
    `FLATCAR_VERSION=${version}`,
    `FLATCAR_VERSION_ID=${version}`,
    `FLATCAR_BUILD_ID="${opts.channel ?? "stable"}-${version}"`,
    `FLATCAR_SDK_VERSION=${build}.0.0`,
    "",
  ].join("\n");
  const imagePath = `/${board}/${version}/flatcar_production_image.bin.bz2`;
  return {
    versionTxtPath: `/${board}/current/version.txt`,
    imagePath,
    signaturePath: `${imagePath}.sig`,
    versionTxtUrl: `${base}/${board}/current/version.txt`,
    imageUrl: base + imagePath,
    signatureUrl: `${base}${imagePath}.sig`,
    version,
    versionTxt,
  };
}

/**
 * Routes of a fake Flatcar release server, relative to the base URL that replaces
 * `https://<channel>.release.flatcar-linux.net`: `/<board>/current/version.txt`, and
 * `/<board>/{<version>,current}/version.txt`, `flatcar_production_image.bin.bz2` and `.sig`.
 */
export function flatcarRoutes(baseUrl: string, opts: FlatcarOptions): Routes {
  const info = flatcarInfo(baseUrl, opts);
  const board = opts.board ?? "arm64-usr";
  const routes: Routes = {};
  for (const dir of [info.version, "current"]) {
    routes[`/${board}/${dir}/version.txt`] = { body: info.versionTxt, contentType: "text/plain" };
    routes[`/${board}/${dir}/flatcar_production_image.bin.bz2`] = { file: opts.imagePath };
    if (opts.sigPath)
      routes[`/${board}/${dir}/flatcar_production_image.bin.bz2.sig`] = { file: opts.sigPath };
  }
  return routes;
}
