// provision pxe-stick, read back with the real tools (sgdisk, mtools, fsck.vfat, debugfs,
// dumpe2fs, e2fsck, ignition-validate, systemd-analyze, shellcheck): the layout, the boot
// files, the secrets volume (modes, owners, read-only feature), reproduce.sh, and that no
// secret value ever reaches stdout, stderr or a leftover temp file. The binaries come from
// fixtures/build-pxe-fixture.sh (Debian trixie's iPXE, bookworm's syslinux).
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readGpt } from "../../src/gpt/index.js";
import { runCli } from "../helpers/cli.js";
import { repoRoot } from "../helpers/fixtures.js";
import { attachLoop, detachLoop } from "../helpers/loop.js";

const FX = join(repoRoot, ".cache", "pxe-fixture");
const EFI = join(FX, "ipxe", "ipxe.efi");
const LKRN = join(FX, "ipxe", "ipxe.lkrn");
const MiB = 1024 * 1024;

// Every value below must never appear in any output.
const SECRET_VALUE = "sv-7f3a9c1e-topsecret";
const ENV_TOKEN = 'tok$en"with`quotes\\and$(dollar)';
const ENV_URL = "https://k3s.example:6443/?k=sv-url-5b2d";
const DIR_PASSWORD = "sv-dirfile-91ab";
const NESTED = "sv-nested-4c4c";
const ALL_SECRETS = [SECRET_VALUE, ENV_TOKEN, ENV_URL, DIR_PASSWORD, NESTED, "sv-url-5b2d"];

let work: string;
let home: string;
let secretsDir: string;
let img: string;
let tmp: string;
let base: string[];
let build: { code: number; stdout: string; stderr: string };

const cli = (args: string[], env: Record<string, string> = {}) =>
  runCli(args, {
    cacheHome: join(work, "cache"),
    env: { HOME: home, TMPDIR: tmp, K3S_TOKEN: ENV_TOKEN, K3S_URL: ENV_URL, ...env },
  });

const sgdisk = async (...args: string[]) => (await execa("sgdisk", args)).stdout;
const debugfs = async (file: string, offset: number, cmd: string) =>
  (await execa("debugfs", ["-R", cmd, `${file}?offset=${offset}`])).stdout;

function noSecrets(...texts: string[]) {
  for (const t of texts) for (const s of ALL_SECRETS) expect(t).not.toContain(s);
}

async function partitions(file: string) {
  const gpt = await readGpt(file);
  const esp = gpt.partitions.find((p) => p.name === "EFI-SYSTEM");
  const secrets = gpt.partitions.find((p) => p.name === "secrets");
  if (!esp || !secrets) throw new Error("partitions missing");
  return { gpt, esp, secrets };
}

/** Every file on the secrets volume with its mode, uid, gid (debugfs ls -p, recursively). */
async function volumeTree(file: string, offset: number, dir = "/") {
  const out: { path: string; mode: string; uid: string; gid: string }[] = [];
  const ls = await debugfs(file, offset, `ls -p ${dir}`);
  for (const line of ls.split("\n")) {
    const f = line.trim().split("/");
    if (f.length < 7 || !/^\d+$/.test(f[1] ?? "")) continue;
    const name = f[5] as string;
    if (name === "." || name === "..") continue;
    const p = dir === "/" ? `/${name}` : `${dir}/${name}`;
    out.push({ path: p, mode: f[2] as string, uid: f[3] as string, gid: f[4] as string });
    if ((f[2] as string).startsWith("040") && name !== "lost+found")
      out.push(...(await volumeTree(file, offset, p)));
  }
  return out;
}

/**
 * A stand-in for mke2fs, first on PATH: it waits (the window in which a test signals the
 * CLI), then runs the real one. PXE_SHIM_IGNORE_TERM=1 makes it ignore SIGTERM, as a program
 * slow to stop does (the first Ctrl-C cannot finish the run: only a second one ends it).
 */
