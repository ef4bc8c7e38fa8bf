// The fragments provision generates from a host's inventory fields (src/fleet/generate.ts):
// hosts built by hand (a full FCOS host, a Flatcar host, an rpi3 host, a pxe host); every
// fragment, wrapped in an Ignition 3.3.0 (and 3.0.0) config, goes through the real
// ignition-validate; the data URLs are decoded and the files compared byte for byte; the
// NetworkManager keyfiles are also read back with GLib's own GKeyFile parser (the one
// NetworkManager uses; through python3's ctypes, nothing installed) and checked against the
// keys NetworkManager expects. The Wi-Fi passphrase must appear in the Wi-Fi keyfile only.
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EXIT, UsageError } from "../../src/errors.js";
import { hasProgram } from "../../src/exec/index.js";
import { generatedFragments } from "../../src/fleet/generate.js";
import { keyfileSsid, keyfileString } from "../../src/fleet/keyfile.js";
import type { Host, Pos } from "../../src/fleet/types.js";
import { mergeFragments, parseIgnitionText } from "../../src/ignition/index.js";
import { secretsFragment } from "../../src/ipxe/fragment.js";
import { repairUnitFragment } from "../../src/mbr/repair-unit.js";

const INV = "/srv/fleet/provision.yaml";
const pos = (line: number, col = 5): Pos => ({ file: INV, line, col });
const KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtestA a@example";
const KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtestB b@example";
const PSK = "correct horse battery staple";
const HASH = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7";

function host(over: Partial<Host> = {}): Host {
  return {
    name: "node1",
    at: pos(10, 3),
    os: "fcos",
    board: "generic",
    macs: [],
    kargs: [],
    sshKeys: [],
    ignition: [],
    vars: {},
    secrets: {},
    boot: "disk",
    users: [],
    network: [],
    fieldAt: {},
    ...over,
  };
}

/** Every field set, FCOS, Wi-Fi. */
const fcosHost = (): Host =>
  host({
    name: "node1",
    stream: "stable",
    arch: "aarch64",
    board: "rpi4",
    sshKeys: [KEY_A, KEY_B],
    timezone: "Europe/Berlin",
    users: [
      {
        name: "admin",
        groups: ["wheel", "sudo"],
        sshKeys: [KEY_B],
        passwordHash: HASH,
        at: pos(20),
      },
      { name: "ops", groups: [], sshKeys: [], at: pos(25) },
    ],
    network: [
      {
        interface: "enp1s0",
        ipv4: {
          address: "192.168.1.10/24",
          gateway: "192.168.1.1",
          dns: ["192.168.1.53", "1.1.1.1"],
        },
        ipv6: { address: "2001:db8::10/64", gateway: "2001:db8::1", dns: ["2001:db8::53"] },
        at: pos(30),
      },
      { ipv4: "dhcp", ipv6: "auto", at: pos(40) },
    ],
    wifi: { ssid: "Home Net", country: "de", pskSecret: "wifi_psk", at: pos(50) },
    secrets: { wifi_psk: { kind: "env", name: "HOME_WIFI_PSK", at: pos(60) } },
    fieldAt: { timezone: pos(15, 15) },
  });

const flatcarHost = (): Host =>
  host({
    name: "flat1",
    os: "flatcar",
    channel: "stable",
    arch: "x86_64",
    sshKeys: [KEY_A],
    timezone: "UTC",
    users: [{ name: "deploy", groups: ["docker"], sshKeys: [KEY_A], at: pos(70) }],
    network: [
      {
        interface: "eth0",
        ipv4: { address: "10.0.0.5/24", gateway: "10.0.0.1", dns: ["10.0.0.53"] },
        ipv6: "auto",
        at: pos(80),
      },
      { ipv4: "dhcp", ipv6: "auto", at: pos(85) },
    ],
  });

