// The fault suite: the real CLI against servers that misbehave the way real ones do, full
// file systems, I/O errors injected with an LD_PRELOAD shim (fixtures/fault-shim), signals at
// each phase and two writers at once. Every case checks the exit code, one clear line, no
// stack trace, and what is left behind: the target removed or wiped, the cache consistent
// (no .part, no .lock), TMPDIR empty, no child process left.
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { downloadResumable } from "../../src/cache/download.js";
import { getBytes } from "../../src/http/index.js";
import { faultEnv, faultShim } from "../helpers/fault.js";
import { fixture, manifest, repoRoot } from "../helpers/fixtures.js";
import { attachLoop, detachLoop } from "../helpers/loop.js";
import { type Behaviour, type RawServer, startRawServer } from "../helpers/rawhttp.js";

const XZ = () => readFileSync(fixture("fcos.img.xz"));
const xzSha = () => manifest().artifacts["fcos.img.xz"].sha256;
const HTML = Buffer.from(
  "<!DOCTYPE html>\n<html><head><title>Sign in to the Wi-Fi</title></head><body>Accept the terms</body></html>\n",
);

let work: string;
let server: RawServer;
/** What each path serves; tests set their own. */
const routes = new Map<string, Behaviour>();

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-faults-"));
  server = await startRawServer((path) => routes.get(path));
});
afterAll(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the CLI with its own cache and TMPDIR; optionally extra env (the fault shim). */
async function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<Run & { cache: string; tmp: string }> {
  const cache = await mkdtemp(join(work, "cache-"));
  const tmp = await mkdtemp(join(work, "tmp-"));
  const r = await execa("node", [join(repoRoot, "bin", "provision.js"), ...args], {
    reject: false,
    stdin: "ignore",
    env: { XDG_CACHE_HOME: cache, TMPDIR: tmp, CI: "1", ...env },
    timeout: 120_000,
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), cache, tmp };
}

/** No stack trace, no raw library error: what a user sees is provision's own lines. */
function expectClean(stderr: string) {
  expect(stderr).not.toMatch(/^\s+at .*:\d+:\d+\)?$/m);
  expect(stderr).not.toMatch(
    /node:internal|AssertionError|TypeError|unexpected error|internal error/,
  );
}

/** The one error line (`provision: ...` or `✖ target: ...`). */
function errorLines(stderr: string): string[] {
  return stderr.split("\n").filter((l) => /^(provision: |✖ )/.test(l));
}

/** Every file under the cache's images dir: no .part, .part.json or .lock may be left. */
async function cacheLeftovers(cache: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (/\.(part|part\.json|lock)$/.test(e.name)) out.push(p);
    }
  };
  await walk(join(cache, "provision", "images"));
  return out;
}

async function cachedImages(cache: string): Promise<string[]> {
  const dirs = await readdir(join(cache, "provision", "images")).catch(() => [] as string[]);
  return dirs.filter((d) => !d.endsWith(".lock"));
}

async function exists(p: string): Promise<boolean> {
  return await stat(p).then(
    () => true,
    () => false,
  );
}

/** Processes (other than us) whose command line mentions `needle`. */
async function processesMentioning(needle: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmd.includes(needle)) found.push(`${pid}: ${cmd.replace(/\0/g, " ")}`);
  }
  return found;
}

