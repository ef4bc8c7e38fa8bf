// Sticks made by `provision pxe-stick` booted for real under qemu-system-x86_64 (TCG) through
// `provision qemu-test --usb`: OVMF (UEFI: iPXE runs /autoexec.ipxe) and SeaBIOS (syslinux
// loads ipxe.lkrn with the script as its initrd). iPXE fetches the test kernel and initramfs
// from an HTTP server on 127.0.0.1 (10.0.2.2 to the guest); the initramfs
// (fixtures/build-pxe-fixture.sh) prints the kernel command line, fetches the Ignition config
// from ignition.config.url over DHCP (busybox udhcpc and wget), mounts LABEL=secrets read-only,
// lists the files with modes and owners, and shows that writing fails.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BootResult } from "../../src/qemu/index.js";
import { runCli } from "../helpers/cli.js";
import { repoRoot } from "../helpers/fixtures.js";
import { startServer, type TestServer } from "../helpers/http.js";

const FX = join(repoRoot, ".cache", "pxe-fixture");
const SECRET = "sv-boot-8d1f-value";
// What the test server answers at /node.ign.
const NODE_IGN = `${JSON.stringify({
  ignition: { version: "3.4.0" },
  storage: {
    files: [{ path: "/etc/hostname", mode: 420, contents: { source: "data:,node9%0A" } }],
  },
})}\n`;

let work: string;
let server: TestServer;
let guestBase: string;
let flatcarStick: string;

const cli = (args: string[]) =>
  runCli(args, {
    cacheHome: join(work, "cache"),
    env: { HOME: join(work, "home"), TMPDIR: join(work, "tmp") },
  });

async function bootStick(
  stick: string,
  name: string,
  extra: string[] = [],
  expect = "PXE-BOOT-OK",
) {
  const log = join(work, `${name}.log`);
  const r = await cli([
    "qemu-test",
    stick,
    "--usb",
    "--net",
    "user",
    "--memory",
    "1024",
    "--expect",
    expect,
    "--fail",
    "PXE-BOOT-FAIL",
    "--timeout",
    "4m",
    "--console-log",
    log,
    "--json",
    ...extra,
  ]);
  return {
    ...r,
    console: await readFile(log, "utf8").catch(() => ""),
    result: JSON.parse(r.stdout || "{}") as BootResult,
  };
}

function checkSecretsSeen(console: string) {
  expect(console).toContain("PXE-SECRETS-DEV: /dev/sda2");
  for (const f of ["/API_KEY", "/authorized_keys", "/reproduce.sh"])
    expect(console).toContain(`PXE-SECRET-FILE: 600 0 ${f}`);
  expect(console).toContain("PXE-SECRETS-WRITE: failed");
  expect(console).toContain("PXE-SECRETS-REMOUNT-RW: failed");
  expect(console).not.toContain(SECRET);
}

beforeAll(async () => {
  const r = spawnSync("bash", [join(repoRoot, "fixtures", "build-pxe-fixture.sh"), FX], {
    stdio: "inherit",
  });
  if (r.status !== 0) throw new Error(`fixtures/build-pxe-fixture.sh failed (${r.status})`);
  work = await mkdtemp(join(tmpdir(), "provision-pxe-boot-"));
  await mkdir(join(work, "home", ".ssh"), { recursive: true });
  await mkdir(join(work, "tmp"));
  server = await startServer({
    routes: {
      "/flatcar/flatcar_production_pxe.vmlinuz": join(FX, "pxe", "vmlinuz"),
      "/flatcar/flatcar_production_pxe_image.cpio.gz": join(FX, "pxe", "initrd.img"),
      "/fcos/fedora-coreos-42.1-live-kernel.x86_64": join(FX, "pxe", "vmlinuz"),
      "/fcos/fedora-coreos-42.1-live-initramfs.x86_64.img": join(FX, "pxe", "initrd.img"),
      "/node.ign": NODE_IGN,
    },
  });
  guestBase = `http://10.0.2.2:${server.port}`;
  // FCOS stream metadata, as builds.coreos.fedoraproject.org serves it, with the PXE artifacts.
  const art = (f: string) => ({ location: `${guestBase}/fcos/${f}`, sha256: "0".repeat(64) });
  server.addRoutes({
    "/streams/stable.json": {
      body: JSON.stringify({
        stream: "stable",
        architectures: {
          x86_64: {
            artifacts: {
              metal: {
                release: "42.1",
                formats: {
                  pxe: {
                    kernel: art("fedora-coreos-42.1-live-kernel.x86_64"),
                    initramfs: art("fedora-coreos-42.1-live-initramfs.x86_64.img"),
                    rootfs: art("fedora-coreos-42.1-live-rootfs.x86_64.img"),
                  },
                },
              },
            },
          },
        },
      }),
      contentType: "application/json",
    },
  });
  flatcarStick = join(work, "flatcar.img");
  const b = await cli([
    "pxe-stick",
    flatcarStick,
    "--ipxe-efi",
    join(FX, "ipxe", "ipxe.efi"),
    "--ipxe-lkrn",
    join(FX, "ipxe", "ipxe.lkrn"),
    "--ignition-url",
    `${guestBase}/node.ign`,
    "--base-url",
    `${guestBase}/flatcar`,
    "--hostname",
    "node7",
    "--kernel-arg",
    "console=ttyS0",
    "--secret",
    `API_KEY=${SECRET}`,
    "--ssh-key",
    await makeKey(),
  ]);
  if (b.code !== 0) throw new Error(`pxe-stick failed: ${b.stderr}`);
}, 300_000);