const rpi3Host = (): Host => host({ name: "pi3", board: "rpi3", arch: "aarch64" });
const pxeHost = (): Host => host({ name: "netboot1", boot: "pxe", macs: ["52:54:00:ab:cd:ef"] });

/** A secretValue that records what was asked for. */
function secrets(values: Record<string, string> = { wifi_psk: PSK }) {
  const asked: string[] = [];
  const fn = async (name: string) => {
    asked.push(name);
    const v = values[name];
    if (v === undefined) throw new Error(`test: no secret ${name}`);
    return v;
  };
  return { fn, asked };
}

interface File {
  path: string;
  mode: number;
  overwrite: boolean;
  contents: { source: string };
}
interface Frag {
  ignition?: { version: string };
  storage?: {
    files?: File[];
    links?: { path: string; target: string; hard: boolean; overwrite: boolean }[];
  };
  passwd?: { users: Record<string, unknown>[] };
  systemd?: { units: { name: string }[] };
}

function decode(url: string): string {
  const m = /^data:;base64,(.*)$/s.exec(url);
  if (!m) throw new Error(`not a base64 data URL: ${url.slice(0, 40)}`);
  return Buffer.from(m[1] as string, "base64").toString("utf8");
}

/** path -> [mode, decoded text] of every file in the fragment. */
function files(f: object): Map<string, { mode: number; text: string; overwrite: boolean }> {
  return new Map(
    ((f as Frag).storage?.files ?? []).map((x) => [
      x.path,
      { mode: x.mode, text: decode(x.contents.source), overwrite: x.overwrite },
    ]),
  );
}

const HAS_VALIDATOR = await hasProgram("ignition-validate");
const HAS_PYTHON = await hasProgram("python3");

let work: string;
let n = 0;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-fleet-gen-"));
  await writeFile(join(work, "keyfile.py"), KEYFILE_PY);
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

