// Board support: Pi firmware staging, config.txt, copying onto the ESP of a real FCOS-layout
// image with mtools, and the FAT32 reformat, all read back with mtools, sgdisk and fsck.vfat.
// Only image files this test creates are written; no block devices.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import {
  cp,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  boardInfo,
  configTxt,
  installBootFiles,
  loadFirmware,
  parseBoard,
  reformatEspFat32,
  type StagedFirmware,
  USER_MARKER,
} from "../../src/board/index.js";
import { UsageError } from "../../src/errors.js";
import { fixture } from "../helpers/fixtures.js";

const PATH = `${process.env.PATH}:/usr/sbin:/sbin`;
const sh = (cmd: string, args: string[], opts: { input?: string } = {}) =>
  execFileSync(cmd, args, {
    encoding: "utf8",
    env: { ...process.env, PATH, MTOOLS_SKIP_CHECK: "1" },
    input: opts.input,
    stdio: ["pipe", "pipe", "pipe"],
  });

let work: string;
let base: string; // fcos.img: 256 MiB, ESP 32 MiB FAT16 at sector 4096
let fw: string; // fake firmware directory
let tarball: string;
const ESP_OFFSET = 4096 * 512;

const img = (file: string, offset = ESP_OFFSET) => `${file}@@${offset}`;
/** `mdir -/ -b -a` as paths without the `::/` prefix (directories end in "/"). */
const listing = (file: string, offset = ESP_OFFSET) =>
  sh("mdir", ["-/", "-b", "-a", "-i", img(file, offset), "::/"])
    .split("\n")
    .filter((l) => l.startsWith("::/"))
    .map((l) => l.slice(3))
    .sort();
const mtype = (file: string, p: string, offset = ESP_OFFSET) =>
  sh("mtype", ["-i", img(file, offset), `::/${p}`]);
const minfo = (file: string, offset = ESP_OFFSET) => sh("minfo", ["-i", img(file, offset), "::"]);

async function copyOf(name: string, from = base): Promise<string> {
  const p = join(work, name);
  sh("cp", ["--sparse=always", from, p]);
  return p;
}

async function sha256(path: string, start = 0, end?: number): Promise<string> {
  const h = createHash("sha256");
  if (end !== undefined && end <= start) return h.digest("hex");
  for await (const c of createReadStream(path, {
    start,
    end: end === undefined ? undefined : end - 1,
  }))
    h.update(c as Buffer);
  return h.digest("hex");
}

/** Hashes of the image outside [espStart, espEnd). */
async function outsideEsp(file: string, espStart: number, espEnd: number) {
  return [await sha256(file, 0, espStart), await sha256(file, espEnd)];
}

async function fakeFirmware(name: string, drop: string[] = []): Promise<string> {
  const dir = join(work, name);
  await cp(fw, dir, { recursive: true });
  for (const f of drop) await rm(join(dir, f));
  return dir;
}

async function expectUsageError(p: Promise<unknown>): Promise<UsageError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UsageError);
  return err as UsageError;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-board-test-"));
  sh("bash", [resolve("fixtures/build-rpi-firmware.sh"), join(work, "fw")]);
  fw = join(work, "fw", "firmware");
  tarball = join(work, "fw", "firmware.tar.gz");
  try {
    base = fixture("fcos.img");
  } catch {
    base = join(work, "fcos-base.img");
    sh("bash", [resolve("fixtures/build-fcos-image.sh"), base, "256", "0"]);
  }
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("boards", () => {
  it("describes each board", () => {
    expect(boardInfo("rpi2")).toMatchObject({ arch: "aarch64", needsHybridMbr: true });
    expect(boardInfo("rpi2").note).toBe(
      "FCOS and Flatcar are 64-bit only: a Pi 2 Model B v1.1 or older (BCM2836) cannot run them; only the Pi 2 v1.2 (BCM2837) can",
    );
    expect(boardInfo("rpi3")).toMatchObject({ arch: "aarch64", needsHybridMbr: true });
    expect(boardInfo("rpi4")).toMatchObject({ arch: "aarch64", needsHybridMbr: false });
    expect(boardInfo("generic")).toMatchObject({ arch: undefined, needsHybridMbr: false });
    expect(parseBoard("RPi3")).toBe("rpi3");
    expect(() => parseBoard("rpi5")).toThrow(/unknown board 'rpi5'/);
  });
});

