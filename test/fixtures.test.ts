// Checks that the fixtures are what they claim to be (with the real tools) and that the test
// HTTP server behaves.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { artifact, fixture, fixturesDir, manifest, partition } from "./helpers/fixtures.js";
import {
  type FcosStreamMetadata,
  fcosStreamInfo,
  fcosStreamRoutes,
  flatcarInfo,
  flatcarRoutes,
  startServer,
  type TestServer,
} from "./helpers/http.js";

function run(cmd: string, args: string[], input?: Buffer) {
  const r = spawnSync(cmd, args, {
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    ...(input ? { input } : {}),
  });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, out: r.stdout + r.stderr };
}

function ok(cmd: string, args: string[]): string {
  const r = run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}: ${r.out}`);
  return r.stdout;
}

/** sha256 of a command's stdout, streamed (the outputs are hundreds of MiB). */
async function sha256OfCommand(cmd: string, args: string[]): Promise<string> {
  const { spawn } = await import("node:child_process");
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"] });
    const hash = createHash("sha256");
    child.stdout.on("data", (d: Buffer) => hash.update(d));
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve(hash.digest("hex")) : reject(new Error(`${cmd} exited ${code}`)),
    );
  });
}

const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

describe("fixtures", () => {
  it("are where global setup said, with a manifest covering every artifact", () => {
    expect(process.env.PROVISION_FIXTURES).toBe(fixturesDir());
    const names = Object.keys(manifest().artifacts).sort();
    expect(names).toEqual(
      [
        "big.img",
        "big.img.xz",
        "corrupt.img.xz",
        "fcos.img",
        "fcos.img.bz2",
        "fcos.img.bz2.sig",
        "fcos.img.gz",
        "fcos.img.xz",
        "fcos.img.xz.badsig",
        "fcos.img.xz.sig",
        "fcos.img.zst",
        "keyring.gpg",
        "other-keyring.gpg",
      ].sort(),
    );
    for (const name of names) expect(statSync(fixture(name)).size).toBe(artifact(name).size);
    for (const name of ["keyring.gpg", "fcos.img.xz", "fcos.img.xz.sig", "fcos.img.bz2"]) {
      expect(sha256(readFileSync(fixture(name)))).toBe(artifact(name).sha256);
    }
    const sums = readFileSync(fixture("SHA256SUMS"), "utf8");
    expect(sums).toContain(`${artifact("fcos.img.xz").sha256}  fcos.img.xz\n`);
    expect(artifact("fcos.img.xz").uncompressedSha256).toBe(artifact("fcos.img").sha256);
    expect(statSync(fixture("gnupg")).mode & 0o777).toBe(0o700);
    expect(() => fixture("no-such-file")).toThrow(/not found/);
  });

  it("fcos.img has a valid GPT (backup included) with the FCOS aarch64 layout", () => {
    const img = fixture("fcos.img");
    expect(statSync(img).size).toBe(256 * 1024 * 1024);
    const v = run("sgdisk", ["-v", img]);
    expect(v.code).toBe(0);
    expect(v.out).toContain("No problems found");
    expect(v.out).not.toMatch(/caution|warning|problem:/i);
    const p = ok("sgdisk", ["-p", img]);
    const rows = p
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .filter((c) => /^\d+$/.test(c[0] ?? "") && c.length >= 7)
      .map((c) => ({ n: Number(c[0]), start: Number(c[1]), name: c[6] }));
    expect(rows).toEqual([
      { n: 1, start: 2048, name: "reserved" },
      { n: 2, start: 4096, name: "EFI-SYSTEM" },
      { n: 3, start: 69632, name: "boot" },
      { n: 4, start: 200704, name: "root" },
    ]);
    expect(partition("boot").offset).toBe(69632 * 512);
    expect(ok("sgdisk", ["-i", "2", img])).toContain("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
  });

  it("boot is ext4 labelled boot with the BLS entry and no /ignition", () => {
    const spec = `${fixture("fcos.img")}?offset=${partition("boot").offset}`;
    const entry = ok("debugfs", ["-R", "cat /loader/entries/ostree-1-fedora-coreos.conf", spec]);
    expect(entry).toContain("title Fedora CoreOS 40 (ostree:0)\n");
    expect(entry).toContain(
      "options mitigations=auto,nosmt ignition.platform.id=metal $ignition_firstboot " +
        "ostree=/ostree/boot.1/fedora-coreos/abc/0 root=UUID=x rw console=ttyS0\n",
    );
    const ls = ok("debugfs", ["-R", "ls /", spec]);
    expect(ls).toContain("loader");
    expect(ls).not.toContain("ignition");
    expect(ok("dumpe2fs", ["-h", spec])).toMatch(/Filesystem volume name:\s+boot\n/);
    const root = `${fixture("fcos.img")}?offset=${partition("root").offset}`;
    expect(ok("dumpe2fs", ["-h", root])).toMatch(/Filesystem volume name:\s+root\n/);
    expect(run("e2fsck", ["-fn", root]).code).toBe(0);
  });

  it("the ESP is FAT labelled EFI-SYSTEM with /EFI/BOOT/BOOTAA64.EFI", () => {
    const spec = `${fixture("fcos.img")}@@${partition("EFI-SYSTEM").offset}`;
    const r = run("mdir", ["-i", spec, "::/EFI/BOOT"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/BOOTAA64\s+EFI/);
    expect(r.out).toContain("EFI-SYSTEM");
  });

  it("big.img is bigger than a 512 MiB target", () => {
    expect(artifact("big.img.xz").uncompressedSize).toBe(600 * 1024 * 1024);
    const l = ok("xz", ["--robot", "-l", fixture("big.img.xz")]);
    const totals = l
      .split("\n")
      .find((x) => x.startsWith("totals\t"))
      ?.split("\t");
    expect(Number(totals?.[4])).toBe(600 * 1024 * 1024);
    expect(run("sgdisk", ["-v", fixture("big.img")]).out).toContain("No problems found");
  });

  it("the compressed images decompress to fcos.img; corrupt.img.xz does not", async () => {
    const want = artifact("fcos.img").sha256;
    expect(await sha256OfCommand("xz", ["-dc", "-T0", fixture("fcos.img.xz")])).toBe(want);
    expect(await sha256OfCommand("zstd", ["-dcq", fixture("fcos.img.zst")])).toBe(want);
    const t = run("xz", ["-t", fixture("corrupt.img.xz")]);
    expect(t.code).not.toBe(0);
    expect(t.stderr).toMatch(/corrupt|check|error/i);
  });

  it("gpgv accepts the good signatures and rejects the wrong key's", () => {
    const keyring = fixture("keyring.gpg"); // must be a path with a slash for gpgv
    const good = run("gpgv", [
      "--keyring",
      keyring,
      fixture("fcos.img.xz.sig"),
      fixture("fcos.img.xz"),
    ]);
    expect(good.code).toBe(0);
    expect(good.stderr).toContain('Good signature from "provision test key');
    const bz2 = run("gpgv", [
      "--keyring",
      keyring,
      fixture("fcos.img.bz2.sig"),
      fixture("fcos.img.bz2"),
    ]);
    expect(bz2.code).toBe(0);
    const bad = run("gpgv", [
      "--keyring",
      keyring,
      fixture("fcos.img.xz.badsig"),
      fixture("fcos.img.xz"),
    ]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/No public key/);
    const other = run("gpgv", [
      "--keyring",
      fixture("other-keyring.gpg"),
      fixture("fcos.img.xz.badsig"),
      fixture("fcos.img.xz"),
    ]);
    expect(other.code).toBe(0);
    // The good signature over other content fails.
    const wrongFile = run("gpgv", [
      "--keyring",
      keyring,
      fixture("fcos.img.xz.sig"),
      fixture("fcos.img.bz2"),
    ]);
    expect(wrongFile.code).not.toBe(0);
    expect(wrongFile.stderr).toContain("BAD signature");
  });
});

describe("test HTTP server", () => {
  let srv: TestServer;
  const data = Buffer.from(Array.from({ length: 10_000 }, (_, i) => (i * 7) % 251));

  beforeAll(async () => {
    srv = await startServer({
      routes: {
        "/data.bin": data,
        "/hello.txt": "hello\n",
        "/file.sig": fixture("fcos.img.xz.sig"),
      },
    });
  });
  afterAll(async () => {
    await srv.close();
  });

  it("serves GET and HEAD with Content-Length and Accept-Ranges", async () => {
    const r = await fetch(`${srv.url}/data.bin`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-length")).toBe("10000");
    expect(r.headers.get("accept-ranges")).toBe("bytes");
    expect(Buffer.from(await r.arrayBuffer()).equals(data)).toBe(true);
    const h = await fetch(`${srv.url}/data.bin`, { method: "HEAD" });
    expect(h.status).toBe(200);
    expect(h.headers.get("content-length")).toBe("10000");
    expect(await (await fetch(`${srv.url}/hello.txt`)).text()).toBe("hello\n");
    const f = await fetch(`${srv.url}/file.sig`);
    expect(
      Buffer.from(await f.arrayBuffer()).equals(readFileSync(fixture("fcos.img.xz.sig"))),
    ).toBe(true);
    expect(srv.requests.slice(-4).map((x) => x.method)).toEqual(["GET", "HEAD", "GET", "GET"]);
  });

  it("answers ranges with 206 and the right bytes, 416 when unsatisfiable", async () => {
    const get = (range: string) => fetch(`${srv.url}/data.bin`, { headers: { Range: range } });
    let r = await get("bytes=100-");
    expect(r.status).toBe(206);
    expect(r.headers.get("content-range")).toBe("bytes 100-9999/10000");
    expect(r.headers.get("content-length")).toBe("9900");
    expect(Buffer.from(await r.arrayBuffer()).equals(data.subarray(100))).toBe(true);
    r = await get("bytes=10-19");
    expect(r.status).toBe(206);
    expect(r.headers.get("content-range")).toBe("bytes 10-19/10000");
    expect(Buffer.from(await r.arrayBuffer()).equals(data.subarray(10, 20))).toBe(true);
    r = await get("bytes=-5");
    expect(Buffer.from(await r.arrayBuffer()).equals(data.subarray(9995))).toBe(true);
    r = await get("bytes=9990-20000");
    expect(r.headers.get("content-range")).toBe("bytes 9990-9999/10000");
    await r.arrayBuffer();
    r = await get("bytes=10000-");
    expect(r.status).toBe(416);
    expect(r.headers.get("content-range")).toBe("bytes */10000");
    await r.arrayBuffer();
    expect(srv.requests.at(-1)).toMatchObject({
      method: "GET",
      path: "/data.bin",
      range: "bytes=10000-",
    });
    // File-backed routes too.
    const sig = readFileSync(fixture("fcos.img.xz.sig"));
    r = await fetch(`${srv.url}/file.sig`, { headers: { Range: "bytes=3-" } });
    expect(Buffer.from(await r.arrayBuffer()).equals(sig.subarray(3))).toBe(true);
  });

  it("404s unknown paths", async () => {
    const r = await fetch(`${srv.url}/nope`);
    expect(r.status).toBe(404);
    await r.arrayBuffer();
  });

  it("dropAfterBytes cuts the first GET only", async () => {
    srv.addRoutes({ "/drop.bin": { body: data, dropAfterBytes: 1234 } });
    const r = await fetch(`${srv.url}/drop.bin`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-length")).toBe("10000");
    let got = 0;
    const reader = (r.body as ReadableStream<Uint8Array>).getReader();
    await expect(
      (async () => {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return;
          got += value.length;
        }
      })(),
    ).rejects.toThrow();
    expect(got).toBe(1234);
    const again = await fetch(`${srv.url}/drop.bin`, { headers: { Range: "bytes=1234-" } });
    expect(again.status).toBe(206);
    expect(Buffer.from(await again.arrayBuffer()).equals(data.subarray(1234))).toBe(true);
  });

  it("injects statuses and delays", async () => {
    srv.addRoutes({ "/flaky": { body: "ok", status: 500, statusTimes: 2 } });
    expect((await fetch(`${srv.url}/flaky`)).status).toBe(500);
    expect((await fetch(`${srv.url}/flaky`)).status).toBe(500);
    expect(await (await fetch(`${srv.url}/flaky`)).text()).toBe("ok");
    srv.setFault("/hello.txt", { delayMs: 200 });
    const t0 = Date.now();
    expect(await (await fetch(`${srv.url}/hello.txt`)).text()).toBe("hello\n");
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
  });

  it("serves a fake FCOS stream", async () => {
    const opts = {
      stream: "stable",
      arch: "aarch64",
      imagePath: fixture("fcos.img.xz"),
      sigPath: fixture("fcos.img.xz.sig"),
      sha256: artifact("fcos.img.xz").sha256,
      uncompressedSha256: artifact("fcos.img").sha256,
    };
    srv.addRoutes(fcosStreamRoutes(srv.url, opts));
    const info = fcosStreamInfo(srv.url, opts);
    const meta = (await (
      await fetch(`${srv.url}/streams/stable.json`)
    ).json()) as FcosStreamMetadata;
    expect(meta.stream).toBe("stable");
    const metal = meta.architectures.aarch64?.artifacts.metal;
    expect(metal?.release).toBe("40.20240101.3.0");
    const disk = metal?.formats["raw.xz"]?.disk;
    expect(disk).toEqual({
      location: `${srv.url}/prod/streams/stable/builds/40.20240101.3.0/aarch64/fedora-coreos-40.20240101.3.0-metal.aarch64.raw.xz`,
      signature: `${info.imageUrl}.sig`,
      sha256: artifact("fcos.img.xz").sha256,
      "uncompressed-sha256": artifact("fcos.img").sha256,
    });
    const img = Buffer.from(await (await fetch(disk?.location ?? "")).arrayBuffer());
    expect(sha256(img)).toBe(disk?.sha256);
    const sig = Buffer.from(await (await fetch(disk?.signature ?? "")).arrayBuffer());
    expect(sig.equals(readFileSync(fixture("fcos.img.xz.sig")))).toBe(true);
    // Without uncompressedSha256 the key is absent, and sha256 is computed when not given.
    const bare = fcosStreamInfo(srv.url, { imagePath: fixture("fcos.img.xz") });
    const bareDisk = bare.metadata.architectures.aarch64?.artifacts.metal?.formats["raw.xz"]?.disk;
    expect(bareDisk && "uncompressed-sha256" in bareDisk).toBe(false);
    expect(bareDisk?.sha256).toBe(artifact("fcos.img.xz").sha256);
  });

  it("serves a fake Flatcar release server", async () => {
    const opts = {
      channel: "stable",
      board: "arm64-usr",
      version: "3815.2.0",
      imagePath: fixture("fcos.img.bz2"),
      sigPath: fixture("fcos.img.bz2.sig"),
    };
    srv.addRoutes(flatcarRoutes(srv.url, opts));
    const info = flatcarInfo(srv.url, opts);
    const txt = await (await fetch(`${srv.url}/arm64-usr/current/version.txt`)).text();
    expect(txt).toMatch(/^FLATCAR_VERSION=3815\.2\.0$/m);
    expect(txt).toMatch(/^FLATCAR_BUILD=3815$/m);
    expect(info.imageUrl).toBe(`${srv.url}/arm64-usr/3815.2.0/flatcar_production_image.bin.bz2`);
    const head = await fetch(info.imageUrl, { method: "HEAD" });
    expect(head.headers.get("content-length")).toBe(String(artifact("fcos.img.bz2").size));
    const sig = await fetch(info.signatureUrl);
    expect(sig.status).toBe(200);
    await sig.arrayBuffer();
  });
});