let shimDir: string | undefined;
async function mke2fsShim(): Promise<string> {
  if (shimDir) return shimDir;
  const dir = join(work, "shim-bin");
  await mkdir(dir);
  const real = (
    await execa("sh", ["-c", "command -v mke2fs"], {
      env: { PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
    })
  ).stdout.trim();
  await execa("mkfifo", [join(dir, "never")]);
  await writeFile(
    join(dir, "mke2fs"),
    [
      "#!/bin/bash",
      'if [ -n "${PXE_SHIM_IGNORE_TERM:-}" ]; then trap "" TERM; fi',
      `read -r -t "\${PXE_SHIM_DELAY:-2}" _ <> ${join(dir, "never")} || true`,
      `exec ${real} "$@"`,
      "",
    ].join("\n"),
    { mode: 0o755 },
  );
  shimDir = dir;
  return dir;
}

/** Start pxe-stick with the mke2fs stand-in; `waitFor` resolves false if it ends first. */
async function startPxeStick(args: string[], env: Record<string, string>) {
  const dir = await mke2fsShim();
  const child = execa("node", [join(repoRoot, "bin", "provision.js"), "pxe-stick", ...args], {
    reject: false,
    stdin: "ignore",
    timeout: 60_000,
    env: {
      HOME: home,
      TMPDIR: tmp,
      XDG_CACHE_HOME: join(work, "cache"),
      CI: "1",
      PATH: `${dir}:${process.env.PATH}`,
      ...env,
    },
  });
  let seen = "";
  const waiting = new Set<() => void>();
  child.stderr?.on("data", (b: Buffer) => {
    seen += b.toString();
    for (const w of waiting) w();
  });
  const waitFor = (re: RegExp) =>
    new Promise<boolean>((resolve) => {
      const check = () => {
        if (re.test(seen)) {
          waiting.delete(check);
          resolve(true);
        }
      };
      waiting.add(check);
      check();
      child.then(() => resolve(re.test(seen)));
    });
  return { child, waitFor };
}

/** Live processes with `arg` (or `arg?...`, `arg@@...`) among their arguments; waits up to 3 s for them to go. */
async function processesUsing(arg: string): Promise<string[]> {
  const scan = async () => {
    const found: string[] = [];
    for (const pid of await readdir("/proc")) {
      if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
      const argv = (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split("\0");
      if (argv.some((a) => a === arg || a.startsWith(`${arg}?`) || a.startsWith(`${arg}@@`)))
        found.push(`${pid}: ${argv.join(" ")}`);
    }
    return found;
  };
  for (let i = 0; i < 30; i++) {
    const found = await scan();
    if (found.length === 0) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
  return await scan();
}

beforeAll(async () => {
  const r = spawnSync("bash", [join(repoRoot, "fixtures", "build-pxe-fixture.sh"), FX], {
    stdio: "inherit",
  });
  if (r.status !== 0) throw new Error(`fixtures/build-pxe-fixture.sh failed (${r.status})`);
  work = await mkdtemp(join(tmpdir(), "provision-pxe-test-"));
  home = join(work, "home");
  tmp = join(work, "tmp");
  await mkdir(join(home, ".ssh"), { recursive: true });
  await mkdir(tmp);
  await execa("ssh-keygen", [
    "-q",
    "-t",
    "ed25519",
    "-N",
    "",
    "-C",
    "me@home",
    "-f",
    join(home, ".ssh", "id_ed25519"),
  ]);
  secretsDir = join(work, "secrets-in");
  await mkdir(join(secretsDir, "tls"), { recursive: true });
  await writeFile(join(secretsDir, "password"), `${DIR_PASSWORD}\n`);
  await writeFile(join(secretsDir, "tls", "key.pem"), `${NESTED}\n`);
  await chmod(join(secretsDir, "password"), 0o644);
  base = [
    "--ipxe-efi",
    EFI,
    "--ipxe-lkrn",
    LKRN,
    "--ignition-url",
    "http://10.0.2.2:8000/node.ign",
    "--base-url",
    "http://10.0.2.2:8000",
  ];
  img = join(work, "stick.img");
  build = await cli([
    "pxe-stick",
    img,
    ...base,
    "--hostname",
    "node1",
    "--kernel-arg",
    "console=ttyS0",
    "--secret",
    `API_KEY=${SECRET_VALUE}`,
    "--secrets-env",
    "K3S_",
    "--secrets-dir",
    secretsDir,
  ]);
}, 300_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("pxe-stick: the stick, read back", () => {
  it("builds an image file: exit 0, one line per missing well-known group, no secret value anywhere", async () => {
    expect(build.code, build.stderr).toBe(0);
    expect(build.stderr).toMatch(
      /✔ .*stick\.img: boot stick for Flatcar stable current x86_64 \(UEFI \+ BIOS\)/,
    );
    for (const g of ["LOGEXPORT", "HEARTBEAT", "NAMECHEAP_DDNS"])
      expect(build.stderr.split("\n").filter((l) => l.includes(`no ${g}_* secrets`))).toHaveLength(
        1,
      );
    expect(build.stderr).not.toMatch(/no K3S_\* secrets/);
    expect(build.stderr).toContain("K3S_env (K3S_TOKEN, K3S_URL)");
    noSecrets(build.stdout, build.stderr);
    // The 0700 staging directory is gone.
    expect(await readdir(tmp)).toEqual([]);
  });

  it("GPT: EFI-SYSTEM (EF00, legacy-BIOS-bootable) and secrets (8300); backup intact; gptmbr.bin in the MBR", async () => {
    expect(await sgdisk("-v", img)).toContain("No problems found");
    const { gpt, esp, secrets } = await partitions(img);
    expect(gpt.backupValid).toBe(true);
    expect(esp.typeGuid).toBe("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    expect(esp.offsetBytes).toBe(MiB);
    expect(esp.sizeBytes).toBe(64 * MiB);
    expect(secrets.typeGuid).toBe("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    expect(secrets.sizeBytes).toBe(32 * MiB);
    expect(await sgdisk("-A", "1:show", img)).toMatch(/legacy BIOS bootable/);
    const mbr = (await readFile(img)).subarray(0, 512);
    const gptmbr = await readFile("/usr/lib/syslinux/mbr/gptmbr.bin").catch(() =>
      readFile(join(FX, "syslinux", "gptmbr.bin")),
    );
    expect(mbr.subarray(0, 440).equals(gptmbr.subarray(0, 440))).toBe(true);
    expect(mbr[450]).toBe(0xee); // still a protective MBR
  });

  it("ESP: FAT32 with iPXE as BOOTX64.EFI, the script, syslinux for BIOS; fsck.vfat clean", async () => {
    const { esp } = await partitions(img);
    const at = `${img}@@${esp.offsetBytes}`;
    const env = { ...process.env, MTOOLS_SKIP_CHECK: "1" };
    const ls = (await execa("mdir", ["-/", "-a", "-b", "-i", at, "::/"], { env })).stdout;
    for (const f of [
      "::/EFI/BOOT/BOOTX64.EFI",
      "::/autoexec.ipxe",
      "::/syslinux/ipxe.lkrn",
      "::/syslinux/syslinux.cfg",
      "::/syslinux/ldlinux.sys",
      "::/syslinux/ldlinux.c32",
    ])
      expect(ls.toUpperCase()).toContain(f.toUpperCase());
    expect((await execa("minfo", ["-i", at], { env })).stdout).toMatch(/FAT32|fat32|big size/i);
    const copy = join(work, "efi.bin");
    await execa("mcopy", ["-n", "-i", at, "::/EFI/BOOT/BOOTX64.EFI", copy], { env });
    const sha = async (f: string) =>
      createHash("sha256")
        .update(await readFile(f))
        .digest("hex");
    expect(await sha(copy)).toBe(await sha(EFI));
    const script = (await execa("mtype", ["-i", at, "::/autoexec.ipxe"], { env })).stdout;
    const printed = await cli([
      "pxe-stick",
      ...base,
      "--hostname",
      "node1",
      "--kernel-arg",
      "console=ttyS0",
      "--print-script",
    ]);
    expect(printed.code).toBe(0);
    expect(script.trim()).toBe(printed.stdout.trim());
    expect(script).toMatch(/^#!ipxe/);
    expect(script).toContain(
      "kernel http://10.0.2.2:8000/flatcar_production_pxe.vmlinuz initrd=flatcar_production_pxe_image.cpio.gz flatcar.first_boot=1 ignition.config.url=http://10.0.2.2:8000/node.ign systemd.hostname=node1 console=ttyS0",
    );
    const cfg = (await execa("mtype", ["-i", at, "::/syslinux/syslinux.cfg"], { env })).stdout;
    expect(cfg).toContain("KERNEL /syslinux/ipxe.lkrn");
    expect(cfg).toContain("INITRD /autoexec.ipxe");
    // fsck.vfat on the ESP's bytes alone.
    const espFile = join(work, "esp.img");
    await execa("dd", [
      `if=${img}`,
      `of=${espFile}`,
      "bs=1M",
      `skip=${esp.offsetBytes / MiB}`,
      `count=${esp.sizeBytes / MiB}`,
      "status=none",
    ]);
    const fsck = await execa("fsck.vfat", ["-n", espFile], { reject: false });
    expect(fsck.exitCode, fsck.stdout).toBe(0);
  });

  it("secrets: ext4 labelled secrets, read-only feature, every file 0600 and directory 0700, root; e2fsck clean", async () => {
    const { secrets } = await partitions(img);
    const h = (await execa("dumpe2fs", ["-h", `${img}?offset=${secrets.offsetBytes}`])).stdout;
    expect(h).toMatch(/Filesystem volume name:\s+secrets/);
    expect(h).toMatch(/Filesystem features:.*\bread-only\b/);
    const tree = await volumeTree(img, secrets.offsetBytes);
    const paths = tree
      .map((t) => t.path)
      .filter((p) => !p.startsWith("/lost+found"))
      .sort();
    expect(paths).toEqual([
      "/API_KEY",
      "/K3S_env",
      "/authorized_keys",
      "/password",
      "/reproduce.sh",
      "/tls",
      "/tls/key.pem",
    ]);
    for (const t of tree) {
      expect(t.uid, t.path).toBe("0");
      expect(t.gid, t.path).toBe("0");
      expect(t.mode, t.path).toBe(
        t.path === "/tls" || t.path === "/lost+found" ? "040700" : "100600",
      );
    }
    expect(await debugfs(img, secrets.offsetBytes, "stat /")).toMatch(/Mode:\s+0700/);
    // The values arrive intact (read with debugfs, never printed by the tool).
    expect(await debugfs(img, secrets.offsetBytes, "cat /API_KEY")).toBe(SECRET_VALUE);
    expect(await debugfs(img, secrets.offsetBytes, "cat /password")).toBe(DIR_PASSWORD);
    expect((await debugfs(img, secrets.offsetBytes, "cat /authorized_keys")).trim()).toBe(
      (await readFile(join(home, ".ssh", "id_ed25519.pub"), "utf8")).trim(),
    );
    // K3S_env: sh (and systemd's EnvironmentFile=) read the values back exactly.
    const envFile = join(work, "K3S_env");
    await writeFile(envFile, await debugfs(img, secrets.offsetBytes, "cat /K3S_env"));
    const sh = await execa("sh", [
      "-c",
      `. "${envFile}"; printf '%s\\n%s' "$K3S_TOKEN" "$K3S_URL"`,
    ]);
    expect(sh.stdout).toBe(`${ENV_TOKEN}\n${ENV_URL}`);
    const part = join(work, "secrets.ext4");
    await execa("dd", [
      `if=${img}`,
      `of=${part}`,
      "bs=1M",
      `skip=${secrets.offsetBytes / MiB}`,
      `count=${secrets.sizeBytes / MiB}`,
      "status=none",
    ]);
    const fsck = await execa("e2fsck", ["-fn", part], { reject: false });
    expect(fsck.exitCode, fsck.stdout + fsck.stderr).toBe(0);
  });

  it("reproduce.sh names the secrets, holds no value, passes sh -n and shellcheck, and rebuilds the stick from the volume", async () => {
    const { secrets } = await partitions(img);
    const text = await debugfs(img, secrets.offsetBytes, "cat /reproduce.sh");
    noSecrets(text);
    expect(text).toContain("K3S_env: K3S_TOKEN, K3S_URL");
    expect(text).toContain("API_KEY");
    expect(text).toContain("--ignition-url http://10.0.2.2:8000/node.ign");
    const file = join(work, "reproduce.sh");
    await writeFile(file, text);
    await execa("sh", ["-n", file]);
    const sc = await execa("shellcheck", ["-s", "sh", file], { reject: false });
    expect(sc.exitCode, sc.stdout).toBe(0);
    // Run it: the volume's files (copied out, as if mounted) are the secrets of the new stick.
    const mounted = join(work, "mounted");
    await mkdir(mounted);
    await execa("debugfs", ["-R", `rdump / ${mounted}`, `${img}?offset=${secrets.offsetBytes}`]);
    const bin = join(work, "bin");
    await mkdir(bin);
    await writeFile(
      join(bin, "provision"),
      `#!/bin/sh\nexec node ${join(repoRoot, "bin", "provision.js")} "$@"\n`,
      { mode: 0o755 },
    );
    const copy = join(work, "stick2.img");
    const r = await execa("sh", [join(mounted, "reproduce.sh"), copy], {
      reject: false,
      env: {
        PATH: `${bin}:${process.env.PATH}`,
        HOME: home,
        TMPDIR: tmp,
        XDG_CACHE_HOME: join(work, "cache"),
        CI: "1",
      },
    });
    expect(r.exitCode, r.stderr).toBe(0);
    noSecrets(r.stdout, r.stderr);
    const p2 = await partitions(copy);
    for (const f of ["/API_KEY", "/K3S_env", "/authorized_keys", "/password", "/tls/key.pem"])
      expect(await debugfs(copy, p2.secrets.offsetBytes, `cat ${f}`), f).toBe(
        await debugfs(img, secrets.offsetBytes, `cat ${f}`),
      );
  });

  it("--print-ignition: passes ignition-validate, and its units pass systemd-analyze verify", async () => {
    const r = await cli(["pxe-stick", "--print-ignition"]);
    expect(r.code).toBe(0);
    const file = join(work, "fragment.ign");
    await writeFile(file, r.stdout);
    const v = await execa("ignition-validate", [file], { reject: false });
    expect(v.exitCode, v.stdout + v.stderr).toBe(0);
    const cfg = JSON.parse(r.stdout) as {
      systemd: { units: { name: string; contents: string }[] };
    };
    const mount = cfg.systemd.units.find((u) => u.name === "secrets.mount");
    expect(mount?.contents).toMatch(/What=\/dev\/disk\/by-label\/secrets/);
    expect(mount?.contents).toMatch(/Options=ro,nosuid,nodev,noexec/);
    // --root resolves every unit and program under the root: give it this host's units and
    // the two programs the units run.
    const root = join(work, "root");
    await mkdir(join(root, "etc", "systemd", "system"), { recursive: true });
    await mkdir(join(root, "usr", "lib", "systemd"), { recursive: true });
    await cp("/usr/lib/systemd/system", join(root, "usr", "lib", "systemd", "system"), {
      recursive: true,
      verbatimSymlinks: true,
    });
    await mkdir(join(root, "usr", "bin"), { recursive: true });
    await mkdir(join(root, "bin"), { recursive: true });
    await cp("/usr/bin/install", join(root, "usr", "bin", "install"));
    await cp("/bin/sh", join(root, "bin", "sh"), { dereference: true });
    for (const u of cfg.systemd.units)
      await writeFile(join(root, "etc", "systemd", "system", u.name), u.contents);
    const sa = await execa(
      "systemd-analyze",
      [
        "verify",
        `--root=${root}`,
        ...cfg.systemd.units.map((u) => `/etc/systemd/system/${u.name}`),
      ],
      { reject: false },
    );
    expect(sa.exitCode, sa.stderr).toBe(0);
    const problems = sa.stderr.split("\n").filter((l) => l.trim());
    expect(problems, sa.stderr).toEqual([]);
  });

  it("--update-secrets rewrites only the secrets volume; the ESP and the build command stay", async () => {
    const copy = join(work, "update.img");
    await execa("cp", ["--sparse=always", img, copy]);
    const { esp, secrets } = await partitions(copy);
    const espHash = async () => {
      const b = await readFile(copy);
      return createHash("sha256")
        .update(b.subarray(0, esp.offsetBytes + esp.sizeBytes))
        .digest("hex");
    };
    const before = await espHash();
    const r = await cli([
      "pxe-stick",
      copy,
      "--update-secrets",
      "--secret",
      "NEW=sv-new-value-77",
      "--ssh-key",
      join(home, ".ssh", "id_ed25519.pub"),
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain("sv-new-value-77");
    expect(r.stderr).toMatch(/secrets volume rewritten and read back \(read-only\)/);
    expect(await espHash()).toBe(before);
    const tree = (await volumeTree(copy, secrets.offsetBytes))
      .map((t) => t.path)
      .filter((p) => !p.startsWith("/lost+found"))
      .sort();
    expect(tree).toEqual(["/NEW", "/authorized_keys", "/reproduce.sh"]);
    const rep = await debugfs(copy, secrets.offsetBytes, "cat /reproduce.sh");
    expect(rep).toContain("--update-secrets");
    expect(rep).toContain("--ignition-url http://10.0.2.2:8000/node.ign");
    expect(await readdir(tmp)).toEqual([]);
  });

  it("--secrets-writable leaves the read-only feature off; --dry-run writes nothing and shows names only", async () => {
    const w = join(work, "writable.img");
    const r = await cli([
      "pxe-stick",
      w,
      ...base,
      "--secrets-writable",
      "--secret",
      `API_KEY=${SECRET_VALUE}`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const { secrets } = await partitions(w);
    const h = (await execa("dumpe2fs", ["-h", `${w}?offset=${secrets.offsetBytes}`])).stdout;
    expect(h).not.toMatch(/Filesystem features:.*\bread-only\b/);

    const d = join(work, "dry.img");
    const dry = await cli([
      "pxe-stick",
      d,
      ...base,
      "--dry-run",
      "--json",
      "--secret",
      `API_KEY=${SECRET_VALUE}`,
      "--secrets-env",
      "K3S",
      "--secrets-dir",
      secretsDir,
    ]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(existsSync(d)).toBe(false);
    noSecrets(dry.stdout, dry.stderr);
    // --json: stdout is the report and nothing else.
    expect(JSON.parse(dry.stdout).secrets.envFiles).toEqual([
      { file: "K3S_env", variables: ["K3S_TOKEN", "K3S_URL"] },
    ]);

    // Without --json the plan is the output (stdout, as flash --dry-run); warnings stay on stderr.
    const plan = await cli([
      "pxe-stick",
      d,
      ...base,
      "--dry-run",
      "--secret",
      `API_KEY=${SECRET_VALUE}`,
    ]);
    expect(plan.code, plan.stderr).toBe(0);
    expect(existsSync(d)).toBe(false);
    expect(plan.stdout).toMatch(/^plan for .*dry\.img \(image file\): nothing written$/m);
    expect(plan.stdout).toMatch(/secrets volume \(read-only\): .*API_KEY/);
    expect(plan.stdout).toContain("autoexec.ipxe:");
    expect(plan.stderr).not.toMatch(/plan for|autoexec/);
    expect(plan.stderr).toMatch(/no LOGEXPORT_\* secrets/);
    expect(plan.stdout).not.toMatch(/no LOGEXPORT_\* secrets/);
    noSecrets(plan.stdout, plan.stderr);
  });

  it("--update-secrets --dry-run shows the plan for the volume on stdout and writes nothing", async () => {
    const sha = async () =>
      createHash("sha256")
        .update(await readFile(img))
        .digest("hex");
    const before = await sha();
    const r = await cli([
      "pxe-stick",
      img,
      "--update-secrets",
      "--dry-run",
      "--secret",
      "NEW=sv-dry-update-3",
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^plan for .*stick\.img \(image file\): nothing written$/m);
    expect(r.stdout).toMatch(/secrets volume \(read-only\): .*NEW/);
    expect(r.stdout + r.stderr).not.toContain("sv-dry-update-3");
    expect(await sha()).toBe(before);
    expect(await readdir(tmp)).toEqual([]);
  });
});

describe("pxe-stick --boot", () => {
  it("bios: syslinux and no EFI loader; uefi: the EFI loader, no syslinux and no MBR boot code", async () => {
    const env = { ...process.env, MTOOLS_SKIP_CHECK: "1" };
    const listing = async (file: string) => {
      const { esp } = await partitions(file);
      return (
        await execa("mdir", ["-/", "-a", "-b", "-i", `${file}@@${esp.offsetBytes}`, "::/"], { env })
      ).stdout.toUpperCase();
    };
    const b = join(work, "bios-only.img");
    const rb = await cli(["pxe-stick", b, ...base, "--boot", "bios"]);
    expect(rb.code, rb.stderr).toBe(0);
    expect(rb.stderr).toMatch(/\(BIOS\), written/);
    const lb = await listing(b);
    expect(lb).toContain("::/SYSLINUX/IPXE.LKRN");
    expect(lb).toContain("::/AUTOEXEC.IPXE");
    expect(lb).not.toContain("::/EFI");

    const u = join(work, "uefi-only.img");
    const ru = await cli(["pxe-stick", u, ...base, "--boot", "uefi"]);
    expect(ru.code, ru.stderr).toBe(0);
    expect(ru.stderr).toMatch(/\(UEFI\), written/);
    const lu = await listing(u);
    expect(lu).toContain("::/EFI/BOOT/BOOTX64.EFI");
    expect(lu).not.toContain("SYSLINUX");
    expect((await readFile(u)).subarray(0, 440).every((x) => x === 0)).toBe(true);
  });
});

describe("pxe-stick: bad input gives one clear line and writes nothing", () => {
  /** 4 MiB of secrets (not zeros: mke2fs -d would store those as a hole). */
  const bigSecrets = async () => {
    const big = join(work, "big-secrets");
    if (!existsSync(big)) {
      await mkdir(big);
      await writeFile(join(big, "blob"), randomBytes(4 * MiB));
    }
    return big;
  };

  it("no --ignition-url; a bookworm iPXE without autoexec; a --secret without =; a private key as --ssh-key", async () => {
    const t = join(work, "bad.img");
    const noTarget = await cli(["pxe-stick", ...base]);
    expect(noTarget.code).toBe(2);
    expect(noTarget.stderr).toMatch(/needs a target: a disk \(\/dev\/sdX\) or an image file/);
    const noUrl = await cli(["pxe-stick", t, "--ipxe-efi", EFI]);
    expect(noUrl.code).toBe(2);
    expect(noUrl.stderr).toMatch(/--ignition-url is required/);

    const old = "/usr/lib/ipxe/ipxe.efi"; // Debian bookworm's package (2019), installed by setup
    const oldEfi = await cli(["pxe-stick", t, ...base.filter((_, i) => i > 1), "--ipxe-efi", old]);
    expect(oldEfi.code).toBe(2);
    expect(oldEfi.stderr).toMatch(/does not run \/autoexec\.ipxe/);
    expect(oldEfi.stderr).toMatch(/hint: pass --ipxe-efi https:\/\/boot\.ipxe\.org/);

    const noEq = await cli(["pxe-stick", t, ...base, "--secret", SECRET_VALUE]);
    expect(noEq.code).toBe(2);
    expect(noEq.stderr).toMatch(/--secret: expected NAME=VALUE/);

    const priv = await cli([
      "pxe-stick",
      t,
      ...base,
      "--ssh-key",
      join(home, ".ssh", "id_ed25519"),
    ]);
    expect(priv.code).toBe(2);
    expect(priv.stderr).toMatch(/not an OpenSSH public key/);
    const privateKey = await readFile(join(home, ".ssh", "id_ed25519"), "utf8");
    expect(priv.stderr).not.toContain(privateKey.split("\n")[1]);

    noSecrets(noUrl.stderr, noEq.stderr, noEq.stdout, priv.stderr);
    expect(existsSync(t)).toBe(false);
    expect(await readdir(tmp)).toEqual([]);
  });

  it("secrets that do not fit: one line with the sizes and --secrets-size, exit 2; the partial image file is removed and the message says so", async () => {
    const big = await bigSecrets();
    const t = join(work, "toosmall.img");
    const r = await cli(["pxe-stick", t, ...base, "--secrets-size", "2", "--secrets-dir", big]);
    expect(r.code, r.stderr).toBe(2);
    const lines = r.stderr.trim().split("\n");
    expect(lines.filter((l) => l.startsWith("provision:"))).toHaveLength(1);
    expect(lines.at(-1)).toMatch(
      /^provision: the secrets \(\d+ KiB in \d+ files?\) do not fit the 2 MiB secrets volume; use --secrets-size \d+ or more \(removed the partial .*toosmall\.img\)$/,
    );
    expect(r.stderr).not.toMatch(/mke2fs|allocate block|populat/);
    expect(existsSync(t)).toBe(false);
    // The size it suggests is enough.
    const size = /--secrets-size (\d+)/.exec(lines.at(-1) ?? "")?.[1] as string;
    const ok = await cli(["pxe-stick", t, ...base, "--secrets-size", size, "--secrets-dir", big]);
    expect(ok.code, ok.stderr).toBe(0);
    await rm(t);
  });

  it("--ipxe-efi that is not an EFI executable, or one for the other architecture, says so", async () => {
    const t = join(work, "notefi.img");
    const rest = base.filter((_, i) => i > 1);
    const junk = join(work, "junk.efi");
    await writeFile(join(work, "junk.efi"), "autoexec.ipxe, but not a PE file\n".repeat(100));
    const r = await cli(["pxe-stick", t, ...rest, "--ipxe-efi", junk]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`provision: ${junk} is not an EFI executable`);
    expect(r.stderr).not.toMatch(/autoexec/);
    expect(r.stderr).toMatch(/hint: pass --ipxe-efi https:\/\/boot\.ipxe\.org/);
    // "MZ" and a PE header, but a Windows program (subsystem 3, console).
    const pe = Buffer.alloc(512);
    pe.write("MZ", 0, "latin1");
    pe.writeUInt32LE(0x80, 0x3c);
    pe.write("PE\0\0", 0x80, "latin1");
    pe.writeUInt16LE(0x8664, 0x84);
    pe.writeUInt16LE(0x20b, 0x98);
    pe.writeUInt16LE(3, 0x98 + 68);
    const exe = join(work, "windows.exe");
    await writeFile(exe, pe);
    const w = await cli(["pxe-stick", t, ...rest, "--ipxe-efi", exe]);
    expect(w.code).toBe(2);
    expect(w.stderr).toContain(`${exe} is not an EFI executable`);
    const arm = await cli([
      "pxe-stick",
      t,
      ...rest,
      "--ipxe-efi",
      join(FX, "ipxe", "ipxe-arm64.efi"),
    ]);
    expect(arm.code).toBe(2);
    expect(arm.stderr).toMatch(/ipxe-arm64\.efi is an EFI executable for aarch64, not x86_64/);
    expect(existsSync(t)).toBe(false);
    expect(await readdir(tmp)).toEqual([]);
  });

  it("flags that cannot go together: an error naming both, exit 2, nothing written", async () => {
    const t = join(work, "conflict.img");
    const cases: [string[], string, string][] = [
      [[...base, "--print-script", "--json"], "--print-script", "--json"],
      [[...base, "--print-script", "--print-ignition"], "--print-ignition", "--print-script"],
      [["--print-ignition", "--json"], "--print-ignition", "--json"],
      [[...base, "--print-script", "--dry-run"], "--print-script", "--dry-run"],
      [[...base, "--print-script", "--update-secrets"], "--print-script", "--update-secrets"],
      [["--update-secrets", "--hostname", "node2"], "--update-secrets", "--hostname"],
      [["--update-secrets", "--secrets-size", "64"], "--update-secrets", "--secrets-size"],
      [
        ["--update-secrets", "--ignition-url", "http://x/y.ign"],
        "--update-secrets",
        "--ignition-url",
      ],
    ];
    for (const [flags, a, b] of cases) {
      const r = await cli(["pxe-stick", t, ...flags]);
      expect(r.code, `${flags.join(" ")}: ${r.stderr}`).toBe(2);
      const line = r.stderr.trim().split("\n")[0] ?? "";
      expect(line, flags.join(" ")).toMatch(/^error: .* cannot go together: /);
      expect(line, flags.join(" ")).toContain(a);
      expect(line, flags.join(" ")).toContain(b);
      if (flags.includes("--json"))
        expect(JSON.parse(r.stdout).error.exitCode, flags.join(" ")).toBe(2);
      else expect(r.stdout, flags.join(" ")).toBe("");
    }
    expect(existsSync(t)).toBe(false);
    expect(await readdir(tmp)).toEqual([]);
    // Still fine on their own, and --dry-run with --update-secrets (tested above).
    const ok = await cli(["pxe-stick", ...base, "--print-script"]);
    expect(ok.code, ok.stderr).toBe(0);
  });

  it("--json on failure: stdout is one JSON document with error.message, hint and exitCode; stderr keeps its one line", async () => {
    const t = join(work, "json-fail.img");
    const r = await cli(["pxe-stick", t, "--ipxe-efi", EFI, "--json"]);
    expect(r.code).toBe(2);
    const doc = JSON.parse(r.stdout) as {
      error: { message: string; hint?: string; exitCode: number };
    };
    expect(Object.keys(doc)).toEqual(["error"]);
    expect(doc.error.message).toMatch(/^--ignition-url is required/);
    expect(doc.error.hint).toMatch(/host the config/);
    expect(doc.error.exitCode).toBe(2);
    expect(r.stderr).toMatch(/^provision: --ignition-url is required/);
    expect(r.stderr.split("\n").filter((l) => l.startsWith("provision:"))).toHaveLength(1);
    // No target: also a JSON error.
    const noTarget = await cli(["pxe-stick", ...base, "--json"]);
    expect(noTarget.code).toBe(2);
    expect(JSON.parse(noTarget.stdout).error.message).toMatch(/needs a target/);
    // A bad flag value, rejected by the parser itself.
    const bad = await cli(["pxe-stick", t, ...base, "--json", "--boot", "floppy"]);
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.stdout).error.message).toMatch(/--boot.*floppy/);
    expect(bad.stderr).toMatch(/floppy/);
    // A failure after writing started (secrets too big): the message says what was cleaned.
    const big = await bigSecrets();
    const tooBig = await cli([
      "pxe-stick",
      t,
      ...base,
      "--json",
      "--secrets-size",
      "2",
      "--secrets-dir",
      big,
    ]);
    expect(tooBig.code).toBe(2);
    expect(JSON.parse(tooBig.stdout).error.message).toMatch(/removed the partial .*json-fail\.img/);
    expect(existsSync(t)).toBe(false);
  });
});

describe("pxe-stick interrupted", () => {
  it("Ctrl-C while it works: exit 130, no partial image, no staged secrets left", async () => {
    const big = join(work, "big-for-sigint");
    await mkdir(big, { recursive: true });
    // Enough to keep staging and mke2fs busy for a few seconds.
    for (let i = 0; i < 6; i++)
      await writeFile(join(big, `blob${i}`), Buffer.alloc(40 * MiB, i + 1));
    const t = join(work, "interrupted.img");
    const child = execa(
      "node",
      [
        join(repoRoot, "bin", "provision.js"),
        "pxe-stick",
        t,
        ...base,
        "--secrets-size",
        "300",
        "--secrets-dir",
        big,
      ],
      {
        reject: false,
        stdin: "ignore",
        env: { HOME: home, TMPDIR: tmp, XDG_CACHE_HOME: join(work, "cache"), CI: "1" },
      },
    );
    // Interrupt once writing has started (the 240 MB secrets volume is still to come).
    await new Promise<void>((resolve) => {
      let seen = "";
      child.stderr?.on("data", (b: Buffer) => {
        seen += b.toString();
        if (seen.includes("writing the boot partition")) resolve();
      });
      child.then(() => resolve());
    });
    child.kill("SIGINT");
    const r = await child;
    expect(r.exitCode, String(r.stderr)).toBe(130);
    expect(String(r.stderr)).toMatch(/interrupted: removed the partial .*interrupted\.img/);
    expect(existsSync(t)).toBe(false);
    expect(await readdir(tmp)).toEqual([]);
    await rm(big, { recursive: true });
  }, 120_000);

  it("a second Ctrl-C exits at once: 130, the last line says what was cleaned; no staged secrets, no partial image, no child left", async () => {
    const ownTmp = await mkdtemp(join(work, "tmpdir-"));
    const t = join(work, "forced.img");
    const p = await startPxeStick([t, ...base, "--secret", `API_KEY=${SECRET_VALUE}`], {
      TMPDIR: ownTmp,
      PXE_SHIM_IGNORE_TERM: "1",
      PXE_SHIM_DELAY: "20",
    });
    expect(await p.waitFor(/writing the secrets volume/)).toBe(true);
    // The secret value is staged now, and the image half-written.
    expect((await readdir(ownTmp)).length).toBe(1);
    expect(existsSync(t)).toBe(true);
    p.child.kill("SIGINT");
    // The first one is handled (not merged with the second), and cannot finish: mke2fs ignores TERM.
    expect(await p.waitFor(/Ctrl-C: stopping/)).toBe(true);
    p.child.kill("SIGINT");
    const r = await p.child;
    const stderr = String(r.stderr);
    expect(r.exitCode, stderr).toBe(130);
    const last = stderr.trim().split("\n").at(-1) ?? "";
    expect(last).toMatch(/^provision: Ctrl-C again: exiting now; /);
    expect(last).toContain("removed the staged secrets");
    expect(last).toContain(`removed the partial ${t}`);
    expect(await readdir(ownTmp)).toEqual([]);
    expect(existsSync(t)).toBe(false);
    expect(await processesUsing(t)).toEqual([]);
    noSecrets(String(r.stdout), stderr);
  }, 60_000);

  it.each([
    ["SIGTERM", 143],
    ["SIGHUP", 129],
  ] as const)(
    "%s once stops cleanly like Ctrl-C: exit %i (--json: the same code), no partial image, no staged secrets",
    async (sig, code) => {
      const t = join(work, `stopped-${sig}.img`);
      const p = await startPxeStick(
        [t, ...base, "--json", "--secret", `API_KEY=${SECRET_VALUE}`],
        {},
      );
      expect(await p.waitFor(/writing the secrets volume/)).toBe(true);
      p.child.kill(sig);
      const r = await p.child;
      const stderr = String(r.stderr);
      expect(r.exitCode, stderr).toBe(code);
      expect(stderr).toContain(`provision: ${sig}: stopping`);
      expect(stderr.trim().split("\n").at(-1)).toMatch(
        new RegExp(`^provision: interrupted: removed the partial .*stopped-${sig}\\.img$`),
      );
      const doc = JSON.parse(String(r.stdout)) as { error: { message: string; exitCode: number } };
      expect(doc.error.exitCode).toBe(code);
      expect(doc.error.message).toMatch(/^interrupted: removed the partial /);
      expect(existsSync(t)).toBe(false);
      expect(await readdir(tmp)).toEqual([]);
      expect(await processesUsing(t)).toEqual([]);
    },
    60_000,
  );
});

describe("pxe-stick on a loop device", () => {
  it("refuses without --yes and no terminal (nothing written), then writes it with --yes", async () => {
    const file = join(work, "loop-backing.img");
    await writeFile(file, Buffer.alloc(0));
    await execa("truncate", ["-s", "128M", file]);
    const dev = await attachLoop(file);
    try {
      const refused = await cli(["pxe-stick", dev, ...base]);
      expect(refused.code).toBe(3);
      expect(refused.stderr).toMatch(/--yes/);
      const head = (await readFile(file)).subarray(0, MiB);
      expect(head.every((b) => b === 0)).toBe(true);
      const ok = await cli([
        "pxe-stick",
        dev,
        ...base,
        "--yes",
        "--secret",
        `API_KEY=${SECRET_VALUE}`,
      ]);
      expect(ok.code, ok.stderr).toBe(0);
      noSecrets(ok.stdout, ok.stderr);
      expect(await sgdisk("-v", dev)).toContain("No problems found");
      const { gpt, secrets } = await partitions(dev);
      // The backup GPT sits at the end of the 128 MiB device.
      expect(gpt.backupValid).toBe(true);
      expect(gpt.backupLba).toBe(128 * 2048 - 1);
      expect(await debugfs(dev, secrets.offsetBytes, "cat /API_KEY")).toBe(SECRET_VALUE);
    } finally {
      await detachLoop(dev);
    }
  });

  it("a second Ctrl-C while writing a disk zeroes its first MiB and says so", async () => {
    const file = join(work, "loop-forced.img");
    await writeFile(file, Buffer.alloc(0));
    await execa("truncate", ["-s", "128M", file]);
    const dev = await attachLoop(file);
    try {
      const p = await startPxeStick([dev, ...base, "--yes"], {
        PXE_SHIM_IGNORE_TERM: "1",
        PXE_SHIM_DELAY: "20",
      });
      expect(await p.waitFor(/writing the secrets volume/)).toBe(true);
      p.child.kill("SIGINT");
      expect(await p.waitFor(/Ctrl-C: stopping/)).toBe(true);
      p.child.kill("SIGINT");
      const r = await p.child;
      const stderr = String(r.stderr);
      expect(r.exitCode, stderr).toBe(130);
      expect(stderr.trim().split("\n").at(-1)).toContain(`zeroed the first MiB of ${dev}`);
      expect(await processesUsing(dev)).toEqual([]);
    } finally {
      await detachLoop(dev);
    }
    const data = await readFile(file);
    expect(data.subarray(0, MiB).every((b) => b === 0)).toBe(true);
    // The ESP was written (so zeroing was needed): only its table and boot code are gone.
    expect(data.subarray(MiB, 2 * MiB).some((b) => b !== 0)).toBe(true);
    expect(await readdir(tmp)).toEqual([]);
  }, 60_000);

  it("--update-secrets refuses a stick whose secrets volume is mounted, and with --unmount unmounts it first", async () => {
    const file = join(work, "loop-mounted.img");
    await execa("cp", ["--sparse=always", img, file]);
    const dev = await attachLoop(file);
    const mnt = join(work, "mnt");
    await mkdir(mnt, { recursive: true });
    try {
      await execa("partx", ["-a", dev]);
      await execa("mount", ["-o", "ro", `${dev}p2`, mnt]);
      expect(await readFile(join(mnt, "API_KEY"), "utf8")).toBe(SECRET_VALUE);
      const refused = await cli([
        "pxe-stick",
        dev,
        "--update-secrets",
        "--yes",
        "--secret",
        "NEW=sv-mounted-1",
      ]);
      expect(refused.code).toBe(3);
      expect(refused.stderr).toMatch(/mounted/);
      expect(refused.stderr).toMatch(/--unmount/);
      const ok = await cli([
        "pxe-stick",
        dev,
        "--update-secrets",
        "--yes",
        "--unmount",
        "--secret",
        "NEW=sv-mounted-1",
      ]);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stderr).toMatch(new RegExp(`unmounted .*${mnt}`));
      expect(ok.stderr).not.toContain("sv-mounted-1");
      const { secrets } = await partitions(dev);
      expect(await debugfs(dev, secrets.offsetBytes, "cat /NEW")).toBe("sv-mounted-1");
    } finally {
      await execa("umount", [mnt], { reject: false });
      await detachLoop(dev);
    }
  });
});