describe("configTxt", () => {
  it("writes 64-bit, U-Boot as kernel, UART on, then the user's lines", () => {
    const t = configTxt("rpi3", { kernel: "u-boot.bin", userAdditions: "dtparam=audio=on\r\n" });
    const lines = t.split("\n");
    for (const l of ["arm_64bit=1", "kernel=u-boot.bin", "enable_uart=1"])
      expect(lines).toContain(l);
    // No active UART overlay (U-Boot wants the mini UART) and core_freq only as a comment.
    expect(lines.filter((l) => /^dtoverlay=/.test(l))).toEqual([]);
    expect(lines).toContain("#core_freq=250");
    const marker = lines.indexOf(USER_MARKER);
    expect(marker).toBeGreaterThan(lines.indexOf("enable_uart=1"));
    expect(lines[marker + 1]).toBe("dtparam=audio=on");
    expect(t.endsWith("dtparam=audio=on\n")).toBe(true);
    expect(t).not.toContain("\r");
    expect(configTxt("rpi3", { kernel: "u-boot.bin", userAdditions: "  \n" })).not.toContain(
      USER_MARKER,
    );
  });

  it("adds upstream_kernel=1 only for upstream-named device trees", () => {
    expect(configTxt("rpi3", { kernel: "u-boot.bin" })).not.toMatch(/^upstream_kernel/m);
    expect(configTxt("rpi3", { kernel: "u-boot.bin", upstreamDtbs: true })).toMatch(
      /^upstream_kernel=1$/m,
    );
  });

  it("uses armstub= for EDK2 on the Pi 4 only", () => {
    const t = configTxt("rpi4", { kernel: "RPI_EFI.fd", loader: "edk2" });
    expect(t).toMatch(/^armstub=RPI_EFI\.fd$/m);
    expect(t).not.toMatch(/^kernel=/m);
    expect(t).toMatch(/^arm_64bit=1$/m);
    expect(() => configTxt("rpi3", { kernel: "RPI_EFI.fd", loader: "edk2" })).toThrow(UsageError);
    expect(() => configTxt("generic", { kernel: "u-boot.bin" })).toThrow(UsageError);
    expect(() => configTxt("rpi3", { kernel: "u boot.bin" })).toThrow(UsageError);
  });
});

