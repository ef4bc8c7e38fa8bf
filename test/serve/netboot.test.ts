// A real netboot: x86_64 QEMU guests with different MACs boot iPXE from one `pxe-stick
// --fleet` stick (under OVMF) against `provision serve` on 127.0.0.1 (10.0.2.2 from the
// guest). Each gets its own kernel command line and config: the test initramfs fetches
// ignition.config.url with wget and prints the sha256 of what it got. A third MAC shows up
// as unknown; after an edit to the shared fragment both hosts are stale and the next boot
// gets the new config. Kernel and initramfs come from an upstream on 127.0.0.1 through serve's
// verified cache.
import { type ChildProcess, spawnSync } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixture, repoRoot } from "../helpers/fixtures.js";
import { startServer, type TestServer } from "../helpers/http.js";
import { detachSign, startServe } from "../helpers/serve.js";

const FX = join(repoRoot, ".cache", "pxe-fixture");
const TOKEN = "netboot-token-77a1";
const VERSION = "4081.2.0";
const MAC = {
  alpha: "52:54:00:00:10:01",
  bravo: "52:54:00:00:10:02",
  stranger: "52:54:00:00:10:99",
};
let work: string;
let fleetDir: string;
let upstream: TestServer;
let serve: ChildProcess;
let url: string;
let stick: string;

