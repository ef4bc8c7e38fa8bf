// End to end: the real CLI against a real HTTP server on 127.0.0.1, real image files and
// loop devices, read back with debugfs, sgdisk and ignition-validate.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import {
  copyFile,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rm,
  stat,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startCli } from "../helpers/cli.js";
import { fixture, manifest } from "../helpers/fixtures.js";
import {
  fcosStreamInfo,
  fcosStreamRoutes,
  flatcarRoutes,
  startServer,
  type TestServer,
} from "../helpers/http.js";
import { attachLoop, detachLoop } from "../helpers/loop.js";

const bootOffset = () =>
  manifest().images["fcos.img"].partitions.find((p) => p.name === "boot")?.offset as number;

async function sha256(path: string, start = 0, end?: number): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(path, {
    start,
    end: end === undefined ? undefined : end - 1,
  }))
    h.update(c as Buffer);
  return h.digest("hex");
}

async function debugfs(target: string, offset: number, cmd: string): Promise<string> {
  const r = await execa("debugfs", ["-R", cmd, `${target}?offset=${offset}`], { reject: false });
  return String(r.stdout);
}

let work: string;
let server: TestServer;
let ign: string;
let ignText: string;

const streamArgs = () => [
  "--arch",
  "aarch64",
  "--stream-base-url",
  server.url,
  "--keyring",
  fixture("keyring.gpg"),
];
const newCache = async () => await mkdtemp(join(work, "cache-"));
const requestsFor = (p: string) =>
  server.requests.filter((r) => r.path === p && r.method === "GET");

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-flash-"));
  ign = join(work, "config.ign");
  ignText = `${JSON.stringify({
    ignition: { version: "3.3.0" },
    storage: {
      files: [{ path: "/etc/hostname", mode: 420, contents: { source: "data:,node1%0A" } }],
    },
  })}\n`;
  await writeFile(ign, ignText);
  server = await startServer({
    routes: (base) => ({
      ...fcosStreamRoutes(base, {
        imagePath: fixture("fcos.img.xz"),
        sigPath: fixture("fcos.img.xz.sig"),
        uncompressedSha256: manifest().artifacts["fcos.img"].sha256,
      }),
      "/other/streams/stable.json": JSON.stringify({
        ...fcosStreamInfo(base, { imagePath: fixture("fcos.img.xz") }).metadata,
      }),
      "/corrupt.img.xz": fixture("corrupt.img.xz"),
      "/big.img.xz": fixture("big.img.xz"),
    }),
  });
});