async function validate(config: object): Promise<{ code: number; out: string }> {
  const f = join(work, `config-${++n}.ign`);
  await writeFile(f, JSON.stringify(config));
  const r = spawnSync("ignition-validate", [f], { encoding: "utf8" });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

/** Each fragment alone, wrapped as the brief says, passes ignition-validate. */
async function expectValid(fragments: object[]): Promise<void> {
  for (const [i, f] of fragments.entries()) {
    for (const version of ["3.3.0", "3.0.0"]) {
      // Ours carry no version (they take the user's); the imported ones keep their 3.3.0.
      const r = await validate({ ignition: { version }, ...f });
      expect(r, `fragment ${i + 1} as ${version}: ${JSON.stringify(f).slice(0, 200)}`).toEqual({
        code: 0,
        out: "",
      });
    }
  }
  // And all of them merged into a user's config, as build does.
  const user = await parseIgnitionText(
    JSON.stringify({ ignition: { version: "3.3.0" } }),
    "user.ign",
  );
  const merged = mergeFragments(user, fragments);
  expect(await validate(merged.json)).toEqual({ code: 0, out: "" });
}

/**
 * GLib's GKeyFile (what NetworkManager's keyfile plugin reads with), through ctypes: prints
 * {group: {key: g_key_file_get_string(...)}} as JSON, or fails on a syntax error.
 */
const KEYFILE_PY = `import ctypes, json, sys
g = ctypes.CDLL("libglib-2.0.so.0")
P, S = ctypes.c_void_p, ctypes.c_char_p
g.g_key_file_new.restype = P
g.g_key_file_load_from_data.argtypes = [P, S, ctypes.c_ssize_t, ctypes.c_int, P]
g.g_key_file_get_groups.restype = ctypes.POINTER(S)
g.g_key_file_get_groups.argtypes = [P, P]
g.g_key_file_get_keys.restype = ctypes.POINTER(S)
g.g_key_file_get_keys.argtypes = [P, S, P, P]
g.g_key_file_get_string.restype = S
g.g_key_file_get_string.argtypes = [P, S, S, P]
data = sys.stdin.buffer.read()
kf = g.g_key_file_new()
if not g.g_key_file_load_from_data(kf, data, len(data), 0, None):
    sys.exit("not a valid key file")
out = {}
groups = g.g_key_file_get_groups(kf, None)
i = 0
while groups[i]:
    grp = groups[i]
    out[grp.decode()] = {}
    keys = g.g_key_file_get_keys(kf, grp, None, None)
    j = 0
    while keys[j]:
        v = g.g_key_file_get_string(kf, grp, keys[j], None)
        if v is None:
            sys.exit("bad value for " + keys[j].decode())
        out[grp.decode()][keys[j].decode()] = v.decode()
        j += 1
    i += 1
print(json.dumps(out))
`;

let glibChecked: boolean | undefined;
/** GLib's reading of a keyfile, or undefined when python3 or libglib is not there. */
function glibRead(text: string): Record<string, Record<string, string>> | undefined {
  if (!HAS_PYTHON || glibChecked === false) return undefined;
  const r = spawnSync("python3", [join(work, "keyfile.py")], { input: text, encoding: "utf8" });
  if (glibChecked === undefined && /libglib|OSError/.test(r.stderr)) {
    glibChecked = false;
    return undefined;
  }
  glibChecked = true;
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

/** The keys NetworkManager has in these settings (nm-settings-keyfile(5), nm-settings-nmcli(5)). */
const NM_KEYS: Record<string, string[]> = {
  connection: ["id", "type", "interface-name"],
  ipv4: ["method", "address1", "dns", "may-fail"],
  ipv6: ["method", "address1", "dns", "may-fail"],
  wifi: ["mode", "ssid"],
  "wifi-security": ["auth-alg", "key-mgmt", "psk"],
};

/** A strict INI reading (sections, key=value, empty lines between), checked against NM's keys. */
function parseKeyfile(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  let cur: Record<string, string> | undefined;
  for (const line of text.split("\n").slice(0, -1)) {
    if (line === "") continue;
    const sec = /^\[([a-z0-9-]+)\]$/.exec(line);
    if (sec) {
      const name = sec[1] as string;
      expect(out[name], `section ${name} twice`).toBeUndefined();
      cur = out[name] = {};
      continue;
    }
    const kv = /^([a-z0-9-]+)=(.*)$/.exec(line);
    expect(kv, `not key=value: ${line}`).not.toBeNull();
    expect(cur, `key before any section: ${line}`).toBeDefined();
    const [, k, v] = kv as RegExpExecArray;
    expect((cur as Record<string, string>)[k as string], `key ${k} twice`).toBeUndefined();
    (cur as Record<string, string>)[k as string] = (v as string).replace(
      /\\(.)/g,
      (_, c: string) => ({ s: " ", n: "\n", t: "\t", r: "\r" })[c] ?? c,
    );
  }
  expect(text.endsWith("\n")).toBe(true);
  for (const [section, keys] of Object.entries(out)) {
    expect(Object.keys(NM_KEYS), `section [${section}]`).toContain(section);
    for (const k of Object.keys(keys)) expect(NM_KEYS[section], `[${section}] ${k}`).toContain(k);
  }
  expect(out.connection?.id).toBeTruthy();
  expect(["ethernet", "wifi"]).toContain(out.connection?.type);
  for (const fam of ["ipv4", "ipv6"]) {
    const s = out[fam];
    if (!s) continue;
    expect(["auto", "manual"]).toContain(s.method);
    if (s.method === "manual") expect(s.address1).toMatch(/^[0-9a-f.:]+\/\d+(,[0-9a-f.:]+)?$/);
    if (s.dns !== undefined) expect(s.dns).toMatch(/^([0-9a-f.:]+;)+$/);
  }
  const glib = glibRead(text);
  if (glib) expect(glib).toEqual(out);
  return out;
}

async function usageError(p: Promise<unknown>): Promise<UsageError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UsageError);
  expect((err as UsageError).exitCode).toBe(EXIT.USAGE);
  return err as UsageError;
}

