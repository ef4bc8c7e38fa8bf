// End to end, real QEMU under TCG: the aarch64 boot fixture (fixtures/build-boot-fixture.sh) is
// flashed with `provision flash` into an image file, then booted with `provision qemu-test`
// through the real CLI. The fixture's initramfs runs the real Ignition against the fw_cfg
// config and prints PROVISION-BOOT-OK (or "You are in emergency mode").
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import {
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  symlink,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path, { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sha256File } from "../../src/cache/index.js";
import type { BootResult } from "../../src/qemu/index.js";
import { runCli } from "../helpers/cli.js";
import { repoRoot } from "../helpers/fixtures.js";
import { detachLoop } from "../helpers/loop.js";

const FIXTURE_DIR = path.join(repoRoot, ".cache", "boot-fixture");
const FIXTURE_XZ = path.join(FIXTURE_DIR, "boot-aarch64.img.xz");
const MARKER = "PROVISION-BOOT-OK";

let work: string;
let cacheHome: string;
let img: string;
let imgSha: string;
let okIgn: string;
let badHashIgn: string;

const cli = (args: string[], env?: Record<string, string>) =>
  runCli(args, { cacheHome, env: { TMPDIR: join(work, "tmp"), ...env } });

/** qemu-test temp dirs left in our private TMPDIR (there must be none after a run). */
const leftovers = async () =>
  (await readdir(join(work, "tmp"))).filter((n) => n.startsWith("provision-qemu-"));

const parseResult = (stdout: string) => JSON.parse(stdout) as BootResult;

beforeAll(async () => {
  const r = spawnSync(
    "bash",
    [path.join(repoRoot, "fixtures", "build-boot-fixture.sh"), FIXTURE_DIR],
    {
      stdio: "inherit",
    },
  );
  if (r.status !== 0) throw new Error(`fixtures/build-boot-fixture.sh failed (${r.status})`);
  work = await mkdtemp(join(tmpdir(), "provision-qemu-test-"));
  cacheHome = join(work, "cache");
  await mkdir(join(work, "tmp"));
  okIgn = join(work, "ok.ign");
  await writeFile(
    okIgn,
    `${JSON.stringify({
      ignition: { version: "3.3.0" },
      storage: {
        files: [
          { path: "/etc/provision-qemu-test", mode: 420, contents: { source: "data:,hello%0A" } },
        ],
      },
    })}\n`,
  );
  // Valid for ignition-validate; fails in the guest's files stage (hash mismatch).
  badHashIgn = join(work, "bad-hash.ign");
  await writeFile(
    badHashIgn,
    `${JSON.stringify({
      ignition: { version: "3.3.0" },
      storage: {
        files: [
          {
            path: "/etc/provision-qemu-test",
            mode: 420,
            contents: {
              source: "data:,hello%0A",
              verification: { hash: `sha512-${"0".repeat(128)}` },
            },
          },
        ],
      },
    })}\n`,
  );
  for (const f of [okIgn, badHashIgn]) await execa("ignition-validate", [f]);
  img = join(work, "card.img");
  const f = await cli(["flash", img, "--image-url", FIXTURE_XZ, "-q"]);
  if (f.code !== 0) throw new Error(`flash failed: ${f.stderr}`);
  imgSha = await sha256File(img);
}, 900_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("qemu-test on the flashed fixture", () => {
  it("boots, Ignition applies the config, exit 0; console log, JSON and JUnit say so", async () => {
    const log = join(work, "pass.log");
    const junit = join(work, "pass.xml");
    const r = await cli([
      "qemu-test",
      img,
      "-i",
      okIgn,
      "--expect",
      MARKER,
      "--memory",
      "512",
      "--console-log",
      log,
      "--junit",
      junit,
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const res = parseResult(r.stdout);
    expect(res.verdict).toBe("pass");
    expect(res.arch).toBe("aarch64");
    expect(res.archFrom).toMatch(/BOOTAA64\.EFI/);
    expect(res.accel).toBe("tcg");
    expect(res.os).toBe("fcos");
    expect(res.expects).toEqual([expect.objectContaining({ pattern: MARKER, seen: true })]);
    expect(res.command?.join(" ")).toContain("-fw_cfg name=opt/com.coreos/config,file=");
    const console = await readFile(log, "utf8");
    expect(console).toContain("PROVISION-FILE: /etc/provision-qemu-test");
    expect(console).toContain("PROVISION-BOOT-OK: ignition applied");
    expect(r.stderr).toMatch(/✔ PASS .*booted in/);
    // JUnit: well-formed, one testcase, no failure, the console in system-out.
    await execa("xmllint", ["--noout", junit]);
    const q = async (xpath: string) =>
      String((await execa("xmllint", ["--xpath", xpath, junit])).stdout);
    expect(await q("count(//testsuite)")).toBe("1");
    expect(await q("count(//testsuite/testcase)")).toBe("1");
    expect(await q("count(//testcase/failure) + count(//testcase/error)")).toBe("0");
    expect(await q("string(//testcase/system-out)")).toContain(
      "PROVISION-BOOT-OK: ignition applied",
    );
    expect(await leftovers()).toEqual([]);
  }, 300_000);

  it("an invalid config: exit 3 before anything boots", async () => {
    const bad = join(work, "invalid.ign");
    await writeFile(
      bad,
      '{"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "relative"}]}}\n',
    );
    const log = join(work, "invalid.log");
    const t0 = Date.now();
    const r = await cli(["qemu-test", img, "-i", bad, "--console-log", log, "--json"]);
    const seconds = (Date.now() - t0) / 1000;
    expect(r.code, r.stderr).toBe(3);
    expect(seconds).toBeLessThan(15);
    const res = parseResult(r.stdout);
    expect(res.verdict).toBe("error");
    expect(res.command).toBeUndefined(); // QEMU's command line was never even built
    expect(r.stderr).toMatch(/provision: .*invalid\.ign/);
    expect(r.stderr).not.toMatch(/booting/);
    expect(existsSync(log)).toBe(false);
    expect(await leftovers()).toEqual([]);
  }, 60_000);

  it("bad flags are 'could not start' (3), not 'timeout' (2)", async () => {
    expect((await cli(["qemu-test", img, "--arch", "mips"])).code).toBe(3);
    expect((await cli(["qemu-test", img, "--timeout", "soon"])).code).toBe(3);
    expect((await cli(["qemu-test", img, "--expect", "("])).code).toBe(3);
    expect((await cli(["qemu-test", join(work, "nope.img")])).code).toBe(3);
  }, 60_000);

  it("a config that fails in the guest: exit 1 well before the timeout, with the emergency line", async () => {
    const junit = join(work, "fail.xml");
    const t0 = Date.now();
    const r = await cli([
      "qemu-test",
      img,
      "-i",
      badHashIgn,
      "--expect",
      MARKER,
      "--memory",
      "512",
      "--timeout",
      "10m",
      "--junit",
      junit,
      "--json",
    ]);
    const seconds = (Date.now() - t0) / 1000;
    expect(r.code, r.stderr).toBe(1);
    expect(seconds).toBeLessThan(300);
    const res = parseResult(r.stdout);
    expect(res.verdict).toBe("fail");
    expect(res.matchedLine).toMatch(/You are in emergency mode/);
    expect(res.reason).toMatch(/You are in emergency mode/);
    expect(res.consoleTail.join("\n")).toMatch(/hash verification failed/);
    expect(r.stderr).toMatch(/✖ FAIL .*You are in emergency mode/);
    await execa("xmllint", ["--noout", junit]);
    const q = async (xpath: string) =>
      String((await execa("xmllint", ["--xpath", xpath, junit])).stdout);
    expect(await q("string(//testcase/failure/@type)")).toBe("boot-failed");
    expect(await q("string(//testcase/failure)")).toMatch(/You are in emergency mode/);
    expect(await leftovers()).toEqual([]);
  }, 300_000);

  it("a guest that never prints the expected line: exit 2 within the timeout plus a few seconds", async () => {
    // The fixture powers off by itself (in 10-40 s here, depending on the load), which would
    // race a 20 s timeout. A blank disk never does: the firmware finds nothing to boot and
    // sits in the UEFI shell, printing nothing that matches, until the timeout stops it.
    const blank = join(work, "blank.img");
    await writeFile(blank, "");
    await truncate(blank, 64 << 20);
    const t0 = Date.now();
    const r = await cli([
      "qemu-test",
      blank,
      "--arch",
      "aarch64",
      "-i",
      okIgn,
      "--expect",
      "NEVER-PRINTED",
      "--memory",
      "512",
      "--timeout",
      "20s",
      "--json",
    ]);
    const seconds = (Date.now() - t0) / 1000;
    expect(r.code, r.stderr).toBe(2);
    expect(seconds).toBeGreaterThanOrEqual(20);
    expect(seconds).toBeLessThan(28);
    const res = parseResult(r.stdout);
    expect(res.verdict).toBe("timeout");
    expect(res.reason).toMatch(/timed out after 20s waiting for "NEVER-PRINTED"/);
    expect(res.consoleTail.length).toBeGreaterThan(0); // the firmware did run
    expect(await leftovers()).toEqual([]);
  }, 120_000);

  it("Ctrl-C stops QEMU and removes the temp dir (exit 130); the JUnit report says interrupted", async () => {
    const junit = join(work, "interrupted.xml");
    const child = execa(
      "node",
      [
        path.join(repoRoot, "bin", "provision.js"),
        "qemu-test",
        img,
        "-i",
        okIgn,
        "--memory",
        "512",
        "--junit",
        junit,
      ],
      {
        reject: false,
        stdin: "ignore",
        env: { XDG_CACHE_HOME: cacheHome, CI: "1", TMPDIR: join(work, "tmp") },
      },
    );
    let stderr = "";
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`never started booting: ${stderr}`)), 60_000);
      child.stderr?.on("data", (b: Buffer) => {
        stderr += b.toString();
        if (/booting/.test(stderr)) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    const dirs = await leftovers();
    expect(dirs).toHaveLength(1);
    const qemuRunning = () =>
      spawnSync("pgrep", ["-f", `${join(work, "tmp", dirs[0] as string)}/overlay.qcow2`]).status ===
      0;
    await new Promise((r) => setTimeout(r, 2000));
    expect(qemuRunning()).toBe(true);
    const t0 = Date.now();
    child.kill("SIGINT");
    const r = await child;
    expect(r.exitCode).toBe(130);
    expect((Date.now() - t0) / 1000).toBeLessThan(10);
    expect(qemuRunning()).toBe(false);
    expect(await leftovers()).toEqual([]);
    // CI still gets its report: one testcase with an error saying it was interrupted.
    const xml = await readFile(junit, "utf8");
    expect(xml).toMatch(/<error [^>]*message="interrupted after \d+s, before a verdict"/);
  }, 120_000);

  it("a block device boots read-only through the overlay", async () => {
    // A read-only loop device: any write attempt by QEMU would fail.
    const dev = String((await execa("losetup", ["-r", "-f", "--show", img])).stdout).trim();
    expect(dev).toMatch(/^\/dev\/loop\d+$/);
    try {
      const r = await cli([
        "qemu-test",
        dev,
        "-i",
        okIgn,
        "--expect",
        MARKER,
        "--memory",
        "512",
        "--json",
      ]);
      expect(r.code, r.stderr).toBe(0);
      const res = parseResult(r.stdout);
      expect(res.verdict).toBe("pass");
      expect(res.arch).toBe("aarch64"); // the ESP read from the device
    } finally {
      await detachLoop(dev);
    }
  }, 300_000);

  it("the input image is unchanged by every run", async () => {
    expect(await sha256File(img)).toBe(imgSha);
  }, 60_000);
});

describe("qemu-test inputs, prepared but not booted (--print-command)", () => {
  async function prepared(args: string[]) {
    const r = await cli(["qemu-test", ...args, "--print-command", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const res = parseResult(r.stdout);
    expect(res.verdict).toBe("prepared");
    expect(res.keptDir).toBeTruthy();
    return res;
  }
  const backingOf = async (overlay: string) =>
    JSON.parse(String((await execa("qemu-img", ["info", "--output=json", overlay])).stdout)) as {
      "backing-filename": string;
      "backing-filename-format": string;
    };

  it("a qcow2 image is the overlay's qcow2 backing file", async () => {
    const q = join(work, "card.qcow2");
    await execa("qemu-img", ["convert", "-O", "qcow2", img, q]);
    const res = await prepared([q, "--arch", "aarch64"]);
    const info = await backingOf(join(res.keptDir as string, "overlay.qcow2"));
    expect(info["backing-filename"]).toBe(q);
    expect(info["backing-filename-format"]).toBe("qcow2");
    await rm(res.keptDir as string, { recursive: true });
  });

  it("a compressed image is decompressed (flash's pipeline) into the temp dir", async () => {
    const res = await prepared([FIXTURE_XZ, "-i", okIgn]);
    const info = await backingOf(join(res.keptDir as string, "overlay.qcow2"));
    expect(info["backing-filename-format"]).toBe("raw");
    expect(path.dirname(info["backing-filename"])).toBe(res.keptDir);
    expect(res.arch).toBe("aarch64"); // read from the decompressed image's ESP
    const meta = JSON.parse(await readFile(join(FIXTURE_DIR, "boot-aarch64.json"), "utf8")) as {
      image: { sha256: string };
    };
    expect(await sha256File(info["backing-filename"])).toBe(meta.image.sha256);
    await rm(res.keptDir as string, { recursive: true });
  }, 120_000);

  it("--ssh: a generated key, merged for core into the config, validated; SSH forwarded", async () => {
    const res = await prepared([img, "-i", okIgn, "--ssh", "systemctl is-system-running"]);
    const dir = res.keptDir as string;
    const pub = (await readFile(join(dir, "id_ed25519.pub"), "utf8")).trim();
    expect(pub).toMatch(/^ssh-ed25519 \S+ provision-qemu-test$/);
    const config = JSON.parse(await readFile(join(dir, "config.ign"), "utf8"));
    const merged = (config.ignition.config.merge as { source: string }[]).map((m) =>
      JSON.parse(Buffer.from(m.source.replace(/^data:;base64,/, ""), "base64").toString("utf8")),
    );
    expect(merged[0].passwd.users).toEqual([{ name: "core", sshAuthorizedKeys: [pub] }]);
    expect(merged[1]).toEqual(JSON.parse(await readFile(okIgn, "utf8"))); // the user's, last
    await execa("ignition-validate", [join(dir, "config.ign")]);
    expect(res.sshPort).toBeGreaterThan(0);
    expect(res.command?.join(" ")).toContain(`hostfwd=tcp:127.0.0.1:${res.sshPort}-:22`);
    expect(res.ssh?.command).toBe("systemctl is-system-running");
    expect(res.expects).toEqual([]); // with --ssh, SSH is the proof unless --expect is given
    await rm(dir, { recursive: true });
  });

  it("without qemu on PATH: exit 3 naming the package", async () => {
    const bin = join(work, "bin-node-only");
    await mkdir(bin, { recursive: true });
    if (!existsSync(join(bin, "node"))) await symlink(process.execPath, join(bin, "node"));
    const r = await runCli(["qemu-test", img], {
      cacheHome,
      env: { PATH: bin, TMPDIR: join(work, "tmp") },
    });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/apt-get install qemu-utils|qemu-system-arm/);
    expect(await leftovers()).toEqual([]);
  });
});

describe("flash --then-test", () => {
  it("writes the fixture, then boots what was written: exit 0, both results in --json", async () => {
    const target = join(work, "then-test.img");
    const r = await cli([
      "flash",
      target,
      "--image-url",
      FIXTURE_XZ,
      "-i",
      okIgn,
      "--then-test",
      "--expect",
      MARKER,
      "--test-memory",
      "512",
      "--json",
      "-q",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as {
      targets: {
        path: string;
        ok: boolean;
        verified: boolean;
        ignition?: string;
        boot?: BootResult;
      }[];
    };
    const t = report.targets[0];
    expect(t?.ok).toBe(true);
    expect(t?.verified).toBe(true);
    expect(t?.ignition).toBeTruthy();
    expect(t?.boot?.verdict).toBe("pass");
    expect(t?.boot?.arch).toBe("aarch64");
    expect(t?.boot?.expects[0]?.seen).toBe(true);
    expect(await leftovers()).toEqual([]);
  }, 600_000);
});