afterAll(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

describe("flash from an FCOS stream into an image file", () => {
  let cache: string;
  let out: string;

  it("resolves the stream, downloads once with checksum and signature, writes, verifies and embeds Ignition", async () => {
    cache = await newCache();
    out = join(work, "first.img");
    const info = fcosStreamInfo(server.url, { imagePath: fixture("fcos.img.xz") });
    const r = await runCli(["flash", out, ...streamArgs(), "-i", ign, "--json"], {
      cacheHome: cache,
    });
    expect(r.stderr).toContain("signature verified");
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.image).toMatchObject({
      url: info.imageUrl,
      signature: "verified",
      fromCache: false,
      imageSize: 256 << 20,
    });
    expect(report.targets).toEqual([
      expect.objectContaining({
        path: out,
        ok: true,
        verified: true,
        ignition: "boot:/ignition/config.ign",
      }),
    ]);
    expect(requestsFor(info.imagePath)).toHaveLength(1);
    // Where the time went, in order: start-up, then the download, then writing began.
    const t = report.timings;
    for (const k of ["startup", "resolve", "firstWrite", "write", "verify", "customize"])
      expect(t[k], k).toBeGreaterThan(0);
    expect(t.firstWrite).toBeGreaterThan(t.startup + t.resolve);
    expect(t.firstWrite).toBeLessThan(report.seconds + t.startup);

    // Ignition: content, modes, owner; and the real validator accepts what landed.
    const off = bootOffset();
    expect(await debugfs(out, off, "cat /ignition/config.ign")).toBe(ignText.trimEnd());
    expect(await debugfs(out, off, "stat /ignition/config.ign")).toMatch(
      /Mode:\s+0600[\s\S]*User:\s+0\s+Group:\s+0/,
    );
    expect(await debugfs(out, off, "stat /ignition")).toMatch(/Mode:\s+0700/);
    const readBack = join(work, "readback.ign");
    await execa("debugfs", ["-R", `dump /ignition/config.ign ${readBack}`, `${out}?offset=${off}`]);
    expect(await readFile(readBack, "utf8")).toBe(ignText);
    await execa("ignition-validate", [readBack]);

    // Everything outside the boot partition is byte-identical to the image, and the GPT is sound.
    const img = fixture("fcos.img");
    expect(await sha256(out, 0, off)).toBe(await sha256(img, 0, off));
    const root = manifest().images["fcos.img"].partitions.find((p) => p.name === "root");
    expect(await sha256(out, root?.offset)).toBe(await sha256(img, root?.offset));
    const v = await execa("sgdisk", ["-v", out]);
    expect(v.stdout).toContain("No problems found");
    // Sparse: most of the 256 MiB is holes.
    const st = await stat(out);
    expect(st.blocks * 512).toBeLessThan(st.size / 4);
  });

  it("a second flash of the same image makes no network request", async () => {
    const before = server.requests.length;
    const r = await runCli(["flash", join(work, "second.img"), ...streamArgs(), "--json"], {
      cacheHome: cache,
    });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).image.fromCache).toBe(true);
    expect(server.requests.length).toBe(before);
    expect(await sha256(join(work, "second.img"))).toBe(manifest().artifacts["fcos.img"].sha256);
  });

  it("--offline works from the cache and fails clearly without it", async () => {
    const ok = await runCli(
      ["flash", join(work, "offline.img"), ...streamArgs(), "--offline", "-q"],
      { cacheHome: cache },
    );
    expect(ok.code).toBe(0);
    const empty = await newCache();
    const bad = await runCli(["flash", join(work, "offline2.img"), ...streamArgs(), "--offline"], {
      cacheHome: empty,
    });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(
      /provision: .*stable\.json is not in the cache and --offline was given/,
    );
    await expect(stat(join(work, "offline2.img"))).rejects.toThrow();
  });

  it("uses cached stream metadata with a warning naming its age when the server is unreachable", async () => {
    const own = await newCache();
    const s2 = await startServer({
      routes: (base) =>
        fcosStreamRoutes(base, {
          imagePath: fixture("fcos.img.xz"),
          sigPath: fixture("fcos.img.xz.sig"),
        }),
    });
    const args = [
      "--arch",
      "aarch64",
      "--stream-base-url",
      s2.url,
      "--keyring",
      fixture("keyring.gpg"),
      "-q",
    ];
    expect(
      (await runCli(["flash", join(work, "meta1.img"), ...args], { cacheHome: own })).code,
    ).toBe(0);
    // Make the cached metadata 3 days old, then take its server away (connection refused).
    const metaDir = join(own, "provision", "meta");
    for (const f of await readdir(metaDir)) {
      const doc = JSON.parse(await readFile(join(metaDir, f), "utf8"));
      doc.fetchedAt = new Date(Date.now() - 3 * 86400_000).toISOString();
      await writeFile(join(metaDir, f), JSON.stringify(doc));
    }
    await s2.close();
    const r = await runCli(["flash", join(work, "meta2.img"), ...args], { cacheHome: own });
    expect(r.code).toBe(0);
    expect(r.stderr.trim()).toMatch(
      /^warning: could not reach 127\.0\.0\.1:\d+ \(.*\); using the copy of http:\/\/127\.0\.0\.1:\d+\/streams\/stable\.json cached 3 days ago$/,
    );
    expect(await sha256(join(work, "meta2.img"))).toBe(manifest().artifacts["fcos.img"].sha256);
    // Without any cached copy the same failure is one clear error.
    const r2 = await runCli(["flash", join(work, "meta3.img"), ...args], {
      cacheHome: await newCache(),
    });
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(
      /^provision: http:\/\/127\.0\.0\.1:\d+\/streams\/stable\.json: connection refused$/m,
    );
  });
});

