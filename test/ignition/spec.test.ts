// Our own Ignition spec checks (src/ignition/spec.ts): they judge spec 3.4.0 and 3.5.0 configs,
// which Debian's ignition-validate 2.14 does not know, and they agree with the real
// ignition-validate on spec 3.3.0 (the newest it knows).
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { EXIT, UsageError } from "../../src/errors.js";
import { hasProgram } from "../../src/exec/index.js";
import { loadIgnitionConfig } from "../../src/ignition/index.js";
import { runCli } from "../helpers/cli.js";
import { fixture } from "../helpers/fixtures.js";

const VALIDATOR = "/usr/bin/ignition-validate";
const HAS_VALIDATOR = await hasProgram(VALIDATOR);
const SKIPPED =
  "Ignition's full check was skipped; provision's own spec checks (files, directories, links, units, users, filesystems, kernel arguments) passed";

let work: string;
let n = 0;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-spec-test-"));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

async function write(json: unknown, name = `c${++n}.ign`): Promise<string> {
  const f = join(work, name);
  await writeFile(f, `${JSON.stringify(json, null, 2)}\n`);
  return f;
}

async function loadError(f: string): Promise<UsageError> {
  const err = await loadIgnitionConfig({ file: f }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, f).toBeInstanceOf(UsageError);
  expect((err as UsageError).exitCode).toBe(EXIT.USAGE);
  return err as UsageError;
}

