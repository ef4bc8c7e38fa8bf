// `provision doctor` through the real CLI: what this machine has (the tests' machine has
// every package scripts/setup.sh installs), a program made missing by a PATH of symlinks
// without it (PROVISION_SBIN_DIRS="" stops the fallback to /usr/sbin and /sbin), iPXE EFI
// binaries judged from made-up PE files, a libvirt host through a throw-away sshd, --json.
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Check, DoctorReport } from "../../src/doctor/index.js";
import { runCli } from "../helpers/cli.js";
import { ensureLibvirtd } from "../helpers/libvirtd.js";
import { type Sshd, startSshd } from "../helpers/sshd.js";

let work: string;
let cacheHome: string;
/** A PATH directory with every program of this machine except sgdisk. */
let noSgdisk: string;
/** EFI applications for x86_64: an iPXE that names autoexec.ipxe, one that does not. */
let goodEfi: string;
let oldEfi: string;

const cli = (args: string[], env: Record<string, string> = {}) =>
  runCli(["doctor", ...args], { cacheHome, env: { SSH_AUTH_SOCK: "", ...env } });

async function json(args: string[], env?: Record<string, string>) {
  const r = await cli([...args, "--json"], env);
  return { ...r, report: JSON.parse(r.stdout) as DoctorReport };
}

function check(r: DoctorReport, cmd: keyof DoctorReport["commands"], name: string): Check {
  const c = r.commands[cmd]?.checks.find((c) => c.name === name);
  if (!c) throw new Error(`no check ${name} under ${cmd}`);
  return c;
}