const ENP1S0 = `[connection]
id=enp1s0
type=ethernet
interface-name=enp1s0

[ipv4]
address1=192.168.1.10/24,192.168.1.1
dns=192.168.1.53;1.1.1.1;
may-fail=false
method=manual

[ipv6]
address1=2001:db8::10/64,2001:db8::1
dns=2001:db8::53;
method=manual
`;

const ANY_ETHERNET = `[connection]
id=ethernet
type=ethernet

[ipv4]
method=auto

[ipv6]
method=auto
`;

const WIFI = `[connection]
id=wifi
type=wifi

[wifi]
mode=infrastructure
ssid=Home Net

[wifi-security]
auth-alg=open
key-mgmt=wpa-psk
psk=${PSK}

[ipv4]
method=auto

[ipv6]
method=auto
`;

const REGDOM = `# Wi-Fi regulatory domain (ISO 3166-1 alpha-2), from the provision inventory
options cfg80211 ieee80211_regdom=DE
`;

describe("a full FCOS host", () => {
  it("gives hostname, ssh_keys, timezone, users, network and wifi, in that order", async () => {
    const s = secrets();
    const frags = (await generatedFragments(fcosHost(), s.fn)) as Frag[];
    expect(frags).toHaveLength(6);
    expect(s.asked).toEqual(["wifi_psk"]);
    for (const f of frags) expect(f.ignition).toBeUndefined();

    const [hostname, ssh, tz, users, network, wifi] = frags as [Frag, Frag, Frag, Frag, Frag, Frag];
    expect(files(hostname)).toEqual(
      new Map([["/etc/hostname", { mode: 0o644, text: "node1\n", overwrite: true }]]),
    );
    expect(ssh).toEqual({
      passwd: { users: [{ name: "core", sshAuthorizedKeys: [KEY_A, KEY_B] }] },
    });
    expect(tz).toEqual({
      storage: {
        links: [
          {
            path: "/etc/localtime",
            target: "../usr/share/zoneinfo/Europe/Berlin",
            hard: false,
            overwrite: true,
          },
        ],
      },
    });
    expect(users).toEqual({
      passwd: {
        users: [
          {
            name: "admin",
            groups: ["wheel", "sudo"],
            sshAuthorizedKeys: [KEY_B],
            passwordHash: HASH,
          },
          { name: "ops" },
        ],
      },
    });
    expect(files(network)).toEqual(
      new Map([
        [
          "/etc/NetworkManager/system-connections/enp1s0.nmconnection",
          { mode: 0o600, text: ENP1S0, overwrite: true },
        ],
        [
          "/etc/NetworkManager/system-connections/ethernet.nmconnection",
          { mode: 0o600, text: ANY_ETHERNET, overwrite: true },
        ],
      ]),
    );
    expect(files(wifi)).toEqual(
      new Map([
        [
          "/etc/NetworkManager/system-connections/wifi.nmconnection",
          { mode: 0o600, text: WIFI, overwrite: true },
        ],
        ["/etc/modprobe.d/cfg80211_regdomain.conf", { mode: 0o644, text: REGDOM, overwrite: true }],
      ]),
    );
  });

  it("every fragment passes ignition-validate (alone as 3.3.0 and 3.0.0, and merged)", async (ctx) => {
    if (!HAS_VALIDATOR) ctx.skip();
    await expectValid(await generatedFragments(fcosHost(), secrets().fn));
  });

  it("the keyfiles read as NetworkManager reads them (GKeyFile), with NetworkManager's keys", async () => {
    const frags = await generatedFragments(fcosHost(), secrets().fn);
    const all = new Map([...files(frags[4] as object), ...files(frags[5] as object)]);
    const enp = parseKeyfile(
      all.get("/etc/NetworkManager/system-connections/enp1s0.nmconnection")?.text ?? "",
    );
    expect(enp).toEqual({
      connection: { id: "enp1s0", type: "ethernet", "interface-name": "enp1s0" },
      ipv4: {
        address1: "192.168.1.10/24,192.168.1.1",
        dns: "192.168.1.53;1.1.1.1;",
        "may-fail": "false",
        method: "manual",
      },
      ipv6: { address1: "2001:db8::10/64,2001:db8::1", dns: "2001:db8::53;", method: "manual" },
    });
    const any = parseKeyfile(
      all.get("/etc/NetworkManager/system-connections/ethernet.nmconnection")?.text ?? "",
    );
    expect(any.connection).toEqual({ id: "ethernet", type: "ethernet" });
    const wifi = parseKeyfile(
      all.get("/etc/NetworkManager/system-connections/wifi.nmconnection")?.text ?? "",
    );
    expect(wifi.wifi).toEqual({ mode: "infrastructure", ssid: "Home Net" });
    expect(wifi["wifi-security"]).toEqual({ "auth-alg": "open", "key-mgmt": "wpa-psk", psk: PSK });
  });

  it("the passphrase is only inside the Wi-Fi keyfile's data URL", async () => {
    const frags = await generatedFragments(fcosHost(), secrets().fn);
    const json = JSON.stringify(frags);
    expect(json).not.toContain(PSK);
    expect(json).not.toContain("correct horse");
    const holders: string[] = [];
    for (const f of frags)
      for (const [path, { text }] of files(f)) if (text.includes(PSK)) holders.push(path);
    expect(holders).toEqual(["/etc/NetworkManager/system-connections/wifi.nmconnection"]);
  });

  it("a passphrase with a backslash and spaces at its ends, and an SSID with ';', read back exactly", async () => {
    const psk = " back\\slash; #x ";
    const h = fcosHost();
    h.wifi = { ssid: "caf\u00e9;net", country: "US", pskSecret: "wifi_psk", at: pos(50) };
    const frags = await generatedFragments(h, secrets({ wifi_psk: psk }).fn);
    const text =
      files(frags[5] as object).get("/etc/NetworkManager/system-connections/wifi.nmconnection")
        ?.text ?? "";
    expect(text).toContain("psk=\\sback\\\\slash; #x\\s\n");
    // Not printable ASCII: the byte list form (UTF-8 bytes, each followed by ";").
    expect(text).toContain("ssid=99;97;102;195;169;59;110;101;116;\n");
    const kf = parseKeyfile(text);
    expect(kf["wifi-security"]?.psk).toBe(psk);
    expect(JSON.stringify(frags)).not.toContain(psk.trim());
    expect(
      files(frags[5] as object).get("/etc/modprobe.d/cfg80211_regdomain.conf")?.text,
    ).toContain("ieee80211_regdom=US\n");
  });
});