const env = () => ({
  ...process.env,
  CI: "1",
  XDG_CACHE_HOME: join(work, "cache"),
  XDG_STATE_HOME: join(work, "state"),
});
const cli = async (args: string[]) => {
  const r = await execa("node", [join(repoRoot, "bin", "provision.js"), ...args], {
    reject: false,
    stdin: "ignore",
    cwd: fleetDir,
    env: env(),
    timeout: 600_000,
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
};
const status = async () =>
  (await (await fetch(`${url}/status?token=${TOKEN}`)).json()) as {
    hosts: Record<
      string,
      {
        servedFingerprint: string | null;
        currentFingerprint: string;
        stale: boolean;
        client: string | null;
      }
    >;
    unknown: { mac: string }[];
  };
const fingerprints = async () => {
  const r = await cli(["fleet", "list", "--json"]);
  return Object.fromEntries(
    (JSON.parse(r.stdout).hosts as { name: string; fingerprint: string }[]).map((h) => [
      h.name,
      h.fingerprint,
    ]),
  );
};

const sign = (file: string) => detachSign(fixture("gnupg"), file, work);

/** Boot the stick as the machine with this MAC; the console must show all of `expect`. */
async function boot(mac: string, expect: string[], timeout = "240") {
  return await cli([
    "qemu-test",
    stick,
    "--usb",
    "--net",
    "user",
    "--mac",
    mac,
    "--arch",
    "x86_64",
    "--memory",
    "512",
    ...expect.flatMap((e) => ["--expect", e]),
    "--timeout",
    timeout,
  ]);
}

beforeAll(async () => {
  const r = spawnSync("bash", [join(repoRoot, "fixtures", "build-pxe-fixture.sh"), FX], {
    stdio: "inherit",
  });
  if (r.status !== 0) throw new Error("fixtures/build-pxe-fixture.sh failed");
  work = await mkdtemp(join(tmpdir(), "provision-netboot-"));
  fleetDir = join(work, "fleet");
  await mkdir(fleetDir);
  // The upstream release server: the fixture's kernel and initramfs as Flatcar's PXE files.
  const routes: Record<string, Buffer | string> = {
    "/amd64-usr/current/version.txt": `FLATCAR_VERSION=${VERSION}\n`,
  };
  for (const [name, file] of [
    ["flatcar_production_pxe.vmlinuz", join(FX, "pxe", "vmlinuz")],
    ["flatcar_production_pxe_image.cpio.gz", join(FX, "pxe", "initrd.img")],
  ] as const) {
    const copy = join(work, name);
    await cp(file, copy);
    routes[`/amd64-usr/${VERSION}/${name}`] = await readFile(copy);
    routes[`/amd64-usr/${VERSION}/${name}.sig`] = await sign(copy);
  }
  upstream = await startServer({ routes });
  await writeFile(
    join(fleetDir, "common.ign"),
    `${JSON.stringify({ ignition: { version: "3.3.0" }, storage: { files: [{ path: "/etc/motd", mode: 420, contents: { source: "data:,welcome%20to%20{{ host.name }}%0A" } }] } })}\n`,
  );
  await writeFile(
    join(fleetDir, "provision.yaml"),
    [
      "defaults:",
      "  os: flatcar",
      "  arch: x86_64",
      "  boot: pxe",
      '  kargs: ["console=ttyS0"] # the test kernel writes to the serial console',
      "  ignition: [common.ign]",
      "hosts:",
      "  alpha:",
      `    macs: ["${MAC.alpha}"]`,
      "  bravo:",
      `    macs: ["${MAC.bravo}"]`,
      "",
    ].join("\n"),
  );
  ({ proc: serve, url } = await startServe(
    ["--token", TOKEN, "--flatcar-base-url", upstream.url, "--keyring", fixture("keyring.gpg")],
    { cwd: fleetDir, env: env() },
  ));
  const port = new URL(url).port;
  stick = join(work, "stick.img");
  const s = await cli([
    "pxe-stick",
    stick,
    "--fleet",
    `http://10.0.2.2:${port}/boot.ipxe?token=${TOKEN}`,
    "--ipxe-efi",
    join(FX, "ipxe", "ipxe.efi"),
    "--boot",
    "uefi",
    "--arch",
    "x86_64",
    "--attempts",
    "2",
    "--retry-delay",
    "1",
  ]);
  if (s.code !== 0) throw new Error(`pxe-stick failed: ${s.stderr}`);
}, 300_000);

afterAll(async () => {
  serve?.kill("SIGTERM");
  await upstream?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("netboot from provision serve", () => {
  it("two machines, one stick: each gets its own config by MAC; /status shows what each fetched", async () => {
    const fp = await fingerprints();
    expect(fp.alpha).not.toBe(fp.bravo);
    for (const name of ["alpha", "bravo"] as const) {
      const r = await boot(MAC[name], [
        `systemd.hostname=${name}`,
        `PXE-IGNITION: sha256=${fp[name]}`,
        "PXE-BOOT-OK",
      ]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
    }
    const st = await status();
    for (const name of ["alpha", "bravo"] as const)
      expect(st.hosts[name]).toMatchObject({
        servedFingerprint: fp[name],
        stale: false,
        client: "127.0.0.1",
      });
    // The kernel and initramfs were downloaded from upstream once, for both machines.
    expect(
      upstream.requests.filter((q) => q.path.endsWith("flatcar_production_pxe.vmlinuz")).length,
    ).toBe(1);
  }, 900_000);

  it("a machine not in the inventory is told so and shows up as unknown", async () => {
    const r = await boot(MAC.stranger, ["is not in the inventory"], "120");
    expect(r.code, r.stderr).toBe(0);
    expect((await status()).unknown.map((u) => u.mac)).toContain(MAC.stranger);
  }, 300_000);

  it("the seed case: after an edit to the shared fragment both hosts are stale; the next boot gets the new config", async () => {
    const common = join(fleetDir, "common.ign");
    await writeFile(
      common,
      (await readFile(common, "utf8")).replace("welcome%20to", "hello%20from"),
    );
    const st = await status();
    expect(st.hosts.alpha?.stale).toBe(true);
    expect(st.hosts.bravo?.stale).toBe(true);
    const fp = await fingerprints();
    const r = await boot(MAC.alpha, [`PXE-IGNITION: sha256=${fp.alpha}`, "PXE-BOOT-OK"]);
    expect(r.code, r.stderr).toBe(0);
    const after = await status();
    expect(after.hosts.alpha).toMatchObject({ servedFingerprint: fp.alpha, stale: false });
    expect(after.hosts.bravo?.stale).toBe(true);
  }, 600_000);
});
