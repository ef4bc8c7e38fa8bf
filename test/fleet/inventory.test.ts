// The fleet inventory (src/fleet/inventory.ts): finding provision.yaml, a realistic valid
// inventory read into exact Host objects, and every rule's error as one `file:line:col:` line.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { UsageError } from "../../src/errors.js";
import { findInventory, loadInventory } from "../../src/fleet/inventory.js";
import type { Host, Pos } from "../../src/fleet/types.js";
import { didYouMean, splitCommand } from "../../src/fleet/words.js";

let root: string;
let n = 0;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "provision-inventory-"));
});
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});
afterEach(() => {
  vi.restoreAllMocks();
});

/** An OpenSSH public key line: the type, then the blob of SSH strings (type first). */
function pubKey(type: string, fields: Array<string | Buffer>, comment: string): string {
  const blob = Buffer.concat(
    [type, ...fields].flatMap((f) => {
      const b = Buffer.from(f);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      return [len, b];
    }),
  );
  return `${type} ${blob.toString("base64")} ${comment}`;
}
const ADMIN = pubKey("ssh-ed25519", [Buffer.alloc(32, 1)], "admin@example");
const OPS = pubKey("ssh-ed25519", [Buffer.alloc(32, 2)], "ops@example");
const HASH = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7";

/**
 * Write provision.yaml (and other files) into a fresh directory that is also the current
 * directory as far as messages go, so they name the file "provision.yaml".
 */
async function write(yaml: string, files: Record<string, string> = {}): Promise<string> {
  const dir = join(root, `case${++n}`);
  await mkdir(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) {
    await mkdir(join(dir, name, ".."), { recursive: true });
    await writeFile(join(dir, name), text);
  }
  const file = join(dir, "provision.yaml");
  await writeFile(file, yaml);
  vi.spyOn(process, "cwd").mockReturnValue(dir);
  return file;
}

async function failure(yaml: string, files: Record<string, string> = {}): Promise<UsageError> {
  const file = await write(yaml, files);
  const err = await loadInventory(file).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UsageError);
  const u = err as UsageError;
  expect(u.message).not.toContain("\n");
  return u;
}

/** The one problem of a file with exactly one. */
async function problem(yaml: string, files: Record<string, string> = {}): Promise<string> {
  const err = await failure(yaml, files);
  expect(err.message).not.toMatch(/more problem/);
  return err.message;
}

const P = (line: number, col: number): Pos => ({ file: "provision.yaml", line, col });