describe("a Flatcar host", () => {
  const ETH0 = `[Match]
Name=eth0

[Network]
DHCP=no
IPv6AcceptRA=yes
Address=10.0.0.5/24
Gateway=10.0.0.1
DNS=10.0.0.53
`;
  const ANY = `[Match]
Type=ether
Driver=!veth

[Network]
DHCP=ipv4
IPv6AcceptRA=yes
`;

  it("gets networkd .network files (0644) instead of keyfiles", async () => {
    const s = secrets();
    const frags = (await generatedFragments(flatcarHost(), s.fn)) as Frag[];
    expect(frags).toHaveLength(5);
    expect(s.asked).toEqual([]);
    expect(files(frags[0] as object).get("/etc/hostname")?.text).toBe("flat1\n");
    expect(frags[1]).toEqual({ passwd: { users: [{ name: "core", sshAuthorizedKeys: [KEY_A] }] } });
    expect(frags[2]?.storage?.links?.[0]?.target).toBe("../usr/share/zoneinfo/UTC");
    expect(frags[3]).toEqual({
      passwd: { users: [{ name: "deploy", groups: ["docker"], sshAuthorizedKeys: [KEY_A] }] },
    });
    expect(files(frags[4] as object)).toEqual(
      new Map([
        ["/etc/systemd/network/10-eth0.network", { mode: 0o644, text: ETH0, overwrite: true }],
        ["/etc/systemd/network/20-ethernet.network", { mode: 0o644, text: ANY, overwrite: true }],
      ]),
    );
  });

  it("a static IPv6 address: no router advertisements, the address and gateway of both families", async () => {
    const h = flatcarHost();
    h.network = [
      {
        interface: "end0",
        ipv4: "dhcp",
        ipv6: { address: "2001:db8::5/64", gateway: "2001:db8::1", dns: ["2001:db8::53"] },
        at: pos(80),
      },
    ];
    const frags = await generatedFragments(h, secrets().fn);
    expect(files(frags[4] as object).get("/etc/systemd/network/10-end0.network")?.text).toBe(
      "[Match]\nName=end0\n\n[Network]\nDHCP=ipv4\nIPv6AcceptRA=no\nAddress=2001:db8::5/64\nGateway=2001:db8::1\nDNS=2001:db8::53\n",
    );
  });

  it("every fragment passes ignition-validate", async (ctx) => {
    if (!HAS_VALIDATOR) ctx.skip();
    await expectValid(await generatedFragments(flatcarHost(), secrets().fn));
  });

  it("wifi is an error at the wifi entry, before any secret is read", async () => {
    const h = flatcarHost();
    h.wifi = { ssid: "x", country: "DE", pskSecret: "wifi_psk", at: pos(90, 7) };
    h.secrets = { wifi_psk: { kind: "env", name: "P", at: pos(91) } };
    const s = secrets();
    const err = await usageError(generatedFragments(h, s.fn));
    expect(err.message).toBe(`${INV}:90:7: wifi is supported for fcos only`);
    expect(s.asked).toEqual([]);
  });

  it("a static address without an interface is an error (networkd would put it on every NIC)", async () => {
    const h = flatcarHost();
    h.network = [{ ipv4: { address: "10.0.0.5/24", dns: [] }, ipv6: "auto", at: pos(88, 9) }];
    const err = await usageError(generatedFragments(h, secrets().fn));
    expect(err.message).toMatch(new RegExp(`^${INV}:88:9: a static address needs an interface`));
    expect(err.hint).toContain("interface: eth0");
  });
});

