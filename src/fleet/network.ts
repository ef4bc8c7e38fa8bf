/**
 * The wired network of a host, from its `network` entries: one file per entry, in the form
 * each OS reads.
 *
 * Fedora CoreOS: NetworkManager keyfiles in /etc/NetworkManager/system-connections/, mode
 * 0600, as the FCOS docs publish them ("Host Network Configuration", "via Ignition" and
 * "Configuring a Static IP"; fedora-coreos-docs sysconfig-network-configuration.adoc):
 *
 *   [connection]  id=NAME, type=ethernet, interface-name=IFACE
 *   [ipv4]        address1=ADDR/PREFIX,GATEWAY  dns=A;B;  may-fail=false  method=manual
 *                 (or method=auto for DHCP)
 *   [ipv6]        address1=…, dns=…; method=manual (or method=auto: SLAAC / DHCPv6)
 *
 * An entry without an interface leaves out interface-name: "if not set, then the connection
 * can be attached to any interface of the appropriate type" (NMSettingConnection:
 * interface-name), and with the default multi-connect ("single": "the connection profile can
 * only be active once at each moment") NetworkManager activates it on one ethernet device,
 * the first that can take it.
 *
 * Flatcar: systemd-networkd .network files in /etc/systemd/network/ (Flatcar docs "Network
 * configuration with networkd": `00-eth0.network` with [Match] Name= and [Network] Address=,
 * Gateway=, DNS=), mode 0644. They sort before Flatcar's own catch-all `zz-default.network`,
 * and the first file that matches a link is the one networkd uses (systemd.network(5)). An
 * entry without an interface matches `Type=ether` and, as zz-default.network does
 * (flatcar/init), `Driver=!veth` so container veths still reach their own files
 * (docker.network, cni.network…). networkd has no "only the first": such a file applies to
 * every ethernet interface, which is harmless for DHCP but not for a static address, so a
 * static address without an interface is an error on Flatcar.
 *
 * DNS servers come with a static address only (StaticIp.dns). A manual method has no
 * automatic DNS to ignore, so no ignore-auto-dns: servers the other family learns
 * automatically are kept, as NetworkManager and networkd do by default.
 */
import { isIP } from "node:net";
import { UsageError } from "../errors.js";
import { type IgnitionFile, ignitionFile, where } from "./ignition-file.js";
import { type KeyfileGroup, keyfileList, keyfileString, renderKeyfile } from "./keyfile.js";
import type { Host, NetworkSpec, Pos, StaticIp } from "./types.js";

export const NM_CONNECTIONS_DIR = "/etc/NetworkManager/system-connections";
export const NETWORKD_DIR = "/etc/systemd/network";
/** The name of the entry without an interface (its connection id / file name). */
export const ANY_ETHERNET = "ethernet";

/** A Linux interface name (IFNAMSIZ: at most 15 bytes), one that is safe in a file name. */
const IFACE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;

interface Static {
  address: string;
  gateway?: string;
  dns: string[];
}

/** A checked static address of one family: ADDR/PREFIX, its gateway and DNS servers. */
function checkStatic(ip: StaticIp, family: 4 | 6, at: Pos): Static {
  const label = family === 4 ? "ipv4" : "ipv6";
  const example = family === 4 ? "192.168.1.10/24" : "2001:db8::10/64";
  const m = /^([^/]+)\/(\d{1,3})$/.exec(ip.address);
  const max = family === 4 ? 32 : 128;
  if (!m || isIP(m[1] as string) !== family || Number(m[2]) > max)
    throw new UsageError(
      `${where(at)}: ${label} address ${JSON.stringify(ip.address)} is not an IPv${family} address with a prefix length (like ${example})`,
    );
  if (ip.gateway !== undefined && isIP(ip.gateway) !== family)
    throw new UsageError(
      `${where(at)}: ${label} gateway ${JSON.stringify(ip.gateway)} is not an IPv${family} address`,
    );
  for (const d of ip.dns)
    if (isIP(d) !== family)
      throw new UsageError(
        `${where(at)}: ${label} dns ${JSON.stringify(d)} is not an IPv${family} address (a server of the other family goes under the other family's dns)`,
      );
  return { address: ip.address, gateway: ip.gateway, dns: ip.dns };
}

interface Checked {
  spec: NetworkSpec;
  /** Connection id and file name: the interface, or "ethernet". */
  name: string;
  ipv4: "dhcp" | Static;
  ipv6: "auto" | Static;
}

