/**
 * The fleet inventory's model: what `provision.yaml` describes once per machine, after the
 * defaults were applied. Every field remembers where it was written (`at`), so every later
 * error (a fragment that does not build, an unknown template variable, a secret source that
 * fails) can name `file:line:col`.
 */

/** A place in a file: 1-based line and column. */
export interface Pos {
  file: string;
  line: number;
  col: number;
}

export type Board = "generic" | "rpi2" | "rpi3" | "rpi4";
export type BootMode = "disk" | "pxe";

/** Where a secret value comes from; the inventory never holds the value itself. */
export type SecretSource =
  | { kind: "env"; name: string; at: Pos }
  | { kind: "file"; path: string; at: Pos } // absolute (relative to the inventory's dir)
  | { kind: "cmd"; argv: string[]; at: Pos }; // run without a shell

/** An Ignition (.ign) or Butane (.bu) fragment named by the inventory. */
export interface FragmentRef {
  /** Absolute path (relative paths are resolved against the inventory's directory). */
  path: string;
  /** Where the inventory names it. */
  at: Pos;
  /** Which list it came from: the defaults' or the host's own. */
  from: "defaults" | "host";
}

export interface UserSpec {
  name: string;
  groups: string[];
  sshKeys: string[];
  /** A crypt(3) hash (e.g. from `mkpasswd -m yescrypt`), never a plain password. */
  passwordHash?: string;
  at: Pos;
}

/** One address with prefix, "192.168.1.10/24" or "2001:db8::10/64". */
export interface StaticIp {
  address: string;
  gateway?: string;
  dns: string[];
}

export interface NetworkSpec {
  /** Interface name (e.g. "eth0", "end0"); undefined = the first ethernet interface. */
  interface?: string;
  /** IPv4: DHCP, or a static address (omitted = dhcp). */
  ipv4: "dhcp" | StaticIp;
  /** IPv6: auto (SLAAC/DHCPv6), or static (omitted = auto). */
  ipv6: "auto" | StaticIp;
  at: Pos;
}

export interface WifiSpec {
  ssid: string;
  /** ISO 3166 two-letter regulatory country, e.g. "DE". */
  country: string;
  /** Name of a secret (in the host's `secrets`) that holds the passphrase. */
  pskSecret: string;
  at: Pos;
}

export interface Host {
  name: string;
  /** Where the host's entry starts (its key under `hosts:`). */
  at: Pos;
  os: "fcos" | "flatcar";
  stream?: string;
  channel?: string;
  release?: string;
  arch?: "x86_64" | "aarch64";
  board: Board;
  firmware?: string; // absolute path
  disk?: string;
  /** Lower case, colon separated: "52:54:00:ab:cd:ef". */
  macs: string[];
  uuid?: string;
  kargs: string[];
  sshKeys: string[];
  /** Defaults' fragments first, then the host's own. */
  ignition: FragmentRef[];
  /** Free-form values for `{{ host.vars.KEY }}`. */
  vars: Record<string, unknown>;
  secrets: Record<string, SecretSource>;
  boot: BootMode;
  timezone?: string;
  users: UserSpec[];
  network: NetworkSpec[];
  wifi?: WifiSpec;
  /** Where each field that was set came from (for errors about its value later). */
  fieldAt: Record<string, Pos>;
}

export interface Inventory {
  /** Absolute path of provision.yaml. */
  file: string;
  /** Its directory: fragment and secret file paths are relative to it. */
  dir: string;
  hosts: Host[];
}