/** A minimal PE32+ EFI application header (machine x86_64, subsystem 10) with `body`. */
function efiApp(body: Buffer): Buffer {
  const head = Buffer.alloc(0x200);
  head.write("MZ", 0, "latin1");
  head.writeUInt32LE(0x80, 0x3c);
  head.write("PE\0\0", 0x80, "latin1");
  head.writeUInt16LE(0x8664, 0x84);
  head.writeUInt16LE(0x20b, 0x80 + 24); // PE32+ magic
  head.writeUInt16LE(10, 0x80 + 24 + 68); // EFI application
  return Buffer.concat([head, body]);
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-doctor-"));
  cacheHome = join(work, "cache");
  noSgdisk = join(work, "bin");
  await mkdir(noSgdisk);
  for (const dir of [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/sbin"]) {
    if (!dir || !existsSync(dir)) continue;
    for (const name of await readdir(dir)) {
      if (name === "sgdisk" || existsSync(join(noSgdisk, name))) continue;
      await symlink(join(dir, name), join(noSgdisk, name)).catch(() => {});
    }
  }
  goodEfi = join(work, "ipxe-good.efi");
  oldEfi = join(work, "ipxe-old.efi");
  await writeFile(goodEfi, efiApp(Buffer.from("iPXE\0autoexec.ipxe\0", "utf16le")));
  await writeFile(oldEfi, efiApp(Buffer.from("iPXE 1.0.0+git-20190125\0", "latin1")));
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("provision doctor on this machine", () => {
  it("flash: each program found where it is, with its Debian and Fedora package; exit 0", async () => {
    const { code, report } = await json(["flash"]);
    expect(report.checked).toEqual(["flash"]);
    expect(Object.keys(report.commands)).toEqual(["flash"]);
    const xz = check(report, "flash", "xz");
    expect(xz).toMatchObject({
      kind: "program",
      status: "ok",
      required: true,
      packages: { debian: "xz-utils", fedora: "xz" },
    });
    expect(xz.path).toMatch(/\/xz$/);
    expect(check(report, "flash", "debugfs")).toMatchObject({
      status: "ok",
      path: expect.stringMatching(/sbin\/debugfs$/),
      packages: { debian: "e2fsprogs", fedora: "e2fsprogs" },
    });
    expect(check(report, "flash", "gpgv")).toMatchObject({ status: "ok", required: true });
    // Optional: missing is a warning, never a failure.
    const zstd = check(report, "flash", "zstd");
    expect(zstd.required).toBe(false);
    expect(check(report, "flash", "ignition-validate").packages).toEqual({
      debian: "ignition",
      fedora: "ignition-validate",
    });
    const butane = check(report, "flash", "butane");
    expect(butane).toMatchObject({ required: false, packages: { fedora: "butane" } });
    if (butane.status !== "ok") expect(butane.status).toBe("warning");
    expect(report.ok).toBe(true);
    expect(code).toBe(0);
  });

  it("this machine: Node.js (past its end of life is a warning) and the cache's size and free space", async () => {
    const images = join(cacheHome, "provision", "images", "x");
    await mkdir(images, { recursive: true });
    await writeFile(join(images, "a.img"), Buffer.alloc(3 << 20, 1));
    const { code, report } = await json(["mbr"]);
    expect(code).toBe(0);
    const node = report.machine.find((c) => c.name === "Node.js") as Check;
    expect(node.path).toBe(process.execPath);
    const major = Number(process.versions.node.split(".")[0]);
    const eol = { 20: "2026-04-30", 22: "2027-04-30", 24: "2028-04-30" }[major];
    if (eol && eol < new Date().toISOString().slice(0, 10)) {
      expect(node.status).toBe("warning");
      expect(node.detail).toContain(`past its end of life (${eol})`);
    } else expect(node.status).toBe("ok");
    const cache = report.machine.find((c) => c.kind === "cache") as Check;
    expect(cache.path).toBe(join(cacheHome, "provision"));
    expect(cache.status).toBe("ok");
    expect(cache.detail).toMatch(/^3\.0 MiB used, [\d.]+ [KMGT]iB free$/);
  });

  it("qemu-test: QEMU, the UEFI firmware pairs, KVM or TCG (one line per check, grouped)", async () => {
    const r = await cli(["qemu-test"]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines).toContain("this machine");
    expect(lines).toContain("qemu-test");
    expect(lines).not.toContain("flash");
    expect(r.stdout).toMatch(/^ {2}✔ qemu-img: \/\S+\/qemu-img$/m);
    expect(r.stdout).toMatch(/^ {2}✔ UEFI firmware x86_64: \/usr\/share\/OVMF\/OVMF_CODE\S* \+ /m);
    expect(r.stdout).toMatch(
      /^ {2}✔ UEFI firmware aarch64: \/usr\/share\/AAVMF\/AAVMF_CODE\.fd \+ /m,
    );
    // /dev/kvm opens here, but QEMU cannot use it (see shared/README): TCG, as a warning.
    expect(r.stdout).toMatch(/^ {2}[✔!] KVM\b/m);
    if (/^ {2}! KVM/m.test(r.stdout)) expect(r.stdout).toMatch(/guests run under TCG/);
    expect(lines.at(-1)).toMatch(/^✔ everything qemu-test needs is here/);
  });

  it("--arch aarch64: only that architecture's QEMU and firmware, both required", async () => {
    const { report } = await json(["qemu-test", "--arch", "aarch64"]);
    const names = report.commands["qemu-test"]?.checks.map((c) => c.name) ?? [];
    expect(names).toContain("qemu-system-aarch64");
    expect(names).not.toContain("qemu-system-x86_64");
    expect(names).not.toContain("UEFI firmware x86_64");
    expect(check(report, "qemu-test", "qemu-system-aarch64").required).toBe(true);
    expect(check(report, "qemu-test", "UEFI firmware aarch64")).toMatchObject({
      required: true,
      status: "ok",
    });
  });

  it("pxe-stick: judges the iPXE EFI binary as pxe-stick does (autoexec.ipxe or not)", async () => {
    const good = await json(["pxe-stick", "--ipxe-efi", goodEfi]);
    expect(check(good.report, "pxe-stick", "iPXE EFI x86_64")).toMatchObject({
      status: "ok",
      required: true,
      path: goodEfi,
      detail: "runs /autoexec.ipxe",
    });
    expect(check(good.report, "pxe-stick", "sgdisk")).toMatchObject({
      status: "ok",
      packages: { debian: "gdisk", fedora: "gdisk" },
    });
    expect(good.code).toBe(0);

    const old = await cli(["pxe-stick", "--ipxe-efi", oldEfi]);
    expect(old.code).toBe(1);
    expect(old.stdout).toContain(
      `✖ iPXE EFI x86_64 (needed for pxe-stick --arch x86_64 --ipxe-efi): ${oldEfi} is an iPXE build that does not run /autoexec.ipxe`,
    );
    expect(old.stdout).toContain("hint: pass --ipxe-efi https://boot.ipxe.org/x86_64-efi/ipxe.efi");
    expect(old.stdout.trim().split("\n").at(-1)).toMatch(/^no package to install for it/);

    const notEfi = await json(["pxe-stick", "--ipxe-efi", join(work, "nope.efi")]);
    expect(notEfi.code).toBe(1);
    expect(check(notEfi.report, "pxe-stick", "iPXE EFI x86_64").status).toBe("error");
  });

  it("no command: every command in one JSON document", async () => {
    const { code, report } = await json([]);
    expect([0, 1]).toContain(code);
    expect(code).toBe(report.ok ? 0 : 1);
    expect(report.checked).toEqual([
      "flash",
      "pxe-stick",
      "qemu-test",
      "mbr",
      "serve",
      "fleet",
      "cache",
    ]);
    expect(Object.keys(report.commands)).toEqual(report.checked);
    expect(report.version).toMatch(/^\d+\.\d+\.\d+/);
    for (const g of Object.values(report.commands)) {
      expect(g.ok).toBe(g.checks.every((c) => c.status !== "error"));
      for (const c of g.checks) {
        expect(["ok", "warning", "error"]).toContain(c.status);
        expect(typeof c.required).toBe("boolean");
        if (c.status === "error") expect(c.required).toBe(true);
      }
    }
    expect(report.install).toEqual({
      debian: expect.any(Array),
      fedora: expect.any(Array),
      optionalDebian: expect.any(Array),
      optionalFedora: expect.any(Array),
    });
  });
});

describe("a missing program", () => {
  const env = () => ({ PATH: noSgdisk, PROVISION_SBIN_DIRS: "" });

  it("doctor pxe-stick: exit 1, names sgdisk, its Debian and Fedora package, where it looked, and what to install", async () => {
    const r = await cli(["pxe-stick", "--ipxe-efi", goodEfi], env());
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toContain(
      `  ✖ sgdisk (needed for the partition table): missing; Debian/Ubuntu: gdisk, Fedora: gdisk (looked in ${noSgdisk})`,
    );
    const lines = r.stdout.trim().split("\n");
    expect(lines.at(-2)).toBe("✖ missing what pxe-stick needs: sgdisk");
    expect(lines.at(-1)).toMatch(
      /^install it: apt-get install gdisk \(Fedora: dnf install gdisk\)/,
    );

    const { report } = await json(["pxe-stick", "--ipxe-efi", goodEfi], env());
    expect(report.ok).toBe(false);
    expect(report.commands["pxe-stick"]?.ok).toBe(false);
    expect(check(report, "pxe-stick", "sgdisk")).toEqual({
      name: "sgdisk",
      kind: "program",
      status: "error",
      required: true,
      for: "the partition table",
      looked: [noSgdisk],
      packages: { debian: "gdisk", fedora: "gdisk" },
    });
    expect(report.install.debian).toEqual(["gdisk"]);
    expect(report.install.fedora).toEqual(["gdisk"]);
    // flash does not use sgdisk: still fine.
    const flash = await cli(["flash"], env());
    expect(flash.code).toBe(0);
  });

  it("the command itself: exit 4, the packages and a pointer to provision doctor", async () => {
    const r = await runCli(
      [
        "pxe-stick",
        join(work, "stick.img"),
        "--ignition-url",
        "http://127.0.0.1:9/node.ign",
        "--ipxe-efi",
        goodEfi,
        "--dry-run",
      ],
      { cacheHome, env: env() },
    );
    expect(r.code).toBe(4);
    expect(r.stderr).toContain("provision: sgdisk is not installed");
    expect(r.stderr).toContain(
      "hint: install it with: apt-get install gdisk (Fedora: dnf install gdisk); `provision doctor pxe-stick` checks everything pxe-stick needs",
    );
  });
});

describe("bad input", () => {
  it("an unknown command: exit 2, one line", async () => {
    const r = await cli(["flahs"]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr.trim().split("\n")).toEqual([
      'provision: doctor: no command "flahs"; one of flash, pxe-stick, qemu-test, mbr, serve, fleet, cache',
    ]);
    const j = await cli(["flahs", "--json"]);
    expect(j.code).toBe(2);
    expect(JSON.parse(j.stdout).error.exitCode).toBe(2);
  });

  it("--connect with something that is not a qemu+ssh URI, or with another command: exit 2", async () => {
    expect((await cli(["qemu-test", "--connect", "http://example.org/"])).code).toBe(2);
    expect((await cli(["flash", "--connect", "qemu+ssh://h/system"])).code).toBe(2);
  });
});

describe("doctor qemu-test --connect (real sshd, real libvirtd)", () => {
  let sshd: Sshd;
  let stopLibvirtd: () => Promise<void> = async () => {};
  beforeAll(async () => {
    [sshd, stopLibvirtd] = await Promise.all([startSshd(), ensureLibvirtd()]);
  }, 120_000);
  afterAll(async () => {
    await stopLibvirtd();
    await sshd?.stop();
  });
  const uri = (port: number) =>
    `qemu+ssh://root@127.0.0.1:${port}/system?keyfile=${sshd.clientKey}&known_hosts=${sshd.knownHosts}`;

  it("a reachable host whose virsh answers: ✔", async () => {
    const { code, report } = await json(["qemu-test", "--connect", uri(sshd.port)]);
    const c = check(report, "qemu-test", `libvirt ${uri(sshd.port)}`);
    expect(c).toMatchObject({ kind: "libvirt", status: "ok", required: true });
    expect(c.detail).toMatch(new RegExp(`^root@\\[127\\.0\\.0\\.1\\]:${sshd.port}: virsh answers`));
    expect(code).toBe(0);
  });

  it("nothing listening there: ✖ and exit 1", async () => {
    const r = await cli(["qemu-test", "--connect", uri(1)]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /^ {2}✖ libvirt qemu\+ssh:\/\/root@127\.0\.0\.1:1\/system\S* \(needed for --connect\): /m,
    );
  });
});
