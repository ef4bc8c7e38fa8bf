// `provision fleet` through the real CLI on a copy of examples/fleet: list, check, show,
// build, diff; the seed case (an edit to a file only `common` merges in reaches every host's
// config, named as the reason); secret values never in any output.
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../helpers/fixtures.js";
import { decodedDeep } from "../helpers/ignition.js";

let work: string;
let fleet: string;
const TOKEN = "k3s-token-3f9a1c-never-printed";
const LOGKEY = "example-logexport-key-not-real";
const outputs: string[] = [];

async function cli(args: string[], env: Record<string, string> = {}) {
  const r = await execa("node", [join(repoRoot, "bin", "provision.js"), ...args], {
    reject: false,
    stdin: "ignore",
    cwd: fleet,
    env: { CI: "1", XDG_CACHE_HOME: join(work, "cache"), K3S_TOKEN: TOKEN, ...env },
  });
  const res = { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
  outputs.push(res.stdout, res.stderr);
  return res;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-fleet-"));
  fleet = join(work, "fleet");
  await cp(join(repoRoot, "examples", "fleet"), fleet, { recursive: true });
});
afterAll(async () => {
  // No command printed a secret value, whatever it did.
  for (const o of outputs) {
    expect(o).not.toContain(TOKEN);
    expect(o).not.toContain(LOGKEY);
  }
  await rm(work, { recursive: true, force: true });
});

/** The data: URLs of a built config's merge children, decoded. */
function children(text: string): string[] {
  const j = JSON.parse(text) as { ignition: { config: { merge: { source: string }[] } } };
  return j.ignition.config.merge.map((m) =>
    Buffer.from(m.source.replace(/^data:;base64,/, ""), "base64").toString("utf8"),
  );
}

