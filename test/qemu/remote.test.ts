// `qemu-test --connect qemu+ssh://...` end to end, all real: a throw-away OpenSSH server on
// 127.0.0.1, the machine's libvirtd (qemu:///system, stock configuration), and the aarch64
// boot fixture under TCG. The remote host is this machine, so the test can look at what
// landed on it (modes, files, domains) and at what is left afterwards (nothing).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path, { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sha256File } from "../../src/cache/index.js";
import type { BootResult } from "../../src/qemu/index.js";
import { runCli, startCli } from "../helpers/cli.js";
import { repoRoot } from "../helpers/fixtures.js";
import { ensureLibvirtd, provisionDomains } from "../helpers/libvirtd.js";
import { type Sshd, startSshd } from "../helpers/sshd.js";

const FIXTURE_DIR = path.join(repoRoot, ".cache", "boot-fixture");
const FIXTURE_XZ = path.join(FIXTURE_DIR, "boot-aarch64.img.xz");
const MARKER = "PROVISION-BOOT-OK";

let work: string;
let cacheHome: string;
let img: string;
let okIgn: string;
let badHashIgn: string;
let sshd: Sshd;
let stopLibvirtd: () => Promise<void> = async () => {};
let remoteDir: string;
let fakeBin: string;

const uri = (knownHosts = sshd.knownHosts) =>
  `qemu+ssh://root@127.0.0.1:${sshd.port}/system?keyfile=${sshd.clientKey}&known_hosts=${knownHosts}`;

/** --connect through the test sshd into our remote dir, to the fixture's marker. */
const bootOnHost = (...extra: string[]) => [
  "--connect",
  uri(),
  ...extra,
  "--remote-dir",
  remoteDir,
  "--expect",
  MARKER,
  "--memory",
  "512",
  "--timeout",
  "4m",
];

/** qemu-test of the fixture on the host, waiting for a line it never prints: runs until stopped. */
const endlessBoot = () => [
  "qemu-test",
  img,
  "-i",
  okIgn,
  ...bootOnHost("--upload-image").map((a) => (a === MARKER ? "never-printed" : a)),
];

/** The provision domains running now that were not in `before` (waits up to 2 min for one). */
async function newRunningDomains(before: string[]): Promise<string[]> {
  let running: string[] = [];
  for (const deadline = Date.now() + 120_000; Date.now() < deadline; await sleep(250)) {
    running = (await execa("virsh", ["-c", "qemu:///system", "list", "--name"])).stdout
      .split("\n")
      .filter((n) => n.startsWith("provision-") && !before.includes(n));
    if (running.length) break;
  }
  return running;
}

const cli = (args: string[]) =>
  runCli(args, { cacheHome, env: { TMPDIR: join(work, "tmp"), SSH_AUTH_SOCK: "" } });

const remoteLeftovers = async () => (existsSync(remoteDir) ? await readdir(remoteDir) : []);

beforeAll(async () => {
  const r = spawnSync("bash", [join(repoRoot, "fixtures", "build-boot-fixture.sh"), FIXTURE_DIR], {
    stdio: "inherit",
  });
  if (r.status !== 0) throw new Error(`fixtures/build-boot-fixture.sh failed (${r.status})`);
  work = await mkdtemp(join(tmpdir(), "provision-remote-test-"));
  cacheHome = join(work, "cache");
  await mkdir(join(work, "tmp"));
  // Under the libvirt images directory like the default, but our own: removed afterwards.
  remoteDir = `/var/lib/libvirt/images/provision-test-${process.pid}`;
  okIgn = join(work, "ok.ign");
  await writeFile(
    okIgn,
    JSON.stringify({
      ignition: { version: "3.3.0" },
      storage: {
        files: [{ path: "/etc/remote-test", mode: 420, contents: { source: "data:,remote%0A" } }],
      },
    }),
  );
  badHashIgn = join(work, "bad-hash.ign");
  await writeFile(
    badHashIgn,
    JSON.stringify({
      ignition: { version: "3.3.0" },
      storage: {
        files: [
          {
            path: "/etc/remote-test",
            contents: { source: "data:,x", verification: { hash: `sha512-${"0".repeat(128)}` } },
          },
        ],
      },
    }),
  );
  img = join(work, "card.img");
  const f = await cli(["flash", img, "--image-url", FIXTURE_XZ, "-q"]);
  if (f.code !== 0) throw new Error(`flash failed: ${f.stderr}`);
  // SELinux cannot run on this machine: the host's getenforce says "Enforcing" and chcon
  // records what it was asked to do (the only stand-ins in this file), through the sshd's
  // session PATH.
  fakeBin = join(work, "fakebin");
  await mkdir(fakeBin);
  await writeFile(join(fakeBin, "getenforce"), "#!/bin/sh\necho Enforcing\n", { mode: 0o755 });
  await writeFile(join(fakeBin, "chcon"), `#!/bin/sh\necho "$*" >> ${join(work, "chcon.log")}\n`, {
    mode: 0o755,
  });
  [sshd, stopLibvirtd] = await Promise.all([
    startSshd({
      env: { PATH: `${fakeBin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` },
    }),
    ensureLibvirtd(),
  ]);
}, 900_000);

