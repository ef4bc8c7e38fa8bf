// provision flash --board: firmware on the ESP, config.txt, hybrid MBR and the repair unit
// in the embedded Ignition config; read back with sfdisk, fdisk, sgdisk, partx, mtools,
// debugfs and ignition-validate.
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";
import { fixture, partition, repoRoot } from "../helpers/fixtures.js";
import { attachLoop, detachLoop } from "../helpers/loop.js";
import { hybridDump, mbrDump } from "../mbr/util.js";

let work: string;
let fw: string;
let ign: string;
const esp = () => partition("EFI-SYSTEM");
const boot = () => partition("boot");

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-board-"));
  await execa("bash", [join(repoRoot, "fixtures", "build-rpi-firmware.sh"), join(work, "fw")]);
  fw = join(work, "fw", "firmware");
  ign = join(work, "pi.ign");
  await writeFile(
    ign,
    JSON.stringify({
      ignition: { version: "3.3.0" },
      storage: {
        files: [{ path: "/etc/hostname", mode: 420, contents: { source: "data:,pi3%0A" } }],
      },
    }),
  );
  await writeFile(join(work, "extra.txt"), "dtparam=audio=on\n");
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("flash --board rpi3", () => {
  let out: string;
  let r: Awaited<ReturnType<typeof runCli>>;
  beforeAll(async () => {
    out = join(work, "rpi3.img");
    r = await runCli(
      [
        "flash",
        out,
        "--image-url",
        fixture("fcos.img.xz"),
        "--board",
        "rpi3",
        "--firmware",
        fw,
        "--config-txt",
        join(work, "extra.txt"),
        "-i",
        ign,
        "--json",
      ],
      { cacheHome: join(work, "cache") },
    );
  });

  it("succeeds and reports the hybrid MBR, boot files and Ignition", () => {
    expect(r.stderr).not.toMatch(/warning/);
    expect(r.code).toBe(0);
    const t = JSON.parse(r.stdout).targets[0];
    expect(t).toMatchObject({ ok: true, verified: true, ignition: "boot:/ignition/config.ign" });
    expect(t.hybridMbr).toMatch(/slot 1: type 0x0c bootable/);
    expect(t.bootFiles.written).toEqual(
      expect.arrayContaining([
        "bootcode.bin",
        "start.elf",
        "fixup.dat",
        "u-boot.bin",
        "bcm2710-rpi-3-b.dtb",
      ]),
    );
  });

  it("has the hybrid MBR exactly as specified (sfdisk, fdisk) and a clean GPT (sgdisk -v)", async () => {
    expect(await mbrDump(out)).toEqual(hybridDump());
    const fd = await execa("fdisk", ["-l", "-t", "dos", out]);
    expect(fd.stdout).toMatch(
      new RegExp(
        `${out}1 \\*\\s+${esp().start}\\s+${esp().end}\\s+${esp().sectors}\\s+\\S+\\s+c W95 FAT32 \\(LBA\\)`,
      ),
    );
    expect(fd.stdout).toMatch(
      new RegExp(`${out}2\\s+1\\s+${esp().start - 1}\\s+${esp().start - 1}\\s+\\S+\\s+ee GPT`),
    );
    const v = await execa("sgdisk", ["-v", out]);
    expect(v.stdout).toContain("No problems found");
    const g = await execa("gdisk", ["-l", out], { reject: false, input: "" });
    expect(g.stdout).toContain("MBR: hybrid");
  });

  it("Linux still sees the GPT partitions (loop device + partx)", async () => {
    const dev = await attachLoop(out);
    try {
      await execa("partx", ["-a", dev]);
      const name = dev.replace("/dev/", "");
      for (const p of ["reserved", "EFI-SYSTEM", "boot", "root"].map((n) => partition(n))) {
        const start = await readFile(`/sys/block/${name}/${name}p${p.number}/start`, "utf8");
        expect(Number(start)).toBe(p.start);
      }
      expect(existsSync(`/sys/block/${name}/${name}p5`)).toBe(false);
    } finally {
      await detachLoop(dev);
    }
  });

  it("has the firmware and a config.txt on the ESP (mdir, mtype)", async () => {
    const img = `${out}@@${esp().offset}`;
    const dir = await execa("mdir", ["-i", img, "-b", "::/"]);
    for (const f of [
      "bootcode.bin",
      "start.elf",
      "fixup.dat",
      "u-boot.bin",
      "config.txt",
      "overlays",
    ]) {
      expect(dir.stdout.toLowerCase()).toContain(`::/${f}`);
    }
    const cfg = (await execa("mtype", ["-i", img, "::/config.txt"])).stdout;
    expect(cfg).toMatch(/^arm_64bit=1$/m);
    expect(cfg).toMatch(/^kernel=u-boot\.bin$/m);
    expect(cfg).toMatch(/^enable_uart=1$/m);
    expect(cfg).toMatch(/# from --config-txt\ndtparam=audio=on/);
    expect((await execa("mtype", ["-i", img, "::/start.elf"])).stdout).toContain("FAKE start.elf");
    // The image's own EFI files are still there.
    expect((await execa("mdir", ["-i", img, "-b", "::/EFI/BOOT"])).stdout).toContain(
      "BOOTAA64.EFI",
    );
  });

  it("embeds the user's config merged with the repair unit; ignition-validate accepts it", async () => {
    const got = join(work, "got.ign");
    await execa("debugfs", [
      "-R",
      `dump /ignition/config.ign ${got}`,
      `${out}?offset=${boot().offset}`,
    ]);
    await execa("ignition-validate", [got]);
    const cfg = JSON.parse(await readFile(got, "utf8"));
    const merged = cfg.ignition.config.merge.map((m: { source: string }) =>
      Buffer.from(m.source.replace(/^data:;base64,/, ""), "base64").toString("utf8"),
    );
    expect(merged.at(-1)).toBe(await readFile(ign, "utf8")); // the user's bytes, last = wins
    expect(merged[0]).toContain("provision-hybrid-mbr.service");
  });
});

describe("flash --board: input errors come before any write", () => {
  it("names every missing firmware file in one line", async () => {
    const partial = join(work, "partial");
    await execa("cp", ["-r", fw, partial]);
    await rm(join(partial, "bootcode.bin"));
    await rm(join(partial, "u-boot.bin"));
    const out = join(work, "missing.img");
    const r = await runCli(
      [
        "flash",
        out,
        "--image-url",
        fixture("fcos.img.xz"),
        "--board",
        "rpi3",
        "--firmware",
        partial,
      ],
      {
        cacheHome: join(work, "cache"),
      },
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /^provision: .*bootcode\.bin.*u-boot|^provision: .*u-boot.*bootcode\.bin/m,
    );
    await expect(stat(out)).rejects.toThrow();
  });

  it("needs --firmware for a Pi board and refuses --arch x86_64", async () => {
    const a = await runCli(
      ["flash", join(work, "x.img"), "--image-url", fixture("fcos.img.xz"), "--board", "rpi3"],
      { cacheHome: join(work, "cache") },
    );
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/^provision: --board rpi3 needs the Raspberry Pi boot files$/m);
    const b = await runCli(
      ["flash", join(work, "x.img"), "--board", "rpi3", "--arch", "x86_64", "--firmware", fw],
      { cacheHome: join(work, "cache") },
    );
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/^provision: --board rpi3 needs --arch aarch64, not x86_64$/m);
  });

  it("rpi2 says which Pi 2 can run a 64-bit OS", async () => {
    const r = await runCli(
      [
        "flash",
        join(work, "rpi2.img"),
        "--image-url",
        fixture("fcos.img.xz"),
        "--board",
        "rpi2",
        "--firmware",
        fw,
        "--dry-run",
      ],
      {
        cacheHome: join(work, "cache"),
      },
    );
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: .*64-bit only.*v1\.2/);
    expect(r.stdout).toContain(
      "hybrid MBR: slot 1 = the ESP (type 0x0C, bootable), slot 2 = 0xEE from LBA 1",
    );
  });
});

