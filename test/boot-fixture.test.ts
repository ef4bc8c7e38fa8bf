// Proves the CI boot fixture (fixtures/build-boot-fixture.sh) with plain qemu-system-aarch64,
// not through provision: AAVMF, the FCOS-layout image, GRUB reading the BLS entry, the Debian
// kernel, and the real Ignition binary applying the config passed through fw_cfg.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "./helpers/fixtures.js";

const FIXTURE_DIR = join(repoRoot, ".cache", "boot-fixture");
const IMAGE = join(FIXTURE_DIR, "boot-aarch64.img");
const AAVMF_CODE = "/usr/share/AAVMF/AAVMF_CODE.fd";
const AAVMF_VARS = "/usr/share/AAVMF/AAVMF_VARS.fd";
const BOOT_TIMEOUT_MS = 120_000;
const BLS = "/loader/entries/ostree-1-fedora-coreos.conf";

const MARKER_OK = "PROVISION-BOOT-OK: ignition applied";
const EMERGENCY = "You are in emergency mode";
/** What coreos-assembler's kola treats as a failed boot (shared README, "QEMU boot checks"). */
const FAILURE_PATTERNS = [
  /Starting Emergency Shell/,
  /You are in emergency mode/,
  /Press Enter for emergency shell/,
  /dracut: Refusing to continue/,
  /Kernel panic - not syncing/,
  /Oops:/,
  /panic:/,
  /SIGSEGV/,
  /Ordering cycle found/,
  /invoked oom-killer/,
  /ignition\[\d+\]: failed to fetch config/,
];

