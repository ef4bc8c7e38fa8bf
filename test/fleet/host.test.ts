// `--host NAME` on flash and qemu-test, through the real CLI: the inventory's host gives the
// OS, board, firmware, kernel args, target and config; what lands on the card is the config
// `fleet build` publishes, read back with debugfs; the seed case reaches a flashed card; an
// rpi3 host gets the same hybrid MBR and firmware as the flags give; qemu-test boots the
// aarch64 boot fixture with a host's config and its MAC.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixture, partition, repoRoot } from "../helpers/fixtures.js";
import { decodedDeep } from "../helpers/ignition.js";
import { hybridDump, mbrDump } from "../mbr/util.js";

let work: string;
let fleet: string;
let fw: string;
const BOOT_FIXTURE_DIR = join(repoRoot, ".cache", "boot-fixture");

async function cli(args: string[], cwd = fleet) {
  const r = await execa("node", [join(repoRoot, "bin", "provision.js"), ...args], {
    reject: false,
    stdin: "ignore",
    cwd,
    env: { CI: "1", XDG_CACHE_HOME: join(work, "cache"), K3S_TOKEN: "t" },
    timeout: 600_000,
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

async function embedded(img: string): Promise<string> {
  const r = await execa("debugfs", [
    "-R",
    "cat /ignition/config.ign",
    `${img}?offset=${partition("boot").offset}`,
  ]);
  return String(r.stdout);
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-fleet-host-"));
  fleet = join(work, "fleet");
  await cp(join(repoRoot, "examples", "fleet"), fleet, { recursive: true });
  await execa("bash", [join(repoRoot, "fixtures", "build-rpi-firmware.sh"), join(work, "fw")]);
  fw = join(work, "fw", "firmware");
  // The Pi host gets its boot files from the inventory.
  const inv = join(fleet, "provision.yaml");
  await writeFile(
    inv,
    (await readFile(inv, "utf8")).replace(
      "    board: rpi3\n",
      `    board: rpi3\n    firmware: ${fw}\n`,
    ),
  );
}, 300_000);
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("flash --host", () => {
  it("writes the host's config, the one fleet build publishes, and its kernel args; an edit to common reaches the next card", async () => {
    const out = join(work, "nas.img");
    const r = await cli([
      "flash",
      out,
      "--host",
      "nas",
      "--image-url",
      fixture("fcos.img.xz"),
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/host nas: config [0-9a-f]{12} built from 2 source file\(s\)/);
    const t = JSON.parse(r.stdout).targets[0];
    expect(t.kernelArgs[0]).toMatch(/ console=ttyS0,115200n8$/);
    const pub = join(work, "published");
    expect((await cli(["fleet", "build", "--out", pub])).code).toBe(0);
    const onCard = await embedded(out);
    expect(onCard).toBe((await readFile(join(pub, "nas.ign"), "utf8")).trimEnd());

    const common = join(fleet, "common.ign");
    await writeFile(
      common,
      (await readFile(common, "utf8")).replace(
        "PermitRootLogin%20no",
        "PermitRootLogin%20prohibit-password",
      ),
    );
    const out2 = join(work, "nas2.img");
    expect(
      (await cli(["flash", out2, "--host", "nas", "--image-url", fixture("fcos.img.xz"), "-q"]))
        .code,
    ).toBe(0);
    const onCard2 = await embedded(out2);
    expect(onCard2).not.toBe(onCard);
    expect(decodedDeep(onCard2)).toContain("PermitRootLogin%20prohibit-password");
    const stale = await cli(["fleet", "diff", "nas", "--against", join(pub, "nas.ign")]);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toMatch(/changed since it was built: common\.ign/);
  });

  it("an rpi3 host gets the hybrid MBR and the firmware, as the flags give them", async () => {
    const out = join(work, "pi.img");
    const r = await cli([
      "flash",
      out,
      "--host",
      "pi-dns",
      "--image-url",
      fixture("fcos.img.xz"),
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const t = JSON.parse(r.stdout).targets[0];
    expect(t.hybridMbr).toMatch(/slot 1: type 0x0c bootable/);
    expect(t.bootFiles.written).toEqual(
      expect.arrayContaining(["bootcode.bin", "start.elf", "u-boot.bin"]),
    );
    expect(await mbrDump(out)).toEqual(hybridDump());
    // The repair unit is in the config once (generated for the board), not twice.
    const units =
      decodedDeep(await embedded(out)).match(/"name":"provision-hybrid-mbr\.service"/g) ?? [];
    expect(units.length).toBe(1);
  });

  it("a flag overrides the inventory and says so; the target comes from the host's disk", async () => {
    const r = await cli([
      "flash",
      join(work, "x.img"),
      "--host",
      "pi-dns",
      "--board",
      "rpi4",
      "--image-url",
      fixture("fcos.img.xz"),
      "--dry-run",
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(
      /^warning: --board rpi4 overrides pi-dns's board rpi3 \(provision\.yaml:\d+:\d+\)$/m,
    );
    // No target given: the host's disk, which does not exist here.
    const d = await cli(["flash", "--host", "nas", "--image-url", fixture("fcos.img.xz")]);
    expect(d.code).toBe(2);
    expect(d.stderr).toMatch(/\/dev\/disk\/by-id\/ata-WDC_WD40EFRX/);
    const both = await cli([
      "flash",
      join(work, "y.img"),
      "--host",
      "nas",
      "-i",
      join(fleet, "common.ign"),
    ]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--host and --ignition cannot go together/);
  });
});

describe("pxe-stick --host", () => {
  it("takes the host's OS, host name, kernel args and secrets; the values land on the volume only", async () => {
    const FX = join(repoRoot, ".cache", "pxe-fixture");
    const r0 = spawnSync("bash", [join(repoRoot, "fixtures", "build-pxe-fixture.sh"), FX], {
      stdio: "inherit",
    });
    if (r0.status !== 0) throw new Error("fixtures/build-pxe-fixture.sh failed");
    const dir = join(work, "pxefleet");
    await execa("mkdir", ["-p", dir]);
    await writeFile(join(dir, "token.txt"), "file-secret-1b2c\n");
    await writeFile(
      join(dir, "provision.yaml"),
      [
        "hosts:",
        "  node1:",
        "    os: flatcar",
        "    channel: beta",
        "    arch: x86_64",
        "    boot: pxe",
        '    kargs: ["console=ttyS0,115200n8"]',
        "    secrets:",
        "      K3S_TOKEN: env:K3S_TOKEN",
        "      EXTRA: file:token.txt",
        "",
      ].join("\n"),
    );
    const img = join(work, "stick.img");
    const r2 = await cli(
      [
        "pxe-stick",
        img,
        "--host",
        "node1",
        "--ipxe-efi",
        join(FX, "ipxe", "ipxe.efi"),
        "--boot",
        "uefi",
        "--ignition-url",
        "http://10.0.2.2:8000/node1.ign",
        "--json",
      ],
      dir,
    );
    expect(r2.code, r2.stderr).toBe(0);
    const rep = JSON.parse(r2.stdout);
    expect(rep.os).toMatch(/^Flatcar beta/);
    expect(rep.script).toMatch(/systemd\.hostname=node1/);
    expect(rep.script).toMatch(/console=ttyS0,115200n8/);
    expect(rep.secrets.files).toEqual(expect.arrayContaining(["K3S_TOKEN", "EXTRA"]));
    for (const out of [r2.stdout, r2.stderr]) {
      expect(out).not.toContain("file-secret-1b2c");
      expect(out).not.toMatch(/=t\b/);
    }
    const { readGpt } = await import("../../src/gpt/index.js");
    const vol = (await readGpt(img)).partitions.find((p) => p.name === "secrets");
    const cat = async (f: string) =>
      String(
        (await execa("debugfs", ["-R", `cat /${f}`, `${img}?offset=${vol?.offsetBytes}`])).stdout,
      );
    expect(await cat("EXTRA")).toBe("file-secret-1b2c");
    expect(await cat("K3S_TOKEN")).toBe("t");
  }, 300_000);
});

describe("qemu-test --host", () => {
  let img: string;
  beforeAll(async () => {
    const r = spawnSync(
      "bash",
      [join(repoRoot, "fixtures", "build-boot-fixture.sh"), BOOT_FIXTURE_DIR],
      {
        stdio: "inherit",
      },
    );
    if (r.status !== 0) throw new Error("fixtures/build-boot-fixture.sh failed");
    img = join(work, "card.img");
    const f = await cli([
      "flash",
      img,
      "--image-url",
      join(BOOT_FIXTURE_DIR, "boot-aarch64.img.xz"),
      "-q",
    ]);
    if (f.code !== 0) throw new Error(`flash failed: ${f.stderr}`);
    // A small inventory of its own: a host whose config the fixture's real Ignition applies.
    const dir = join(work, "vmfleet");
    await execa("mkdir", ["-p", dir]);
    await writeFile(
      join(dir, "motd.ign"),
      `${JSON.stringify({
        ignition: { version: "3.3.0" },
        storage: {
          files: [
            {
              path: "/etc/motd",
              mode: 420,
              contents: { source: "data:,{{ host.vars.greeting }}%0A" },
            },
          ],
        },
      })}\n`,
    );
    await writeFile(
      join(dir, "provision.yaml"),
      "hosts:\n  vm1:\n    arch: aarch64\n    macs: [52:54:00:12:34:99]\n    ignition: [motd.ign]\n    vars:\n      greeting: hello-from-vm1\n",
    );
  }, 900_000);

  it("boots the host's built config: Ignition writes its hostname and its templated file", async () => {
    const dir = join(work, "vmfleet");
    const r = await cli(
      [
        "qemu-test",
        img,
        "--host",
        "vm1",
        "--memory",
        "512",
        "--expect",
        "PROVISION-BOOT-OK",
        "--json",
      ],
      dir,
    );
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as { verdict: string; consoleTail: string[] };
    expect(res.verdict).toBe("pass");
    const sha = (s: string) => createHash("sha256").update(s).digest("hex");
    const console = r.stderr + res.consoleTail.join("\n");
    expect(console).toContain(
      `PROVISION-FILE: /etc/hostname mode=644 uid=0 gid=0 size=4 sha256=${sha("vm1\n")}`,
    );
    expect(console).toContain(
      `PROVISION-FILE: /etc/motd mode=644 uid=0 gid=0 size=15 sha256=${sha("hello-from-vm1\n")}`,
    );
    const p = await cli(
      ["qemu-test", img, "--host", "vm1", "--net", "user", "--print-command"],
      dir,
    );
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout).toContain("virtio-net-pci,netdev=n0,mac=52:54:00:12:34:99");
  }, 600_000);
});