describe("loadFirmware", () => {
  it("stages the Pi 3 files from a directory", async () => {
    const s = await loadFirmware({ firmware: fw }, "rpi3");
    try {
      expect(s.tempDir).toBeUndefined();
      expect(s.loader).toEqual({
        kind: "u-boot",
        path: "u-boot.bin",
        source: join(fw, "u-boot.bin"),
      });
      expect(s.files.map((f) => f.path)).toEqual([
        "bcm2710-rpi-2-b.dtb",
        "bcm2710-rpi-3-b-plus.dtb",
        "bcm2710-rpi-3-b.dtb",
        "bcm2711-rpi-4-b.dtb",
        "bootcode.bin",
        "fixup.dat",
        "overlays/disable-bt.dtbo",
        "overlays/miniuart-bt.dtbo",
        "start.elf",
        "u-boot.bin",
      ]);
      expect(s.ignored).toEqual(["fixup4.dat", "start4.elf"]);
      expect(s.upstreamDtbs).toBe(false);
      for (const f of s.files) expect(f.size).toBe((await stat(f.source)).size);
    } finally {
      await s.dispose();
    }
  });

  it("stages the Pi 4 files (no bootcode.bin, start4/fixup4)", async () => {
    const s = await loadFirmware({ firmware: fw }, "rpi4");
    const paths = s.files.map((f) => f.path);
    expect(paths).toContain("start4.elf");
    expect(paths).toContain("fixup4.dat");
    expect(paths).toContain("bcm2711-rpi-4-b.dtb");
    expect(paths).not.toContain("bootcode.bin");
    expect(paths).not.toContain("start.elf");
    expect(s.loader.kind).toBe("u-boot");
  });

  it("names every missing file in one error", async () => {
    const dir = await fakeFirmware("fw-incomplete", ["bootcode.bin", "u-boot.bin"]);
    const err = await expectUsageError(loadFirmware({ firmware: dir }, "rpi3"));
    expect(err.message).toMatch(/missing bootcode\.bin; U-Boot \(/);
    expect(err.message).toContain("--uboot FILE");
    expect(err.message).not.toContain("start.elf");
    expect(err.hint).toContain("uboot-images-armv8");

    // U-Boot given separately: only bootcode.bin is missing now.
    const err2 = await expectUsageError(
      loadFirmware({ firmware: dir, uboot: join(fw, "u-boot.bin") }, "rpi3"),
    );
    expect(err2.message).toMatch(/missing bootcode\.bin$/);

    const dir3 = await fakeFirmware("fw-no-dtb", [
      "bcm2710-rpi-3-b.dtb",
      "bcm2710-rpi-3-b-plus.dtb",
      "start.elf",
    ]);
    const err3 = await expectUsageError(loadFirmware({ firmware: dir3 }, "rpi3"));
    expect(err3.message).toContain("missing start.elf; a device tree bcm2710-rpi-3-b*.dtb");
  });

  it("explains that a BCM2836 device tree is not enough for rpi2", async () => {
    const dir = await fakeFirmware("fw-rpi2-old", ["bcm2710-rpi-2-b.dtb"]);
    await writeFile(join(dir, "bcm2709-rpi-2-b.dtb"), "FAKE\n");
    const err = await expectUsageError(loadFirmware({ firmware: dir }, "rpi2"));
    expect(err.message).toContain("bcm2710-rpi-2-b.dtb");
    expect(err.hint).toMatch(/32-bit BCM2836/);
  });

  it("takes U-Boot from --uboot over the firmware's own", async () => {
    const other = join(work, "my-u-boot.bin");
    await writeFile(other, "MY U-BOOT\n");
    const s = await loadFirmware({ firmware: fw, uboot: other }, "rpi3");
    expect(s.loader).toEqual({ kind: "u-boot", path: "u-boot.bin", source: other });
    expect(s.files.filter((f) => f.path === "u-boot.bin").map((f) => f.source)).toEqual([other]);
    expect(s.ignored).toContain("u-boot.bin");
    await expectUsageError(loadFirmware({ firmware: fw, uboot: join(work, "nope") }, "rpi3"));
  });

  it("finds files in Fedora's unpacked-RPM layout, with upstream-named device trees", async () => {
    const dir = join(work, "fw-fedora");
    const efi = join(dir, "boot", "efi");
    await mkdir(efi, { recursive: true });
    await mkdir(join(dir, "usr/share/uboot/rpi_arm64"), { recursive: true });
    for (const f of ["bootcode.bin", "start.elf", "fixup.dat", "config.txt"]) {
      await writeFile(join(efi, f), `FAKE ${f}\n`);
    }
    await writeFile(join(efi, "bcm2837-rpi-3-b.dtb"), "FAKE upstream dtb\n");
    await writeFile(join(dir, "usr/share/uboot/rpi_arm64/u-boot.bin"), "FAKE rpi_arm64 u-boot\n");
    const s = await loadFirmware({ firmware: dir }, "rpi3");
    expect(s.root).toBe(efi);
    expect(s.loader.source).toBe(join(dir, "usr/share/uboot/rpi_arm64/u-boot.bin"));
    expect(s.upstreamDtbs).toBe(true);
    expect(s.ignored).toContain("config.txt"); // ours is written instead
    expect(s.files.map((f) => f.path)).not.toContain("config.txt");
  });

  it("uses EDK2 on the Pi 4 when there is no U-Boot (a zip like pftf/RPi4's)", async () => {
    const dir = join(work, "edk2");
    await mkdir(join(dir, "overlays"), { recursive: true });
    for (const f of [
      "RPI_EFI.fd",
      "start4.elf",
      "fixup4.dat",
      "bcm2711-rpi-4-b.dtb",
      "config.txt",
      "overlays/miniuart-bt.dtbo",
    ]) {
      await writeFile(join(dir, f), `FAKE ${f}\n`);
    }
    const zipFile = join(work, "RPi4_UEFI_Firmware_fake.zip");
    sh("bash", ["-c", `cd '${dir}' && zip -q -r '${zipFile}' .`]);
    const tmp = await mkdtemp(join(work, "tmp-zip-"));
    const s = await loadFirmware({ firmware: zipFile }, "rpi4", { tmpDir: tmp });
    try {
      expect(s.loader.kind).toBe("edk2");
      expect(s.loader.path).toBe("RPI_EFI.fd");
      expect(s.files.map((f) => f.path)).toContain("RPI_EFI.fd");
      expect(s.files.map((f) => f.path)).toContain("overlays/miniuart-bt.dtbo");
    } finally {
      await s.dispose();
    }
    expect(await readdir(tmp)).toEqual([]);
    // The Pi 3 has no EDK2: U-Boot is missing.
    const err = await expectUsageError(
      loadFirmware({ firmware: zipFile }, "rpi3", { tmpDir: tmp }),
    );
    expect(err.message).toContain("bootcode.bin");
    expect(err.message).toContain("U-Boot");
    expect(await readdir(tmp)).toEqual([]);
  });

  it("unpacks a tarball into a 0700 temporary directory and removes it", async () => {
    const tmp = await mkdtemp(join(work, "tmp-tar-"));
    const s: StagedFirmware = await loadFirmware({ firmware: tarball }, "rpi3", { tmpDir: tmp });
    const dir = s.tempDir as string;
    expect(dir.startsWith(tmp)).toBe(true);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect(s.files.find((f) => f.path === "bootcode.bin")?.source.startsWith(dir)).toBe(true);
    expect(await readFile(s.loader.source, "utf8")).toBe("FAKE u-boot.bin for provision tests\n");
    await s.dispose();
    await s.dispose(); // idempotent
    expect(existsSync(dir)).toBe(false);
    expect(await readdir(tmp)).toEqual([]);

    // A tarball missing files: the error, and no temporary directory left behind.
    const partial = await fakeFirmware("fw-partial-src", ["bootcode.bin", "u-boot.bin"]);
    const bad = join(work, "partial.tar.xz");
    sh("tar", ["-C", partial, "-cJf", bad, "."]);
    const err = await expectUsageError(loadFirmware({ firmware: bad }, "rpi3", { tmpDir: tmp }));
    expect(err.message).toContain("bootcode.bin");
    expect(err.message).toContain("U-Boot");
    expect(await readdir(tmp)).toEqual([]);

    // Not an archive at all.
    const junk = join(work, "junk.tar");
    await writeFile(junk, "this is not a tar archive\n".repeat(40));
    await expectUsageError(loadFirmware({ firmware: junk }, "rpi3", { tmpDir: tmp }));
    expect(await readdir(tmp)).toEqual([]);
  });

  it("refuses generic and a missing --firmware", async () => {
    await expectUsageError(loadFirmware({ firmware: fw }, "generic"));
    const err = await expectUsageError(loadFirmware({}, "rpi3"));
    expect(err.message).toContain("--firmware");
    await expectUsageError(loadFirmware({ firmware: join(work, "does-not-exist") }, "rpi3"));
  });
});

describe("installBootFiles", () => {
  it("copies the Pi 3 files and config.txt onto the ESP, never overwriting", async () => {
    const file = await copyOf("install.img");
    // The image already has a start.elf of its own (and, as every FCOS image, BOOTAA64.EFI).
    const pre = join(work, "start.elf");
    await writeFile(pre, "PRE-EXISTING start.elf\n");
    sh("mcopy", ["-i", img(file), pre, "::/start.elf"]);
    const esp = { start: ESP_OFFSET, end: ESP_OFFSET + 32 * 1024 * 1024 };
    const outside = await outsideEsp(file, esp.start, esp.end);

    const s = await loadFirmware({ firmware: fw }, "rpi3");
    const text = configTxt("rpi3", {
      kernel: s.loader.path,
      userAdditions: "dtparam=i2c_arm=on\n",
    });
    const r = await installBootFiles(file, s, { configTxt: text });
    expect(r.skipped).toEqual(["start.elf"]);
    expect(r.configTxtWritten).toBe(true);
    expect([...r.written].sort()).toEqual(
      [...s.files.map((f) => f.path).filter((p) => p !== "start.elf"), "config.txt"].sort(),
    );

    const ls = listing(file);
    for (const p of ["bootcode.bin", "start.elf", "fixup.dat", "config.txt", "u-boot.bin"]) {
      expect(ls).toContain(p);
    }
    expect(ls).toContain("overlays/");
    expect(ls).toContain("overlays/miniuart-bt.dtbo");
    expect(ls).toContain("overlays/disable-bt.dtbo");
    expect(ls).toContain("EFI/BOOT/BOOTAA64.EFI");

    const cfg = mtype(file, "config.txt");
    expect(cfg).toBe(text);
    expect(cfg).toMatch(/^arm_64bit=1$/m);
    expect(cfg).toMatch(/^kernel=u-boot\.bin$/m);
    expect(cfg).toMatch(/^enable_uart=1$/m);
    expect(cfg).toContain(`${USER_MARKER}\ndtparam=i2c_arm=on\n`);
    expect(mtype(file, "start.elf")).toBe("PRE-EXISTING start.elf\n");
    expect(mtype(file, "bootcode.bin")).toBe("FAKE bootcode.bin for provision tests\n");
    expect(mtype(file, "overlays/miniuart-bt.dtbo")).toBe(
      "FAKE overlays/miniuart-bt.dtbo for provision tests\n",
    );
    expect(mtype(file, "EFI/BOOT/BOOTAA64.EFI")).toBe(
      "MZ dummy BOOTAA64.EFI for provision tests\n",
    );

    // Nothing outside the ESP changed, the GPT is fine, the FAT is clean.
    expect(await outsideEsp(file, esp.start, esp.end)).toEqual(outside);
    expect(sh("sgdisk", ["-v", file])).toMatch(/No problems found/);
    const espFile = join(work, "install-esp.img");
    sh("dd", [`if=${file}`, `of=${espFile}`, "bs=1M", "skip=2", "count=32", "status=none"]);
    sh("fsck.vfat", ["-n", espFile]);
    await rm(espFile);

    // A second run writes nothing: every file, config.txt included, is already there.
    const again = await installBootFiles(file, s, {
      configTxt: configTxt("rpi3", { kernel: "u-boot.bin", userAdditions: "other=1\n" }),
    });
    expect(again.written).toEqual([]);
    expect(again.configTxtWritten).toBe(false);
    expect([...again.skipped].sort()).toEqual([...s.files.map((f) => f.path), "config.txt"].sort());
    expect(mtype(file, "config.txt")).toBe(text);
    await rm(file);
  });

  it("treats names case-insensitively, as FAT does", async () => {
    const file = await copyOf("case.img");
    const pre = join(work, "CONFIG.TXT");
    await writeFile(pre, "# the image's own\n");
    sh("mcopy", ["-i", img(file), pre, "::/CONFIG.TXT"]);
    const s = await loadFirmware({ firmware: fw }, "rpi3");
    const r = await installBootFiles(file, s, { configTxt: "kernel=u-boot.bin\n" });
    expect(r.configTxtWritten).toBe(false);
    expect(r.skipped).toEqual(["config.txt"]);
    expect(mtype(file, "config.txt")).toBe("# the image's own\n");
    await rm(file);
  });

  it("fails before writing when the ESP is too full", async () => {
    const file = await copyOf("full.img");
    const big = join(work, "big.bin");
    await writeFile(big, "");
    await truncate(big, 40 * 1024 * 1024);
    const before = listing(file);
    const err = await installBootFiles(
      file,
      { files: [{ path: "big.bin", source: big, size: 40 * 1024 * 1024 }] },
      { configTxt: "kernel=u-boot.bin\n" },
    ).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/not enough room on the ESP of .*: .* need 40\.0 MiB/);
    expect(listing(file)).toEqual(before);
    await rm(file);
    await rm(big);
  });

  it("refuses a target without an ESP", async () => {
    const file = join(work, "noesp.img");
    await writeFile(file, "");
    await truncate(file, 8 * 1024 * 1024);
    sh("sgdisk", ["-n", "1:2048:0", "-t", "1:8300", "-c", "1:root", file]);
    const err = await expectUsageError(
      installBootFiles(file, { files: [] }, { configTxt: "kernel=u-boot.bin\n" }),
    );
    expect(err.message).toMatch(/no EFI system partition/);
    await rm(file);
  });
});