async function makeKey(): Promise<string> {
  const key = join(work, "home", ".ssh", "id_ed25519");
  spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
  return `${key}.pub`;
}

afterAll(async () => {
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("pxe-stick sticks boot under QEMU (TCG)", () => {
  it("UEFI (OVMF): iPXE runs /autoexec.ipxe, netboots Flatcar's kernel with the Ignition URL; the secrets volume is read-only", async () => {
    const r = await bootStick(flatcarStick, "flatcar-uefi");
    expect(r.code, r.stderr).toBe(0);
    expect(r.result.verdict).toBe("pass");
    expect(r.console).toContain("file:/autoexec.ipxe... ok");
    expect(r.console).toContain(
      "provision: booting Flatcar stable current x86_64 (attempt 1 of 5)",
    );
    const cmdline = r.console.split("\n").find((l) => l.startsWith("PXE-CMDLINE:")) ?? "";
    expect(cmdline).toContain(
      `initrd=flatcar_production_pxe_image.cpio.gz flatcar.first_boot=1 ignition.config.url=${guestBase}/node.ign systemd.hostname=node7 console=ttyS0`,
    );
    checkSecretsSeen(r.console);
    const paths = server.requests.map((q) => q.path);
    expect(paths).toContain("/flatcar/flatcar_production_pxe.vmlinuz");
    expect(paths).toContain("/flatcar/flatcar_production_pxe_image.cpio.gz");
  }, 300_000);

  it("UEFI: the netbooted kernel reaches the network (virtio-net, DHCP) and fetches its Ignition config from the URL on the stick", async () => {
    const stick = join(work, "ignition.img");
    // A query string, as a config server may want: `?` and `&` must reach the guest's fetch.
    const url = `${guestBase}/node.ign?host=node9&v=2`;
    const b = await cli([
      "pxe-stick",
      stick,
      "--boot",
      "uefi",
      "--ipxe-efi",
      join(FX, "ipxe", "ipxe.efi"),
      "--ignition-url",
      url,
      "--base-url",
      `${guestBase}/flatcar`,
      "--kernel-arg",
      "console=ttyS0",
    ]);
    expect(b.code, b.stderr).toBe(0);
    const before = server.requests.length;
    const r = await bootStick(stick, "ignition-uefi");
    expect(r.code, r.stderr).toBe(0);
    expect(r.result.verdict).toBe("pass");
    const cmdline = r.console.split("\n").find((l) => l.startsWith("PXE-CMDLINE:")) ?? "";
    expect(cmdline).toContain(`ignition.config.url=${url} console=ttyS0`);
    const sha = createHash("sha256").update(NODE_IGN).digest("hex");
    const bytes = Buffer.byteLength(NODE_IGN);
    expect(r.console).toContain(`PXE-IGNITION: sha256=${sha} bytes=${bytes}`);
    expect(r.console).not.toContain("PXE-IGNITION-FAIL");
    expect(r.console).toContain("PXE-MAC: 52:54:00:12:34:56");
    // Fetched before the secrets checks, which still run as before.
    expect(r.console.indexOf("PXE-IGNITION:")).toBeLessThan(r.console.indexOf("PXE-SECRETS-DEV:"));
    expect(r.console).toContain("PXE-SECRETS-WRITE: failed");
    expect(r.console).toContain("PXE-BOOT-OK");
    const gets = server.requests
      .slice(before)
      .filter((q) => q.method === "GET")
      .map((q) => q.path);
    expect(gets).toContain("/flatcar/flatcar_production_pxe.vmlinuz");
    expect(gets).toContain("/node.ign");
  }, 300_000);

  it("legacy BIOS (SeaBIOS): syslinux, ipxe.lkrn and the same script", async () => {
    const before = server.requests.length;
    const r = await bootStick(flatcarStick, "flatcar-bios", ["--bios"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.result.firmware).toMatch(/SeaBIOS/i);
    const cmdline = r.console.split("\n").find((l) => l.startsWith("PXE-CMDLINE:")) ?? "";
    expect(cmdline).toContain(`ignition.config.url=${guestBase}/node.ign systemd.hostname=node7`);
    checkSecretsSeen(r.console);
    expect(server.requests.slice(before).map((q) => q.path)).toContain(
      "/flatcar/flatcar_production_pxe.vmlinuz",
    );
  }, 300_000);

  it("FCOS: the live PXE kernel and initramfs (initrd --name main) with coreos.live.rootfs_url from the stream metadata", async () => {
    const stick = join(work, "fcos.img");
    const b = await cli([
      "pxe-stick",
      stick,
      "--os",
      "fcos",
      "--stream-base-url",
      server.url,
      "--boot",
      "uefi",
      "--ipxe-efi",
      join(FX, "ipxe", "ipxe.efi"),
      "--ignition-url",
      // An iPXE setting, expanded at boot: one config per machine, by MAC address.
      `${guestBase}/fcos-` + "${net0/mac:hexhyp}.ign",
      "--kernel-arg",
      "console=ttyS0",
    ]);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stderr).toMatch(/Fedora CoreOS stable 42\.1 x86_64 \(UEFI\)/);
    const r = await bootStick(stick, "fcos-uefi");
    expect(r.code, r.stderr).toBe(0);
    const cmdline = r.console.split("\n").find((l) => l.startsWith("PXE-CMDLINE:")) ?? "";
    expect(cmdline).toContain(
      `initrd=main coreos.live.rootfs_url=${guestBase}/fcos/fedora-coreos-42.1-live-rootfs.x86_64.img ignition.firstboot ignition.platform.id=metal ignition.config.url=${guestBase}/fcos-52-54-00-12-34-56.ign console=ttyS0`,
    );
  }, 300_000);

  it("a kernel URL that answers 404: retried, then the error stays on the screen (no reboot loop)", async () => {
    const stick = join(work, "broken.img");
    const b = await cli([
      "pxe-stick",
      stick,
      "--boot",
      "uefi",
      "--ipxe-efi",
      join(FX, "ipxe", "ipxe.efi"),
      "--ignition-url",
      `${guestBase}/node.ign`,
      "--base-url",
      `${guestBase}/missing`,
      "--attempts",
      "2",
      "--retry-delay",
      "1",
    ]);
    expect(b.code, b.stderr).toBe(0);
    const before = server.requests.length;
    const r = await bootStick(stick, "broken", [], "press any key to try again");
    expect(r.code, r.stderr).toBe(0);
    expect(r.console).toMatch(/provision: attempt 1 failed \(0x[0-9a-f]+\); retrying in 1 s/);
    expect(r.console).toContain(
      "provision: could not netboot Flatcar stable current x86_64 after 2 attempts.",
    );
    expect(r.console).toContain(`provision: ${guestBase}/missing/flatcar_production_pxe.vmlinuz`);
    const kernelGets = server.requests
      .slice(before)
      .filter((q) => q.path === "/missing/flatcar_production_pxe.vmlinuz");
    expect(kernelGets).toHaveLength(2);
    // It stopped at the prompt: no second round of attempts, no reboot (which -no-reboot
    // would have turned into QEMU exiting before the expected line: a failure).
    expect(r.result.verdict).toBe("pass");
    expect(r.console.split("(attempt 1 of 2)").length - 1).toBe(1);
  }, 300_000);

  it("aarch64 (AAVMF, qemu-system-aarch64): iPXE's arm64 build runs the script from BOOTAA64.EFI", async () => {
    const stick = join(work, "arm64.img");
    const b = await cli([
      "pxe-stick",
      stick,
      "--arch",
      "aarch64",
      "--ipxe-efi",
      join(FX, "ipxe", "ipxe-arm64.efi"),
      "--ignition-url",
      `${guestBase}/node.ign`,
      "--base-url",
      `${guestBase}/flatcar-arm64`,
    ]);
    expect(b.code, b.stderr).toBe(0);
    // BIOS is x86 only: an aarch64 stick is UEFI, without a warning about it.
    expect(b.stderr).toMatch(/Flatcar stable current aarch64 \(UEFI\)/);
    expect(b.stderr).not.toMatch(/UEFI only/);
    // The test kernel is amd64, so the check ends where iPXE asks for the arm64 kernel.
    const r = await bootStick(stick, "arm64", [], "flatcar-arm64/flatcar_production_pxe\\.vmlinuz");
    expect(r.code, r.stderr).toBe(0);
    expect(r.result.arch).toBe("aarch64");
    expect(r.result.archFrom).toMatch(/BOOTAA64\.EFI/);
    expect(r.console).toContain("file:/autoexec.ipxe... ok");
    expect(r.console).toContain(
      "provision: booting Flatcar stable current aarch64 (attempt 1 of 5)",
    );
  }, 300_000);
});
