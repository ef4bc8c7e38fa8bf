// The cache and downloader against a real HTTP server on 127.0.0.1.
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { downloadResumable } from "../../src/cache/download.js";
import { runCli, startCli } from "../helpers/cli.js";
import { fixture, manifest } from "../helpers/fixtures.js";
import { startServer, type TestServer } from "../helpers/http.js";

let work: string;
let server: TestServer;
const xzSha = () => manifest().artifacts["fcos.img.xz"].sha256;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-cache-"));
  server = await startServer({
    routes: {
      "/img.xz": fixture("fcos.img.xz"),
      "/slow.xz": { file: fixture("fcos.img.xz"), delayMs: 1500 },
    },
  });
});
afterAll(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

describe("downloadResumable", () => {
  it("resumes an interrupted download in a later run with Range, and the hash covers the whole file", async () => {
    const part = join(work, "img.xz.part");
    const ac = new AbortController();
    const half = Math.floor(manifest().artifacts["fcos.img.xz"].size / 2);
    await expect(
      downloadResumable(`${server.url}/img.xz`, part, {
        signal: ac.signal,
        onProgress: (done) => {
          if (done > half) ac.abort(new Error("Ctrl-C"));
        },
      }),
    ).rejects.toThrow();
    const had = (await stat(part)).size;
    expect(had).toBeGreaterThan(half);
    expect(had).toBeLessThan(manifest().artifacts["fcos.img.xz"].size);

    const before = server.requests.length;
    const r = await downloadResumable(`${server.url}/img.xz`, part, {});
    expect(r.sha256).toBe(xzSha());
    expect(r.size).toBe(manifest().artifacts["fcos.img.xz"].size);
    expect(server.requests.slice(before).map((q) => q.range)).toEqual([`bytes=${had}-`]);
    const h = createHash("sha256")
      .update(await readFile(part))
      .digest("hex");
    expect(h).toBe(xzSha());
  });

  it("starts over when the server ignores Range", async () => {
    server.addRoutes({ "/norange.xz": { file: fixture("fcos.img.xz"), ranges: false } });
    const part = join(work, "norange.part");
    const ac = new AbortController();
    await expect(
      downloadResumable(`${server.url}/norange.xz`, part, {
        signal: ac.signal,
        onProgress: (done) => {
          if (done > 1_000_000) ac.abort(new Error("Ctrl-C"));
        },
      }),
    ).rejects.toThrow();
    const msgs: string[] = [];
    const r = await downloadResumable(`${server.url}/norange.xz`, part, {
      onRetry: (m) => msgs.push(m),
    });
    expect(r.sha256).toBe(xzSha());
    expect(msgs).toEqual(["the server did not resume the download; starting from the beginning"]);
  });
});

describe("two provision processes sharing one cache", () => {
  it("download once: the second waits for the first's lock, then uses the entry", async () => {
    const cache = await mkdtemp(join(work, "shared-"));
    const before = server.requests.filter((q) => q.path === "/slow.xz").length;
    const args = (n: string) => [
      "flash",
      join(work, n),
      "--image-url",
      `${server.url}/slow.xz`,
      "--sha256",
      xzSha(),
    ];
    const a = startCli(args("p1.img"), { cacheHome: cache });
    await new Promise((r) => setTimeout(r, 300));
    const b = startCli(args("p2.img"), { cacheHome: cache });
    const [ra, rb] = await Promise.all([a, b]);
    expect(ra.exitCode).toBe(0);
    expect(rb.exitCode).toBe(0);
    // Whichever started downloading first, the other one waited and then used its entry.
    const [first, second] = /waiting for another/.test(String(rb.stderr)) ? [ra, rb] : [rb, ra];
    expect(String(second.stderr)).toMatch(
      /waiting for another provision process \(pid \d+\) downloading the same image/,
    );
    expect(String(second.stderr)).toMatch(/using cached /);
    expect(String(first.stderr)).toMatch(/downloaded slow\.xz/);
    expect(server.requests.filter((q) => q.path === "/slow.xz").length - before).toBe(1);
    const dirs = await readdir(join(cache, "provision", "images"));
    expect(dirs.filter((d) => d.endsWith(".lock"))).toEqual([]);
  });
});

describe("provision cache list / prune", () => {
  it("lists entries and partial downloads, and prunes them", async () => {
    const cache = await mkdtemp(join(work, "listing-"));
    expect(
      (
        await runCli(["flash", join(work, "l.img"), "--image-url", `${server.url}/img.xz`, "-q"], {
          cacheHome: cache,
        })
      ).code,
    ).toBe(0);
    const list = await runCli(["cache", "list", "--json"], { cacheHome: cache });
    expect(list.code).toBe(0);
    const entries = JSON.parse(list.stdout);
    expect(entries).toEqual([
      expect.objectContaining({
        url: `${server.url}/img.xz`,
        file: "img.xz",
        partial: false,
        size: manifest().artifacts["fcos.img.xz"].size,
      }),
    ]);
    const text = await runCli(["cache", "list"], { cacheHome: cache });
    expect(text.stdout).toMatch(
      /^img\.xz {2}4\.\d MiB {2}last used \d{4}-\d\d-\d\d {2}signature unsigned$/m,
    );
    // Recently used entries survive a default prune; --all removes them.
    expect((await runCli(["cache", "prune"], { cacheHome: cache })).stdout).toBe(
      "removed 0 entries (0 B)",
    );
    expect((await runCli(["cache", "prune", "--all"], { cacheHome: cache })).stdout).toMatch(
      /^removed 1 entry \(4\.\d MiB\)$/,
    );
    expect(
      JSON.parse((await runCli(["cache", "list", "--json"], { cacheHome: cache })).stdout),
    ).toEqual([]);
  });
});