describe("4096-byte sectors", () => {
  it("installs and reformats on a 4Kn disk image", async () => {
    // A 4Kn GPT (fdisk can write one into a file) with a 300 MiB FAT16 ESP at LBA 256.
    const file = join(work, "4k.img");
    await writeFile(file, "");
    await truncate(file, 400 * 1024 * 1024);
    sh("fdisk", ["-b", "4096", file], {
      input: "g\nn\n1\n\n+300M\nn\n2\n\n\nx\nn\n1\nEFI-SYSTEM\nn\n2\nboot\nr\nw\n",
    });
    const off = 256 * 4096;
    const end = off + 300 * 1024 * 1024;
    sh("mkfs.vfat", [
      "-F",
      "16",
      "-S",
      "4096",
      "-n",
      "EFI-SYSTEM",
      "-i",
      "12345678",
      "--offset=256",
      "-h",
      "256",
      file,
      String(300 * 1024),
    ]);
    const outside = await outsideEsp(file, off, end);
    const s = await loadFirmware({ firmware: fw }, "rpi4");
    const r = await installBootFiles(file, s, { configTxt: "kernel=u-boot.bin\n" });
    expect(r.skipped).toEqual([]);
    expect(mtype(file, "start4.elf", off)).toBe("FAKE start4.elf for provision tests\n");

    const fat32 = await reformatEspFat32(file, { tmpDir: work });
    expect(fat32).toMatchObject({ changed: true, before: 16, volumeId: "12345678" });
    const info = minfo(file, off);
    expect(info).toMatch(/sector size: 4096 bytes/);
    expect(info).toMatch(/disk type="FAT32   "/);
    expect(mtype(file, "config.txt", off)).toBe("kernel=u-boot.bin\n");
    expect(listing(file, off)).toContain("overlays/disable-bt.dtbo");
    expect(await outsideEsp(file, off, end)).toEqual(outside);
    await rm(file);
  });
});