describe("loadInventory: a valid inventory", () => {
  const yaml = `# The lab's machines.
defaults:
  stream: stable
  timezone: Europe/Berlin
  ssh_keys:
    - ${ADMIN}
  ignition:
    - fragments/common.bu
  kargs: [quiet]
  vars:
    domain: lab.example
    ntp: pool.ntp.org

hosts:
  pi1:
    board: rpi3
    macs: [B8-27-EB-12-34-56, b827eb654321]
    firmware: firmware/rpi3
    disk: /dev/mmcblk0
    vars:
      ntp: 192.168.1.1

  netboot:
    boot: pxe
    macs:
      - 52:54:00:AB:CD:EF
      - 525400123456
    uuid: 6F9619FF-8B86-D011-B42D-00C04FC964FF
    secrets:
      token: env:NETBOOT_TOKEN
      cert: file:secrets/cert.pem
      api_key: cmd:pass show "fleet/api key" --line='1'
    ignition:
      - netboot.ign

  server:
    os: flatcar
    channel: stable
    release: 4081.2.0
    arch: x86_64
    disk: /dev/disk/by-id/nvme-SAMSUNG_1
    kargs: ["console=ttyS0,115200n8"]
    ssh_keys:
      - ${OPS}
    network:
      - interface: eno1
        ipv4:
          address: 192.168.1.10/24
          gateway: 192.168.1.1
          dns: [192.168.1.1, 9.9.9.9]
        ipv6:
          address: 2001:db8::10/64
          gateway: fe80::1
          dns: ["2001:db8::53"]
      - interface: eno2
    users:
      - name: ops
        groups: [wheel, docker]
        ssh_keys: [${OPS}]
        password_hash: ${HASH}
    timezone: UTC

  kiosk:
    board: rpi4
    macs: [dc:a6:32:01:02:03]
    secrets:
      wifi_psk: env:KIOSK_WIFI_PSK
    wifi:
      ssid: Lab Wi-Fi
      country: DE
      psk: secret:wifi_psk
`;

  it("reads every host with the defaults applied, positions included", async () => {
    const file = await write(yaml, {
      "fragments/common.bu": "variant: fcos\nversion: 1.5.0\n",
      "netboot.ign": '{"ignition":{"version":"3.4.0"}}\n',
    });
    const dir = join(file, "..");
    const inv = await loadInventory(file);
    expect(inv.file).toBe(file);
    expect(inv.dir).toBe(dir);
    expect(inv.hosts.map((h) => h.name)).toEqual(["pi1", "netboot", "server", "kiosk"]);
    const [pi1, netboot, server, kiosk] = inv.hosts as [Host, Host, Host, Host];
    const common = { path: join(dir, "fragments/common.bu"), at: P(8, 7), from: "defaults" };
    const defaultsAt = {
      stream: P(3, 11),
      timezone: P(4, 13),
      sshKeys: P(6, 5),
      ignition: P(8, 5),
      kargs: P(9, 10),
      vars: P(11, 5),
    };

    expect(pi1).toStrictEqual({
      name: "pi1",
      at: P(15, 3),
      os: "fcos",
      stream: "stable",
      arch: "aarch64", // implied by the Pi board
      board: "rpi3",
      firmware: join(dir, "firmware/rpi3"),
      disk: "/dev/mmcblk0",
      macs: ["b8:27:eb:12:34:56", "b8:27:eb:65:43:21"],
      kargs: ["quiet"],
      sshKeys: [ADMIN],
      ignition: [common],
      vars: { domain: "lab.example", ntp: "192.168.1.1" },
      secrets: {},
      boot: "disk",
      timezone: "Europe/Berlin",
      users: [],
      network: [],
      fieldAt: {
        ...defaultsAt,
        board: P(16, 12),
        macs: P(17, 11),
        firmware: P(18, 15),
        disk: P(19, 11),
        vars: P(21, 7),
      },
    } satisfies Host);

    expect(netboot).toStrictEqual({
      name: "netboot",
      at: P(23, 3),
      os: "fcos",
      stream: "stable",
      board: "generic",
      macs: ["52:54:00:ab:cd:ef", "52:54:00:12:34:56"],
      uuid: "6f9619ff-8b86-d011-b42d-00c04fc964ff",
      kargs: ["quiet"],
      sshKeys: [ADMIN],
      ignition: [common, { path: join(dir, "netboot.ign"), at: P(34, 9), from: "host" }],
      vars: { domain: "lab.example", ntp: "pool.ntp.org" },
      secrets: {
        token: { kind: "env", name: "NETBOOT_TOKEN", at: P(30, 14) },
        cert: { kind: "file", path: join(dir, "secrets/cert.pem"), at: P(31, 13) },
        api_key: {
          kind: "cmd",
          argv: ["pass", "show", "fleet/api key", "--line=1"],
          at: P(32, 16),
        },
      },
      boot: "pxe",
      timezone: "Europe/Berlin",
      users: [],
      network: [],
      fieldAt: {
        ...defaultsAt,
        boot: P(24, 11),
        macs: P(26, 7),
        uuid: P(28, 11),
        secrets: P(30, 7),
        ignition: P(34, 7),
      },
    } satisfies Host);

    expect(server).toStrictEqual({
      name: "server",
      at: P(36, 3),
      os: "flatcar",
      stream: "stable",
      channel: "stable",
      release: "4081.2.0",
      arch: "x86_64",
      board: "generic",
      disk: "/dev/disk/by-id/nvme-SAMSUNG_1",
      macs: [],
      kargs: ["quiet", "console=ttyS0,115200n8"],
      sshKeys: [ADMIN, OPS],
      ignition: [common],
      vars: { domain: "lab.example", ntp: "pool.ntp.org" },
      secrets: {},
      boot: "disk",
      timezone: "UTC",
      users: [
        {
          name: "ops",
          groups: ["wheel", "docker"],
          sshKeys: [OPS],
          passwordHash: HASH,
          at: P(57, 9),
        },
      ],
      network: [
        {
          interface: "eno1",
          ipv4: {
            address: "192.168.1.10/24",
            gateway: "192.168.1.1",
            dns: ["192.168.1.1", "9.9.9.9"],
          },
          ipv6: { address: "2001:db8::10/64", gateway: "fe80::1", dns: ["2001:db8::53"] },
          at: P(46, 9),
        },
        { interface: "eno2", ipv4: "dhcp", ipv6: "auto", at: P(55, 9) },
      ],
      fieldAt: {
        ...defaultsAt,
        os: P(37, 9),
        channel: P(38, 14),
        release: P(39, 14),
        arch: P(40, 11),
        disk: P(41, 11),
        kargs: P(42, 12),
        sshKeys: P(44, 7),
        network: P(46, 7),
        users: P(57, 7),
        timezone: P(61, 15),
      },
    } satisfies Host);

    expect(kiosk).toStrictEqual({
      name: "kiosk",
      at: P(63, 3),
      os: "fcos",
      stream: "stable",
      arch: "aarch64",
      board: "rpi4",
      macs: ["dc:a6:32:01:02:03"],
      kargs: ["quiet"],
      sshKeys: [ADMIN],
      ignition: [common],
      vars: { domain: "lab.example", ntp: "pool.ntp.org" },
      secrets: { wifi_psk: { kind: "env", name: "KIOSK_WIFI_PSK", at: P(67, 17) } },
      boot: "disk",
      timezone: "Europe/Berlin",
      users: [],
      network: [],
      wifi: { ssid: "Lab Wi-Fi", country: "DE", pskSecret: "wifi_psk", at: P(69, 7) },
      fieldAt: {
        ...defaultsAt,
        board: P(64, 12),
        macs: P(65, 11),
        secrets: P(67, 7),
        wifi: P(69, 7),
      },
    } satisfies Host);
  });

  it("merges defaults: lists append, vars and secrets by key, scalars override", async () => {
    const file = await write(
      `defaults:
  os: flatcar
  board: rpi4
  kargs: [quiet]
  vars: {a: 1, b: {deep: [1, 2]}}
  secrets:
    shared: env:SHARED
    token: env:OLD
  users:
    - name: core
      ssh_keys: ["${ADMIN}"]
  network:
    - ipv4: dhcp
hosts:
  h:
    os: fcos
    kargs: [loglevel=3]
    vars: {b: replaced, c: true}
    secrets:
      token: env:NEW
    users:
      - name: ops
    network:
      - interface: wlan0
  bare:
`,
    );
    const [h, bare] = (await loadInventory(file)).hosts as [Host, Host];
    expect(h.os).toBe("fcos");
    expect(h.board).toBe("rpi4");
    expect(h.arch).toBe("aarch64");
    expect(h.kargs).toEqual(["quiet", "loglevel=3"]);
    expect(h.vars).toEqual({ a: 1, b: "replaced", c: true });
    expect(h.secrets).toEqual({
      shared: { kind: "env", name: "SHARED", at: P(7, 13) },
      token: { kind: "env", name: "NEW", at: P(20, 14) },
    });
    expect(h.users.map((u) => u.name)).toEqual(["core", "ops"]);
    expect(h.users[0]?.sshKeys).toEqual([ADMIN]);
    expect(h.network.map((x) => x.interface)).toEqual([undefined, "wlan0"]);
    // A host with no fields at all is the defaults.
    expect(bare.name).toBe("bare");
    expect(bare.os).toBe("flatcar");
    expect(bare.vars).toEqual({ a: 1, b: { deep: [1, 2] } });
    expect(bare.fieldAt).toEqual({
      os: P(2, 7),
      board: P(3, 10),
      kargs: P(4, 10),
      vars: P(5, 9),
      secrets: P(7, 5),
      users: P(10, 5),
      network: P(13, 5),
    });
  });

  it("accepts current IANA names that ICU lists under an older name", async () => {
    const file = await write(
      "hosts:\n  a:\n    timezone: Asia/Kolkata\n  b:\n    timezone: Etc/UTC\n",
    );
    const hosts = (await loadInventory(file)).hosts;
    expect(hosts.map((h) => h.timezone)).toEqual(["Asia/Kolkata", "Etc/UTC"]);
  });

  it("names the file by its absolute path when it is outside the current directory", async () => {
    const file = await write("hosts:\n  Bad:\n");
    vi.spyOn(process, "cwd").mockReturnValue(join(root, "elsewhere"));
    const err = await loadInventory(file).catch((e: unknown) => e as UsageError);
    expect((err as UsageError).message).toBe(
      `${file}:2:3: hosts.Bad: the host name is not a DNS label (1-63 lowercase letters, digits and '-', not starting or ending with '-'); did you mean "bad"?`,
    );
  });
});