/** The real ignition-validate on a file: its exit code and output. */
function ignitionValidate(f: string): { code: number; out: string } {
  const r = spawnSync(VALIDATOR, [f], { encoding: "utf8" });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

const HEX64 = "0123456789abcdef".repeat(4);
const HEX128 = HEX64 + HEX64.toUpperCase();

/** A homelab server: users, files of every kind of source, links, units, a filesystem, kargs. */
const SERVER = {
  passwd: {
    users: [
      {
        name: "core",
        sshAuthorizedKeys: [
          "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtest core@laptop",
          "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQtest backup@nas",
        ],
        groups: ["wheel", "docker"],
      },
      {
        name: "deploy",
        uid: 1100,
        homeDir: "/var/home/deploy",
        shell: "/bin/bash",
        sshAuthorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGci ci@runner"],
      },
    ],
    groups: [{ name: "deploy", gid: 1100 }],
  },
  storage: {
    directories: [
      { path: "/var/lib/app", mode: 488, user: { name: "deploy" }, group: { name: "deploy" } },
    ],
    files: [
      {
        path: "/etc/hostname",
        mode: 420,
        overwrite: true,
        contents: { source: "data:,node1%0A" },
      },
      {
        path: "/etc/sysctl.d/90-forward.conf",
        mode: 420,
        contents: { source: "data:;base64,bmV0LmlwdjQuaXBfZm9yd2FyZCA9IDEK" },
      },
      {
        path: "/usr/local/bin/app",
        mode: 493,
        contents: {
          source: "https://example.com/releases/app-1.2.3",
          verification: { hash: `sha256-${HEX64}` },
        },
      },
      {
        path: "/var/lib/app/config.json",
        mode: 384,
        user: { id: 1100 },
        group: { id: 1100 },
        contents: {
          source: "https://example.com/config.json.gz",
          compression: "gzip",
          verification: { hash: `sha512-${HEX128}` },
        },
      },
      {
        path: "/etc/motd",
        append: [
          { source: "data:text/plain;charset=utf-8,Managed%20by%20provision%0A" },
          { source: "tftp://192.168.1.1/motd" },
        ],
      },
    ],
    links: [
      {
        path: "/etc/localtime",
        target: "../usr/share/zoneinfo/Europe/Berlin",
        overwrite: true,
      },
      { path: "/usr/local/bin/app-current", target: "/usr/local/bin/app", hard: false },
    ],
    filesystems: [
      {
        device: "/dev/disk/by-partlabel/var",
        format: "xfs",
        path: "/var",
        label: "var",
        wipeFilesystem: false,
      },
    ],
  },
  systemd: {
    units: [
      {
        name: "app.service",
        enabled: true,
        contents:
          "[Unit]\nDescription=App\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nExecStart=/usr/local/bin/app\nRestart=always\n\n[Install]\nWantedBy=multi-user.target\n",
      },
      {
        name: "app-backup.timer",
        enabled: true,
        contents: "[Timer]\nOnCalendar=daily\n\n[Install]\nWantedBy=timers.target\n",
      },
      {
        name: "app-backup.service",
        contents: "[Service]\nType=oneshot\nExecStart=/usr/bin/true\n",
      },
      {
        name: "zincati.service",
        dropins: [
          { name: "10-quiet.conf", contents: "[Service]\nEnvironment=ZINCATI_VERBOSITY=0\n" },
        ],
      },
      { name: "docker.socket", mask: true },
      { name: "systemd-timesyncd.service", enabled: false },
    ],
  },
  kernelArguments: {
    shouldExist: ["console=ttyS0,115200n8", "systemd.unified_cgroup_hierarchy=1"],
    shouldNotExist: ["mitigations=off"],
  },
};

/** A small Flatcar-style config, with nulls for unset fields and empty lists. */
const SMALL = {
  passwd: { users: [{ name: "core", sshAuthorizedKeys: ["ssh-ed25519 AAAAC3Nz k@h"] }] },
  storage: {
    files: [
      { path: "/etc/flatcar/update.conf", mode: null, contents: { source: "data:,GROUP=beta%0A" } },
      { path: "/opt/empty", overwrite: false, contents: { source: "" } },
    ],
    directories: [{ path: "/opt/bin" }],
    links: [],
  },
  systemd: {
    units: [
      {
        name: "update-engine.service",
        dropins: [{ name: "override.conf", contents: "[Service]\nNice=10\n" }],
      },
      { name: "var-lib-data.mount", enabled: null, contents: null },
    ],
  },
  kernelArguments: { shouldExist: [], shouldNotExist: ["quiet"] },
};

const GOOD: Record<string, object> = { server: SERVER, small: SMALL };

const withVersion = (v: string, body: object) => ({ ignition: { version: v }, ...body });

/**
 * Each case is one mistake (so one line). `ignition: "accepts"` marks the few rules that are
 * stricter than ignition-validate 2.14; every other case is refused by it too (checked on 3.3.0).
 */
interface BadCase {
  name: string;
  body: object;
  message: string;
  ignition?: "accepts";
}

const file = (f: object) => ({ storage: { files: [f] } });
const unit = (u: object) => ({ systemd: { units: [u] } });
const fs = (f: object) => ({ storage: { filesystems: [f] } });
const src = (contents: object) => file({ path: "/etc/a", contents });

const BAD: BadCase[] = [
  // --- paths
  {
    name: "relative file path",
    body: { storage: { files: [{ path: "/etc/a" }, { path: "/etc/b" }, { path: "etc/x" }] } },
    message: '$.storage.files[2].path "etc/x" must be an absolute path (did you mean "/etc/x"?)',
  },
  {
    name: "relative directory path",
    body: { storage: { directories: [{ path: "var/lib/app" }] } },
    message:
      '$.storage.directories[0].path "var/lib/app" must be an absolute path (did you mean "/var/lib/app"?)',
  },
  {
    name: "relative link path",
    body: { storage: { links: [{ path: "etc/localtime", target: "/usr/share/zoneinfo/UTC" }] } },
    message:
      '$.storage.links[0].path "etc/localtime" must be an absolute path (did you mean "/etc/localtime"?)',
  },
  {
    name: "empty path",
    body: file({ path: "" }),
    message: '$.storage.files[0].path "" must be an absolute path',
  },
  {
    name: "path not clean",
    body: file({ path: "/etc//ssh/../x/" }),
    message: '$.storage.files[0].path "/etc//ssh/../x/" is not fully simplified (write "/etc/x")',
  },
  // --- mode
  {
    name: "octal mode as a string",
    body: file({ path: "/etc/a", mode: "0644" }),
    message:
      '$.storage.files[0].mode "0644" must be an integer, not a string (use the decimal 420 for 0644)',
  },
  {
    name: "octal mode without the 0, as a string",
    body: { storage: { directories: [{ path: "/d", mode: "755" }] } },
    message:
      '$.storage.directories[0].mode "755" must be an integer, not a string (for 0755 use the decimal 493; for the decimal 755 drop the quotes)',
  },
  {
    name: "decimal mode as a string",
    body: file({ path: "/etc/a", mode: "493" }),
    message: '$.storage.files[0].mode "493" must be an integer, not a string (drop the quotes)',
  },
  {
    name: "symbolic mode",
    body: file({ path: "/etc/a", mode: "rw-r--r--" }),
    message:
      '$.storage.files[0].mode "rw-r--r--" must be an integer, not a string (JSON has no octal: write the decimal, e.g. 420 for 0644)',
  },
  {
    name: "fractional mode",
    body: file({ path: "/etc/a", mode: 420.5 }),
    message: "$.storage.files[0].mode 420.5 must be an integer",
  },
  {
    name: "mode too big",
    body: file({ path: "/etc/a", mode: 4096 }),
    message:
      "$.storage.files[0].mode 4096 is not a file mode (0 to 4095, i.e. 0o7777, written in decimal)",
  },
  {
    name: "negative mode",
    body: file({ path: "/etc/a", mode: -1 }),
    message:
      "$.storage.files[0].mode -1 is not a file mode (0 to 4095, i.e. 0o7777, written in decimal)",
  },
  // --- overwrite, user, group
  {
    name: "overwrite as a string",
    body: file({ path: "/etc/a", overwrite: "true", contents: { source: "data:,x" } }),
    message:
      "$.storage.files[0].overwrite must be true or false, not a string (write true without quotes)",
  },
  {
    name: "overwrite without contents",
    body: file({ path: "/etc/a", overwrite: true }),
    message:
      "$.storage.files[0].overwrite is true but $.storage.files[0].contents.source is not set (Ignition refuses that: give the contents or drop overwrite)",
  },
  {
    name: "user as a string",
    body: file({ path: "/etc/a", user: "core" }),
    message:
      '$.storage.files[0].user must be an object like {"name": "core"} or {"id": 1000}, not a string',
  },
  {
    name: "user id as a string",
    body: file({ path: "/etc/a", user: { id: "1000" } }),
    message: "$.storage.files[0].user.id must be an integer, not a string",
  },
  {
    name: "group name as a number",
    body: { storage: { directories: [{ path: "/d", group: { name: 10 } }] } },
    message: "$.storage.directories[0].group.name must be a string, not a number",
  },
  {
    name: "user with id and name",
    body: file({ path: "/etc/a", user: { id: 0, name: "root" } }),
    message: "$.storage.files[0].user sets both id and name (give one of them)",
  },
  // --- links
  {
    name: "link without target",
    body: { storage: { links: [{ path: "/etc/localtime" }] } },
    message: "$.storage.links[0].target is required (the path the link points to)",
  },
  {
    name: "link target as a number",
    body: { storage: { links: [{ path: "/etc/localtime", target: 5 }] } },
    message: "$.storage.links[0].target must be a string, not a number",
  },
  {
    name: "hard as a string",
    body: { storage: { links: [{ path: "/l", target: "/t", hard: "no" }] } },
    message: "$.storage.links[0].hard must be true or false, not a string",
  },
  // --- contents / append
  {
    name: "source as a number",
    body: src({ source: 5 }),
    message: "$.storage.files[0].contents.source must be a string, not a number",
  },
  {
    name: "source a local path",
    body: src({ source: "/home/me/motd" }),
    message:
      '$.storage.files[0].contents.source "/home/me/motd" is not a URL Ignition can fetch (use http, https, tftp, s3, gs, arn, data; a local file goes in as a data: URL)',
  },
  {
    name: "source with an unknown scheme",
    body: file({ path: "/etc/a", append: [{ source: "ftp://example.com/a" }] }),
    message:
      '$.storage.files[0].append[0].source "ftp://example.com/a" is not a URL Ignition can fetch (use http, https, tftp, s3, gs, arn, data; a local file goes in as a data: URL)',
  },
  {
    name: "data URL without a comma",
    body: src({ source: "data:hello" }),
    message:
      '$.storage.files[0].contents.source "data:hello" is not a valid data URL: no comma before the data (write data:,<percent-encoded text> or data:;base64,<base64>)',
  },
  {
    name: "data URL with a space",
    body: src({ source: "data:,hello world" }),
    message:
      '$.storage.files[0].contents.source "data:,hello world" is not a valid data URL: its data has characters that must be percent-encoded (write data:,<percent-encoded text> or data:;base64,<base64>)',
  },
  {
    name: "data URL media type without a slash",
    body: src({ source: "data:text,hello" }),
    message:
      '$.storage.files[0].contents.source "data:text,hello" is not a valid data URL: "text" is not a media type like text/plain (write data:,<percent-encoded text> or data:;base64,<base64>)',
  },
  {
    name: "unknown compression",
    body: src({ source: "data:,x", compression: "xz" }),
    message:
      '$.storage.files[0].contents.compression "xz" is not supported (use "gzip" or leave it out)',
  },
  {
    name: "unknown hash function",
    body: src({ source: "https://example.com/a", verification: { hash: `md5-${HEX64}` } }),
    message: `$.storage.files[0].contents.verification.hash "md5-${HEX64.slice(0, 52)}…" must be sha512-<128 hex digits> or sha256-<64 hex digits>`,
  },
  {
    name: "hash of the wrong length",
    body: src({ source: "https://example.com/a", verification: { hash: "sha256-abc" } }),
    message:
      '$.storage.files[0].contents.verification.hash "sha256-abc" must be sha512-<128 hex digits> or sha256-<64 hex digits>',
  },
  {
    name: "hash without a function",
    body: src({ source: "https://example.com/a", verification: { hash: HEX64 } }),
    message: `$.storage.files[0].contents.verification.hash "${HEX64.slice(0, 56)}…" must be sha512-<128 hex digits> or sha256-<64 hex digits>`,
  },
  {
    name: "hash that is not hex",
    body: src({
      source: "https://example.com/a",
      verification: { hash: `sha256-${"z".repeat(64)}` },
    }),
    message: `$.storage.files[0].contents.verification.hash "sha256-${"z".repeat(49)}…" must be sha512-<128 hex digits> or sha256-<64 hex digits>`,
    // ignition-validate only checks the length; the fetch at boot fails on it.
    ignition: "accepts",
  },
  {
    name: "hash without a source",
    body: src({ verification: { hash: `sha256-${HEX64}` } }),
    message:
      "$.storage.files[0].contents.verification.hash is set but $.storage.files[0].contents.source is not (verify what is fetched)",
  },
  // --- duplicates
  {
    name: "a path as file and directory",
    body: { storage: { directories: [{ path: "/etc/a" }], files: [{ path: "/etc/a" }] } },
    message:
      '$.storage.files[0].path "/etc/a" is already used by $.storage.directories[0] (Ignition rejects duplicates: merge them into one entry)',
  },
  {
    name: "a path as file and link",
    body: {
      storage: {
        files: [{ path: "/etc/b" }, { path: "/etc/a" }],
        links: [{ path: "/etc/a", target: "/x" }],
      },
    },
    message:
      '$.storage.links[0].path "/etc/a" is already used by $.storage.files[1] (Ignition rejects duplicates: merge them into one entry)',
  },
  {
    name: "a file twice",
    body: { storage: { files: [{ path: "/etc/a" }, { path: "/etc/a", mode: 420 }] } },
    message:
      '$.storage.files[1].path "/etc/a" is already used by $.storage.files[0] (Ignition rejects duplicates: merge them into one entry)',
  },
  // --- systemd units
  {
    name: "unit without a type suffix",
    body: unit({ name: "app", enabled: true }),
    message:
      '$.systemd.units[0].name "app" must end in a unit type (.service, .socket, .device, .mount, .automount, .swap, .target, .path, .timer, .snapshot, .slice or .scope)',
  },
  {
    name: "unit named like a drop-in",
    body: unit({ name: "app.conf" }),
    message:
      '$.systemd.units[0].name "app.conf" must end in a unit type (.service, .socket, .device, .mount, .automount, .swap, .target, .path, .timer, .snapshot, .slice or .scope)',
  },
  {
    name: "enabled as a string",
    body: unit({ name: "app.service", enabled: "true" }),
    message:
      "$.systemd.units[0].enabled must be true or false, not a string (write true without quotes)",
  },
  {
    name: "mask as a number",
    body: unit({ name: "app.service", mask: 1 }),
    message: "$.systemd.units[0].mask must be true or false, not a number",
  },
  {
    name: "contents as an array",
    body: unit({ name: "app.service", contents: ["[Service]", "ExecStart=/bin/true"] }),
    message: "$.systemd.units[0].contents must be a string, not an array",
  },
  {
    name: "drop-in not ending in .conf",
    body: unit({ name: "app.service", dropins: [{ name: "10-x.txt", contents: "[Service]\n" }] }),
    message: '$.systemd.units[0].dropins[0].name "10-x.txt" must end in .conf',
  },
  {
    name: "drop-in twice",
    body: unit({ name: "app.service", dropins: [{ name: "a.conf" }, { name: "a.conf" }] }),
    message:
      '$.systemd.units[0].dropins[1].name "a.conf" is already used by $.systemd.units[0].dropins[0] (Ignition rejects duplicates: merge them into one entry)',
  },
  {
    name: "unit twice",
    body: {
      systemd: {
        units: [{ name: "a.service", enabled: true }, { name: "b.timer" }, { name: "a.service" }],
      },
    },
    message:
      '$.systemd.units[2].name "a.service" is already used by $.systemd.units[0] (Ignition rejects duplicates: merge them into one entry)',
  },
  // --- passwd
  {
    name: "user without a name",
    body: { passwd: { users: [{ sshAuthorizedKeys: ["ssh-ed25519 AAAA k@h"] }] } },
    message: "$.passwd.users[0].name is required",
    // The schema requires it; ignition-validate 2.14 does not check, useradd fails at boot.
    ignition: "accepts",
  },
  {
    name: "group without a name",
    body: { passwd: { groups: [{ gid: 1000 }] } },
    message: "$.passwd.groups[0].name is required",
    ignition: "accepts",
  },
  {
    name: "user name as a number",
    body: { passwd: { users: [{ name: 1000 }] } },
    message: "$.passwd.users[0].name must be a string, not a number",
  },
  {
    name: "sshAuthorizedKeys as a string",
    body: { passwd: { users: [{ name: "core", sshAuthorizedKeys: "ssh-ed25519 AAAA k@h" }] } },
    message: "$.passwd.users[0].sshAuthorizedKeys must be an array, not a string",
  },
  {
    name: "a key that is not a string",
    body: { passwd: { users: [{ name: "core", sshAuthorizedKeys: [{ key: "ssh-ed25519 A" }] }] } },
    message: "$.passwd.users[0].sshAuthorizedKeys[0] must be a string, not an object",
  },
  {
    name: "a key twice",
    body: {
      passwd: {
        users: [{ name: "core", sshAuthorizedKeys: ["ssh-ed25519 A k", "ssh-ed25519 A k"] }],
      },
    },
    message:
      '$.passwd.users[0].sshAuthorizedKeys[1] "ssh-ed25519 A k" repeats $.passwd.users[0].sshAuthorizedKeys[0] (Ignition rejects duplicates: list it once)',
  },
  {
    name: "a user twice",
    body: { passwd: { users: [{ name: "core" }, { name: "core", groups: ["wheel"] }] } },
    message:
      '$.passwd.users[1].name "core" is already used by $.passwd.users[0] (Ignition rejects duplicates: merge them into one entry)',
  },
  {
    name: "a group twice",
    body: { passwd: { groups: [{ name: "app" }, { name: "app" }] } },
    message:
      '$.passwd.groups[1].name "app" is already used by $.passwd.groups[0] (Ignition rejects duplicates: merge them into one entry)',
  },
  // --- filesystems
  {
    name: "relative device",
    body: fs({ device: "dev/sdb", format: "ext4" }),
    message:
      '$.storage.filesystems[0].device "dev/sdb" must be an absolute path (did you mean "/dev/sdb"?)',
  },
  {
    name: "no device",
    body: fs({ format: "ext4", label: "data" }),
    message: '$.storage.filesystems[0].device is required (e.g. "/dev/disk/by-label/data")',
  },
  {
    name: "unknown format",
    body: fs({ device: "/dev/sdb", format: "ext3" }),
    message:
      '$.storage.filesystems[0].format "ext3" is not a format Ignition knows (use ext4, btrfs, xfs, vfat, swap or none)',
  },
  {
    name: "relative mount path",
    body: fs({ device: "/dev/sdb", format: "ext4", path: "var/data" }),
    message:
      '$.storage.filesystems[0].path "var/data" must be an absolute path (did you mean "/var/data"?)',
  },
  {
    name: "path without format",
    body: fs({ device: "/dev/sdb", path: "/var/data" }),
    message: "$.storage.filesystems[0].format is required when path is set",
  },
  {
    name: "a device twice",
    body: {
      storage: {
        filesystems: [
          { device: "/dev/sdb", format: "ext4" },
          { device: "/dev/sdb", format: "xfs" },
        ],
      },
    },
    message:
      '$.storage.filesystems[1].device "/dev/sdb" is already used by $.storage.filesystems[0] (Ignition rejects duplicates: merge them into one entry)',
  },
  // --- kernel arguments
  {
    name: "shouldExist as a string",
    body: { kernelArguments: { shouldExist: "quiet" } },
    message: "$.kernelArguments.shouldExist must be an array, not a string",
  },
  {
    name: "shouldNotExist with a number",
    body: { kernelArguments: { shouldNotExist: ["quiet", 3] } },
    message: "$.kernelArguments.shouldNotExist[1] must be a string, not a number",
  },
  {
    name: "an argument in both lists",
    body: { kernelArguments: { shouldExist: ["quiet"], shouldNotExist: ["splash", "quiet"] } },
    message:
      '$.kernelArguments.shouldNotExist[1] "quiet" is already in $.kernelArguments.shouldExist[0] (Ignition rejects duplicates: list an argument once, in one of the two lists)',
  },
];

describe.each(["3.4.0", "3.5.0"])("spec %s (ignition-validate 2.14 does not know it)", (v) => {
  it.each(Object.keys(GOOD))("accepts the %s config, with one warning", async (name) => {
    const f = await write(withVersion(v, GOOD[name] as object));
    const cfg = await loadIgnitionConfig({ file: f });
    expect(cfg.version).toBe(v);
    expect(cfg.warnings).toEqual([
      HAS_VALIDATOR
        ? `${f}: ignition-validate (${spawnSync(VALIDATOR, ["-version"], { encoding: "utf8" }).stdout.trim()}) does not know spec ${v}, so ${SKIPPED}`
        : `${f}: ignition-validate is not installed, so ${SKIPPED}`,
    ]);
  });

  it.each(BAD.map((c) => [c.name, c] as const))("refuses %s", async (_name, c) => {
    const f = await write(withVersion(v, c.body));
    const err = await loadError(f);
    expect(err.message).toBe(`${f}: ${c.message}`);
    expect(err.hint).toBeUndefined();
  });
});

describe.skipIf(!HAS_VALIDATOR)("spec 3.3.0: the same rules as the real ignition-validate", () => {
  it.each(Object.keys(GOOD))("the %s config passes both", async (name) => {
    const f = await write(withVersion("3.3.0", GOOD[name] as object));
    expect(ignitionValidate(f)).toEqual({ code: 0, out: "" });
    const cfg = await loadIgnitionConfig({ file: f });
    expect(cfg.warnings).toEqual([]);
  });

  it.each(BAD.map((c) => [c.name, c] as const))("%s is refused by both", async (_name, c) => {
    const f = await write(withVersion("3.3.0", c.body));
    // arn: URLs came with spec 3.4.0.
    const message = c.message.replace("gs, arn, data", "gs, data");
    expect((await loadError(f)).message).toBe(`${f}: ${message}`);
    const real = ignitionValidate(f);
    if (c.ignition === "accepts") expect(real.code, real.out).toBe(0);
    else {
      expect(real.code, real.out).toBe(1);
      expect(real.out).toMatch(/^error/m);
    }
  });
});

describe("rules that differ between spec versions follow the config's version", () => {
  // [version, body, our message or undefined for valid]; ignition-validate agrees up to 3.3.0.
  const cases: [string, object, string | undefined][] = [
    [
      "3.2.0",
      fs({ device: "/dev/sdb", format: "none" }),
      '$.storage.filesystems[0].format "none" is not a format Ignition knows (none needs spec 3.3.0) (use ext4, btrfs, xfs, vfat or swap)',
    ],
    ["3.3.0", fs({ device: "/dev/sdb", format: "none" }), undefined],
    [
      "3.0.0",
      src({ source: "https://example.com/a", verification: { hash: `sha256-${HEX64}` } }),
      `$.storage.files[0].contents.verification.hash "sha256-${HEX64.slice(0, 49)}…" must be sha512-<128 hex digits> (sha256 needs spec 3.1.0 or newer)`,
    ],
    [
      "3.1.0",
      src({ source: "https://example.com/a", verification: { hash: `sha256-${HEX64}` } }),
      undefined,
    ],
    [
      "3.1.0",
      src({ source: "gs://bucket/a" }),
      '$.storage.files[0].contents.source "gs://bucket/a" is not a URL Ignition can fetch (gs needs spec 3.2.0) (use http, https, tftp, s3, data; a local file goes in as a data: URL)',
    ],
    ["3.2.0", src({ source: "gs://bucket/a" }), undefined],
    [
      "3.3.0",
      src({ source: "arn:aws:s3:::bucket/a" }),
      '$.storage.files[0].contents.source "arn:aws:s3:::bucket/a" is not a URL Ignition can fetch (arn needs spec 3.4.0) (use http, https, tftp, s3, gs, data; a local file goes in as a data: URL)',
    ],
    ["3.4.0", src({ source: "arn:aws:s3:::bucket/a" }), undefined],
  ];
  it.each(cases)("%s %j", async (v, body, message) => {
    const f = await write(withVersion(v, body));
    if (message === undefined) await expect(loadIgnitionConfig({ file: f })).resolves.toBeTruthy();
    else expect((await loadError(f)).message).toBe(`${f}: ${message}`);
    if (HAS_VALIDATOR && v !== "3.4.0")
      expect(ignitionValidate(f).code).toBe(message === undefined ? 0 : 1);
  });
});

describe("reporting", () => {
  it("reports every problem at once: the first on the line, the others in the hint", async () => {
    const f = await write(
      withVersion("3.4.0", {
        storage: { files: [{ path: "etc/relative", mode: "0644" }] },
        systemd: { units: [{ name: "a.service" }, { name: "a.service" }] },
      }),
    );
    const err = await loadError(f);
    expect(err.message).toBe(
      `${f}: $.storage.files[0].path "etc/relative" must be an absolute path (did you mean "/etc/relative"?) (and 2 more errors)`,
    );
    expect(err.hint).toBe(
      '$.storage.files[0].mode "0644" must be an integer, not a string (use the decimal 420 for 0644); $.systemd.units[1].name "a.service" is already used by $.systemd.units[0] (Ignition rejects duplicates: merge them into one entry)',
    );
  });

  it("warns once when ignition-validate is not installed", async () => {
    const f = await write(withVersion("3.3.0", SMALL));
    const empty = join(work, "no-programs");
    vi.stubEnv("PATH", empty);
    try {
      // /usr/sbin and /sbin are always searched; ignition-validate is in /usr/bin.
      const cfg = await loadIgnitionConfig({ file: f });
      expect(cfg.warnings).toEqual([`${f}: ignition-validate is not installed, so ${SKIPPED}`]);
    } finally {
      vi.unstubAllEnvs();
    }
  });
});

describe("provision flash (CLI)", () => {
  it("refuses a bad 3.4.0 config with exit code 2 and one line, before touching anything", async () => {
    const bad = await write(
      withVersion("3.4.0", { storage: { files: [{ path: "/etc/a", mode: "0644" }] } }),
      "bad34.ign",
    );
    const out = join(work, "out.img");
    const r = await runCli(
      ["flash", out, "--image-url", fixture("fcos.img.xz"), "-i", bad, "--dry-run"],
      { cacheHome: join(work, "cache") },
    );
    expect(r.code).toBe(2);
    // execa drops the final newline: this is exactly one line.
    expect(r.stderr).toBe(
      `provision: ${bad}: $.storage.files[0].mode "0644" must be an integer, not a string (use the decimal 420 for 0644)`,
    );
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });
});