describe("reformatEspFat32", () => {
  it("refuses an ESP too small for FAT32 without touching it", async () => {
    const file = await copyOf("small.img");
    const before = await sha256(file);
    const err = await expectUsageError(reformatEspFat32(file, { tmpDir: work }));
    expect(err.message).toMatch(
      /too small for FAT32: 32\.0 MiB gives \d+ clusters, FAT32 needs at least 65525 \(an ESP of at least 32\.5 MiB\)/,
    );
    expect(await sha256(file)).toBe(before);
    expect(minfo(file)).toMatch(/disk type="FAT16/);
    await rm(file);
  });

  it("reformats a 127 MiB FAT16 ESP as FAT32 keeping files, attributes, label and serial", async () => {
    // The real image's layout: ESP of 127 MiB at sector 4096 (FAT16), boot, root.
    const file = join(work, "real-layout.img");
    sh("bash", [resolve("fixtures/build-fcos-image.sh"), file, "1536", "0"]);
    const espStart = ESP_OFFSET;
    const espEnd = espStart + 127 * 1024 * 1024;
    expect(minfo(file)).toMatch(/disk type="FAT16/);

    // Some content: Pi 4 firmware, an empty directory, a hidden file.
    const s = await loadFirmware({ firmware: fw }, "rpi4");
    await installBootFiles(file, s, { configTxt: configTxt("rpi4", { kernel: "u-boot.bin" }) });
    sh("mmd", ["-i", img(file), "::/empty"]);
    const hidden = join(work, "hidden.txt");
    await writeFile(hidden, "hidden\n");
    sh("mcopy", ["-i", img(file), hidden, "::/EFI/hidden.txt"]);
    sh("mattrib", ["-i", img(file), "+h", "::/EFI/hidden.txt"]);

    const filesBefore = listing(file);
    const contents = new Map(
      filesBefore.filter((p) => !p.endsWith("/")).map((p) => [p, mtype(file, p)]),
    );
    const attrs = () =>
      sh("mattrib", ["-/", "-X", "-i", img(file), "::/"])
        .split("\n")
        .sort();
    const attrsBefore = attrs();
    const outside = await outsideEsp(file, espStart, espEnd);
    const size = (await stat(file)).size;

    const r = await reformatEspFat32(file, { tmpDir: work });
    expect(r).toMatchObject({
      changed: true,
      before: 16,
      label: "EFI-SYSTEM",
      volumeId: "4E3E2A7B",
    });
    expect(r.files).toBe(filesBefore.filter((p) => !p.endsWith("/")).length);

    const info = minfo(file);
    expect(info).toMatch(/disk type="FAT32   "/);
    expect(info).toMatch(/disk label="EFI-SYSTEM "/);
    expect(info).toMatch(/serial number: 4E3E2A7B/);
    expect(info).toMatch(/hidden sectors: 4096/);
    expect(listing(file)).toEqual(filesBefore);
    for (const [p, c] of contents) expect(mtype(file, p), p).toBe(c);
    expect(attrs()).toEqual(attrsBefore);
    expect(attrsBefore).toContain("AH ::/EFI/hidden.txt");

    // Nothing outside the ESP changed; the GPT and the new FAT are clean.
    expect((await stat(file)).size).toBe(size);
    expect(await outsideEsp(file, espStart, espEnd)).toEqual(outside);
    expect(sh("sgdisk", ["-v", file])).toMatch(/No problems found/);
    const espFile = join(work, "fat32-esp.img");
    sh("dd", [`if=${file}`, `of=${espFile}`, "bs=1M", "skip=2", "count=127", "status=none"]);
    sh("fsck.vfat", ["-n", espFile]);
    await rm(espFile);
    // No work directory left behind.
    expect((await readdir(work)).filter((n) => n.startsWith("provision-fat32-"))).toEqual([]);

    // Already FAT32: nothing to do. And the Pi files can still be added to it.
    const file2 = await copyOf("real-layout-2.img", file);
    const again = await reformatEspFat32(file2, { tmpDir: work });
    expect(again.changed).toBe(false);
    expect(again.before).toBe(32);
    expect(await sha256(file2)).toBe(await sha256(file));
    sh("mdel", ["-i", img(file2), "::/config.txt"]);
    const r2 = await installBootFiles(file2, s, { configTxt: "# new\n" });
    expect(r2.written).toEqual(["config.txt"]);
    expect(mtype(file2, "config.txt")).toBe("# new\n");
    await rm(file);
    await rm(file2);
  });
});
