#!/usr/bin/env node
// Load generator for bench/serve.sh (a benchmark, not a test). Prints one JSON document on
// stdout; exits 1 when a request failed (wrong status, short body, wrong host).
//
//   node bench/serve-load.mjs meta --url http://127.0.0.1:PORT --token T --hosts FILE [--rounds 5]
//     One client per line of FILE ("MAC NAME"), all at once; each does, ROUNDS times in a row,
//     GET /boot.ipxe, then /ipxe?mac=MAC, then /ignition?mac=MAC (keep-alive connections),
//     and the latency of every request (first byte sent -> last body byte read) is kept:
//     p50/p90/p99/max per endpoint. Before that, one unrecorded request to each endpoint.
//
//   node bench/serve-load.mjs download --url 'http://127.0.0.1:PORT/path?token=T' [--clients 10]
//                                     [--client net|http]
//     CLIENTS downloads of the same URL at once, each on its own connection; the body is
//     counted and discarded. Throughput = all bytes / (start -> the last download's end).
//     --client net (default): a minimal HTTP/1.1 GET on node:net reading into a reused buffer;
//     http: node:http (costs a core at ~2 GB/s here: then the client sets the pace).
//
// Both report the client's own CPU time (user + system), to tell whether the client itself
// was the bottleneck: on a 2-core machine the client and the server share the CPUs.
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { performance } from "node:perf_hooks";

const [mode, ...rest] = process.argv.slice(2);
const args = {};
for (let i = 0; i < rest.length; i += 2) {
  if (!rest[i]?.startsWith("--") || rest[i + 1] === undefined) usage(`bad argument ${rest[i]}`);
  args[rest[i].slice(2)] = rest[i + 1];
}
function usage(msg) {
  process.stderr.write(
    `serve-load: ${msg}\nusage: serve-load.mjs meta --url URL --token T --hosts FILE [--rounds N]\n` +
      "       serve-load.mjs download --url URL [--clients N] [--client net|http]\n",
  );
  process.exit(2);
}

const cpuSeconds = (u) => (u.user + u.system) / 1e6;

/** Nearest-rank percentile of a sorted array. */
const pct = (sorted, q) => sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)];

function summarize(ms) {
  const s = Float64Array.from(ms).sort();
  const r = (x) => Math.round(x * 1000) / 1000;
  return {
    count: s.length,
    p50Ms: r(pct(s, 0.5)),
    p90Ms: r(pct(s, 0.9)),
    p99Ms: r(pct(s, 0.99)),
    maxMs: r(s[s.length - 1]),
    meanMs: r(s.reduce((a, b) => a + b, 0) / s.length),
  };
}