describe("bad input fails with one clear line and writes nothing", () => {
  it("a checksum mismatch", async () => {
    const cache = await newCache();
    const out = join(work, "mismatch.img");
    const r = await runCli(
      [
        "flash",
        out,
        "--image-url",
        `${server.url}${fcosStreamInfo(server.url, { imagePath: fixture("fcos.img.xz") }).imagePath}`,
        "--sha256",
        "0".repeat(64),
      ],
      { cacheHome: cache },
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /^provision: checksum mismatch for http:\/\/127\.0\.0\.1:\d+\/.*: expected sha256 0{64}, got [0-9a-f]{64}$/m,
    );
    await expect(stat(out)).rejects.toThrow();
    expect(
      await readdir(
        join(
          cache,
          "provision",
          "images",
          (await readdir(join(cache, "provision", "images")))[0] as string,
        ),
      ),
    ).not.toContain("entry.json");
  });

  it("a signature by a key that is not in the keyring, and a BAD signature", async () => {
    const cache = await newCache();
    const info = fcosStreamInfo(server.url, { imagePath: fixture("fcos.img.xz") });
    server.addRoutes({ [info.signaturePath]: { file: fixture("fcos.img.xz.badsig") } });
    try {
      const r = await runCli(["flash", join(work, "badsig.img"), ...streamArgs()], {
        cacheHome: cache,
      });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(
        /signature on .* is by key [0-9A-F]+, which is not in the given keyring/,
      );
      // A signature over other data by the right key: gpgv says BAD signature.
      server.addRoutes({ [info.signaturePath]: { file: fixture("fcos.img.bz2.sig") } });
      const r2 = await runCli(["flash", join(work, "badsig.img"), ...streamArgs()], {
        cacheHome: cache,
      });
      expect(r2.code).toBe(2);
      expect(r2.stderr).toMatch(
        /^provision: BAD signature on http:.*: the file is not what was signed$/m,
      );
      await expect(stat(join(work, "badsig.img"))).rejects.toThrow();
    } finally {
      server.addRoutes({ [info.signaturePath]: { file: fixture("fcos.img.xz.sig") } });
    }
  });

  it("no key available: one warning, the checksum is relied on; --require-signature fails", async () => {
    const args = ["--arch", "aarch64", "--stream-base-url", server.url];
    const r = await runCli(["flash", join(work, "nokey.img"), ...args, "-q"], {
      cacheHome: await newCache(),
    });
    expect(r.code).toBe(0);
    expect(r.stderr.trim().split("\n")).toEqual([
      expect.stringMatching(
        /^warning: no signing key available for .*; relying on the sha256 checksum only/,
      ),
    ]);
    const r2 = await runCli(["flash", join(work, "nokey2.img"), ...args, "--require-signature"], {
      cacheHome: await newCache(),
    });
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/no key to check the signature .* and --require-signature was given/);
    await expect(stat(join(work, "nokey2.img"))).rejects.toThrow();
  });

  it("a 404", async () => {
    const r = await runCli(
      ["flash", join(work, "404.img"), "--image-url", `${server.url}/nope.raw.xz`],
      { cacheHome: await newCache() },
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /^provision: http:\/\/127\.0\.0\.1:\d+\/nope\.raw\.xz was not found \(HTTP 404\)$/m,
    );
    await expect(stat(join(work, "404.img"))).rejects.toThrow();
  });

  it("a corrupt xz image: error, and the partial target file is removed and said so", async () => {
    const out = join(work, "corrupt.img");
    const r = await runCli(["flash", out, "--image-url", `${server.url}/corrupt.img.xz`], {
      cacheHome: await newCache(),
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is incomplete and must not be booted: the partial file was removed/);
    expect(r.stderr).toMatch(/✖ .*corrupt\.img: the image .* is corrupt: xz failed/);
    await expect(stat(out)).rejects.toThrow();
  });

  it("invalid Ignition JSON: file:line:col, before any download or write", async () => {
    const bad = join(work, "bad.ign");
    await writeFile(
      bad,
      '{\n  "ignition": { "version": "3.3.0" },\n  "storage": { "files": [ }\n}\n',
    );
    const before = server.requests.length;
    const r = await runCli(["flash", join(work, "badign.img"), ...streamArgs(), "-i", bad], {
      cacheHome: await newCache(),
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^provision: ${bad}:3:\\d+: `, "m"));
    expect(server.requests.length).toBe(before);
    await expect(stat(join(work, "badign.img"))).rejects.toThrow();
  });

  it("--dry-run prints the plan and changes nothing", async () => {
    const cache = await newCache();
    const out = join(work, "dry.img");
    const r = await runCli(
      ["flash", out, ...streamArgs(), "-i", ign, "--append-karg", "quiet", "--dry-run"],
      { cacheHome: cache },
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("image: Fedora CoreOS stable 40.20240101.3.0 aarch64");
    expect(r.stdout).toContain(`target: ${out} (image file, created, sparse)`);
    expect(r.stdout).toContain("ignition:");
    expect(r.stdout).toContain("kernel args: append quiet");
    await expect(stat(out)).rejects.toThrow();
    expect(await readdir(join(cache, "provision")).catch(() => [])).not.toContain("images");
  });
});

describe("resume", () => {
  it("resumes with HTTP Range after the server drops the connection half way", async () => {
    const cache = await newCache();
    const info = fcosStreamInfo(server.url, { imagePath: fixture("fcos.img.xz") });
    const half = Math.floor(manifest().artifacts["fcos.img.xz"].size / 2);
    server.setFault(info.imagePath, { dropAfterBytes: half });
    const before = requestsFor(info.imagePath).length;
    const r = await runCli(["flash", join(work, "resume.img"), ...streamArgs()], {
      cacheHome: cache,
    });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/download interrupted at [\d.]+ [KMG]?i?B .*; resuming/);
    const reqs = requestsFor(info.imagePath).slice(before);
    expect(reqs).toHaveLength(2);
    expect(reqs[1]?.range).toMatch(/^bytes=\d+-$/);
    expect(Number(reqs[1]?.range?.slice(6, -1))).toBeGreaterThan(0);
    expect(await sha256(join(work, "resume.img"))).toBe(manifest().artifacts["fcos.img"].sha256);
  });
});

describe("block devices (loop devices this test attaches)", () => {
  let loop: string | undefined;
  let backing: string;
  beforeAll(async () => {
    backing = join(work, "loop-backing.img");
    await writeFile(backing, "");
    // Exactly the image's size, so the backup GPT lands at the device's end (sgdisk -v clean).
    await truncate(backing, 256 << 20);
    loop = await attachLoop(backing);
  });
  afterAll(async () => {
    await detachLoop(loop);
  });

  it("refuses without a terminal and without --yes, writing nothing", async () => {
    const r = await runCli(["flash", loop as string, "--image-url", fixture("fcos.img.xz")], {
      cacheHome: await newCache(),
    });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(
      /refusing to write \/dev\/loop\d+ without confirmation: no terminal to ask on; pass --yes/,
    );
    expect((await stat(backing)).blocks).toBe(0);
  });

  it("writes every byte, verifies from the device and embeds Ignition", async () => {
    const r = await runCli(
      [
        "flash",
        loop as string,
        "--image-url",
        fixture("fcos.img.xz"),
        "--yes",
        "-i",
        ign,
        "--append-karg",
        "console=ttyAMA0",
        "--json",
      ],
      {
        cacheHome: await newCache(),
      },
    );
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.targets[0]).toMatchObject({ kind: "block", ok: true, verified: true });
    expect(await debugfs(loop as string, bootOffset(), "cat /ignition/config.ign")).toBe(
      ignText.trimEnd(),
    );
    expect(
      await debugfs(
        loop as string,
        bootOffset(),
        "cat /loader/entries/ostree-1-fedora-coreos.conf",
      ),
    ).toMatch(/^options .* console=ttyAMA0$/m);
    const v = await execa("sgdisk", ["-v", loop as string]);
    expect(v.stdout).toContain("No problems found");
  });

  it("--sparse onto a disk full of old data: verified (the skipped grains keep it, and are not judged)", async () => {
    // Old data everywhere: the image's zero grains keep it with --sparse.
    const fh = await open(loop as string, "r+");
    const old = Buffer.alloc(4 << 20, 0xaa);
    for (let at = 0; at < 256 << 20; at += old.length) await fh.write(old, 0, old.length, at);
    await fh.sync();
    await fh.close();
    const r = await runCli(
      ["flash", loop as string, "--image-url", fixture("fcos.img.xz"), "--yes", "--sparse"],
      { cacheHome: await newCache() },
    );
    expect(r.stderr).not.toMatch(/verify failed/);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/verified/);
    // The old data is still there in a grain the image has as zeros.
    const img = Buffer.alloc(4096);
    const dev = await open(loop as string, "r");
    let stale = false;
    for (let at = 64 << 20; at < 256 << 20 && !stale; at += 1 << 20) {
      await dev.read(img, 0, 4096, at);
      stale = img.every((b) => b === 0xaa);
    }
    await dev.close();
    expect(stale).toBe(true);
  });

  it("refuses an image bigger than the device before writing anything", async () => {
    const small = join(work, "small-backing.img");
    await writeFile(small, "");
    await truncate(small, 512 << 20);
    const dev = await attachLoop(small);
    try {
      const r = await runCli(["flash", dev, "--image-url", `${server.url}/big.img.xz`, "--yes"], {
        cacheHome: await newCache(),
      });
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(
        /^✖ \/dev\/loop\d+: image is 629\.1 MB but \/dev\/loop\d+ holds 536\.9 MB$/m,
      );
      expect((await stat(small)).blocks).toBe(0);
    } finally {
      await detachLoop(dev);
    }
  });

  it("refuses a loop device with a mounted partition, without writing", async () => {
    const file = join(work, "mounted-backing.img");
    await copyFile(fixture("fcos.img"), file);
    const dev = await attachLoop(file);
    const mnt = await mkdtemp(join(work, "mnt-"));
    try {
      await execa("partx", ["-a", dev]);
      await execa("mount", ["-o", "ro", `${dev}p3`, mnt]);
      const before = await sha256(file);
      const r = await runCli(["flash", dev, "--image-url", fixture("fcos.img.xz"), "--yes"], {
        cacheHome: await newCache(),
      });
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(
        new RegExp(
          `^provision: ${dev} has mounted partitions \\(${mnt}\\); unmount them or pass --unmount$`,
          "m",
        ),
      );
      expect(await sha256(file)).toBe(before);
    } finally {
      await execa("umount", [mnt], { reject: false });
      await detachLoop(dev);
    }
  });

  it("--unmount unmounts the mounted partition first, then writes", async () => {
    const file = join(work, "unmount-backing.img");
    await copyFile(fixture("fcos.img"), file);
    const dev = await attachLoop(file);
    const mnt = await mkdtemp(join(work, "mnt-"));
    try {
      await execa("partx", ["-a", dev]);
      await execa("mount", ["-o", "ro", `${dev}p3`, mnt]);
      const r = await runCli(
        ["flash", dev, "--image-url", fixture("fcos.img.xz"), "--yes", "--unmount", "-i", ign],
        {
          cacheHome: await newCache(),
        },
      );
      expect(r.code).toBe(0);
      expect(r.stderr).toContain(`unmounted ${mnt} (on ${dev})`);
      expect(await readFile("/proc/self/mountinfo", "utf8")).not.toContain(` ${mnt} `);
      expect(await debugfs(dev, bootOffset(), "cat /ignition/config.ign")).toBe(ignText.trimEnd());
    } finally {
      await execa("umount", [mnt], { reject: false });
      await detachLoop(dev);
    }
  });

  it("refuses a partition when a whole disk is expected", async () => {
    const file = join(work, "part-backing.img");
    await copyFile(fixture("fcos.img"), file);
    const dev = await attachLoop(file);
    try {
      await execa("partx", ["-a", dev]);
      const r = await runCli(
        ["flash", `${dev}p2`, "--image-url", fixture("fcos.img.xz"), "--yes"],
        { cacheHome: await newCache() },
      );
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(new RegExp(`${dev}p2 is a partition; pass the whole disk ${dev}`));
    } finally {
      await detachLoop(dev);
    }
  });

  it("refuses the disk that holds / without writing", async () => {
    const mi = await readFile("/proc/self/mountinfo", "utf8");
    const rootLine = mi.split("\n").find((l) => l.split(" ")[4] === "/");
    const src = rootLine?.split(" - ")[1]?.split(" ")[1];
    expect(src, "the root filesystem's source device").toMatch(/^\/dev\//);
    const r = await runCli(
      ["flash", src as string, "--image-url", fixture("fcos.img.xz"), "--yes"],
      { cacheHome: await newCache() },
    );
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/holds \/ \(the running system\); refusing to write to it/);
  });
});

describe("several targets from one download", () => {
  it("writes two files and a loop device in one run; a bad target does not stop the others", async () => {
    const backing = join(work, "multi-backing.img");
    await writeFile(backing, "");
    await truncate(backing, 300 << 20);
    const dev = await attachLoop(backing);
    try {
      const a = join(work, "multi-a.img");
      const b = join(work, "multi-b.img");
      const r = await runCli(
        ["flash", a, dev, b, "--image-url", fixture("fcos.img.xz"), "--yes", "-i", ign, "--json"],
        {
          cacheHome: await newCache(),
        },
      );
      expect(r.code).toBe(0);
      const rep = JSON.parse(r.stdout);
      expect(
        rep.targets.map((t: { ok: boolean; verified: boolean }) => [t.ok, t.verified]),
      ).toEqual([
        [true, true],
        [true, true],
        [true, true],
      ]);
      for (const t of [a, b, dev])
        expect(await debugfs(t, bootOffset(), "cat /ignition/config.ign")).toBe(ignText.trimEnd());

      await mkdir(join(work, "ro"), { recursive: true });
      const c = join(work, "multi-c.img");
      const r2 = await runCli(
        [
          "flash",
          c,
          join(work, "no-such-dir", "x.img"),
          "--image-url",
          fixture("fcos.img.xz"),
          "--json",
        ],
        {
          cacheHome: await newCache(),
        },
      ).catch((e) => e);
      // A target in a missing directory is refused at inspection: nothing is written anywhere.
      expect(r2.code).toBe(2);
      expect(r2.stderr).toMatch(/directory .*no-such-dir does not exist/);
    } finally {
      await detachLoop(dev);
    }
  });
});

describe("Flatcar channel", () => {
  it("resolves current from version.txt and downloads the bz2 image", async () => {
    const fl = await startServer({
      routes: (base) =>
        flatcarRoutes(base, {
          imagePath: fixture("fcos.img.bz2"),
          sigPath: fixture("fcos.img.bz2.sig"),
        }),
    });
    try {
      const out = join(work, "flatcar.img");
      const r = await runCli(
        [
          "flash",
          out,
          "--os",
          "flatcar",
          "--arch",
          "aarch64",
          "--flatcar-base-url",
          fl.url,
          "--keyring",
          fixture("keyring.gpg"),
          "--json",
        ],
        { cacheHome: await newCache() },
      );
      expect(r.code).toBe(0);
      const rep = JSON.parse(r.stdout);
      expect(rep.image.description).toBe("Flatcar stable 3815.2.0 aarch64");
      expect(rep.image.signature).toBe("verified");
      expect(fl.requests.map((q) => q.path)).toContain(
        "/arm64-usr/3815.2.0/flatcar_production_image.bin.bz2",
      );
      expect(await sha256(out)).toBe(manifest().artifacts["fcos.img"].sha256);
    } finally {
      await fl.close();
    }
  });
});

describe("Ctrl-C while writing", () => {
  it("stops, exits 130 and says the target is incomplete", async () => {
    const out = join(work, "interrupted.img");
    const child = startCli(["flash", out, "--image-url", fixture("big.img")], {
      cacheHome: await newCache(),
    });
    let seen = "";
    await new Promise<void>((resolve) => {
      child.stderr?.on("data", (d: Buffer) => {
        seen += d.toString();
        if (seen.includes("writing ")) resolve();
      });
      child.then(() => resolve());
    });
    child.kill("SIGINT");
    const r = await child;
    expect(r.exitCode).toBe(130);
    expect(String(r.stderr)).toMatch(/interrupted\.img is incomplete and must not be booted/);
    await expect(stat(out)).rejects.toThrow();
  });
});