describe("loadInventory: errors", () => {
  it("a missing file", async () => {
    const file = await write("hosts: {}\n");
    await expect(loadInventory(join(file, "..", "nope.yaml"))).rejects.toThrow(
      new UsageError("nope.yaml: no such file"),
    );
  });

  it("YAML syntax errors are yaml's message at its position", async () => {
    expect(await problem("hosts:\n  a: [1, 2\n")).toBe(
      "provision.yaml:3:1: Flow sequence in block collection must be sufficiently indented and end with a ]",
    );
    expect(await problem("hosts:\n  a:\n\tos: fcos\n")).toMatch(
      /^provision\.yaml:3:1: Tabs are not allowed/,
    );
  });

  it("an empty file, a list, a missing hosts:", async () => {
    expect(await problem("# nothing yet\n")).toBe(
      "provision.yaml:1:1: the inventory is empty; list the machines under hosts:",
    );
    expect(await problem("- a\n")).toBe(
      "provision.yaml:1:1: expected a map with defaults: and hosts:, got a list",
    );
    expect(await problem("defaults: {}\n")).toBe(
      "provision.yaml:1:1: hosts: is missing; list the machines under hosts:",
    );
  });

  it("unknown keys, with did-you-mean", async () => {
    const err = await failure(`host:
  a: {}
hosts:
  pi1:
    os: fcos
    macs: [b8:27:eb:00:00:01]
    kargs: []
    ssh_keys: []
    boot: disk
    network: []
    users: []
    bord: rpi3
    frobnicate: 1
`);
    expect(err.message).toBe(
      'provision.yaml:1:1: host: unknown field; did you mean "hosts"? (and 2 more problems)',
    );
    expect(err.hint).toBe(
      [
        'provision.yaml:1:1: host: unknown field; did you mean "hosts"?',
        'provision.yaml:12:5: hosts.pi1.bord: unknown field; did you mean "board"?',
        "provision.yaml:13:5: hosts.pi1.frobnicate: unknown field",
      ].join("\n"),
    );
    expect(await problem("hosts:\n  a:\n    network:\n      - interfce: eth0\n")).toBe(
      'provision.yaml:4:9: hosts.a.network[0].interfce: unknown field; did you mean "interface"?',
    );
    expect(
      await problem(
        "hosts:\n  a:\n    wifi: {ssid: x, country: DE, psk: secret:p, pks: 1}\n    secrets: {p: env:P}\n",
      ),
    ).toBe('provision.yaml:3:49: hosts.a.wifi.pks: unknown field; did you mean "psk"?');
  });

  it("wrong types", async () => {
    expect(await problem("hosts:\n  pi1:\n    macs: b8:27:eb:00:00:01\n")).toBe(
      "provision.yaml:3:11: hosts.pi1.macs: expected a list of MAC addresses, got a string",
    );
    expect(await problem("hosts:\n  a:\n    kargs:\n")).toBe(
      "provision.yaml:3:11: hosts.a.kargs: expected a list of kernel arguments, got an empty value",
    );
    expect(await problem("hosts:\n  a:\n    vars: [1]\n")).toBe(
      "provision.yaml:3:11: hosts.a.vars: expected a map of variables, got a list",
    );
    expect(await problem("hosts:\n  a: fcos\n")).toBe(
      "provision.yaml:2:6: hosts.a: expected a map of host fields, got a string",
    );
    expect(await problem("hosts:\n  a:\n    os: fedora\n")).toBe(
      'provision.yaml:3:9: hosts.a.os: expected one of fcos, flatcar, got "fedora"',
    );
    expect(await problem("hosts:\n  a:\n    board: rpi5\n")).toBe(
      'provision.yaml:3:12: hosts.a.board: expected one of generic, rpi2, rpi3, rpi4, got "rpi5"',
    );
    expect(await problem("hosts:\n  a:\n    boot: PXE\n")).toBe(
      'provision.yaml:3:11: hosts.a.boot: expected one of disk, pxe, got "PXE"; did you mean "pxe"?',
    );
    expect(await problem("hosts:\n  a:\n    release: [1]\n")).toBe(
      "provision.yaml:3:14: hosts.a.release: expected a string, got a list",
    );
  });

  it("host names are DNS labels, and unique", async () => {
    const long = "a".repeat(64);
    const err = await failure(`hosts:\n  -edge:\n  ${long}:\n  ok-1:\n  ok-1:\n`);
    expect(err.hint?.split("\n")).toEqual([
      `provision.yaml:2:3: hosts.-edge: the host name is not a DNS label (1-63 lowercase letters, digits and '-', not starting or ending with '-')`,
      `provision.yaml:3:3: hosts.${long}: the host name is not a DNS label (1-63 lowercase letters, digits and '-', not starting or ending with '-')`,
      "provision.yaml:5:3: hosts.ok-1: duplicate key; first at provision.yaml:4:3",
    ]);
    expect(await problem(`hosts:\n  ${"a".repeat(63)}:\n  web:\n  web:\n`)).toBe(
      "provision.yaml:4:3: hosts.web: duplicate key; first at provision.yaml:3:3",
    );
  });

  it("a duplicate key anywhere is an error at its position", async () => {
    expect(await problem("hosts:\n  a:\n    os: fcos\n    os: flatcar\n")).toBe(
      "provision.yaml:4:5: hosts.a.os: duplicate key; first at provision.yaml:3:5",
    );
    expect(await problem("hosts:\n  a:\n    vars:\n      x: {k: 1, k: 2}\n")).toBe(
      "provision.yaml:4:17: Map keys must be unique",
    );
  });

  it("MAC addresses: formats, and one host each", async () => {
    expect(await problem("hosts:\n  a:\n    macs: [52:54:00:ab:cd]\n")).toBe(
      'provision.yaml:3:12: hosts.a.macs[0]: "52:54:00:ab:cd" is not a MAC address (write it as 52:54:00:ab:cd:ef)',
    );
    expect(await problem("hosts:\n  a:\n    macs: [01:00:5e:00:00:01]\n")).toBe(
      "provision.yaml:3:12: hosts.a.macs[0]: 01:00:5e:00:00:01 is a multicast address, not a network card's",
    );
    expect(await problem("hosts:\n  a:\n    macs: [52:54:00:ab:cd:ef, 525400ABCDEF]\n")).toBe(
      "provision.yaml:3:31: hosts.a.macs[1]: MAC 52:54:00:ab:cd:ef is listed twice (first at provision.yaml:3:12)",
    );
    expect(
      await problem(`hosts:
  a:
    macs:
    - 52:54:00:aa:bb:01
  c:
    macs: [52:54:00:aa:bb:02]
  b:
    macs:
    - 52-54-00-AA-BB-01
`),
    ).toBe(
      "provision.yaml:9:7: MAC 52:54:00:aa:bb:01 of hosts.b at provision.yaml:9:7 is already hosts.a's (provision.yaml:4:7)",
    );
  });

  it("macs, uuid and disk are per host only", async () => {
    const err = await failure(
      "defaults:\n  macs: [52:54:00:00:00:01]\n  uuid: 6f9619ff-8b86-d011-b42d-00c04fc964ff\n  disk: /dev/sda\nhosts: {}\n",
    );
    expect(err.hint?.split("\n")).toEqual([
      "provision.yaml:2:3: defaults.macs: macs is set per host, not in defaults",
      "provision.yaml:3:3: defaults.uuid: uuid is set per host, not in defaults",
      "provision.yaml:4:3: defaults.disk: disk is set per host, not in defaults",
    ]);
  });

  it("uuid", async () => {
    expect(await problem("hosts:\n  a:\n    uuid: 6f9619ff8b86d011b42d00c04fc964ff\n")).toBe(
      'provision.yaml:3:11: hosts.a.uuid: "6f9619ff8b86d011b42d00c04fc964ff" is not a UUID (write it as 8-4-4-4-12 hex digits)',
    );
  });

  it("a Raspberry Pi is aarch64", async () => {
    expect(await problem("hosts:\n  pi:\n    board: rpi3\n    arch: x86_64\n")).toBe(
      "provision.yaml:4:11: hosts.pi.arch: x86_64 cannot run on board rpi3 (provision.yaml:3:12): a Raspberry Pi is aarch64",
    );
    expect(
      await problem("defaults:\n  arch: x86_64\nhosts:\n  pi:\n    board: rpi4\n  pc: {}\n"),
    ).toBe(
      "provision.yaml:5:12: hosts.pi.board: rpi4 is aarch64, but defaults.arch is x86_64 (provision.yaml:2:9)",
    );
  });

  it("SSH keys: public keys only, and never echoed", async () => {
    const priv =
      "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQSECRET\n-----END OPENSSH PRIVATE KEY-----\n";
    const err = await failure(
      `hosts:\n  a:\n    ssh_keys:\n      - |\n${priv
        .split("\n")
        .map((l) => `        ${l}`)
        .join("\n")}\n`,
    );
    expect(err.message).toBe(
      "provision.yaml:4:9: hosts.a.ssh_keys[0]: this is a private key; list public keys only (the value is not shown)",
    );
    expect(`${err.message}${err.hint}`).not.toContain("SECRET");
    expect(err.hint).toMatch(/\.pub file/);

    const cut = ADMIN.slice(0, 40);
    expect(await problem(`hosts:\n  a:\n    ssh_keys: ["${cut}"]\n`)).toBe(
      "provision.yaml:3:16: hosts.a.ssh_keys[0]: the key data does not match its type ssh-ed25519: was the key cut or changed?",
    );
    expect(await problem("hosts:\n  a:\n    ssh_keys: [ssh-foo AAAA]\n")).toBe(
      'provision.yaml:3:16: hosts.a.ssh_keys[0]: not an OpenSSH public key (unknown key type ssh-foo); expected "ssh-ed25519 AAAA… comment"',
    );
    // The other key types are accepted.
    const ok = await write(
      `hosts:\n  a:\n    ssh_keys:\n${[
        pubKey("ecdsa-sha2-nistp256", ["nistp256", Buffer.alloc(65, 4)], "e"),
        pubKey("sk-ssh-ed25519@openssh.com", [Buffer.alloc(32, 5), "ssh:"], "yubikey"),
        pubKey(
          "sk-ecdsa-sha2-nistp256@openssh.com",
          ["nistp256", Buffer.alloc(65, 6), "ssh:"],
          "k",
        ),
        pubKey("ssh-rsa", [Buffer.from([1, 0, 1]), Buffer.alloc(257, 7)], "old"),
      ]
        .map((k) => `      - ${k}\n`)
        .join("")}`,
    );
    expect((await loadInventory(ok)).hosts[0]?.sshKeys).toHaveLength(4);
    // A key of one type with another's curve is not a key.
    expect(
      await problem(
        `hosts:\n  a:\n    ssh_keys: ["${pubKey("ecdsa-sha2-nistp384", ["nistp256", Buffer.alloc(65)], "x")}"]\n`,
      ),
    ).toBe(
      "provision.yaml:3:16: hosts.a.ssh_keys[0]: the key data does not match its type ecdsa-sha2-nistp384: was the key cut or changed?",
    );
  });

  it("ignition fragments exist and are .ign or .bu", async () => {
    const err = await failure(
      "defaults:\n  ignition: [common.bu]\nhosts:\n  a:\n    ignition:\n      - a.ign\n      - extra/missing.bu\n      - notes.txt\n",
      { "common.bu": "variant: fcos\nversion: 1.5.0\n", "a.ign": "{}" },
    );
    expect(err.hint?.split("\n")).toEqual([
      expect.stringMatching(
        /^provision\.yaml:7:9: hosts\.a\.ignition\[1\]: "extra\/missing\.bu": no such file \(\/.*\/extra\/missing\.bu\)$/,
      ),
      'provision.yaml:8:9: hosts.a.ignition[2]: "notes.txt" is neither an Ignition config (.ign) nor a Butane config (.bu)',
    ]);
    expect(await problem("defaults:\n  ignition: [gone.ign]\nhosts: {}\n")).toMatch(
      /^provision\.yaml:2:14: defaults\.ignition\[0\]: "gone\.ign": no such file/,
    );
  });

  it("vars keys are identifiers", async () => {
    expect(await problem("hosts:\n  a:\n    vars:\n      my-var: 1\n")).toBe(
      "provision.yaml:4:7: hosts.a.vars.my-var: a variable name is letters, digits and '_', not starting with a digit",
    );
  });

  it("secrets: names, sources, commands; a value is never echoed", async () => {
    const err = await failure(`hosts:
  a:
    secrets:
      2fa: env:X
      wifi: hunter2-plaintext
      key: env:not-a-name
      cmd1: cmd:pass show 'unterminated
      cmd2: cmd:pass show x | head -1
      cmd3: "cmd:"
`);
    expect(err.hint?.split("\n")).toEqual([
      "provision.yaml:4:7: hosts.a.secrets.2fa: a secret name is letters, digits and '_', not starting with a digit",
      "provision.yaml:5:13: hosts.a.secrets.wifi: expected env:VAR, file:PATH or cmd:COMMAND (the value is not shown)",
      "provision.yaml:6:12: hosts.a.secrets.key: env: needs an environment variable name (letters, digits and '_')",
      "provision.yaml:7:13: hosts.a.secrets.cmd1: cmd: unterminated single quote",
      `provision.yaml:8:13: hosts.a.secrets.cmd2: cmd: "|" needs a shell, and the command runs without one: quote it, or run sh -c '…'`,
      "provision.yaml:9:13: hosts.a.secrets.cmd3: cmd: the command is empty",
    ]);
    expect(`${err.message}${err.hint}`).not.toContain("hunter2");
  });

  it("time zones, with did-you-mean", async () => {
    expect(await problem("hosts:\n  a:\n    timezone: Europe/Berln\n")).toBe(
      'provision.yaml:3:15: hosts.a.timezone: unknown time zone "Europe/Berln"; did you mean "Europe/Berlin"?',
    );
    expect(await problem("hosts:\n  a:\n    timezone: europe/berlin\n")).toBe(
      'provision.yaml:3:15: hosts.a.timezone: unknown time zone "europe/berlin"; did you mean "Europe/Berlin"?',
    );
    expect(await problem("hosts:\n  a:\n    timezone: Berlin\n")).toBe(
      'provision.yaml:3:15: hosts.a.timezone: unknown time zone "Berlin"; did you mean "Europe/Berlin"?',
    );
    expect(await problem("hosts:\n  a:\n    timezone: Mars/Olympus\n")).toBe(
      'provision.yaml:3:15: hosts.a.timezone: unknown time zone "Mars/Olympus"',
    );
  });

  it("users: names, password hashes never echoed, one definition each", async () => {
    const err = await failure(`defaults:
  users:
    - name: core
hosts:
  a:
    users:
      - name: Admin
        groups: [wheel, "bad group"]
      - name: ops
        password_hash: correct-horse-battery
        shell: /bin/zsh
      - groups: [wheel]
      - name: core
`);
    expect(err.hint?.split("\n")).toEqual([
      `provision.yaml:7:15: hosts.a.users[0].name: "Admin" is not a valid user name (lowercase letters, digits, '_' and '-', starting with a letter or '_', at most 32 characters)`,
      `provision.yaml:8:25: hosts.a.users[0].groups[1]: "bad group" is not a valid group name (lowercase letters, digits, '_' and '-', starting with a letter or '_', at most 32 characters)`,
      "provision.yaml:10:24: hosts.a.users[1].password_hash: expected a crypt(3) password hash ($y$…, $6$…, $5$…, $2b$…); the value is not shown",
      "provision.yaml:11:9: hosts.a.users[1].shell: unknown field (known: name, groups, ssh_keys, password_hash)",
      "provision.yaml:12:9: hosts.a.users[2]: name: is missing",
      "provision.yaml:13:15: hosts.a.users: user core is defined twice (first at provision.yaml:3:13)",
    ]);
    expect(`${err.message}${err.hint}`).not.toContain("horse");
  });

  it("network: addresses, prefixes, families, one entry without interface", async () => {
    const err = await failure(`hosts:
  a:
    network:
      - interface: eth0
        ipv4:
          address: 192.168.1.300/24
          gateway: 2001:db8::1
      - interface: eth1
        ipv4:
          address: 10.0.0.2/33
          dns: [10.0.0.1, "2001:db8::53"]
        ipv6:
          address: 2001:db8::2
      - ipv4: static
      - ipv6: {gateway: "fe80::1"}
  b:
    network:
      - ipv4: dhcp
      - ipv6: auto
      - interface: eth0
      - interface: eth0
`);
    expect(err.hint?.split("\n")).toEqual([
      'provision.yaml:6:20: hosts.a.network[0].ipv4.address: "192.168.1.300" is not an IPv4 address',
      'provision.yaml:7:20: hosts.a.network[0].ipv4.gateway: "2001:db8::1" is not an IPv4 address (it is IPv6; put it under ipv6:)',
      "provision.yaml:10:20: hosts.a.network[1].ipv4.address: prefix length /33 is out of range for IPv4 (1-32)",
      'provision.yaml:11:27: hosts.a.network[1].ipv4.dns[1]: "2001:db8::53" is not an IPv4 address (it is IPv6; put it under ipv6:)',
      'provision.yaml:13:20: hosts.a.network[1].ipv6.address: expected an IPv6 address with prefix, e.g. 2001:db8::10/64, got "2001:db8::2" (it needs a prefix length)',
      'provision.yaml:14:15: hosts.a.network[2].ipv4: expected "dhcp" or a map with address:, got "static"',
      "provision.yaml:15:15: hosts.a.network[3].ipv6: address: is missing (e.g. 2001:db8::10/64)",
      "provision.yaml:19:9: hosts.b.network: only one entry may leave out interface: (the first ethernet interface); another is at provision.yaml:18:9",
      "provision.yaml:21:9: hosts.b.network: interface eth0 is configured twice (first at provision.yaml:20:9)",
    ]);
  });

  it("wifi: SSID, country, a psk that names a secret", async () => {
    const err = await failure(`defaults:
  secrets:
    home: env:HOME_PSK
hosts:
  a:
    wifi:
      ssid: ${"x".repeat(33)}
      country: de
      psk: correct-horse
  b:
    wifi: {ssid: Lab, country: DE, psk: "secret:hone"}
  c:
    wifi: {ssid: Lab, country: DEU}
`);
    expect(err.hint?.split("\n")).toEqual([
      "provision.yaml:7:13: hosts.a.wifi.ssid: an SSID is 1-32 bytes, this one is 33",
      'provision.yaml:8:16: hosts.a.wifi.country: expected a country code in capitals; did you mean "DE"?',
      "provision.yaml:9:12: hosts.a.wifi.psk: expected secret:NAME, naming one of the host's secrets (the value is not shown)",
      'provision.yaml:11:41: hosts.b: wifi psk names secret hone, which is not in the host\'s secrets (home); did you mean "home"?',
      "provision.yaml:13:11: hosts.c.wifi: psk: is missing",
      'provision.yaml:13:32: hosts.c.wifi.country: expected a two-letter country code (ISO 3166, e.g. DE), got "DEU"',
    ]);
    expect(`${err.message}${err.hint}`).not.toContain("horse");
  });

  it("all problems together: the first on the line, up to 20 in the hint", async () => {
    const hosts = Array.from({ length: 25 }, (_, i) => `  h${i}:\n    os: nope\n`).join("");
    const err = await failure(`hosts:\n${hosts}`);
    expect(err.message).toBe(
      'provision.yaml:3:9: hosts.h0.os: expected one of fcos, flatcar, got "nope" (and 24 more problems)',
    );
    const lines = err.hint?.split("\n") ?? [];
    expect(lines).toHaveLength(21);
    expect(lines[0]).toBe(
      'provision.yaml:3:9: hosts.h0.os: expected one of fcos, flatcar, got "nope"',
    );
    expect(lines[19]).toBe(
      'provision.yaml:41:9: hosts.h19.os: expected one of fcos, flatcar, got "nope"',
    );
    expect(lines[20]).toBe("… and 5 more");
  });
});

