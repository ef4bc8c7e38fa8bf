// provision serve through the real CLI, on 127.0.0.1, against an upstream Flatcar release
// server on 127.0.0.1 that counts requests: every endpoint, host match by MAC (any spelling)
// and UUID, unknown machines, ETag/304, Range, HEAD, the token, a broken fragment for one
// host only, one upstream download for two concurrent cold requests, a bad signature (502,
// nothing cached), kill -9 and restart keeping /status, stale after an edit, a clean SIGTERM.
import type { ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixture, repoRoot } from "../helpers/fixtures.js";
import { startServer, type TestServer } from "../helpers/http.js";
import { detachSign, spawnServe, startServe as startServeChild } from "../helpers/serve.js";

const TOKEN = "test-token-5e1f";
const VERSION = "4081.2.0";
const OLD = "4000.1.0"; // a release whose files are signed by a key we do not trust
let work: string;
let fleetDir: string;
let upstream: TestServer;
let kernel: Buffer;
let initrd: Buffer;
let server: { proc: ChildProcess; url: string; out: string[] } | undefined;

const env = () => ({
  ...process.env,
  CI: "1",
  XDG_CACHE_HOME: join(work, "cache"),
  XDG_STATE_HOME: join(work, "state"),
});

const sign = (homedir: string, file: string) => detachSign(homedir, file, work);

const serveArgs = () => [
  "--token",
  TOKEN,
  "--flatcar-base-url",
  upstream.url,
  "--keyring",
  fixture("keyring.gpg"),
];
const startServe = () => startServeChild(serveArgs(), { cwd: fleetDir, env: env() });

async function get(path: string, headers: Record<string, string> = {}, method = "GET") {
  const res = await fetch(`${server?.url}${path}`, { headers, method });
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body, text: body.toString("utf8") };
}
const t = (path: string) => `${path}${path.includes("?") ? "&" : "?"}token=${TOKEN}`;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-serve-"));
  fleetDir = join(work, "fleet");
  await mkdir(fleetDir);
  kernel = randomBytes(3 << 20);
  initrd = randomBytes(1 << 20);
  const files = join(work, "upstream");
  await mkdir(files);
  const routes: Record<string, Buffer | string | { body: Buffer; delayMs: number }> = {};
  for (const [ver, key] of [
    [VERSION, fixture("gnupg")],
    [OLD, fixture("gnupg-other")],
  ] as const) {
    for (const [name, data] of [
      ["flatcar_production_pxe.vmlinuz", kernel],
      ["flatcar_production_pxe_image.cpio.gz", initrd],
    ] as const) {
      const f = join(files, `${ver}-${name}`);
      await writeFile(f, data);
      routes[`/amd64-usr/${ver}/${name}`] = { body: data, delayMs: 300 };
      routes[`/amd64-usr/${ver}/${name}.sig`] = await sign(key, f);
    }
  }
  routes["/amd64-usr/current/version.txt"] = `FLATCAR_VERSION=${VERSION}\n`;
  upstream = await startServer({ routes });
  await writeFile(
    join(fleetDir, "common.ign"),
    `${JSON.stringify({ ignition: { version: "3.3.0" }, storage: { files: [{ path: "/etc/motd", mode: 420, contents: { source: "data:,{{ host.name }}%0A" } }] } })}\n`,
  );
  await writeFile(
    join(fleetDir, "broken.ign"),
    '{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/x", "contents": {"source": "data:,{{ host.vars.nope }}"}}]}}\n',
  );
  await writeFile(
    join(fleetDir, "provision.yaml"),
    [
      "defaults:",
      "  os: flatcar",
      "  channel: beta",
      "  arch: x86_64",
      "  boot: pxe",
      "  ignition: [common.ign]",
      "hosts:",
      "  alpha:",
      '    macs: ["52:54:00:00:00:0a"]',
      "  bravo:",
      '    macs: ["52:54:00:00:00:0b"]',
      "    uuid: 123e4567-e89b-12d3-a456-426614174000",
      "  broken:",
      '    macs: ["52:54:00:00:00:0c"]',
      "    ignition: [broken.ign]",
      "  oldie:",
      `    release: ${OLD}`,
      '    macs: ["52:54:00:00:00:0d"]',
      "",
    ].join("\n"),
  );
  server = await startServe();
}, 120_000);