describe("provision fleet", () => {
  it("list: every host with board, boot mode, MACs and a fingerprint", async () => {
    const r = await cli(["fleet", "list"]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^HOST\s+OS\/ARCH\s+BOARD\s+BOOT\s+MACS\s+FINGERPRINT$/);
    expect(lines.find((l) => l.startsWith("pi-dns"))).toMatch(
      /^pi-dns\s+fcos\/aarch64\s+rpi3\s+disk\s+b8:27:eb:12:34:56\s+[0-9a-f]{12}$/,
    );
    expect(lines.find((l) => l.startsWith("worker-1"))).toMatch(/\s+pxe\s+52:54:00:aa:bb:01\s/);
    const j = JSON.parse((await cli(["fleet", "list", "--json"])).stdout);
    expect(j.hosts.map((h: { name: string }) => h.name)).toEqual(["pi-dns", "worker-1", "nas"]);
    for (const h of j.hosts) expect(h.fingerprint).toMatch(/^[0-9a-f]{64}$/);
  });

  it("check: builds and validates all, reads every secret source; a missing one is named with file:line:col", async () => {
    const ok = await cli(["fleet", "check"]);
    expect(ok.code).toBe(0);
    expect(ok.stderr).toMatch(/✔ worker-1: config builds and validates .*2 secret\(s\) readable/);
    const bad = await cli(["fleet", "check"], { K3S_TOKEN: "" });
    // An empty value is as bad as a missing one.
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(
      /✖ worker-1: .*provision\.yaml:\d+:\d+: secret K3S_TOKEN \(env:K3S_TOKEN\): the value is empty/,
    );
  });

  it("show: the built config, host variables put in, generated parts first and the user's last", async () => {
    const r = await cli(["fleet", "show", "pi-dns"]);
    expect(r.code).toBe(0);
    const kids = children(r.stdout);
    const last = kids.at(-1) as string;
    expect(last).toContain("server%3D9.9.9.9%0A"); // {{ host.vars.upstream }}
    const common = kids.at(-2) as string;
    expect(common).toContain("data:,lab%0A"); // {{ host.vars.site }} from defaults
    expect(kids.join("\n")).toContain("provision-hybrid-mbr"); // rpi3: the repair unit
    // The whole thing passes Ignition's own validator.
    const f = join(work, "pi-dns.ign");
    await writeFile(f, r.stdout);
    const v = await execa("ignition-validate", [f], { reject: false });
    expect(v.exitCode, String(v.stderr)).toBe(0);
  });

  it("show --flatten: one plain config, what the machine applies, valid for Ignition", async () => {
    const r = await cli(["fleet", "show", "pi-dns", "--flatten"]);
    expect(r.code, r.stderr).toBe(0);
    const flat = JSON.parse(r.stdout);
    expect(flat.ignition).toEqual({ version: "3.3.0" });
    const paths = flat.storage.files.map((f: { path: string }) => f.path).sort();
    expect(paths).toEqual([
      "/etc/dnsmasq.d/upstream.conf",
      "/etc/hostname",
      "/etc/provision/site",
      "/etc/ssh/sshd_config.d/40-provision.conf",
      "/etc/zincati/config.d/55-updates-strategy.toml",
      "/usr/local/sbin/provision-hybrid-mbr",
    ]);
    expect(flat.storage.links).toEqual([
      expect.objectContaining({
        path: "/etc/localtime",
        target: "../usr/share/zoneinfo/Europe/Berlin",
      }),
    ]);
    expect(flat.systemd.units.map((u: { name: string }) => u.name)).toContain(
      "provision-hybrid-mbr.service",
    );
    expect(flat.passwd.users).toEqual([
      expect.objectContaining({
        name: "core",
        sshAuthorizedKeys: [expect.stringMatching(/^ssh-ed25519 /)],
      }),
    ]);
    const f = join(work, "flat.ign");
    await writeFile(f, r.stdout);
    const v = await execa("ignition-validate", [f], { reject: false });
    expect(v.exitCode, String(v.stderr)).toBe(0);
    // A later fragment wins over an earlier one for the same file.
    const host = join(fleet, "hosts", "pi-dns.ign");
    const before = await readFile(host, "utf8");
    const j = JSON.parse(before);
    j.storage.files.push({
      path: "/etc/provision/site",
      mode: 384,
      contents: { source: "data:,override%0A" },
    });
    await writeFile(host, JSON.stringify(j));
    try {
      const o = JSON.parse((await cli(["fleet", "show", "pi-dns", "--flatten"])).stdout);
      const site = o.storage.files.filter(
        (x: { path: string }) => x.path === "/etc/provision/site",
      );
      expect(site).toEqual([
        { path: "/etc/provision/site", mode: 384, contents: { source: "data:,override%0A" } },
      ]);
    } finally {
      await writeFile(host, before);
    }
  });

  it("build, then the seed case: an edit to common.ign rewrites every host and is named; diff sees it", async () => {
    const out = join(work, "published");
    const first = await cli(["fleet", "build", "--out", out]);
    expect(first.code).toBe(0);
    for (const h of ["pi-dns", "worker-1", "nas"])
      expect(first.stderr).toMatch(new RegExp(`✔ ${h}: wrote .*${h}\\.ign \\(new\\)`));
    const old = join(work, "nas-before.ign");
    await cp(join(out, "nas.ign"), old);
    const again = await cli(["fleet", "build", "--out", out]);
    expect(again.stderr).toMatch(/nas: .*nas\.ign is up to date/);
    expect((await cli(["fleet", "diff", "nas", "--against", join(out, "nas.ign")])).code).toBe(0);

    const common = join(fleet, "common.ign");
    await writeFile(
      common,
      (await readFile(common, "utf8")).replace(
        "PermitRootLogin%20no",
        "PermitRootLogin%20prohibit-password",
      ),
    );
    const rebuilt = await cli(["fleet", "build", "--out", out]);
    expect(rebuilt.code).toBe(0);
    for (const h of ["pi-dns", "worker-1", "nas"])
      expect(rebuilt.stderr).toMatch(
        new RegExp(`✔ ${h}: rewrote .*${h}\\.ign \\(changed: common\\.ign\\)`),
      );
    expect(await readFile(join(out, "nas.ign"), "utf8")).not.toBe(await readFile(old, "utf8"));

    const stale = await cli(["fleet", "diff", "nas", "--against", old]);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toMatch(/✖ .*nas-before\.ign is not the current config of nas/);
  });

  it("errors name file:line:col: an unknown host variable, an unknown host, a config holding a secret", async () => {
    const frag = join(fleet, "hosts", "pi-dns.ign");
    const text = await readFile(frag, "utf8");
    await writeFile(frag, text.replace("{{ host.vars.upstream }}", "{{ host.vars.upstrem }}"));
    try {
      const r = await cli(["fleet", "show", "pi-dns"]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(
        /^provision: hosts\/pi-dns\.ign:8:49: host\.vars\.upstrem is not set for host pi-dns \(known: host\.vars\.site, host\.vars\.upstream\)$/m,
      );
    } finally {
      await writeFile(frag, text);
    }
    // A host whose config would hold a secret value (a Wi-Fi passphrase) is not published.
    const inv = join(fleet, "provision.yaml");
    const yaml = await readFile(inv, "utf8");
    await writeFile(
      inv,
      `${yaml}\n  kiosk:\n    secrets:\n      WIFI_PSK: env:WIFI_PSK\n    wifi:\n      ssid: lab\n      country: DE\n      psk: secret:WIFI_PSK\n`,
    );
    try {
      const b = await cli(["fleet", "build", "--out", join(work, "with-kiosk")], {
        WIFI_PSK: TOKEN,
      });
      expect(b.code).toBe(1);
      expect(b.stderr).toMatch(
        /✖ kiosk: its config holds secret values \(WIFI_PSK\); fleet build writes configs to publish/,
      );
      expect(b.stderr).toMatch(/✔ nas: wrote/);
      const s = await cli(["fleet", "show", "kiosk"], { WIFI_PSK: TOKEN });
      expect(s.code).toBe(0);
      expect(decodedDeep(s.stdout)).toContain("psk=<secret WIFI_PSK>");
    } finally {
      await writeFile(inv, yaml);
    }
    const none = await cli(["fleet", "show", "nope"]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/no host nope in .*provision\.yaml/);
  });
});