describe("findInventory", () => {
  it("finds provision.yaml in cwd or the nearest parent", async () => {
    const top = join(root, "find");
    const deep = join(top, "a", "b", "c");
    await mkdir(deep, { recursive: true });
    await writeFile(join(top, "provision.yaml"), "hosts: {}\n");
    expect(await findInventory({ cwd: deep, env: {} })).toBe(join(top, "provision.yaml"));
    await writeFile(join(top, "a", "provision.yaml"), "hosts: {}\n");
    expect(await findInventory({ cwd: deep, env: {} })).toBe(join(top, "a", "provision.yaml"));
    expect(await findInventory({ cwd: top, env: {} })).toBe(join(top, "provision.yaml"));
  });

  it("$PROVISION_INVENTORY beats the search; --inventory beats both", async () => {
    const top = join(root, "prec");
    await mkdir(top, { recursive: true });
    await writeFile(join(top, "provision.yaml"), "hosts: {}\n");
    await writeFile(join(top, "env.yaml"), "hosts: {}\n");
    await writeFile(join(top, "flag.yaml"), "hosts: {}\n");
    const env = { PROVISION_INVENTORY: "env.yaml" };
    expect(await findInventory({ cwd: top, env })).toBe(join(top, "env.yaml"));
    expect(await findInventory({ cwd: top, env, file: "flag.yaml" })).toBe(join(top, "flag.yaml"));
    expect(await findInventory({ cwd: top, env: { PROVISION_INVENTORY: "" } })).toBe(
      join(top, "provision.yaml"),
    );
    await expect(findInventory({ cwd: top, env, file: "gone.yaml" })).rejects.toThrow(
      new UsageError("--inventory gone.yaml: no such file"),
    );
    await expect(
      findInventory({ cwd: top, env: { PROVISION_INVENTORY: "gone.yaml" } }),
    ).rejects.toThrow(new UsageError("PROVISION_INVENTORY=gone.yaml: no such file"));
  });

  it("none found: a usage error with a hint", async () => {
    const empty = await mkdtemp(join(tmpdir(), "provision-noinv-"));
    try {
      const err = (await findInventory({ cwd: empty, env: {} }).catch(
        (e: unknown) => e,
      )) as UsageError;
      // A provision.yaml in / or /tmp would be found first; none is expected there.
      expect(err).toBeInstanceOf(UsageError);
      expect(err.message).toBe(`no provision.yaml in ${empty} or its parents`);
      expect(err.hint).toBe("pass --inventory FILE or set PROVISION_INVENTORY");
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

describe("words", () => {
  it("splitCommand splits like a shell, without one", () => {
    expect(splitCommand(`op read "op://vault/item/pass word" --no-newline`)).toEqual({
      argv: ["op", "read", "op://vault/item/pass word", "--no-newline"],
    });
    expect(splitCommand(`a 'b c'"d"\\ e "" "x\\"y\\\\z\\n"`)).toEqual({
      argv: ["a", "b cd e", "", 'x"y\\z\\n'],
    });
    expect(splitCommand("sh -c 'pass show x | head -1'")).toEqual({
      argv: ["sh", "-c", "pass show x | head -1"],
    });
    expect(splitCommand('echo "$HOME"')).toEqual({
      error: `"$" (an expansion) needs a shell, and the command runs without one: quote it, or run sh -c '…'`,
    });
    expect(splitCommand("~/bin/secret")).toHaveProperty("error");
    expect(splitCommand("FOO=1 cmd")).toEqual({
      error: "a leading VAR=value assignment needs a shell; write env VAR=value COMMAND",
    });
    expect(splitCommand("cmd \\")).toEqual({ error: "the command ends with a lone backslash" });
    expect(splitCommand('cmd "open')).toEqual({ error: "unterminated double quote" });
  });

  it("didYouMean: within two edits, unique", () => {
    expect(didYouMean("bord", ["board", "boot"])).toBe("board");
    expect(didYouMean("SSH_KEYS", ["ssh_keys"])).toBe("ssh_keys");
    expect(didYouMean("xyzzy", ["board"])).toBeUndefined();
    expect(didYouMean("rpi", ["rpi2", "rpi3"])).toBeUndefined();
  });
});