afterAll(async () => {
  for (const d of await provisionDomains().catch(() => [] as string[])) {
    await execa("virsh", ["-c", "qemu:///system", "destroy", d], { reject: false });
    await execa("virsh", ["-c", "qemu:///system", "undefine", "--nvram", d], { reject: false });
  }
  await stopLibvirtd();
  await sshd?.stop();
  if (remoteDir) await rm(remoteDir, { recursive: true, force: true });
  if (work) await rm(work, { recursive: true, force: true });
});

describe("qemu-test --connect qemu+ssh:// (real sshd, real libvirtd)", () => {
  it("uploads the image and config, boots the fixture in a libvirt domain to a pass, and leaves nothing behind", async () => {
    const domainsBefore = await provisionDomains();
    const log = join(work, "remote-pass.log");
    const r = await cli([
      "qemu-test",
      img,
      "-i",
      okIgn,
      ...bootOnHost("--upload-image"),
      "--console-log",
      log,
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as BootResult;
    expect(res.verdict).toBe("pass");
    expect(res.arch).toBe("aarch64");
    expect(res.accel).toBe("tcg");
    expect(res.remote).toMatchObject({
      host: `root@[127.0.0.1]:${sshd.port}`,
      hostKey: "ssh-ed25519 (match)",
      selinuxRelabeled: true,
      kept: false,
    });
    // Enforcing: the config got the label the FCOS libvirt docs give it, before the boot.
    expect((await readFile(join(work, "chcon.log"), "utf8")).trim()).toBe(
      `--type svirt_home_t ${res.remote?.dir}/config.ign`,
    );
    // A qcow2 of the allocated clusters went over the wire, not the 256 MiB raw image.
    expect(res.remote?.uploadedBytes).toBeGreaterThan(1_000_000);
    expect(res.remote?.uploadedBytes).toBeLessThan((await stat(img)).size / 2);
    const console = await readFile(log, "utf8");
    expect(console).toContain("UEFI firmware");
    expect(console).toContain("PROVISION-FILE: /etc/remote-test");
    expect(console).toContain("PROVISION-BOOT-OK: ignition applied");
    expect(r.stderr).toMatch(/✔ PASS .*booted in/);
    // Cleaned up: no domain, no run directory, and sshd saw our key.
    expect(await provisionDomains()).toEqual(domainsBefore);
    expect(await remoteLeftovers()).toEqual([]);
    expect(sshd.log()).toMatch(/Accepted publickey for root/);
  }, 300_000);

  it("a config that fails at boot: exit 1 with the failure line; --keep leaves the domain and the files, with the config readable by qemu", async () => {
    const r = await cli([
      "qemu-test",
      img,
      "-i",
      badHashIgn,
      ...bootOnHost("--upload-image"),
      "--keep",
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(1);
    const res = JSON.parse(r.stdout) as BootResult;
    expect(res.verdict).toBe("fail");
    expect(res.reason).toMatch(/emergency mode|Ignition failed|failed/i);
    expect(res.remote?.kept).toBe(true);
    const dir = res.remote?.dir as string;
    expect(dir.startsWith(`${remoteDir}/provision-`)).toBe(true);
    // The run directory cannot be listed by others; the qemu user can read the config.
    expect((await stat(dir)).mode & 0o777).toBe(0o711);
    const cfg = await stat(join(dir, "config.ign"));
    expect(cfg.mode & 0o777).toBe(0o644);
    expect(await readFile(join(dir, "config.ign"), "utf8")).toBe(
      await readFile(badHashIgn, "utf8"),
    );
    expect((await readdir(dir)).sort()).toEqual(
      ["config.ign", "console.log", "disk.qcow2", "domain.xml"].sort(),
    );
    expect(await provisionDomains()).toContain(res.remote?.domain);
    const state = await execa("virsh", [
      "-c",
      "qemu:///system",
      "domstate",
      res.remote?.domain as string,
    ]);
    expect(state.stdout.trim()).toBe("shut off");
    const xml = await execa("virsh", [
      "-c",
      "qemu:///system",
      "dumpxml",
      res.remote?.domain as string,
    ]);
    expect(xml.stdout).toContain(`name=opt/com.coreos/config,file=${dir}/config.ign`);
    await execa("virsh", [
      "-c",
      "qemu:///system",
      "undefine",
      "--nvram",
      res.remote?.domain as string,
    ]);
    await rm(dir, { recursive: true });
  }, 300_000);

  it("an image already on the host boots through an overlay and is not changed", async () => {
    const before = await sha256File(img);
    // QEMU runs as libvirt-qemu: the image's directory must be searchable by it.
    await chmod(work, 0o711);
    const r = await cli([
      "qemu-test",
      img,
      "-i",
      okIgn,
      ...bootOnHost("--arch", "aarch64"),
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as BootResult;
    // Only the config was sent.
    expect(res.remote?.uploadedBytes).toBe((await stat(okIgn)).size);
    expect(await sha256File(img)).toBe(before);
    expect(await remoteLeftovers()).toEqual([]);
  }, 300_000);

  it("Ctrl-C during a remote boot destroys and undefines the domain and removes the files", async () => {
    const domainsBefore = await provisionDomains();
    const child = startCli(endlessBoot(), { cacheHome });
    expect(await newRunningDomains(domainsBefore)).toHaveLength(1);
    await sleep(1000);
    child.kill("SIGINT");
    const r = await child;
    expect(r.exitCode).toBe(130);
    expect(await provisionDomains()).toEqual(domainsBefore);
    expect(await remoteLeftovers()).toEqual([]);
  }, 300_000);

  it("a guest that powers off before the expected line: exit 1 naming the domain's state, with the console up to its last line, and nothing left", async () => {
    const domainsBefore = await provisionDomains();
    const r = await cli([...endlessBoot(), "--json"]);
    expect(r.code, r.stderr).toBe(1);
    const res = JSON.parse(r.stdout) as BootResult;
    expect(res.verdict).toBe("fail");
    // The fixture prints its marker and powers off at once (poweroff -f): the state comes
    // from libvirt, and the line printed just before the poweroff still got here.
    expect(res.reason).toMatch(
      /^domain provision-[0-9a-f]+ stopped: shut off \(\w+\) after [\d.]+s, before "never-printed" was seen/,
    );
    expect(res.consoleTail.join("\n")).toContain("PROVISION-BOOT-OK: ignition applied");
    expect(res.remote?.timings?.teardown).toBeLessThan(30);
    expect(await provisionDomains()).toEqual(domainsBefore);
    expect(await remoteLeftovers()).toEqual([]);
  }, 300_000);

  it("provision killed outright during a remote boot: the host's side sees the connection go and removes the domain and the files itself", async () => {
    const domainsBefore = await provisionDomains();
    // Its temp dir (with the qcow2 it uploaded) is under work/, removed afterwards.
    const child = startCli(endlessBoot(), {
      cacheHome,
      env: { TMPDIR: join(work, "tmp"), SSH_AUTH_SOCK: "" },
    });
    expect(await newRunningDomains(domainsBefore)).toHaveLength(1);
    child.kill("SIGKILL");
    await child;
    // No cleanup ran on this side: the host's script got EOF on its stdin when sshd closed
    // the session, and stopped, undefined and removed everything.
    let left: string[] = [];
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(250)) {
      left = [
        ...(await provisionDomains()).filter((d) => !domainsBefore.includes(d)),
        ...(await remoteLeftovers()),
      ];
      if (left.length === 0) break;
    }
    expect(left).toEqual([]);
  }, 300_000);

  it("refuses a host whose key is not the one in known_hosts: exit 3, nothing sent, nothing defined", async () => {
    const domainsBefore = await provisionDomains();
    const r = await cli([
      "qemu-test",
      img,
      "-i",
      okIgn,
      "--connect",
      uri(sshd.wrongKnownHosts),
      "--upload-image",
      "--remote-dir",
      `${remoteDir}-never`,
    ]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(
      /host key of \[127\.0\.0\.1\]:\d+ does not match .*known_hosts\.wrong:1/,
    );
    expect(r.stderr).toMatch(/hint: .*ssh-keygen -R/);
    expect(existsSync(`${remoteDir}-never`)).toBe(false);
    expect(await provisionDomains()).toEqual(domainsBefore);
  });

  it("a host path that does not exist, and flags that need --connect: exit 3 with one clear line", async () => {
    const r = await cli([
      "qemu-test",
      "/nonexistent/disk.img",
      "--connect",
      uri(),
      "--remote-dir",
      remoteDir,
    ]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/\/nonexistent\/disk\.img: no such file/);
    expect(r.stderr).toMatch(/--upload-image/);
    const s = await cli(["qemu-test", img, "--upload-image"]);
    expect(s.code).toBe(3);
    expect(s.stderr).toContain("--upload-image only means something with --connect");
  });
});