describe("board and boot", () => {
  it("rpi3: hostname, then the hybrid-MBR repair unit as src/mbr builds it", async () => {
    const frags = await generatedFragments(rpi3Host(), secrets().fn);
    expect(frags).toHaveLength(2);
    expect(files(frags[0] as object).get("/etc/hostname")?.text).toBe("pi3\n");
    expect(frags[1]).toEqual(repairUnitFragment());
    const rpi2 = await generatedFragments(host({ board: "rpi2" }), secrets().fn);
    expect(rpi2[1]).toEqual(repairUnitFragment());
    expect(await generatedFragments(host({ board: "rpi4" }), secrets().fn)).toHaveLength(1);
  });

  it("pxe: the secrets volume mount last", async () => {
    const frags = await generatedFragments(pxeHost(), secrets().fn);
    expect(frags).toHaveLength(2);
    expect(frags[1]).toEqual(secretsFragment());
    const both = await generatedFragments(host({ board: "rpi3", boot: "pxe" }), secrets().fn);
    expect(both.slice(1)).toEqual([repairUnitFragment(), secretsFragment()]);
  });

  it("the rpi3 and pxe fragments pass ignition-validate", async (ctx) => {
    if (!HAS_VALIDATOR) ctx.skip();
    await expectValid(await generatedFragments(host({ board: "rpi3", boot: "pxe" }), secrets().fn));
  });

  it("a minimal host gets only its hostname", async () => {
    expect(await generatedFragments(host(), secrets().fn)).toHaveLength(1);
  });
});