afterAll(async () => {
  server?.proc.kill("SIGKILL");
  await upstream?.close();
  await rm(work, { recursive: true, force: true });
});

describe("provision serve", () => {
  it("refuses a request without the token; /boot.ipxe chains to /ipxe with the machine's identity", async () => {
    expect((await get("/boot.ipxe")).status).toBe(403);
    expect((await get("/boot.ipxe?token=wrong")).status).toBe(403);
    const r = await get(t("/boot.ipxe"));
    expect(r.status).toBe(200);
    expect(r.text).toContain(
      `chain ${server?.url}/ipxe?mac=\${net0/mac:hexhyp}&uuid=\${uuid}&hostname=\${hostname}&arch=\${buildarch}&token=${TOKEN}`,
    );
  });

  it("/ipxe matches a host by MAC in any spelling, and by UUID; unknown MACs are told and recorded", async () => {
    for (const mac of [
      "52-54-00-00-00-0a",
      "52:54:00:00:00:0A",
      "5254000000 0a".replace(" ", ""),
    ]) {
      const r = await get(t(`/ipxe?mac=${mac}`));
      expect(r.status).toBe(200);
      expect(r.text).toContain(
        `kernel ${server?.url}/assets/flatcar/beta-${VERSION}/x86_64/flatcar_production_pxe.vmlinuz?token=${TOKEN} initrd=flatcar_production_pxe_image.cpio.gz flatcar.first_boot=1 ignition.config.url=${server?.url}/ignition?mac=52:54:00:00:00:0a&token=${TOKEN} systemd.hostname=alpha`,
      );
      expect(r.text).toContain(
        `initrd ${server?.url}/assets/flatcar/beta-${VERSION}/x86_64/flatcar_production_pxe_image.cpio.gz?token=${TOKEN}`,
      );
    }
    const byUuid = await get(t("/ipxe?mac=&uuid=123E4567-E89B-12D3-A456-426614174000"));
    expect(byUuid.text).toContain("systemd.hostname=bravo");
    const unknown = await get(t("/ipxe?mac=52-54-00-99-99-99&uuid=&hostname=&arch=x86_64"));
    expect(unknown.status).toBe(200);
    expect(unknown.text).toMatch(/is not in the inventory/);
    expect(unknown.text).toMatch(/sleep 30\nchain .*\/boot\.ipxe\?token=/);
    expect(unknown.text).not.toMatch(/reboot/);
    const st = JSON.parse((await get(t("/status"))).text);
    expect(st.unknown).toEqual([
      expect.objectContaining({ mac: "52:54:00:99:99:99", arch: "x86_64", requests: 1 }),
    ]);
  });

  it("/ignition: the host's config built now, ETag = fingerprint, 304 when unchanged; a broken host fails alone", async () => {
    const r = await get(t("/ignition?mac=52-54-00-00-00-0a"));
    expect(r.status).toBe(200);
    const etag = r.headers.get("etag") as string;
    const sha = createHash("sha256").update(r.body).digest("hex");
    expect(etag).toBe(`"${sha}"`);
    const list = await execa(
      "node",
      [join(repoRoot, "bin", "provision.js"), "fleet", "list", "--json"],
      { cwd: fleetDir, env: env(), reject: false }, // exit 1: the broken host does not build
    );
    const alpha = JSON.parse(String(list.stdout)).hosts.find(
      (h: { name: string }) => h.name === "alpha",
    );
    expect(alpha.fingerprint).toBe(sha);
    expect(
      (await get(t("/ignition?mac=52-54-00-00-00-0a"), { "if-none-match": etag })).status,
    ).toBe(304);
    const broken = await get(t("/ignition?mac=52:54:00:00:00:0c"));
    expect(broken.status).toBe(500);
    await new Promise((r) => setTimeout(r, 200)); // the log line follows the response
    expect(server?.out.join("\n")).toMatch(
      /broken: broken\.ign:\d+:\d+: host\.vars\.nope is not set for host broken/,
    );
    expect((await get(t("/ignition?mac=52:54:00:00:00:0b"))).status).toBe(200);
    await new Promise((r) => setTimeout(r, 200)); // the log line follows the response
    expect(server?.out.join("\n")).toMatch(/^GET \/ignition bravo 200 [1-9]\d* \d+ms$/m);
    expect(server?.out.join("\n")).toMatch(/^GET \/boot\.ipxe - 403 \d+ \d+ms$/m);
  });

  it("/assets: two cold requests make one upstream download; Range and HEAD; a bad signature is a 502 and nothing is cached", async () => {
    const path = t(`/assets/flatcar/beta-${VERSION}/x86_64/flatcar_production_pxe.vmlinuz`);
    const before = upstream.requests.filter((q) =>
      q.path.endsWith(`${VERSION}/flatcar_production_pxe.vmlinuz`),
    ).length;
    const [a, b] = await Promise.all([get(path), get(path)]);
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    expect(a.body.equals(kernel)).toBe(true);
    expect(b.body.equals(kernel)).toBe(true);
    const gets = upstream.requests.filter((q) =>
      q.path.endsWith(`${VERSION}/flatcar_production_pxe.vmlinuz`),
    ).length;
    expect(gets - before).toBe(1);
    const part = await get(path, { range: "bytes=1000-1999" });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(`bytes 1000-1999/${kernel.length}`);
    expect(part.body.equals(kernel.subarray(1000, 2000))).toBe(true);
    const head = await get(path, {}, "HEAD");
    expect(head.status).toBe(200);
    expect(Number(head.headers.get("content-length"))).toBe(kernel.length);
    expect(head.body.length).toBe(0);

    const bad = await get(t(`/assets/flatcar/beta-${OLD}/x86_64/flatcar_production_pxe.vmlinuz`));
    expect(bad.status).toBe(502);
    expect(server?.out.join("\n")).toMatch(/BAD signature|signature/i);
    const cached = await readdir(join(work, "cache", "provision", "images")).catch(() => []);
    for (const d of cached) {
      if (d.endsWith(".lock")) continue;
      const entry = await readFile(
        join(work, "cache", "provision", "images", d, "entry.json"),
        "utf8",
      ).catch(() => "");
      expect(entry).not.toContain(OLD);
    }
  });

  it("--prefetch fills the cache before listening (a bad signature stops it, naming the file); --json logs JSON lines", async () => {
    const run = (inventory: string, cache: string) =>
      spawnServe([...serveArgs(), "--inventory", inventory, "--prefetch", "--json"], {
        cwd: fleetDir,
        env: { ...env(), XDG_CACHE_HOME: cache },
      });
    // With the host whose release is signed by an unknown key: refused before listening.
    const bad = run(join(fleetDir, "provision.yaml"), join(work, "cache-pf1"));
    const code = await new Promise<number | null>((resolve) =>
      bad.proc.on("exit", (c) => resolve(c)),
    );
    const badErr = bad.stderr();
    expect(code).not.toBe(0);
    expect(badErr).toMatch(
      new RegExp(
        `^provision: signature on .*/${OLD.replace(/\./g, "\\.")}/.*not in the given keyring$`,
        "m",
      ),
    );
    expect(badErr).not.toMatch(/host\(s\) from .* on http:/); // never listened

    const good = join(fleetDir, "good.yaml");
    const text = await readFile(join(fleetDir, "provision.yaml"), "utf8");
    await writeFile(good, text.slice(0, text.indexOf("  broken:")));
    const before = upstream.requests.length;
    const p = run(good, join(work, "cache-pf2"));
    const { out } = p;
    const base = await p.listening;
    try {
      // Both boot files (and their signatures) came down before the first request.
      expect(upstream.requests.length - before).toBeGreaterThanOrEqual(4);
      const seen = upstream.requests.length;
      const r = await fetch(
        `${base}/assets/flatcar/beta-${VERSION}/x86_64/flatcar_production_pxe_image.cpio.gz?token=${TOKEN}`,
      );
      expect(Buffer.from(await r.arrayBuffer()).equals(initrd)).toBe(true);
      expect(upstream.requests.length).toBe(seen); // from the cache
      await new Promise((res) => setTimeout(res, 200));
      const line = JSON.parse(out.find((l) => l.includes("cpio.gz")) as string);
      expect(line).toMatchObject({
        method: "GET",
        status: 200,
        bytes: initrd.length,
        client: "127.0.0.1",
      });
      expect(line.path).toBe(
        `/assets/flatcar/beta-${VERSION}/x86_64/flatcar_production_pxe_image.cpio.gz`,
      );
    } finally {
      p.proc.kill("SIGKILL");
    }
  });

  it("kill -9 and a restart keep /status; an edit to the shared fragment marks the host stale; SIGTERM stops cleanly", async () => {
    const served = JSON.parse((await get(t("/status"))).text).hosts.alpha;
    expect(served.servedFingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(served.stale).toBe(false);
    server?.proc.kill("SIGKILL");
    server = await startServe();
    const again = JSON.parse((await get(t("/status"))).text);
    expect(again.hosts.alpha).toMatchObject({
      servedFingerprint: served.servedFingerprint,
      lastIgnition: served.lastIgnition,
    });
    expect(again.unknown[0].mac).toBe("52:54:00:99:99:99");

    const common = join(fleetDir, "common.ign");
    await writeFile(common, (await readFile(common, "utf8")).replace("%0A", "-edited%0A"));
    const stale = JSON.parse((await get(t("/status"))).text).hosts.alpha;
    expect(stale.stale).toBe(true);
    const st = await execa("node", [join(repoRoot, "bin", "provision.js"), "fleet", "status"], {
      cwd: fleetDir,
      env: env(),
    });
    expect(String(st.stdout)).toMatch(
      /^alpha\s+\S+\s+127\.0\.0\.1\s+[0-9a-f]{12}\s+[0-9a-f]{12}\s+yes$/m,
    );
    expect(String(st.stdout)).toMatch(
      /unknown machine 52:54:00:99:99:99 .*\n.*\n    boot: pxe\n    arch: x86_64\n    macs: \["52:54:00:99:99:99"\]/,
    );
    // The next fetch gets the new config: no longer stale.
    expect((await get(t("/ignition?mac=52-54-00-00-00-0a"))).status).toBe(200);
    expect(JSON.parse((await get(t("/status"))).text).hosts.alpha.stale).toBe(false);

    // Serve knows a file by its stat and reads it again when that changes: an edit that keeps
    // the size and puts the mtime back (an hour ago, so not "racy") is still seen (ctime).
    const hourAgo = new Date(Date.now() - 3600_000);
    await utimes(common, hourAgo, hourAgo);
    const before = await get(t("/ignition?mac=52-54-00-00-00-0a"));
    expect(before.status).toBe(200);
    expect(JSON.parse((await get(t("/status"))).text).hosts.alpha.stale).toBe(false);
    const text = await readFile(common, "utf8");
    await writeFile(common, text.replace("-edited%0A", "-EDITED%0A"));
    await utimes(common, hourAgo, hourAgo);
    expect((await readFile(common, "utf8")).length).toBe(text.length);
    expect(JSON.parse((await get(t("/status"))).text).hosts.alpha.stale).toBe(true);
    const after = await get(t("/ignition?mac=52-54-00-00-00-0a"));
    expect(after.headers.get("etag")).toMatch(/^"[0-9a-f]{64}"$/);
    expect(after.headers.get("etag")).not.toBe(before.headers.get("etag"));
    expect(after.text).not.toBe(before.text);

    const proc = server?.proc as ChildProcess;
    const exit = new Promise<number | null>((resolve) => proc.on("exit", (c) => resolve(c)));
    proc.kill("SIGTERM");
    expect(await exit).toBe(0);
    server = undefined;
  });
});