describe("flash --board rpi4", () => {
  it("copies the Pi 4 files and leaves the MBR protective", async () => {
    const out = join(work, "rpi4.img");
    const r = await runCli(
      ["flash", out, "--image-url", fixture("fcos.img.xz"), "--board", "rpi4", "--firmware", fw],
      { cacheHome: join(work, "cache") },
    );
    expect(r.code).toBe(0);
    const dir = await execa("mdir", ["-i", `${out}@@${esp().offset}`, "-b", "::/"]);
    expect(dir.stdout.toLowerCase()).toContain("::/start4.elf");
    const sectors = (await stat(out)).size / 512;
    expect(await mbrDump(out)).toEqual([`start= 1, size= ${sectors - 1}, type=ee`]);
  });

  it("--esp-fat32 on an image whose ESP is too small for FAT32: refused before anything is written", async () => {
    const out = join(work, "rpi4-fat32.img");
    const r = await runCli(
      [
        "flash",
        out,
        "--image-url",
        fixture("fcos.img.xz"),
        "--board",
        "rpi4",
        "--firmware",
        fw,
        "--esp-fat32",
      ],
      { cacheHome: join(work, "cache") },
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /the image's ESP \(partition \d+, EFI-SYSTEM\) is too small for FAT32: 32\.0 MiB gives \d+ clusters, FAT32 needs at least 65525/,
    );
    expect(r.stderr).not.toMatch(/writing|incomplete/);
    expect(existsSync(out)).toBe(false);
  });
});
