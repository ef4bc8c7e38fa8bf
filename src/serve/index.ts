/**
 * `provision serve`: netboots the fleet of provision.yaml. Every request reads the inventory
 * and builds what it answers from the sources as they are now, so a config is never stale or
 * unpublished:
 *
 *   GET /boot.ipxe            a fixed script that chains to /ipxe with the machine's MAC,
 *                             UUID, host name and architecture
 *   GET /ipxe?mac=&uuid=      the matching host's kernel, initrds and arguments (pointing at
 *                             /assets and /ignition here); an unknown machine gets a script
 *                             that says so and retries, and is recorded
 *   GET /ignition?mac=&uuid=  the host's config, built on this request, ETag = fingerprint
 *   GET /assets/...           kernel/initrd/rootfs from the verified cache (src/cache),
 *                             downloaded and checked on first use; Range and HEAD work
 *   GET /status               what each machine fetched, and whether that is still current
 *
 * Every URL handed out carries `token=`; a request without it gets 403. State is kept in one
 * JSON file written atomically, so a restart (or kill -9) loses nothing.
 */
import { createHash } from "node:crypto";
import { type Stats, statSync } from "node:fs";
import { mkdir, open, readFile, rename, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { basename, dirname } from "node:path";
import { describeError, ProvisionError } from "../errors.js";
import { type BuiltHost, buildHost } from "../fleet/build.js";
import { loadInventory, normalizeMac } from "../fleet/inventory.js";
import type { Host, Inventory } from "../fleet/types.js";
import { type PxeBoot, resolveImage, resolvePxe } from "../source/index.js";

export interface HostState {
  lastIpxe: string | null;
  lastIgnition: string | null;
  client: string | null;
  servedFingerprint: string | null;
}

export interface UnknownMachine {
  mac: string | null;
  uuid: string | null;
  hostname: string | null;
  arch: string | null;
  client: string | null;
  firstSeen: string;
  lastSeen: string;
  requests: number;
}

export interface ServeState {
  hosts: Record<string, HostState>;
  unknown: UnknownMachine[];
}

export interface ServeOptions {
  inventoryFile: string;
  host: string;
  port: number;
  token: string;
  stateFile: string;
  /** One line per request: JSON lines instead of text. */
  json?: boolean;
  log: (line: string) => void;
  /** Before listening, download and verify every pxe host's boot files into the cache. */
  prefetch?: boolean;
  /** Progress lines (prefetch). */
  info?: (line: string) => void;
  /** Where assets come from and how they are checked (the flags flash has). */
  source: {
    flatcarBaseUrl?: string;
    streamBaseUrl?: string;
    offline?: boolean;
    keyrings?: string[];
  };
}

export interface RunningServer {
  url: string;
  close(): Promise<void>;
}

const emptyHost = (): HostState => ({
  lastIpxe: null,
  lastIgnition: null,
  client: null,
  servedFingerprint: null,
});

export async function loadState(file: string): Promise<ServeState> {
  try {
    const s = JSON.parse(await readFile(file, "utf8")) as ServeState;
    return { hosts: s.hosts ?? {}, unknown: Array.isArray(s.unknown) ? s.unknown : [] };
  } catch {
    return { hosts: {}, unknown: [] };
  }
}

/** Written to a temporary file and renamed: a reader (or a crash) never sees half of it. */
async function saveState(file: string, state: ServeState): Promise<void> {
  await writeFile(`${file}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
  await rename(`${file}.tmp`, file);
}

/**
 * Saves grouped as a database commits: a save asked for while one is being written waits
 * for the next one, which starts when the current one is done and holds every change made
 * until then. A request answers after the save holding its change, so a kill -9 loses no
 * answered request, and 200 machines booting at once cost a few writes, not 600.
 */
function groupSaver(write: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  let next: Promise<void> | undefined;
  const start = (): Promise<void> => {
    running = write().finally(() => {
      running = undefined;
    });
    return running;
  };
  return () => {
    if (!running) return start();
    next ??= running
      .catch(() => {})
      .then(() => {
        next = undefined;
        return start();
      });
    return next;
  };
}

export interface HostStatus extends HostState {
  macs: string[];
  currentFingerprint: string | null;
  /** The machine fetched a config that is no longer what its sources give. */
  stale: boolean;
  error?: string;
}

/**
 * /status and `provision fleet status`: each host's saved state next to the fingerprint its
 * sources give now (built with `build`), and the unknown machines.
 */
export async function statusOf(
  inv: Inventory,
  state: ServeState,
  build: (inv: Inventory, host: Host) => Promise<BuiltHost>,
): Promise<{ hosts: Record<string, HostStatus>; unknown: UnknownMachine[] }> {
  const hosts: Record<string, HostStatus> = {};
  for (const h of inv.hosts) {
    const s = state.hosts[h.name] ?? emptyHost();
    let current: string | null = null;
    let error: string | undefined;
    try {
      current = (await build(inv, h)).fingerprint.sha256;
    } catch (err) {
      error = describeError(err);
    }
    hosts[h.name] = {
      ...s,
      macs: h.macs,
      currentFingerprint: current,
      stale: s.servedFingerprint !== null && current !== null && s.servedFingerprint !== current,
      ...(error ? { error } : {}),
    };
  }
  return { hosts, unknown: state.unknown };
}

/** Every file a PXE boot loads: kernel, initrds, and the FCOS live rootfs. */
function pxeUrls(boot: PxeBoot): string[] {
  return [
    boot.kernel,
    ...boot.initrds.map((i) => i.url),
    ...boot.kernelArgs.flatMap((a) => /^coreos\.live\.rootfs_url=(.*)$/.exec(a)?.[1] ?? []),
  ];
}

/** A host by MAC (any common spelling) or by SMBIOS UUID. */
export function findHost(
  inv: Inventory,
  mac?: string | null,
  uuid?: string | null,
): Host | undefined {
  const m = mac ? normalizeMac(mac) : undefined;
  const u = uuid?.trim().toLowerCase();
  return inv.hosts.find(
    (h) => (m !== undefined && h.macs.includes(m)) || (u && h.uuid !== undefined && h.uuid === u),
  );
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Calls for a key while an earlier one for it is still running get that one's promise; once
 * it settles, the next call starts afresh (nothing is kept: a later call sees later inputs).
 */
function sharedWhileRunning<T>(): (key: string, start: () => Promise<T>) => Promise<T> {
  const running = new Map<string, Promise<T>>();
  return (key, start) => {
    let p = running.get(key);
    if (!p) {
      p = start().finally(() => running.delete(key));
      running.set(key, p);
    }
    return p;
  };
}

/** Asset responses: this many buffers of this size each (see sendRange). */
const SEND_BUFFERS = 2;
const SEND_CHUNK = 512 << 10;

/**
 * Send buffers free for the next response. Each response holds at most SEND_BUFFERS at a
 * time and a stalled client keeps its own, so there is no cap to wait on (no client can
 * starve the others); what is kept idle is capped.
 */
const sendBuffers = {
  free: [] as Buffer[],
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(SEND_CHUNK);
  },
  give(buf: Buffer): void {
    if (this.free.length < 6) this.free.push(buf);
  },
};

export async function startServe(o: ServeOptions): Promise<RunningServer> {
  await mkdir(dirname(o.stateFile), { recursive: true });
  const state = await loadState(o.stateFile);
  const save = groupSaver(() => saveState(o.stateFile, state));
  const tokenQ = `token=${encodeURIComponent(o.token)}`;

  // The sha256 of a file as it is now ("" when it cannot be read). Each request stats the
  // file; while what stat says (size, mtime, ctime, inode) is what it said when the file was
  // last hashed, that hash is the answer, so 200 machines asking at once cost 200 stats, not
  // 200 reads (open, fstat, read, close, each a trip through the thread pool). A file whose
  // mtime was under 2 s before it was hashed is read again every time, as git treats such
  // "racy" entries: a same-size edit within one tick of a coarse clock (FAT, some NFS) would
  // otherwise keep the old stat. An edit is seen by the next request either way. Requests that
  // ask while a stat or read of the file is under way share it.
  const hashes = new Map<string, { key: string; sha: string; racy: boolean }>();
  const RACY_MS = 2000;
  const checkSha = async (path: string): Promise<string> => {
    // statSync: a few microseconds on the event loop, where a promise stat costs several
    // times that in bookkeeping (it was the top item of a profile under 200 clients).
    let st: Stats | undefined;
    try {
      st = statSync(path, { throwIfNoEntry: false });
    } catch {
      st = undefined;
    }
    if (!st) {
      hashes.delete(path);
      return "";
    }
    const key = `${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.ino}`;
    const known = hashes.get(path);
    if (known && known.key === key && !known.racy) return known.sha;
    const hashedAt = Date.now();
    const sha = await readFile(path).then(
      (bytes) => createHash("sha256").update(bytes).digest("hex"),
      () => "",
    );
    if (sha) hashes.set(path, { key, sha, racy: st.mtimeMs > hashedAt - RACY_MS });
    else hashes.delete(path);
    return sha;
  };
  const checking = sharedWhileRunning<string>();
  const currentSha = (path: string): Promise<string> => checking(path, () => checkSha(path));

  // The inventory is read on every request; it is parsed again only when its bytes changed
  // (parsing 200 hosts costs ~11 ms of CPU, reading and hashing the file a fraction of it).
  // Fragments are read by each build, so an edit to one is seen at once either way.
  let parsed: { sha: string; inv: Promise<Inventory> } | undefined;
  const inventory = async (): Promise<Inventory> => {
    const sha = await currentSha(o.inventoryFile);
    if (!parsed || parsed.sha !== sha || !sha) {
      parsed = { sha, inv: loadInventory(o.inventoryFile) };
      parsed.inv.catch(() => {
        parsed = undefined; // a broken inventory is parsed (and reported) again next time
      });
    }
    return await parsed.inv;
  };

  // What a host boots is a function of its os, arch and channel/stream/release and of the
  // release metadata, which the cache keeps for an hour: it is worked out once a minute per
  // kind of host, not once per /ipxe (200 machines of one kind share it). A failure is not
  // kept; the next request tries again.
  const PXE_TTL_MS = 60_000;
  const pxeKnown = new Map<
    string,
    { at: number; p: Promise<{ boot: PxeBoot; release: string }> }
  >();
  const pxeFor = (host: Host): Promise<{ boot: PxeBoot; release: string }> => {
    const key = JSON.stringify([host.os, host.arch, host.channel, host.release, host.stream]);
    const known = pxeKnown.get(key);
    if (known && Date.now() - known.at < PXE_TTL_MS) return known.p;
    const p = resolveHostPxe(host);
    pxeKnown.set(key, { at: Date.now(), p });
    p.catch(() => {
      if (pxeKnown.get(key)?.p === p) pxeKnown.delete(key);
    });
    return p;
  };
  const resolveHostPxe = async (host: Host): Promise<{ boot: PxeBoot; release: string }> => {
    const arch = host.arch ?? "x86_64";
    if (host.os === "flatcar") {
      // "current" is resolved to its version, so the cache holds one file per release.
      const channel = host.channel ?? "stable";
      let release = host.release ?? "current";
      if (release === "current") {
        const img = await resolveImage(
          { os: "flatcar", arch, channel, release, flatcarBaseUrl: o.source.flatcarBaseUrl },
          { offline: o.source.offline },
        );
        release = /\/(\d+\.\d+\.\d+)\//.exec(img.url)?.[1] ?? release;
      }
      const boot = await resolvePxe({
        os: "flatcar",
        arch,
        channel,
        release,
        flatcarBaseUrl: o.source.flatcarBaseUrl,
      });
      return { boot, release: `${channel}-${release}` };
    }
    const stream = host.stream ?? "stable";
    const boot = await resolvePxe(
      { os: "fcos", arch, stream, streamBaseUrl: o.source.streamBaseUrl },
      { offline: o.source.offline },
    );
    return { boot, release: stream };
  };

  /** Upstream URL → this server's /assets path (same file name). */
  const assetPath = (os: string, release: string, arch: string, upstream: string) =>
    `/assets/${os}/${release}/${arch}/${basename(new URL(upstream).pathname)}`;

  const ipxeFor = async (host: Host, base: string): Promise<string> => {
    const { boot, release } = await pxeFor(host);
    const arch = host.arch ?? "x86_64";
    const local = (u: string) => `${base}${assetPath(host.os, release, arch, u)}?${tokenQ}`;
    const args = boot.kernelArgs.map((a) =>
      a.replace(
        /^(coreos\.live\.rootfs_url=)(.*)$/,
        (_m, k: string, u: string) => `${k}${local(u)}`,
      ),
    );
    const mac = host.macs[0] ?? "";
    const ign = `${base}/ignition?mac=${mac}&${tokenQ}`;
    return [
      "#!ipxe",
      `# provision serve: ${host.name} (${boot.description})`,
      `echo provision: booting ${host.name}: ${boot.description}`,
      `kernel ${local(boot.kernel)} ${[...args, `ignition.config.url=${ign}`, `systemd.hostname=${host.name}`, ...host.kargs].join(" ")}`,
      ...boot.initrds.map((i) => `initrd ${i.name ? `--name ${i.name} ` : ""}${local(i.url)}`),
      "boot",
      "",
    ].join("\n");
  };

  const unknownScript = (base: string) =>
    [
      "#!ipxe",
      "echo provision serve: this machine (${net0/mac}) is not in the inventory.",
      "echo Add its MAC to a host's macs: in provision.yaml; it is tried again in 30 s.",
      "sleep 30",
      `chain ${base}/boot.ipxe?${tokenQ}`,
      "",
    ].join("\n");

  const recordUnknown = (q: URLSearchParams, client: string) => {
    const mac = q.get("mac") ? (normalizeMac(q.get("mac") as string) ?? q.get("mac")) : null;
    const uuid = q.get("uuid")?.toLowerCase() || null;
    const now = new Date().toISOString();
    let u = state.unknown.find((x) => (mac && x.mac === mac) || (!mac && uuid && x.uuid === uuid));
    if (!u) {
      u = {
        mac,
        uuid,
        hostname: null,
        arch: null,
        client,
        firstSeen: now,
        lastSeen: now,
        requests: 0,
      };
      state.unknown.push(u);
    }
    u.hostname = q.get("hostname") || u.hostname;
    u.arch = q.get("arch") || u.arch;
    u.client = client;
    u.lastSeen = now;
    u.requests++;
    return save();
  };

  const hostState = (name: string) => {
    state.hosts[name] ??= emptyHost();
    return state.hosts[name] as HostState;
  };

  // A build is a function of its source files (the inventory among them): while every one of
  // them still has the content it had, the last build is the answer. Checked on every
  // request by hashing the files, so an edit takes effect at once.
  const memo = new Map<string, BuiltHost>();
  const unchanged = async (b: BuiltHost) => {
    const now = await Promise.all(b.fingerprint.sources.map((src) => currentSha(src.path)));
    return b.fingerprint.sources.every((src, i) => now[i] === src.sha256);
  };
  // Requests for one host at the same time (a rack powering on) share one build.
  const building = sharedWhileRunning<BuiltHost>();
  const build = (inv: Inventory, host: Host): Promise<BuiltHost> =>
    building(host.name, () => buildHost(inv, host, { secrets: "placeholder" }));
  const built = async (inv: Inventory, host: Host): Promise<BuiltHost> => {
    const prev = memo.get(host.name);
    const b = prev && (await unchanged(prev)) ? prev : await build(inv, host);
    memo.set(host.name, b);
    if (b.secretsInConfig.length > 0)
      throw new HttpError(
        500,
        `${host.name}: its config holds secret values (${b.secretsInConfig.join(", ")}); serve never serves them`,
      );
    return b;
  };

  const status = async () => statusOf(await inventory(), state, (inv, h) => built(inv, h));

  /**
   * Bytes start..end (inclusive) of a file as the response body, through a few buffers used
   * over and over: a buffer is read into again only once the socket has taken its last
   * chunk (the write callback), so memory stays flat and no chunk is allocated per read
   * (a read stream's fresh buffer per chunk made the garbage collector half the work). The
   * buffers outlive the response (sendBuffers): before, each response allocated its own, and
   * ten clients downloading five times each left 75 MB of dead buffers for the garbage
   * collector to find.
   */
  const sendRange = async (res: http.ServerResponse, path: string, start: number, end: number) => {
    const fh = await open(path, "r");
    const writing: Promise<void>[] = [];
    try {
      let failed: Error | undefined;
      res.once("close", () => {
        if (!res.writableFinished) failed ??= new Error("the client went away");
      });
      let pos = start;
      while (pos <= end) {
        if (writing.length === SEND_BUFFERS) await writing.shift();
        if (failed || res.destroyed) return;
        const buf = sendBuffers.take();
        let bytesRead: number;
        try {
          ({ bytesRead } = await fh.read(buf, 0, Math.min(SEND_CHUNK, end + 1 - pos), pos));
          if (bytesRead === 0) throw new Error(`${path} is shorter than it was`);
        } catch (err) {
          sendBuffers.give(buf);
          throw err;
        }
        pos += bytesRead;
        writing.push(
          new Promise<void>((resolve) =>
            res.write(buf.subarray(0, bytesRead), (err) => {
              if (err) failed ??= err;
              sendBuffers.give(buf);
              resolve();
            }),
          ),
        );
      }
      await Promise.all(writing);
      if (!failed) res.end();
    } finally {
      await Promise.all(writing);
      await fh.close();
    }
  };

  /** A file with Range and HEAD; returns the bytes sent. */
  const sendFile = async (req: http.IncomingMessage, res: http.ServerResponse, path: string) => {
    const size = statSync(path).size;
    const range = /^bytes=(\d*)-(\d*)$/.exec(String(req.headers.range ?? ""));
    let start = 0;
    let end = size - 1;
    if (req.headers.range) {
      if (!range || (range[1] === "" && range[2] === "")) throw new HttpError(416, "bad range");
      if (range[1] === "") start = Math.max(0, size - Number(range[2]));
      else {
        start = Number(range[1]);
        if (range[2] !== "") end = Math.min(Number(range[2]), size - 1);
      }
      if (start > end || start >= size) {
        res.writeHead(416, { "content-range": `bytes */${size}` });
        res.end();
        return;
      }
    }
    const headers: http.OutgoingHttpHeaders = {
      "content-type": "application/octet-stream",
      "content-length": end - start + 1,
      "accept-ranges": "bytes",
    };
    if (req.headers.range) headers["content-range"] = `bytes ${start}-${end}/${size}`;
    res.writeHead(req.headers.range ? 206 : 200, headers);
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    await sendRange(res, path, start, end);
  };

  /** A boot file from the verified cache (downloaded and signature-checked on first use). */
  const cached = async (os: "flatcar" | "fcos", upstream: string) => {
    const { fetchArtifact, findDistroKeyrings } = await import("../cache/index.js");
    const keyrings = o.source.keyrings?.length ? o.source.keyrings : await findDistroKeyrings(os);
    return await fetchArtifact(
      { url: upstream, signatureUrl: `${upstream}.sig` },
      {
        offline: o.source.offline,
        policy: {
          keyrings,
          keyringsFromUser: Boolean(o.source.keyrings?.length),
          requireSignature: false,
        },
      },
    );
  };

  const asset = async (req: http.IncomingMessage, res: http.ServerResponse, parts: string[]) => {
    const [os, release, arch, file] = parts;
    if (!os || !release || !arch || !file || parts.length !== 4)
      throw new HttpError(404, "no such asset");
    if (os !== "flatcar" && os !== "fcos") throw new HttpError(404, `no OS ${os}`);
    if (arch !== "x86_64" && arch !== "aarch64") throw new HttpError(404, `no arch ${arch}`);
    let boot: PxeBoot;
    if (os === "flatcar") {
      const m = /^(stable|beta|alpha|lts)-(\d+\.\d+\.\d+)$/.exec(release);
      if (!m) throw new HttpError(404, `no Flatcar release ${release}`);
      boot = await resolvePxe({
        os,
        arch,
        channel: m[1],
        release: m[2],
        flatcarBaseUrl: o.source.flatcarBaseUrl,
      });
    } else {
      boot = await resolvePxe(
        { os, arch, stream: release, streamBaseUrl: o.source.streamBaseUrl },
        { offline: o.source.offline },
      );
    }
    const upstream = pxeUrls(boot).find((u) => basename(new URL(u).pathname) === file);
    if (!upstream) throw new HttpError(404, `${file} is not part of ${os} ${release} ${arch}`);
    const local = await cached(os, upstream).catch((err: unknown) => {
      throw new HttpError(502, `${upstream}: ${describeError(err)}`);
    });
    await sendFile(req, res, local.path);
  };

  const handle = async (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    ctx: { who: string },
  ) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (req.method !== "GET" && req.method !== "HEAD") throw new HttpError(405, "GET or HEAD only");
    if (url.searchParams.get("token") !== o.token) throw new HttpError(403, "no or wrong token");
    const base = `http://${req.headers.host ?? `${o.host}:${o.port}`}`;
    const client = req.socket.remoteAddress ?? "?";
    const q = url.searchParams;
    const text = (
      body: string,
      type = "text/plain; charset=utf-8",
      extra: http.OutgoingHttpHeaders = {},
    ) => {
      res.writeHead(200, {
        "content-type": type,
        "content-length": Buffer.byteLength(body),
        ...extra,
      });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    /** The inventory's host for this request's MAC or UUID; an unknown one is recorded. */
    const machine = async (): Promise<{ inv: Inventory; host?: Host }> => {
      const inv = await inventory();
      const host = findHost(inv, q.get("mac"), q.get("uuid"));
      ctx.who = host?.name ?? q.get("mac") ?? q.get("uuid") ?? "?";
      if (!host) await recordUnknown(q, client);
      return { inv, host };
    };
    switch (url.pathname) {
      case "/boot.ipxe":
        return text(
          [
            "#!ipxe",
            "# provision serve: who am I? The answer is this machine's own script.",
            `chain ${base}/ipxe?mac=\${net0/mac:hexhyp}&uuid=\${uuid}&hostname=\${hostname}&arch=\${buildarch}&${tokenQ}`,
            "",
          ].join("\n"),
        );
      case "/ipxe": {
        const { host } = await machine();
        if (!host) return text(unknownScript(base));
        const script = await ipxeFor(host, base);
        Object.assign(hostState(host.name), { lastIpxe: new Date().toISOString(), client });
        await save();
        return text(script);
      }
      case "/ignition": {
        const { inv, host } = await machine();
        if (!host) throw new HttpError(404, "not in the inventory");
        const b = await built(inv, host);
        const etag = `"${b.fingerprint.sha256}"`;
        Object.assign(hostState(host.name), {
          lastIgnition: new Date().toISOString(),
          client,
          servedFingerprint: b.fingerprint.sha256,
        });
        await save();
        if (req.headers["if-none-match"] === etag) {
          res.writeHead(304, { etag });
          res.end();
          return;
        }
        return text(b.config.text, "application/vnd.coreos.ignition+json", { etag });
      }
      case "/status":
        return text(`${JSON.stringify(await status(), null, 2)}\n`, "application/json");
      default:
        if (url.pathname.startsWith("/assets/"))
          return await asset(req, res, url.pathname.slice("/assets/".length).split("/"));
        throw new HttpError(404, "not found");
    }
  };

  // Every host's config is built (and validated) once before listening: a host whose config
  // does not build is named now rather than at its next boot, and the first boots of a whole
  // rack are answered from builds already checked (each request still re-checks the sources).
  {
    const inv = await inventory();
    const t0 = Date.now();
    let bad = 0;
    for (const h of inv.hosts)
      await built(inv, h).catch((err: unknown) => {
        bad++;
        o.info?.(`${h.name}: its config does not build: ${describeError(err)}`);
      });
    o.info?.(
      `built ${inv.hosts.length - bad} of ${inv.hosts.length} config(s) in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
  }

  if (o.prefetch) {
    const inv = await inventory();
    const done = new Set<string>();
    for (const h of inv.hosts.filter((x) => x.boot === "pxe")) {
      const { boot, release } = await pxeFor(h);
      for (const u of pxeUrls(boot)) {
        const path = assetPath(h.os, release, h.arch ?? "x86_64", u);
        if (done.has(path)) continue;
        done.add(path);
        o.info?.(`prefetching ${u}`);
        await cached(h.os, u);
      }
    }
    o.info?.(`prefetched ${done.size} file(s) for the pxe hosts`);
  }

  const server = http.createServer((req, res) => {
    const started = Date.now();
    const ctx = { who: "-" };
    // Body bytes sent, counted where they are written (write and end).
    let bytes = 0;
    const count = (chunk: unknown) => {
      if (chunk && typeof chunk !== "function") bytes += Buffer.byteLength(chunk as Buffer);
    };
    const write = res.write.bind(res);
    const end = res.end.bind(res);
    res.write = ((chunk: unknown, ...rest: unknown[]) => {
      count(chunk);
      return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof res.write;
    res.end = ((chunk?: unknown, ...rest: unknown[]) => {
      count(chunk);
      return (end as (...a: unknown[]) => http.ServerResponse)(chunk, ...rest);
    }) as typeof res.end;
    res.on("finish", () => {
      const path = (req.url ?? "/").split("?")[0];
      const ms = Date.now() - started;
      o.log(
        o.json
          ? JSON.stringify({
              time: new Date().toISOString(),
              method: req.method,
              path,
              host: ctx.who,
              status: res.statusCode,
              bytes,
              ms,
              client: req.socket.remoteAddress,
            })
          : `${req.method} ${path} ${ctx.who} ${res.statusCode} ${bytes} ${ms}ms`,
      );
    });
    handle(req, res, ctx).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      const msg = describeError(err);
      if (status >= 500 || !(err instanceof HttpError) || err instanceof ProvisionError)
        o.log(`${ctx.who}: ${msg}`);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const body = `${status === 500 ? "the server could not answer" : msg}\n`;
      res.writeHead(status, {
        "content-type": "text/plain; charset=utf-8",
        "content-length": Buffer.byteLength(body),
      });
      res.end(req.method === "HEAD" ? undefined : body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${addr.address.includes(":") ? `[${addr.address}]` : addr.address}:${addr.port}`,
    close: async () => {
      // Stop accepting; running responses get 10 s to finish.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const t = setTimeout(() => server.closeAllConnections(), 10_000);
      await closed;
      clearTimeout(t);
      await save();
    },
  };
}