const env = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` };
const run = (cmd: string, args: string[]) =>
  execFileSync(cmd, args, { encoding: "utf8", env, stdio: ["ignore", "pipe", "pipe"] });
const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

interface FixtureManifest {
  image: { name: string; size: number; sha256: string };
  kernel: string;
  kernelArgs: string;
  partitions: { number: number; name: string; start: number; sectors: number; label?: string }[];
}

/** Console milestones timed from QEMU's start. */
const MILESTONES = {
  grub: /Welcome to GRUB!/,
  kernel: /EFI stub: Booting Linux Kernel/,
  init: /Run \/init as init process/,
  ignition: /boot-fixture: Ignition: platform/,
  marker: /PROVISION-BOOT-OK: /,
  emergency: /You are in emergency mode/,
} as const;
type Milestone = keyof typeof MILESTONES;

interface BootResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  console: string;
  /** Milliseconds from spawning QEMU to each milestone seen, and to its exit. */
  at: Partial<Record<Milestone | "exit", number>>;
}

let work: string;
let manifest: FixtureManifest;

/** Boot the image under TCG with an optional Ignition config; resolves when QEMU exits. */
async function boot(name: string, image: string, config?: string): Promise<BootResult> {
  const dir = await mkdtemp(join(work, `${name}-`));
  const vars = join(dir, "AAVMF_VARS.fd");
  await copyFile(AAVMF_VARS, vars);
  // QEMU splits -drive/-fw_cfg values at commas: none of these paths may contain one.
  for (const p of [image, vars, config ?? ""]) expect(p).not.toContain(",");
  const args = [
    ...["-M", "virt", "-cpu", "cortex-a57", "-smp", "2", "-m", "1024"],
    ...["-accel", "tcg,thread=multi"],
    ...["-drive", `if=pflash,format=raw,unit=0,readonly=on,file=${AAVMF_CODE}`],
    ...["-drive", `if=pflash,format=raw,unit=1,file=${vars}`],
    ...["-drive", `if=virtio,format=raw,file=${image},snapshot=on`],
    // No NIC: the fixture has no network, and AAVMF probing the default virtio-net costs ~2 s.
    ...["-nic", "none"],
    ...["-nographic", "-monitor", "none", "-serial", "stdio"],
    ...(config ? ["-fw_cfg", `name=opt/com.coreos/config,file=${config}`] : []),
  ];
  const t0 = performance.now();
  const child = spawn("qemu-system-aarch64", args, { stdio: ["ignore", "pipe", "pipe"] });
  let text = "";
  let stderr = "";
  const at: BootResult["at"] = {};
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    text += chunk;
    const now = Math.round(performance.now() - t0);
    for (const [k, re] of Object.entries(MILESTONES) as [Milestone, RegExp][]) {
      if (at[k] === undefined && re.test(text)) at[k] = now;
    }
  });
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, BOOT_TIMEOUT_MS);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>(
    (resolve, reject) => {
      child.on("error", reject);
      child.on("close", (c, s) => resolve([c, s]));
    },
  ).finally(() => clearTimeout(timer));
  at.exit = Math.round(performance.now() - t0);
  // Firmware and GRUB draw with ANSI sequences; the kernel's lines end in CRLF.
  const log = text.replace(/\x1b\[[0-9;=?]*[A-Za-z]/g, "").replace(/\r/g, "");
  await writeFile(join(FIXTURE_DIR, `console-${name}.log`), log);
  const secs = (ms?: number) => (ms === undefined ? "-" : `${(ms / 1000).toFixed(1)}s`);
  process.stdout.write(
    `boot-fixture ${name}: GRUB ${secs(at.grub)}, kernel ${secs(at.kernel)}, /init ${secs(at.init)}, ` +
      `Ignition ${secs(at.ignition)}, marker ${secs(at.marker)}, emergency ${secs(at.emergency)}, ` +
      `QEMU exit ${secs(at.exit)} (code ${code}${signal ? `, ${signal}` : ""}${timedOut ? ", TIMED OUT" : ""})\n`,
  );
  if (stderr.trim()) process.stdout.write(`qemu stderr: ${stderr}\n`);
  await rm(dir, { recursive: true, force: true });
  return { code, signal, timedOut, console: log, at };
}

/** The last lines of a console log, for assertion messages. */
const tail = (s: string, n = 40) => s.split("\n").slice(-n).join("\n");

async function ignitionConfig(name: string, config: object): Promise<string> {
  const file = join(work, `${name}.ign`);
  await writeFile(file, JSON.stringify(config));
  // Every config the tests write goes through the real validator first.
  const v = spawnSync("ignition-validate", [file], { encoding: "utf8" });
  expect(v.status, `ignition-validate ${name}: ${v.stdout}${v.stderr}`).toBe(0);
  return file;
}

function offsetOf(partName: string): number {
  const p = manifest.partitions.find((x) => x.name === partName);
  if (!p) throw new Error(`no partition ${partName} in boot-aarch64.json`);
  return p.start * 512;
}

beforeAll(async () => {
  const missing = [
    ["qemu-system-aarch64", "qemu-system-arm"],
    ["grub-mkimage", "grub-common"],
    ["cpio", "cpio"],
    ["ignition-validate", "ignition"],
  ].filter(([cmd]) => spawnSync("sh", ["-c", `command -v ${cmd}`], { env }).status !== 0);
  if (!existsSync(AAVMF_CODE)) missing.push([AAVMF_CODE, "qemu-efi-aarch64"]);
  if (missing.length > 0) {
    throw new Error(
      `boot fixture: missing ${missing.map(([c]) => c).join(", ")}; install the Debian packages ${[
        ...new Set(missing.map(([, p]) => p)),
      ].join(" ")}`,
    );
  }
  const t0 = performance.now();
  const r = spawnSync("bash", [join(repoRoot, "fixtures", "build-boot-fixture.sh"), FIXTURE_DIR], {
    cwd: repoRoot,
    env,
    encoding: "utf8",
  });
  process.stdout.write(
    `boot-fixture: build-boot-fixture.sh took ${((performance.now() - t0) / 1000).toFixed(1)}s\n${r.stdout}`,
  );
  if (r.status !== 0) {
    throw new Error(`fixtures/build-boot-fixture.sh failed (${r.status}): ${r.stdout}${r.stderr}`);
  }
  manifest = JSON.parse(await readFile(join(FIXTURE_DIR, "boot-aarch64.json"), "utf8"));
  work = await mkdtemp(join(tmpdir(), "boot-fixture-test-"));
}, 900_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("the CI boot fixture", () => {
  it("has the FCOS aarch64 layout: GPT names, labels, GRUB on the ESP, a BLS entry", async () => {
    expect(run("sgdisk", ["-v", IMAGE])).toMatch(/^No problems found/m);
    const table = run("sgdisk", ["-p", IMAGE]);
    const parts = [...table.matchAll(/^\s+(\d+)\s+(\d+)\s+(\d+)\s+.*?\s(\S+)$/gm)].map((m) => ({
      n: Number(m[1]),
      start: Number(m[2]),
      name: m[4],
    }));
    expect(parts.map((p) => p.name)).toEqual(["reserved", "EFI-SYSTEM", "boot", "root"]);
    expect(parts[0]?.start).toBe(2048);
    expect(parts[1]?.start).toBe(4096);

    for (const label of ["boot", "root"]) {
      const sb = run("dumpe2fs", ["-h", `${IMAGE}?offset=${offsetOf(label)}`]);
      expect(sb).toMatch(new RegExp(`^Filesystem volume name:\\s+${label}$`, "m"));
    }
    // FAT16 boot sector: volume label at 43, type at 54.
    const fh = Buffer.alloc(512);
    const fd = await open(IMAGE, "r");
    await fd.read(fh, 0, 512, offsetOf("EFI-SYSTEM")).finally(() => fd.close());
    expect(fh.subarray(43, 54).toString("latin1")).toBe("EFI-SYSTEM ");
    expect(fh.subarray(54, 62).toString("latin1")).toBe("FAT16   ");
    const efi = run("mdir", ["-b", "-i", `${IMAGE}@@${offsetOf("EFI-SYSTEM")}`, "::/EFI/BOOT"]);
    expect(efi).toMatch(/BOOTAA64\.EFI/);

    const bls = run("debugfs", ["-R", `cat ${BLS}`, `${IMAGE}?offset=${offsetOf("boot")}`]);
    const options = bls.match(/^options (.*)$/m)?.[1] ?? "";
    expect(options.split(" ")).toEqual(
      expect.arrayContaining([
        "console=ttyAMA0,115200n8",
        "ignition.firstboot",
        "ignition.platform.id=qemu",
      ]),
    );
    expect(bls).toMatch(
      new RegExp(`^linux /ostree/fedora-coreos-[0-9a-f]+/vmlinuz-${manifest.kernel}$`, "m"),
    );
    // In FCOS /loader is a symlink to loader.0 or loader.1.
    const loader = run("debugfs", ["-R", "stat /loader", `${IMAGE}?offset=${offsetOf("boot")}`]);
    expect(loader).toMatch(/Type: symlink/);
    expect(loader).toMatch(/Fast link dest: "loader\.1"/);
  });

  it(
    "applies a valid Ignition config from fw_cfg, prints the marker and powers off",
    async () => {
      const content = "written by Ignition inside the provision boot fixture\n";
      const config = await ignitionConfig("valid", {
        ignition: { version: "3.3.0" },
        storage: {
          files: [
            {
              path: "/etc/provision-test",
              mode: 0o640,
              contents: { source: `data:,${encodeURIComponent(content)}` },
            },
          ],
        },
      });
      const r = await boot("valid", IMAGE, config);
      expect(r.timedOut, tail(r.console)).toBe(false);
      expect(r.console, tail(r.console)).toContain(MARKER_OK);
      // Nothing on the console that a boot checker would take for a failure.
      for (const re of FAILURE_PATTERNS) expect(r.console).not.toMatch(re);
      // QEMU stopped by itself (poweroff -f in the guest): exit status 0, no signal.
      expect(r.code).toBe(0);
      expect(r.signal).toBeNull();
      expect(r.at.exit).toBeLessThan(BOOT_TIMEOUT_MS);
      // The kernel got the BLS entry's options; Ignition read the config from fw_cfg and wrote
      // exactly our bytes, with our mode.
      expect(r.console).toMatch(/boot-fixture: kernel command line: .*ignition\.platform\.id=qemu/);
      expect(r.console).toMatch(/ignition\[\d+\]: .*loading QEMU firmware config module/);
      expect(r.console).toContain(
        `PROVISION-FILE: /etc/provision-test mode=640 uid=0 gid=0 size=${Buffer.byteLength(content)} sha256=${sha256(content)}`,
      );
      // The file lines come before the marker, so a harness that stops at the marker has them.
      expect(r.console.indexOf("PROVISION-FILE: /etc/provision-test")).toBeLessThan(
        r.console.indexOf(MARKER_OK),
      );
      // snapshot=on: the fixture itself is unchanged.
      const stat = spawnSync(
        "debugfs",
        ["-R", "stat /etc/provision-test", `${IMAGE}?offset=${offsetOf("root")}`],
        { encoding: "utf8", env },
      );
      expect(stat.stdout + stat.stderr).toMatch(/File not found/);
    },
    BOOT_TIMEOUT_MS + 30_000,
  );

  it(
    "shows FCOS's emergency-mode line when Ignition fails (file hash mismatch)",
    async () => {
      const config = await ignitionConfig("bad-hash", {
        ignition: { version: "3.3.0" },
        storage: {
          files: [
            {
              path: "/etc/provision-test",
              contents: {
                source: "data:,this%20does%20not%20match",
                verification: { hash: `sha512-${"0".repeat(128)}` },
              },
            },
          ],
        },
      });
      const r = await boot("bad-hash", IMAGE, config);
      expect(r.timedOut, tail(r.console)).toBe(false);
      expect(r.console, tail(r.console)).toContain(EMERGENCY);
      // Ignition's own error, shown as FCOS's journal shows it.
      expect(r.console).toMatch(/^ignition\[\d+\]: Ignition failed: .*hash verification failed/m);
      expect(r.console).not.toContain("PROVISION-BOOT-OK");
      // The guest powers off after the emergency lines as well.
      expect(r.code).toBe(0);
    },
    BOOT_TIMEOUT_MS + 30_000,
  );

  it(
    "boots with the kernel arguments of the BLS entry (edited like provision flash --append-karg)",
    async () => {
      const copy = join(work, "kargs.img");
      execFileSync("cp", ["--sparse=always", IMAGE, copy]);
      const boot3 = `${copy}?offset=${offsetOf("boot")}`;
      const before = run("debugfs", ["-R", `cat ${BLS}`, boot3]);
      const after = before.replace(/^options (.*)$/m, (_, o: string) => {
        const args = o.split(" ").filter((a) => a !== "ignition.firstboot");
        return `options ${[...args, "provision.test-karg=42"].join(" ")}`;
      });
      expect(after).not.toBe(before);
      const local = join(work, "entry.conf");
      await writeFile(local, after);
      const cmds = join(work, "debugfs.cmd");
      await writeFile(
        cmds,
        `cd /loader.1/entries\nrm ostree-1-fedora-coreos.conf\nwrite ${local} ostree-1-fedora-coreos.conf\n`,
      );
      run("debugfs", ["-w", "-f", cmds, boot3]);
      expect(run("debugfs", ["-R", `cat ${BLS}`, boot3])).toBe(after);

      const r = await boot("kargs", copy);
      expect(r.timedOut, tail(r.console)).toBe(false);
      const cmdline = r.console.match(/boot-fixture: kernel command line: (.*)/)?.[1] ?? "";
      expect(cmdline.split(" ")).toContain("provision.test-karg=42");
      expect(cmdline.split(" ")).not.toContain("ignition.firstboot");
      // Without ignition.firstboot Ignition does not run, as on FCOS after the first boot.
      expect(r.console).toContain("PROVISION-BOOT-OK: booted without Ignition");
      expect(r.console).not.toMatch(/ignition\[\d+\]/);
      expect(r.code).toBe(0);
    },
    BOOT_TIMEOUT_MS + 30_000,
  );
});