describe("servers that misbehave", () => {
  it("HTTP/1.0 with the socket closed after the body: 40 downloads and 40 documents, no crash", async () => {
    // undici 7 asserted in its socket 'end' handler when its parser was paused for
    // backpressure as the FIN came (1 in 4 runs here before src/http existed).
    routes.set("/img.xz", { kind: "http10", body: XZ() });
    routes.set("/doc.json", { kind: "http10", body: Buffer.alloc(300_000, 0x61) });
    for (let i = 0; i < 40; i++) {
      const part = join(work, `h10-${i}.part`);
      const r = await downloadResumable(`${server.url}/img.xz`, part, {});
      expect(r.sha256).toBe(xzSha());
      await rm(part, { force: true });
      expect((await getBytes(`${server.url}/doc.json`)).length).toBe(300_000);
    }
  });

  it("HTTP/1.0 through the CLI, with and without Content-Length: flashed and verified", async () => {
    routes.set("/h10.xz", { kind: "http10", body: XZ() });
    routes.set("/nolen.xz", { kind: "http10-no-length", body: XZ() });
    for (const path of ["/h10.xz", "/nolen.xz"]) {
      const out = join(work, `cli${path.replace(/\W/g, "")}.img`);
      const r = await cli([
        "flash",
        out,
        "--image-url",
        `${server.url}${path}`,
        "--sha256",
        xzSha(),
      ]);
      expectClean(r.stderr);
      expect(r.code).toBe(0);
      expect(r.stderr).toMatch(/ready \(verified/);
      expect(await cacheLeftovers(r.cache)).toEqual([]);
    }
  });

  it("a server that closes mid-body every time: exit 1 after the retries, resumable .part kept, one line", async () => {
    routes.set("/drop.xz", { kind: "close-mid-body", body: XZ(), after: 1_000_000 });
    const out = join(work, "drop.img");
    const r = await cli(["flash", out, "--image-url", `${server.url}/drop.xz`]);
    expectClean(r.stderr);
    expect(r.code).toBe(1);
    expect(errorLines(r.stderr)).toEqual([
      expect.stringMatching(
        /^provision: download of http:\/\/127\.0\.0\.1:\d+\/drop\.xz failed after 6 attempts: .*(closed|reset)/,
      ),
    ]);
    expect(r.stderr).toMatch(/hint: run the same command again to resume/);
    // Resumable: the part stays (with its validator), no lock; the target was never created.
    expect((await cacheLeftovers(r.cache)).filter((f) => f.endsWith(".lock"))).toEqual([]);
    expect(await exists(out)).toBe(false);
    expect(await readdir(r.tmp)).toEqual([]);
  }, 60_000);

  it("a Content-Length that lies (longer than the body): never written as if complete", async () => {
    const body = XZ();
    routes.set("/lies.xz", { kind: "wrong-length", body, claimed: body.length + 4096 });
    const out = join(work, "lies.img");
    const r = await cli(["flash", out, "--image-url", `${server.url}/lies.xz`]);
    expectClean(r.stderr);
    expect(r.code).toBe(1);
    expect(errorLines(r.stderr)[0]).toMatch(/failed after 6 attempts/);
    expect(await exists(out)).toBe(false);
    expect(await cachedImages(r.cache).then((d) => d.length)).toBeLessThanOrEqual(1);
    expect(
      await readdir(join(r.cache, "provision", "images")).then((ds) =>
        Promise.all(ds.map((d) => exists(join(r.cache, "provision", "images", d, "entry.json")))),
      ),
    ).not.toContain(true);
  }, 60_000);

  it("a stalled server: --net-timeout ends it with a line that names the host and the flag", async () => {
    routes.set("/streams/stable.json", {
      kind: "stall",
      body: Buffer.alloc(1000, 0x20),
      after: 10,
    });
    routes.set("/stall.ign", { kind: "stall", body: Buffer.alloc(1000, 0x20), after: 0 });
    const t0 = Date.now();
    const r = await cli([
      "flash",
      join(work, "stall.img"),
      "--stream-base-url",
      server.url,
      "--arch",
      "aarch64",
      "--net-timeout",
      "1",
    ]);
    expectClean(r.stderr);
    expect(r.code).toBe(1);
    expect(errorLines(r.stderr)).toEqual([
      expect.stringMatching(
        /^provision: 127\.0\.0\.1:\d+ sent nothing for 1 s \(http:.*stable\.json\)$/,
      ),
    ]);
    expect(r.stderr).toMatch(/--net-timeout/);
    const r2 = await cli([
      "flash",
      join(work, "stall2.img"),
      "--image-url",
      fixture("fcos.img.xz"),
      "--ignition-url",
      `${server.url}/stall.ign`,
      "--net-timeout",
      "1s",
    ]);
    expectClean(r2.stderr);
    expect(r2.code).toBe(2);
    expect(errorLines(r2.stderr)[0]).toMatch(
      /cannot fetch the Ignition config: .*sent nothing for 1 s/,
    );
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(await exists(join(work, "stall2.img"))).toBe(false);
  });

  it("an HTML page instead of an image: named as HTML, nothing written, nothing cached", async () => {
    routes.set("/portal.raw.xz", { kind: "http10", body: HTML, contentType: "text/html" });
    const out = join(work, "portal.img");
    const r = await cli(["flash", out, "--image-url", `${server.url}/portal.raw.xz`]);
    expectClean(r.stderr);
    expect(r.code).toBe(2);
    expect(errorLines(r.stderr)).toEqual([
      expect.stringMatching(
        /^provision: http:\/\/127.*portal\.raw\.xz looks like HTML .*nothing was written$/,
      ),
    ]);
    expect(r.stderr).toMatch(/is not pinned/);
    expect(r.stderr).not.toMatch(/ready \(|sha256 verified/);
    expect(await exists(out)).toBe(false);
    expect(await cachedImages(r.cache)).toEqual([]);
  });

  it("a URL scheme we cannot fetch, a directory, a bad base URL: one line each, exit 2", async () => {
    for (const [args, re] of [
      [["--image-url", "ftp://example.com/x.raw.xz"], /ftp is not supported/],
      [["--image-url", work], /is a directory, not an image file/],
      [["--stream-base-url", "not a url", "--arch", "aarch64"], /not a valid URL/],
    ] as const) {
      const r = await cli(["flash", join(work, "never.img"), ...args]);
      expectClean(r.stderr);
      expect(r.code).toBe(2);
      expect(errorLines(r.stderr)).toEqual([expect.stringMatching(re)]);
    }
    expect(await exists(join(work, "never.img"))).toBe(false);
  });
});

describe("full file systems and I/O errors", () => {
  let mnt: string;
  beforeAll(async () => {
    mnt = await mkdtemp(join(work, "tmpfs-"));
    await execa("mount", ["-t", "tmpfs", "-o", "size=3m", "provision-test", mnt]);
  });
  afterAll(async () => {
    await execa("umount", [mnt], { reject: false });
  });

  it("a full target file system: exit 3, the target and the errno named, the partial file removed", async () => {
    const out = join(mnt, "full.img");
    const r = await cli(["flash", out, "--image-url", fixture("fcos.img.xz")]);
    expectClean(r.stderr);
    expect(r.code).toBe(3);
    expect(errorLines(r.stderr)).toEqual([
      expect.stringMatching(
        /^✖ .*full\.img: no space left on the device \(ENOSPC\) after .*; the image does not fit there$/,
      ),
    ]);
    expect(r.stderr).not.toMatch(/corrupt/);
    expect(r.stderr).toMatch(/partial file was removed/);
    expect(await exists(out)).toBe(false);
  });

  it("a full cache: the directory and the space needed are named, no .part left, not retried", async () => {
    routes.set("/big.xz", { kind: "http10", body: XZ() });
    routes.set("/big-nolen.xz", { kind: "http10-no-length", body: XZ() });
    for (const path of ["/big.xz", "/big-nolen.xz"]) {
      const cache = await mkdtemp(join(mnt, "cache-"));
      const r = await cli(
        ["flash", join(work, "cachefull.img"), "--image-url", `${server.url}${path}`],
        {
          XDG_CACHE_HOME: cache,
        },
      );
      expectClean(r.stderr);
      expect(r.code).toBe(1);
      expect(errorLines(r.stderr)).toEqual([
        expect.stringMatching(
          /^provision: the cache directory .*provision\/images\/\w+ is full \((ENOSPC|EDQUOT)\)/,
        ),
      ]);
      if (path === "/big.xz") expect(r.stderr).toMatch(/4\.7 MiB needed, [\d.]+ [KM]iB free/);
      expect(r.stderr).not.toMatch(/resuming/);
      expect(await cacheLeftovers(cache)).toEqual([]);
      expect(await exists(join(work, "cachefull.img"))).toBe(false);
      await rm(cache, { recursive: true, force: true });
    }
  });

  it("a read-only or impossible cache directory: one line naming it, no endless mkdir", async () => {
    const ro = await mkdtemp(join(work, "ro-cache-"));
    await mkdir(join(ro, "provision", "images"), { recursive: true });
    await execa("mount", [
      "-t",
      "tmpfs",
      "-o",
      "ro,size=1m",
      "provision-ro",
      join(ro, "provision", "images"),
    ]);
    try {
      const rro = await cli(
        ["flash", join(work, "ro0.img"), "--image-url", `${server.url}/img.xz`],
        {
          XDG_CACHE_HOME: ro,
        },
      );
      expectClean(rro.stderr);
      expect(rro.code).toBe(1);
      expect(errorLines(rro.stderr)).toEqual([
        expect.stringMatching(
          /^provision: cannot (write to|create) the cache directory .*\(EROFS\)$/,
        ),
      ]);
      expect(rro.stderr).toMatch(/hint: .*XDG_CACHE_HOME/);
    } finally {
      await execa("umount", [join(ro, "provision", "images")], { reject: false });
    }
    const r = await cli(["flash", join(work, "ro.img"), "--image-url", `${server.url}/img.xz`], {
      XDG_CACHE_HOME: "/proc/nope",
    });
    expectClean(r.stderr);
    expect(r.code).toBe(1);
    expect(errorLines(r.stderr)).toEqual([
      expect.stringMatching(/^provision: cannot create the cache directory \/proc\/nope/),
    ]);
  });

  it("EIO while writing a file and while reading a loop device back: named, target removed or wiped", async () => {
    await faultShim();
    const out = join(work, "eio.img");
    const r = await cli(
      ["flash", out, "--image-url", fixture("fcos.img.xz")],
      faultEnv({ path: out, op: "write", errno: "EIO", afterBytes: 8 << 20 }),
    );
    expectClean(r.stderr);
    expect(r.code).toBe(1);
    expect(errorLines(r.stderr)).toEqual([
      expect.stringMatching(
        /^✖ .*eio\.img: writing .*eio\.img failed at [\d.]+ MiB: input\/output error \(EIO\)$/,
      ),
    ]);
    expect(r.stderr).not.toMatch(/corrupt/);
    expect(await exists(out)).toBe(false);

    const backing = join(work, "eio-loop.bin");
    await writeFile(backing, Buffer.alloc(0));
    await execa("truncate", ["-s", "300M", backing]);
    const loop = await attachLoop(backing);
    try {
      const r2 = await cli(
        ["flash", loop, "--image-url", fixture("fcos.img.xz"), "--yes"],
        faultEnv({ path: loop, op: "read", errno: "EIO", afterBytes: 1 << 20 }),
      );
      expectClean(r2.stderr);
      expect(r2.code).toBe(1);
      expect(errorLines(r2.stderr)).toEqual([
        expect.stringMatching(
          /^✖ \/dev\/loop\d+: verify failed: reading \/dev\/loop\d+ back failed at .*\(EIO\)$/,
        ),
      ]);
      expect(r2.stderr).toMatch(/partition table was wiped/);
      const first = Buffer.alloc(1 << 20);
      const fh = await import("node:fs/promises").then((m) => m.open(loop, "r"));
      await fh.read(first, 0, first.length, 0);
      await fh.close();
      expect(first.every((b) => b === 0)).toBe(true);
    } finally {
      await detachLoop(loop);
    }
  });
});

describe("the cache", () => {
  it("a cached image corrupted on disk is re-checked, evicted, and the next run downloads it afresh", async () => {
    routes.set("/good.xz", { kind: "http10", body: XZ() });
    const cache = await mkdtemp(join(work, "cache-corrupt-"));
    const args = (n: string) => [
      "flash",
      join(work, n),
      "--image-url",
      `${server.url}/good.xz`,
      "--sha256",
      xzSha(),
    ];
    expect((await cli(args("c1.img"), { XDG_CACHE_HOME: cache })).code).toBe(0);
    const [key] = await cachedImages(cache);
    const file = join(cache, "provision", "images", key as string, "good.xz");
    const bytes = await readFile(file);
    bytes.fill(0x55, 2_000_000, 2_100_000);
    await writeFile(file, bytes);
    const before = server.requests.length;
    const r = await cli(args("c2.img"), { XDG_CACHE_HOME: cache });
    expectClean(r.stderr);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/changed since it was downloaded.*removed from the cache/);
    expect(await cachedImages(cache)).toEqual([]);
    expect(await exists(join(work, "c2.img"))).toBe(false);
    const r3 = await cli(args("c3.img"), { XDG_CACHE_HOME: cache });
    expect(r3.code).toBe(0);
    expect(server.requests.length).toBe(before + 1);
  });
});

describe("signals and two writers", () => {
  function start(args: string[], env: Record<string, string> = {}) {
    return execa("node", [join(repoRoot, "bin", "provision.js"), ...args], {
      reject: false,
      stdin: "ignore",
      env: { CI: "1", ...env },
      timeout: 120_000,
    });
  }
  async function waitFor(child: ReturnType<typeof start>, text: string): Promise<string> {
    let seen = "";
    await new Promise<void>((resolve) => {
      child.stderr?.on("data", (d: Buffer) => {
        seen += d.toString();
        if (seen.includes(text)) resolve();
      });
      child.then(() => resolve());
    });
    return seen;
  }

  for (const [sig, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
    ["SIGHUP", 129],
  ] as const) {
    it(`${sig} while writing: exit ${code}, the partial file removed, no xz left, TMPDIR empty`, async () => {
      const cache = await mkdtemp(join(work, "cache-sig-"));
      const tmp = await mkdtemp(join(work, "tmp-sig-"));
      const out = join(work, `sig-${sig}.img`);
      const child = start(["flash", out, "--image-url", fixture("big.img.xz")], {
        XDG_CACHE_HOME: cache,
        TMPDIR: tmp,
      });
      await waitFor(child, "writing ");
      process.kill(child.pid as number, sig);
      const r = await child;
      expectClean(String(r.stderr));
      expect(r.exitCode).toBe(code);
      expect(String(r.stderr)).toMatch(
        /is incomplete and must not be booted: the partial file was removed/,
      );
      expect(await exists(out)).toBe(false);
      expect(await readdir(tmp)).toEqual([]);
      expect(await processesMentioning("big.img.xz")).toEqual([]);
    });
  }

  it("SIGINT while downloading: exit 130, the .part kept for resuming, no lock left", async () => {
    routes.set("/slow.xz", { kind: "trickle", body: XZ(), chunk: 65536, everyMs: 50 });
    const cache = await mkdtemp(join(work, "cache-dl-"));
    const child = start(["flash", join(work, "dl.img"), "--image-url", `${server.url}/slow.xz`], {
      XDG_CACHE_HOME: cache,
    });
    await waitFor(child, "downloading ");
    await new Promise((r) => setTimeout(r, 500));
    process.kill(child.pid as number, "SIGINT");
    const r = await child;
    expectClean(String(r.stderr));
    expect(r.exitCode).toBe(130);
    const left = await cacheLeftovers(cache);
    expect(left.filter((f) => f.endsWith(".lock"))).toEqual([]);
    expect(left.some((f) => f.endsWith(".part"))).toBe(true);
    expect(await exists(join(work, "dl.img"))).toBe(false);
  });

  it("a second Ctrl-C exits at once and still wipes: an existing target's first MiB is zeroed", async () => {
    // A slow card (every write to the target sleeps 300 ms, through the fault shim) keeps the
    // first Ctrl-C's own cleanup busy, so the second one lands on the forced exit.
    await faultShim();
    const out = join(work, "double.img");
    await writeFile(out, Buffer.alloc(2 << 20, 0xaa)); // an existing file: wiped, not removed
    const child = start(["flash", out, "--image-url", fixture("big.img.xz")], {
      XDG_CACHE_HOME: await mkdtemp(join(work, "cache-dbl-")),
      ...faultEnv({ path: out, op: "write", errno: "EIO", afterBytes: 2 ** 50, delayMs: 300 }),
    });
    await waitFor(child, "writing ");
    await new Promise((r) => setTimeout(r, 300));
    // process.kill: execa's kill() sends a signal once and ignores a second call.
    process.kill(child.pid as number, "SIGINT");
    await waitFor(child, "stopping");
    process.kill(child.pid as number, "SIGINT");
    const r = await child;
    expectClean(String(r.stderr));
    expect(r.exitCode).toBe(130);
    expect(String(r.stderr)).toMatch(
      /Ctrl-C again: exiting now; .*zeroed the first MiB of .*double\.img: it cannot boot; flash it again/,
    );
    const head = (await readFile(out)).subarray(0, 1 << 20);
    expect(head.every((b) => b === 0)).toBe(true);
    expect(await processesMentioning("big.img.xz")).toEqual([]);
  });

  it("kill -9 while writing a disk: the old partition table is gone and the new one not yet written", async () => {
    // Nothing can run on SIGKILL: the first MiB (MBR, primary GPT) is zeroed before writing
    // and the image's own is written last, so the disk shows no partitions, old or new.
    await faultShim();
    const backing = join(work, "kill9.bin");
    await execa("truncate", ["-s", "700M", backing]);
    await execa("sgdisk", ["-n", "1:2048:+100M", "-t", "1:EF00", backing]);
    const loop = await attachLoop(backing);
    try {
      const child = start(["flash", loop, "--image-url", fixture("big.img.xz"), "--yes"], {
        XDG_CACHE_HOME: await mkdtemp(join(work, "cache-k9-")),
        ...faultEnv({ path: loop, op: "write", errno: "EIO", afterBytes: 2 ** 50, delayMs: 50 }),
      });
      await waitFor(child, "writing ");
      await new Promise((r) => setTimeout(r, 1000));
      process.kill(child.pid as number, "SIGKILL");
      await child;
      const p = await execa("sgdisk", ["-p", loop], { reject: false });
      expect(String(p.stdout) + String(p.stderr)).not.toMatch(/^\s+1\s+2048\s/m);
      const head = Buffer.alloc(1 << 20);
      const fh = await import("node:fs/promises").then((m) => m.open(loop, "r"));
      await fh.read(head, 0, head.length, 0);
      await fh.close();
      expect(head.every((b) => b === 0)).toBe(true);
    } finally {
      await detachLoop(loop);
    }
  });

  it("two flashes of one target: the second refuses at once, the first finishes verified", async () => {
    const out = join(work, "twice.img");
    const first = start(["flash", out, "--image-url", fixture("big.img.xz")], {
      XDG_CACHE_HOME: await mkdtemp(join(work, "cache-w1-")),
    });
    await waitFor(first, "writing ");
    const second = await cli([
      "flash",
      `${work}/./twice.img`,
      "--image-url",
      fixture("fcos.img.xz"),
    ]);
    expectClean(second.stderr);
    expect(second.code).toBe(3);
    expect(errorLines(second.stderr)).toEqual([
      expect.stringMatching(
        /^provision: .*twice\.img is being written by another provision process \(pid \d+\); nothing was written$/,
      ),
    ]);
    const r = await first;
    expect(r.exitCode).toBe(0);
    expect(String(r.stderr)).toMatch(/ready \(verified/);
  });

  it("the same target under two names is refused before anything: files and a loop device", async () => {
    const dir = join(work, "dup");
    await mkdir(dir, { recursive: true });
    const r = await cli([
      "flash",
      join(dir, "x.img"),
      `${dir}/../dup/x.img`,
      "--image-url",
      fixture("fcos.img.xz"),
    ]);
    expectClean(r.stderr);
    expect(r.code).toBe(2);
    expect(errorLines(r.stderr)).toEqual([expect.stringMatching(/are the same target$/)]);
    expect(await exists(join(dir, "x.img"))).toBe(false);

    const backing = join(work, "dup-loop.bin");
    await execa("truncate", ["-s", "300M", backing]);
    const loop = await attachLoop(backing);
    try {
      const link = join(dir, "disk-link");
      await symlink(loop, link);
      const r2 = await cli(["flash", loop, link, "--image-url", fixture("fcos.img.xz"), "--yes"]);
      expectClean(r2.stderr);
      expect(r2.code).toBe(2);
      expect(errorLines(r2.stderr)).toEqual([expect.stringMatching(/are the same target$/)]);
    } finally {
      await detachLoop(loop);
    }
  });
});

describe("output and exit paths", () => {
  it("`flash --help | head -1` exits 0 with no EPIPE trace; bare provision exits 2", async () => {
    const r = await execa(
      "bash",
      [
        "-c",
        `node ${join(repoRoot, "bin", "provision.js")} flash --help | head -c 10; echo " rc=\${PIPESTATUS[0]}"`,
      ],
      {
        reject: false,
      },
    );
    expect(String(r.stdout)).toMatch(/rc=0$/);
    expectClean(String(r.stderr));
    const bare = await cli([]);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toMatch(/Usage: provision/);
  });

  it("flags that cannot go together are an error naming both, exit 2, nothing written", async () => {
    const out = join(work, "conflict.img");
    for (const [args, a, b] of [
      [["--os", "flatcar", "--stream", "next"], "--os flatcar", "--stream"],
      [["--channel", "beta"], "--os fcos (the default)", "--channel"],
      [["--image-url", fixture("fcos.img.xz"), "--stream", "next"], "--image-url", "--stream"],
      [["--sha256", xzSha()], "--sha256", "--stream"],
      [["--os", "flatcar", "--sha256", xzSha()], "--sha256", "--channel/--release"],
    ] as const) {
      const r = await cli(["flash", out, ...args]);
      expect(r.code).toBe(2);
      expect(r.stderr.split("\n")[0]).toBe(
        `error: ${a} and ${b} cannot go together: ${r.stderr.split(": ").slice(2).join(": ").split("\n")[0]}`,
      );
      expectClean(r.stderr);
    }
    const q = await cli(["qemu-test", "--os", "flatcar", "--stream", "next"]);
    expect(q.code).toBe(3); // qemu-test's "could not start"
    expect(q.stderr).toMatch(/^error: --os flatcar and --stream cannot go together/);
    const p = await cli(["cache", "prune", "--older-than", "abc"]);
    expect(p.code).toBe(2);
    expect(p.stderr.trim()).toBe('provision: --older-than must be a number of days, got "abc"');
    expect(await exists(out)).toBe(false);
  });

  it("--json: every command's failure is one JSON document on stdout with an error field, and one line on stderr", async () => {
    const written = join(work, "json-target.img");
    for (const [args, code] of [
      [["flash", written, "--image-url", "/nope.raw.xz"], 2],
      [["flash", written, "--arch", "sparc"], 2],
      [["flash", written, "--os", "flatcar", "--stream", "next"], 2],
      [["flash", join(work, "no-such-dir", "x.img"), "--image-url", fixture("fcos.img.xz")], 2],
      [["flash", written, "--image-url", fixture("corrupt.img.xz")], 1],
      [["cache", "prune", "--older-than", "x"], 2],
      [["mbr", "show", "/nonexistent-disk"], 2],
      [["mbr", "fix", "/nonexistent-disk"], 2],
      [["qemu-test", "/nonexistent.img"], 3],
      [["pxe-stick", written], 2],
    ] as const) {
      const r = await cli([...args, "--json"]);
      expect(r.code, args.join(" ")).toBe(code);
      const doc = JSON.parse(r.stdout) as { error?: { message: string; exitCode: number } };
      expect(doc.error?.exitCode, args.join(" ")).toBe(code);
      expect(doc.error?.message.length).toBeGreaterThan(5);
      expect(errorLines(r.stderr).length + (r.stderr.match(/^error: /m) ? 1 : 0)).toBe(1);
      expectClean(r.stderr);
    }
    expect(await exists(written)).toBe(false);
  });

  it("the last-resort handler: an uncaught error runs the urgent cleanups, prints one line, exits 70", async () => {
    const script = `
      const { installLastResort, onUrgentExit } = await import(${JSON.stringify(join(repoRoot, "dist", "lifecycle.js"))});
      installLastResort();
      onUrgentExit(() => "wiped /dev/fake");
      setTimeout(() => { throw new Error("boom from a socket event"); }, 10);
      setTimeout(() => {}, 5000);
    `;
    const r = await execa("node", ["--input-type=module", "-e", script], { reject: false });
    expect(r.exitCode).toBe(70);
    expect(String(r.stderr).trim()).toBe(
      "provision: internal error: boom from a socket event; wiped /dev/fake; report it with --debug",
    );
    const dbg = await execa("node", ["--input-type=module", "-e", script], {
      reject: false,
      env: { PROVISION_DEBUG: "1" },
    });
    expect(String(dbg.stderr)).toMatch(/at Timeout/);
  });
});