/** Check every entry: interface names, addresses, no interface configured twice. */
function checkNetworks(host: Host): Checked[] {
  const seen = new Map<string, Pos>();
  return host.network.map((spec) => {
    const at = spec.at;
    if (spec.interface !== undefined && !IFACE.test(spec.interface))
      throw new UsageError(
        `${where(at)}: interface ${JSON.stringify(spec.interface)} is not an interface name (up to 15 letters, digits, "_", "." or "-", like eth0 or enp1s0)`,
      );
    const name = spec.interface ?? ANY_ETHERNET;
    const first = seen.get(name);
    if (first)
      throw new UsageError(
        spec.interface === undefined
          ? `${where(at)}: only one network entry can leave out interface (it means the first ethernet interface); the other one is at ${where(first)}`
          : `${where(at)}: interface ${spec.interface} is configured twice; the other entry is at ${where(first)}`,
      );
    seen.set(name, at);
    return {
      spec,
      name,
      ipv4: spec.ipv4 === "dhcp" ? "dhcp" : checkStatic(spec.ipv4, 4, at),
      ipv6: spec.ipv6 === "auto" ? "auto" : checkStatic(spec.ipv6, 6, at),
    };
  });
}

/** The `address1` value: ADDR/PREFIX, with `,GATEWAY` when there is one. */
const address1 = (s: Static) => (s.gateway ? `${s.address},${s.gateway}` : s.address);

/** A NetworkManager keyfile for one entry (FCOS). */
function ethernetKeyfile(c: Checked): string {
  const connection: [string, string][] = [
    ["id", keyfileString(c.name)],
    ["type", "ethernet"],
  ];
  if (c.spec.interface !== undefined) connection.push(["interface-name", c.spec.interface]);
  const ipv4: [string, string][] =
    c.ipv4 === "dhcp"
      ? [["method", "auto"]]
      : [
          ["address1", address1(c.ipv4)],
          ...(c.ipv4.dns.length ? [["dns", keyfileList(c.ipv4.dns)] as [string, string]] : []),
          ["may-fail", "false"],
          ["method", "manual"],
        ];
  const ipv6: [string, string][] =
    c.ipv6 === "auto"
      ? [["method", "auto"]]
      : [
          ["address1", address1(c.ipv6)],
          ...(c.ipv6.dns.length ? [["dns", keyfileList(c.ipv6.dns)] as [string, string]] : []),
          ["method", "manual"],
        ];
  const groups: KeyfileGroup[] = [
    ["connection", connection],
    ["ipv4", ipv4],
    ["ipv6", ipv6],
  ];
  return renderKeyfile(groups);
}

/** A systemd-networkd .network file for one entry (Flatcar). */
function networkdFile(c: Checked): string {
  const match =
    c.spec.interface !== undefined ? [`Name=${c.spec.interface}`] : ["Type=ether", "Driver=!veth"];
  const net = [
    `DHCP=${c.ipv4 === "dhcp" ? "ipv4" : "no"}`,
    `IPv6AcceptRA=${c.ipv6 === "auto" ? "yes" : "no"}`,
  ];
  for (const s of [c.ipv4, c.ipv6]) {
    if (typeof s === "string") continue;
    net.push(`Address=${s.address}`);
    if (s.gateway) net.push(`Gateway=${s.gateway}`);
  }
  for (const s of [c.ipv4, c.ipv6])
    if (typeof s !== "string") for (const d of s.dns) net.push(`DNS=${d}`);
  return `[Match]\n${match.join("\n")}\n\n[Network]\n${net.join("\n")}\n`;
}

/** The path of an entry's file on the host. */
function networkPath(host: Host, c: { name: string; spec: NetworkSpec }): string {
  if (host.os === "flatcar")
    return `${NETWORKD_DIR}/${c.spec.interface !== undefined ? "10" : "20"}-${c.name}.network`;
  return `${NM_CONNECTIONS_DIR}/${c.name}.nmconnection`;
}

/** The fragment with every network entry's file, or undefined when there are none. */
export function networkFragment(host: Host): object | undefined {
  if (host.network.length === 0) return undefined;
  const files: IgnitionFile[] = checkNetworks(host).map((c) => {
    if (host.os === "flatcar") {
      const s = [c.ipv4, c.ipv6].find((x) => typeof x !== "string");
      if (c.spec.interface === undefined && s)
        throw new UsageError(
          `${where(c.spec.at)}: a static address needs an interface on Flatcar: systemd-networkd would put ${s.address} on every ethernet interface`,
          "name it, e.g. interface: eth0 (`networkctl list` on the machine shows the names)",
        );
      return ignitionFile(networkPath(host, c), 0o644, networkdFile(c));
    }
    return ignitionFile(networkPath(host, c), 0o600, ethernetKeyfile(c));
  });
  return { storage: { files } };
}