describe("errors name the inventory place", () => {
  const expectAt = async (h: Host, at: string, what: RegExp) => {
    const err = await usageError(generatedFragments(h, secrets().fn));
    expect(err.message.startsWith(`${INV}:${at}: `), err.message).toBe(true);
    expect(err.message).toMatch(what);
    return err;
  };

  it("timezone (at its field), hostname, users", async () => {
    await expectAt(
      host({ timezone: "../../etc/shadow", fieldAt: { timezone: pos(15, 15) } }),
      "15:15",
      /timezone/,
    );
    await expectAt(host({ name: "bad name" }), "10:3", /not a hostname/);
    const user = { name: "a", groups: [], sshKeys: [], at: pos(20) };
    await expectAt(host({ users: [user, { ...user, at: pos(22) }] }), "22:5", /listed twice.*20:5/);
    const err = await expectAt(
      host({ users: [{ ...user, passwordHash: "hunter2hunter2" }] }),
      "20:5",
      /not a crypt\(3\) hash/,
    );
    expect(err.message).not.toContain("hunter2");
  });

  it("network: interface names, addresses of the wrong family, the same interface twice", async () => {
    const net = (over: object, line = 30) => ({
      ipv4: "dhcp" as const,
      ipv6: "auto" as const,
      at: pos(line),
      ...over,
    });
    await expectAt(
      host({ network: [net({ interface: "../etc" })] }),
      "30:5",
      /not an interface name/,
    );
    await expectAt(
      host({ network: [net({ ipv4: { address: "2001:db8::1/64", dns: [] } })] }),
      "30:5",
      /ipv4 address "2001:db8::1\/64" is not an IPv4 address/,
    );
    await expectAt(
      host({ network: [net({ ipv4: { address: "10.0.0.1", dns: [] } })] }),
      "30:5",
      /with a prefix length/,
    );
    await expectAt(
      host({ network: [net({ ipv6: { address: "2001:db8::1/64", dns: ["10.0.0.53"] } })] }),
      "30:5",
      /ipv6 dns "10.0.0.53"/,
    );
    await expectAt(
      host({ network: [net({ interface: "eth0" }), net({ interface: "eth0" }, 35)] }),
      "35:5",
      /eth0 is configured twice.*30:5/,
    );
    await expectAt(host({ network: [net({}), net({}, 36)] }), "36:5", /only one network entry/);
  });

  it("wifi: a secret not in the host's secrets, a bad passphrase (not shown), a bad country", async () => {
    const h = fcosHost();
    h.wifi = { ssid: "x", country: "DE", pskSecret: "nope", at: pos(50, 9) };
    await expectAt(h, "50:9", /secret nope is not in the secrets of host node1/);
    const short = await usageError(
      generatedFragments(fcosHost(), secrets({ wifi_psk: "short1" }).fn),
    );
    expect(short.message).toMatch(
      new RegExp(`^${INV}:50:5: secret wifi_psk is not a WPA passphrase`),
    );
    expect(short.message).not.toContain("short1");
    const h2 = fcosHost();
    (h2.wifi as { country: string }).country = "Germany";
    await expectAt(h2, "50:5", /not a two-letter ISO 3166 country code/);
  });
});

describe("keyfile values", () => {
  it("strings escape backslashes and end spaces; SSIDs fall back to bytes", () => {
    expect(keyfileString("plain")).toBe("plain");
    expect(keyfileString(" a\\b ")).toBe("\\sa\\\\b\\s");
    expect(keyfileSsid("Home Net")).toBe("Home Net");
    expect(keyfileSsid("a;b")).toBe("97;59;98;");
    expect(keyfileSsid(" lead")).toBe("32;108;101;97;100;");
    expect(keyfileSsid("back\\slash")).toMatch(/^(\d+;)+$/);
  });
});