/** GET url; resolves { status, body (when keep), bytes, ms }. */
function get(url, agent, keep) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.get(url, { agent }, (res) => {
      const chunks = [];
      let bytes = 0;
      res.on("data", (c) => {
        bytes += c.length;
        if (keep) chunks.push(c);
      });
      res.on("end", () =>
        resolve({
          status: res.statusCode,
          headers: res.headers,
          body: keep ? Buffer.concat(chunks).toString("utf8") : "",
          bytes,
          ms: performance.now() - t0,
        }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
  });
}

/** The config names the host: in plain text or in one of its base64 data: URLs (merged parts). */
function mentions(config, name) {
  if (config.includes(name)) return true;
  for (const m of config.matchAll(/data:[^,"]*;base64,([A-Za-z0-9+/=]+)/g))
    if (Buffer.from(m[1], "base64").toString("utf8").includes(name)) return true;
  return false;
}

async function meta() {
  const base = args.url?.replace(/\/+$/, "");
  const token = args.token;
  if (!base || !token || !args.hosts) usage("meta needs --url, --token and --hosts");
  const rounds = Number(args.rounds ?? 5);
  const hosts = readFileSync(args.hosts, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const [mac, name] = l.trim().split(/\s+/);
      return { mac, name };
    });
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const q = `token=${encodeURIComponent(token)}`;
  const endpoints = [
    { name: "/boot.ipxe", url: () => `${base}/boot.ipxe?${q}`, check: (b) => b.includes("chain ") },
    {
      name: "/ipxe",
      url: (h) => `${base}/ipxe?mac=${h.mac}&${q}`,
      check: (b, h) => new RegExp(`systemd\\.hostname=${h.name}(\\s|$)`, "m").test(b),
    },
    {
      name: "/ignition",
      url: (h) => `${base}/ignition?mac=${h.mac}&${q}`,
      check: (b, h) => b.startsWith('{"ignition"') && mentions(b, h.name),
    },
  ];
  const lat = Object.fromEntries(endpoints.map((e) => [e.name, []]));
  const errors = [];
  const one = async (e, h, record) => {
    try {
      const r = await get(e.url(h), agent, true);
      if (r.status !== 200 || !e.check(r.body, h))
        errors.push(`${e.name} ${h.mac}: HTTP ${r.status} ${r.body.slice(0, 200)}`);
      if (record) lat[e.name].push(r.ms);
    } catch (err) {
      errors.push(`${e.name} ${h.mac}: ${err.message}`);
    }
  };
  // Warm-up (not recorded): one request to each endpoint, one after the other.
  for (const e of endpoints) await one(e, hosts[0], false);

  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    hosts.map(async (h) => {
      for (let r = 0; r < rounds; r++) for (const e of endpoints) await one(e, h, true);
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds(process.cpuUsage(cpu0));
  agent.destroy();
  const requests = Object.values(lat).reduce((a, l) => a + l.length, 0);
  const out = {
    clients: hosts.length,
    rounds,
    requests,
    seconds: Math.round(seconds * 1000) / 1000,
    requestsPerSecond: Math.round((requests / seconds) * 10) / 10,
    clientCpuSeconds: Math.round(cpu * 100) / 100,
    endpoints: Object.fromEntries(Object.entries(lat).map(([k, v]) => [k, summarize(v)])),
    errors: errors.length,
    firstErrors: errors.slice(0, 5),
  };
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  if (errors.length) process.exitCode = 1;
}

/**
 * One download, counted and discarded: a plain HTTP/1.1 GET over node:net whose socket reads
 * into one reused 256 KiB buffer (`onread`), so the client costs little more than the
 * kernel's copy. (node:http's parser and a new Buffer per 64 KiB read cost a whole core at
 * ~2 GB/s on this machine, and then the client, not the server, sets the pace.)
 */
function rawGet(url) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let head = "";
    let status = 0;
    let expected = -1;
    let bytes = 0;
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      sock.destroy();
      if (err) reject(err);
      else resolve({ status, bytes, expected, ms: performance.now() - t0 });
    };
    const sock = net.connect({
      host: u.hostname,
      port: Number(u.port || 80),
      onread: {
        buffer: Buffer.allocUnsafe(256 << 10),
        callback: (n, buf) => {
          if (expected < 0) {
            head += buf.toString("latin1", 0, n);
            const end = head.indexOf("\r\n\r\n");
            if (end < 0) return;
            status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
            const len = /\r\ncontent-length: *(\d+)/i.exec(head.slice(0, end + 2))?.[1];
            if (len === undefined)
              return finish(new Error(`no content-length: ${head.slice(0, 200)}`));
            expected = Number(len);
            bytes = head.length - end - 4;
          } else bytes += n;
          if (bytes >= expected) finish();
        },
      },
    });
    sock.on("connect", () =>
      sock.write(
        `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\n\r\n`,
      ),
    );
    sock.on("error", finish);
    sock.on("end", () =>
      finish(bytes < expected ? new Error(`short body: ${bytes} of ${expected}`) : undefined),
    );
  });
}

async function download() {
  const url = args.url;
  if (!url) usage("download needs --url");
  const clients = Number(args.clients ?? 10);
  const client = args.client ?? "net";
  if (client !== "net" && client !== "http") usage("--client net or http");
  const one = () =>
    client === "net"
      ? rawGet(url)
      : get(url, false, false).then((r) => ({
          ...r,
          expected: Number(r.headers["content-length"]),
        }));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const results = await Promise.all(
    Array.from({ length: clients }, () =>
      one().then(
        (r) => ({ status: r.status, bytes: r.bytes, expected: r.expected, seconds: r.ms / 1000 }),
        (err) => ({ status: 0, bytes: 0, expected: -1, seconds: 0, error: err.message }),
      ),
    ),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds(process.cpuUsage(cpu0));
  const bytes = results.reduce((a, r) => a + r.bytes, 0);
  const bad = results.filter((r) => r.status !== 200 || r.bytes !== r.expected);
  const out = {
    clients,
    client,
    bytes,
    seconds: Math.round(seconds * 1000) / 1000,
    bytesPerSecond: Math.round(bytes / seconds),
    perClientSeconds: results.map((r) => Math.round(r.seconds * 100) / 100),
    clientCpuSeconds: Math.round(cpu * 100) / 100,
    errors: bad.length,
    firstErrors: bad.slice(0, 3),
  };
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  if (bad.length) process.exitCode = 1;
}

if (mode === "meta") await meta();
else if (mode === "download") await download();
else usage(`unknown mode ${mode ?? ""}`);
