/**
 * The fleet inventory, `provision.yaml`: where it is (findInventory) and what it says
 * (loadInventory), checked completely before anything uses it.
 *
 * The file has two top-level keys, `defaults:` (host fields every host gets) and `hosts:`
 * (NAME → host fields). Every problem is one line `file:line:col: path: what`; all problems
 * of a file are collected and thrown as one UsageError (the first on the line, all of them in
 * the hint). Values that may be secret (private keys, passwords, passphrases, secret sources)
 * are never echoed.
 */
import { readFile, stat } from "node:fs/promises";
import { isIP } from "node:net";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  type Scalar,
  visit,
  type YAMLMap,
  type YAMLSeq,
} from "yaml";
import { describeError, UsageError } from "../errors.js";
import { normalizeMac } from "../options.js";
import type {
  Board,
  BootMode,
  FragmentRef,
  Host,
  Inventory,
  NetworkSpec,
  Pos,
  SecretSource,
  StaticIp,
  UserSpec,
  WifiSpec,
} from "./types.js";
import { splitCommand, suggestion } from "./words.js";

export const INVENTORY_NAME = "provision.yaml";

// ---------------------------------------------------------------------------------------------
// Finding the file

/**
 * The inventory to use: `--inventory FILE` (opts.file), else `$PROVISION_INVENTORY`, else
 * `provision.yaml` in cwd or the nearest parent that has one. Returns an absolute path.
 */
export async function findInventory(
  opts: { file?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  const cwd = resolve(opts.cwd ?? process.cwd());
  const env = opts.env ?? process.env;
  if (opts.file !== undefined)
    return existingFile(resolve(cwd, opts.file), `--inventory ${opts.file}`);
  const fromEnv = env.PROVISION_INVENTORY;
  if (fromEnv !== undefined && fromEnv !== "")
    return existingFile(resolve(cwd, fromEnv), `PROVISION_INVENTORY=${fromEnv}`);
  for (let dir = cwd; ; dir = dirname(dir)) {
    const candidate = join(dir, INVENTORY_NAME);
    if ((await statOf(candidate))?.isFile()) return candidate;
    if (dirname(dir) === dir) break;
  }
  throw new UsageError(
    `no ${INVENTORY_NAME} in ${cwd} or its parents`,
    "pass --inventory FILE or set PROVISION_INVENTORY",
  );
}

async function statOf(path: string) {
  try {
    return await stat(path);
  } catch {
    return undefined;
  }
}

async function existingFile(path: string, given: string): Promise<string> {
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw new UsageError(`${given}: no such file`);
    throw new UsageError(`${given}: ${describeError(err)}`);
  }
  if (st.isDirectory())
    throw new UsageError(
      `${given} is a directory`,
      `name the file, e.g. ${join(path, INVENTORY_NAME)}`,
    );
  return path;
}

// ---------------------------------------------------------------------------------------------
// Reading the file

/** How an inventory file is named in messages: relative to cwd if inside it, else absolute. */
export function displayPath(abs: string, cwd = process.cwd()): string {
  const rel = relative(cwd, abs);
  return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel) ? rel : abs;
}

/** `file:line:col`. */
export function formatPos(pos: Pos): string {
  return `${pos.file}:${pos.line}:${pos.col}`;
}

/** At most this many problems are listed in the error's hint. */
const MAX_IN_HINT = 20;

/**
 * Read, parse and check an inventory; the hosts come back with the defaults applied. Every
 * position (Pos.file) names the file as displayPath does.
 */
export async function loadInventory(file: string): Promise<Inventory> {
  const abs = resolve(file);
  const shown = displayPath(abs);
  let bytes: Buffer;
  try {
    bytes = await readFile(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new UsageError(`${shown}: no such file`);
    if (code === "EISDIR") throw new UsageError(`${shown} is a directory, not an inventory`);
    if (code === "EACCES" || code === "EPERM") throw new UsageError(`${shown}: permission denied`);
    throw new UsageError(`${shown}: cannot read: ${describeError(err)}`);
  }
  let src: string;
  try {
    src = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new UsageError(`${shown}: not UTF-8 text; an inventory is a YAML file`);
  }
  const dir = dirname(abs);
  const c = new Checker(src, shown, dir);
  const hosts = await c.run();
  c.throwProblems();
  return { file: abs, dir, hosts };
}

// ---------------------------------------------------------------------------------------------
// The rules

type YNode = Scalar | YAMLMap | YAMLSeq;

interface Problem {
  pos: Pos;
  text: string;
  hint?: string;
}

interface Val<T> {
  v: T;
  at: Pos;
}

type From = "defaults" | "host";

interface UserEntry {
  spec: UserSpec;
  nameAt: Pos;
  from: From;
}

interface NetEntry {
  spec: NetworkSpec;
  from: From;
}

/** The fields one map (`defaults:` or one host) sets, each with the position of its value. */
interface Fields {
  from: From;
  os?: Val<Host["os"]>;
  stream?: Val<string>;
  channel?: Val<string>;
  release?: Val<string>;
  arch?: Val<NonNullable<Host["arch"]>>;
  board?: Val<Board>;
  firmware?: Val<string>;
  disk?: Val<string>;
  macs?: Val<Val<string>[]>;
  uuid?: Val<string>;
  kargs?: Val<string[]>;
  sshKeys?: Val<string[]>;
  ignition?: Val<FragmentRef[]>;
  vars?: Val<Record<string, unknown>>;
  secrets?: Val<Record<string, SecretSource>>;
  boot?: Val<BootMode>;
  timezone?: Val<string>;
  users?: Val<UserEntry[]>;
  network?: Val<NetEntry[]>;
  wifi?: Val<WifiSpec & { pskAt: Pos }>;
}

/** YAML key → Host field. */
const HOST_KEYS = {
  os: "os",
  stream: "stream",
  channel: "channel",
  release: "release",
  arch: "arch",
  board: "board",
  firmware: "firmware",
  disk: "disk",
  macs: "macs",
  uuid: "uuid",
  kargs: "kargs",
  ssh_keys: "sshKeys",
  ignition: "ignition",
  vars: "vars",
  secrets: "secrets",
  boot: "boot",
  timezone: "timezone",
  users: "users",
  network: "network",
  wifi: "wifi",
} as const satisfies Record<string, keyof Fields>;
type HostKey = keyof typeof HOST_KEYS;
const HOST_KEY_NAMES = Object.keys(HOST_KEYS);
const PER_HOST_ONLY = new Set<string>(["macs", "uuid", "disk"]);
const TOP_KEYS = ["defaults", "hosts"];
const USER_KEYS = ["name", "groups", "ssh_keys", "password_hash"];
const NETWORK_KEYS = ["interface", "ipv4", "ipv6"];
const STATIC_KEYS = ["address", "gateway", "dns"];
const WIFI_KEYS = ["ssid", "country", "psk"];

const OS_VALUES = ["fcos", "flatcar"] as const;
const ARCH_VALUES = ["x86_64", "aarch64"] as const;
const BOARD_VALUES = ["generic", "rpi2", "rpi3", "rpi4"] as const;
const BOOT_VALUES = ["disk", "pxe"] as const;

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LINUX_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const CRYPT_HASH = /^\$(y|gy|7|6|5|2[abxy]|1|md5|sha1)\$[A-Za-z0-9./$,=+-]{4,}$/;

const SSH_KEY_TYPES = [
  "ssh-ed25519",
  "ssh-rsa",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
];

/** `.key`, or `["a b"]` for a key that is not a plain word (keeps messages one line). */
function sub(path: string, key: string | number): string {
  if (typeof key === "number") return `${path}[${key}]`;
  if (!/^[A-Za-z0-9_-]+$/.test(key)) return `${path}[${JSON.stringify(key)}]`;
  return path === "" ? key : `${path}.${key}`;
}

/** A value for a message: quoted, one line, at most 60 characters. */
function quote(s: string): string {
  const q = JSON.stringify(s);
  return q.length > 62 ? `${q.slice(0, 60)}…"` : q;
}

function kind(node: unknown): string {
  if (isMap(node)) return "a map";
  if (isSeq(node)) return "a list";
  if (isScalar(node)) {
    const v = node.value;
    if (v === null || v === undefined) return "an empty value";
    if (typeof v === "string") return "a string";
    if (typeof v === "number" || typeof v === "bigint") return "a number";
    if (typeof v === "boolean") return "a boolean";
  }
  return "an empty value";
}

class Checker {
  readonly problems: Problem[] = [];
  private readonly lc = new LineCounter();
  private readonly doc: Document;
  /** Offsets of duplicate keys already reported with their path (yaml reports them too). */
  private readonly dupReported = new Set<number>();
  /** Fragment files to check for existence once the walk is done. */
  private readonly fragments: Array<{ ref: FragmentRef; path: string; written: string }> = [];

  constructor(
    private readonly src: string,
    private readonly file: string,
    private readonly dir: string,
  ) {
    this.doc = parseDocument(src, {
      lineCounter: this.lc,
      prettyErrors: false,
      uniqueKeys: true,
    }) as Document;
  }

  // --- positions and problems

  private pos(offset: number): Pos {
    const { line, col } = this.lc.linePos(offset);
    return { file: this.file, line, col };
  }

  private at(node: unknown, fallback: Pos): Pos {
    const r = (node as { range?: [number, number, number] } | null | undefined)?.range;
    return r ? this.pos(r[0]) : fallback;
  }

  private fail(at: Pos, path: string, text: string, hint?: string): void {
    this.problems.push({ pos: at, text: path === "" ? text : `${path}: ${text}`, hint });
  }

  private typeError(at: Pos, path: string, expected: string, node: unknown): void {
    this.fail(at, path, `expected ${expected}, got ${kind(node)}`);
  }

  throwProblems(): void {
    if (this.problems.length === 0) return;
    const sorted = [...this.problems].sort(
      (a, b) => a.pos.line - b.pos.line || a.pos.col - b.pos.col,
    );
    const lines: string[] = [];
    for (const p of sorted) {
      const line = `${formatPos(p.pos)}: ${p.text}`.replace(/[\r\n]+/g, " ");
      if (!lines.includes(line)) lines.push(line);
    }
    const [first, ...rest] = lines as [string, ...string[]];
    if (rest.length === 0) throw new UsageError(first, sorted[0]?.hint);
    const shown = lines.slice(0, MAX_IN_HINT);
    const more = lines.length - shown.length;
    throw new UsageError(
      `${first} (and ${rest.length} more problem${rest.length > 1 ? "s" : ""})`,
      `${shown.join("\n")}${more > 0 ? `\n… and ${more} more` : ""}`,
    );
  }

  // --- YAML access

  private deref(node: unknown): YNode | null {
    if (isAlias(node)) return node.resolve(this.doc) ?? null;
    return (node as YNode | null | undefined) ?? null;
  }

  /**
   * The text of a scalar written as a string: a string value, or the source of a plain
   * number (`release: 4081.20` is "4081.20", not 4081.2). undefined for anything else.
   */
  private text(node: YNode | null): string | undefined {
    if (!isScalar(node)) return undefined;
    if (typeof node.value === "string") return node.value;
    if ((typeof node.value === "number" || typeof node.value === "bigint") && node.range)
      return node.type === "PLAIN"
        ? this.src.slice(node.range[0], node.range[1])
        : String(node.value);
    return undefined;
  }

  /** The entries of a map, each key once: a duplicate is reported and skipped. */
  private entries(
    map: YAMLMap,
    path: string,
    fallback: Pos,
  ): Array<{ key: string; keyAt: Pos; value: YNode | null; valueAt: Pos }> {
    const out: Array<{ key: string; keyAt: Pos; value: YNode | null; valueAt: Pos }> = [];
    const seen = new Map<string, Pos>();
    for (const pair of map.items) {
      const keyAt = this.at(pair.key, fallback);
      const keyNode = this.deref(pair.key);
      let key: string | undefined;
      if (isScalar(keyNode)) {
        if (keyNode.value === null || keyNode.value === undefined) key = "";
        else if (typeof keyNode.value === "string") key = keyNode.value;
        else if (keyNode.range && keyNode.type === "PLAIN")
          key = this.src.slice(keyNode.range[0], keyNode.range[1]);
        else key = String(keyNode.value);
      }
      if (key === undefined) {
        this.fail(keyAt, path, `a key must be a name, not ${kind(keyNode)}`);
        continue;
      }
      const first = seen.get(key);
      if (first) {
        const r = (pair.key as { range?: [number, number, number] }).range;
        if (r) this.dupReported.add(r[0]);
        this.fail(keyAt, sub(path, key), `duplicate key; first at ${formatPos(first)}`);
        continue;
      }
      seen.set(key, keyAt);
      const value = this.deref(pair.value);
      out.push({ key, keyAt, value, valueAt: this.at(pair.value, keyAt) });
    }
    return out;
  }

  private items(seq: YAMLSeq, fallback: Pos): Array<{ node: YNode | null; at: Pos }> {
    return seq.items.map((item) => ({ node: this.deref(item), at: this.at(item, fallback) }));
  }

  private unknownKey(keyAt: Pos, path: string, key: string, allowed: readonly string[]): void {
    if (key === "<<") {
      this.fail(
        keyAt,
        path,
        "YAML merge keys (<<) are not supported; put shared fields under defaults:",
      );
      return;
    }
    const known = allowed.length <= 6 ? ` (known: ${allowed.join(", ")})` : "";
    const hint = suggestion(key, allowed);
    this.fail(keyAt, sub(path, key), `unknown field${hint || known}`);
  }

  // --- the walk

  async run(): Promise<Host[]> {
    const doc = this.doc;
    const start = this.pos(0);
    const syntax = doc.errors.filter((e) => e.code !== "DUPLICATE_KEY");
    if (syntax.length > 0) {
      for (const e of doc.errors) this.fail(this.pos(e.pos[0]), "", e.message);
      return [];
    }
    const root = this.deref(doc.contents);
    if (root === null || (isScalar(root) && root.value === null)) {
      this.fail(start, "", "the inventory is empty; list the machines under hosts:");
      return [];
    }
    if (!isMap(root)) {
      this.typeError(this.at(root, start), "", "a map with defaults: and hosts:", root);
      return [];
    }
    let defaults: Fields = { from: "defaults" };
    let hostsMap: { map: YAMLMap; at: Pos } | undefined;
    let hostsSeen = false;
    for (const e of this.entries(root, "", start)) {
      if (e.key === "defaults") {
        if (isMap(e.value)) defaults = this.fields(e.value, "defaults", "defaults", e.valueAt);
        else if (!(isScalar(e.value) && e.value.value === null) && e.value !== null)
          this.typeError(e.valueAt, "defaults", "a map of host fields", e.value);
      } else if (e.key === "hosts") {
        hostsSeen = true;
        if (isMap(e.value)) hostsMap = { map: e.value, at: e.valueAt };
        else this.typeError(e.valueAt, "hosts", "a map of host names to host fields", e.value);
      } else this.unknownKey(e.keyAt, "", e.key, TOP_KEYS);
    }
    if (!hostsSeen) this.fail(start, "", "hosts: is missing; list the machines under hosts:");
    this.checkOwn(defaults, "defaults");

    const hosts: Host[] = [];
    const macOwner = new Map<string, { host: string; at: Pos }>();
    for (const e of hostsMap ? this.entries(hostsMap.map, "hosts", hostsMap.at) : []) {
      const path = sub("hosts", e.key);
      if (!DNS_LABEL.test(e.key)) {
        const lower = e.key.toLowerCase();
        const fix = DNS_LABEL.test(lower) ? `; did you mean ${JSON.stringify(lower)}?` : "";
        this.fail(
          e.keyAt,
          path,
          `the host name is not a DNS label (1-63 lowercase letters, digits and '-', not starting or ending with '-')${fix}`,
        );
      }
      let own: Fields = { from: "host" };
      if (isMap(e.value)) own = this.fields(e.value, path, "host", e.valueAt);
      else if (!(isScalar(e.value) && e.value.value === null) && e.value !== null)
        this.typeError(e.valueAt, path, "a map of host fields", e.value);
      this.checkOwn(own, path);
      const host = this.merge(e.key, e.keyAt, defaults, own, path);
      hosts.push(host);
      for (const mac of own.macs?.v ?? []) {
        const first = macOwner.get(mac.v);
        if (first && first.host !== e.key) {
          this.fail(
            mac.at,
            "",
            `MAC ${mac.v} of ${path} at ${formatPos(mac.at)} is already ${sub("hosts", first.host)}'s (${formatPos(first.at)})`,
          );
        } else if (!first) macOwner.set(mac.v, { host: e.key, at: mac.at });
      }
    }

    // yaml's own duplicate-key reports for maps the walk did not read (inside vars). Its
    // offset is where the key's properties end (before an empty value's newline, say): the
    // duplicate is the first key at or after it.
    const keyStarts: number[] = [];
    visit(doc, {
      Pair(_, pair) {
        const r = (pair.key as { range?: [number, number, number] } | null)?.range;
        if (r) keyStarts.push(r[0]);
      },
    });
    keyStarts.sort((a, b) => a - b);
    for (const e of doc.errors) {
      if (e.code !== "DUPLICATE_KEY") continue;
      const offset = keyStarts.find((k) => k >= e.pos[0]) ?? e.pos[0];
      if (!this.dupReported.has(offset)) this.fail(this.pos(offset), "", e.message);
    }
    await this.checkFragments();
    return hosts;
  }

  /** The host fields of one map (`defaults:` or one host). */
  private fields(map: YAMLMap, path: string, from: From, mapAt: Pos): Fields {
    const f: Fields = { from };
    for (const e of this.entries(map, path, mapAt)) {
      const p = sub(path, e.key);
      if (!Object.hasOwn(HOST_KEYS, e.key)) {
        this.unknownKey(e.keyAt, path, e.key, HOST_KEY_NAMES);
        continue;
      }
      const key = e.key as HostKey;
      if (from === "defaults" && PER_HOST_ONLY.has(key)) {
        this.fail(e.keyAt, p, `${key} is set per host, not in defaults`);
        continue;
      }
      const { value: n, valueAt: at } = e;
      const val = <T>(v: T | undefined): Val<T> | undefined =>
        v === undefined ? undefined : { v, at };
      switch (key) {
        case "os":
          f.os = val(this.oneOf(n, at, p, OS_VALUES));
          break;
        case "arch":
          f.arch = val(this.oneOf(n, at, p, ARCH_VALUES));
          break;
        case "board":
          f.board = val(this.oneOf(n, at, p, BOARD_VALUES));
          break;
        case "boot":
          f.boot = val(this.oneOf(n, at, p, BOOT_VALUES));
          break;
        case "stream":
        case "channel":
        case "release":
          f[key] = val(this.word(n, at, p));
          break;
        case "disk": {
          const s = this.string(n, at, p, "a device path");
          f.disk = val(s);
          break;
        }
        case "firmware": {
          const s = this.string(n, at, p, "a path");
          f.firmware = val(s === undefined ? undefined : resolve(this.dir, s));
          break;
        }
        case "uuid": {
          const s = this.string(n, at, p, "a UUID");
          if (s !== undefined && !UUID.test(s))
            this.fail(at, p, `${quote(s)} is not a UUID (write it as 8-4-4-4-12 hex digits)`);
          else f.uuid = val(s?.toLowerCase());
          break;
        }
        case "macs":
          f.macs = val(this.macs(n, at, p));
          break;
        case "kargs":
          f.kargs = val(this.kargs(n, at, p));
          break;
        case "ssh_keys":
          f.sshKeys = val(this.sshKeys(n, at, p));
          break;
        case "ignition":
          f.ignition = val(this.ignition(n, at, p, from));
          break;
        case "vars":
          f.vars = val(this.vars(n, at, p));
          break;
        case "secrets":
          f.secrets = val(this.secrets(n, at, p));
          break;
        case "timezone":
          f.timezone = val(this.timezone(n, at, p));
          break;
        case "users":
          f.users = val(this.users(n, at, p, from));
          break;
        case "network":
          f.network = val(this.network(n, at, p, from));
          break;
        case "wifi":
          f.wifi = val(this.wifi(n, at, p));
          break;
      }
    }
    return f;
  }

  // --- scalar fields

  private string(n: YNode | null, at: Pos, path: string, what: string): string | undefined {
    const s = this.text(n);
    if (s === undefined) {
      this.typeError(at, path, `${what} (a string)`, n);
      return undefined;
    }
    if (s.trim() === "" || /[\r\n\0]/.test(s)) {
      this.fail(at, path, `expected ${what}, got ${s === "" ? "an empty string" : quote(s)}`);
      return undefined;
    }
    return s;
  }

  /** A string without blanks: stream, channel, release. */
  private word(n: YNode | null, at: Pos, path: string): string | undefined {
    const s = this.text(n);
    if (s === undefined || s === "" || /\s/.test(s)) {
      if (s === undefined) this.typeError(at, path, "a string", n);
      else this.fail(at, path, `expected one word, got ${s === "" ? "an empty string" : quote(s)}`);
      return undefined;
    }
    return s;
  }

  private oneOf<T extends string>(
    n: YNode | null,
    at: Pos,
    path: string,
    choices: readonly T[],
  ): T | undefined {
    const s = this.text(n);
    if (s !== undefined && (choices as readonly string[]).includes(s)) return s as T;
    const got = s === undefined ? kind(n) : quote(s);
    this.fail(
      at,
      path,
      `expected one of ${choices.join(", ")}, got ${got}${s === undefined ? "" : suggestion(s, choices)}`,
    );
    return undefined;
  }

  private list(n: YNode | null, at: Pos, path: string, what: string): YAMLSeq | undefined {
    if (isSeq(n)) return n;
    this.typeError(at, path, what, n);
    return undefined;
  }

  private map(n: YNode | null, at: Pos, path: string, what: string): YAMLMap | undefined {
    if (isMap(n)) return n;
    this.typeError(at, path, what, n);
    return undefined;
  }

  // --- list fields

  private macs(n: YNode | null, at: Pos, path: string): Val<string>[] | undefined {
    const seq = this.list(n, at, path, "a list of MAC addresses");
    if (!seq) return undefined;
    const out: Val<string>[] = [];
    this.items(seq, at).forEach((item, i) => {
      const p = sub(path, i);
      const s = this.text(item.node);
      if (s === undefined) return this.typeError(item.at, p, "a MAC address", item.node);
      const mac = normalizeMac(s);
      if (mac === undefined)
        return this.fail(
          item.at,
          p,
          `${quote(s)} is not a MAC address (write it as 52:54:00:ab:cd:ef)`,
        );
      if ((Number.parseInt(mac.slice(0, 2), 16) & 1) === 1)
        return this.fail(item.at, p, `${mac} is a multicast address, not a network card's`);
      if (mac === "00:00:00:00:00:00")
        return this.fail(item.at, p, "00:00:00:00:00:00 is not a network card's address");
      const first = out.find((m) => m.v === mac);
      if (first)
        return this.fail(
          item.at,
          p,
          `MAC ${mac} is listed twice (first at ${formatPos(first.at)})`,
        );
      out.push({ v: mac, at: item.at });
    });
    return out;
  }

  private strings(
    n: YNode | null,
    at: Pos,
    path: string,
    what: string,
    check: (s: string, at: Pos, path: string) => boolean,
  ): Array<Val<string> & { path: string }> | undefined {
    const seq = this.list(n, at, path, `a list of ${what}s`);
    if (!seq) return undefined;
    const out: Array<Val<string> & { path: string }> = [];
    this.items(seq, at).forEach((item, i) => {
      const p = sub(path, i);
      const s = this.text(item.node);
      if (s === undefined) return this.typeError(item.at, p, what, item.node);
      if (check(s, item.at, p)) out.push({ v: s, at: item.at, path: p });
    });
    return out;
  }

  private kargs(n: YNode | null, at: Pos, path: string): string[] | undefined {
    return this.strings(n, at, path, "kernel argument", (s, a, p) => {
      if (s === "" || /[\r\n]/.test(s)) {
        this.fail(
          a,
          p,
          `expected a kernel argument, got ${s === "" ? "an empty string" : quote(s)}`,
        );
        return false;
      }
      // Blanks outside double quotes make two arguments of one item.
      if (/\s/.test(s.replace(/"[^"]*"/g, ""))) {
        this.fail(a, p, `${quote(s)} is more than one kernel argument; give one per list item`);
        return false;
      }
      return true;
    })?.map((x) => x.v);
  }

  private sshKeys(n: YNode | null, at: Pos, path: string): string[] | undefined {
    return this.strings(n, at, path, "SSH public key", (s, a, p) => {
      const problem = sshKeyProblem(s);
      if (problem) this.fail(a, p, problem.text, problem.hint);
      return problem === undefined;
    })?.map((x) => x.v.trim());
  }

  private ignition(n: YNode | null, at: Pos, path: string, from: From): FragmentRef[] | undefined {
    return this.strings(n, at, path, "path of an .ign or .bu file", (s, a, p) => {
      if (!/\.(ign|bu)$/.test(s)) {
        this.fail(
          a,
          p,
          `${quote(s)} is neither an Ignition config (.ign) nor a Butane config (.bu)`,
        );
        return false;
      }
      return true;
    })?.map((x) => {
      const ref: FragmentRef = { path: resolve(this.dir, x.v), at: x.at, from };
      this.fragments.push({ ref, path: x.path, written: x.v });
      return ref;
    });
  }

  private async checkFragments(): Promise<void> {
    const stats = await Promise.all(this.fragments.map((f) => statOf(f.ref.path)));
    this.fragments.forEach(({ ref, path, written }, i) => {
      const st = stats[i];
      if (!st) this.fail(ref.at, path, `${quote(written)}: no such file (${ref.path})`);
      else if (!st.isFile())
        this.fail(ref.at, path, `${quote(written)} is not a file (${ref.path})`);
    });
  }

  // --- maps

  private vars(n: YNode | null, at: Pos, path: string): Record<string, unknown> | undefined {
    const map = this.map(n, at, path, "a map of variables");
    if (!map) return undefined;
    const out: Record<string, unknown> = {};
    for (const e of this.entries(map, path, at)) {
      if (!IDENTIFIER.test(e.key)) {
        this.fail(
          e.keyAt,
          sub(path, e.key),
          "a variable name is letters, digits and '_', not starting with a digit",
        );
        continue;
      }
      try {
        out[e.key] = e.value === null ? null : e.value.toJS(this.doc, { maxAliasCount: 100 });
      } catch (err) {
        this.fail(e.valueAt, sub(path, e.key), describeError(err));
      }
    }
    return out;
  }

  private secrets(
    n: YNode | null,
    at: Pos,
    path: string,
  ): Record<string, SecretSource> | undefined {
    const map = this.map(n, at, path, "a map of secret names to env:VAR, file:PATH or cmd:COMMAND");
    if (!map) return undefined;
    const out: Record<string, SecretSource> = {};
    for (const e of this.entries(map, path, at)) {
      const p = sub(path, e.key);
      if (!IDENTIFIER.test(e.key)) {
        this.fail(
          e.keyAt,
          p,
          "a secret name is letters, digits and '_', not starting with a digit",
        );
        continue;
      }
      const source = this.secretSource(e.value, e.valueAt, p);
      if (source) out[e.key] = source;
    }
    return out;
  }

  /** Never echoes the value: it may be the secret itself, written where a source belongs. */
  private secretSource(n: YNode | null, at: Pos, path: string): SecretSource | undefined {
    const s = isScalar(n) && typeof n.value === "string" ? n.value : undefined;
    const expected = "expected env:VAR, file:PATH or cmd:COMMAND";
    if (s === undefined) {
      this.fail(at, path, `${expected}, got ${kind(n)} (the value is not shown)`);
      return undefined;
    }
    const m = /^(env|file|cmd):(.*)$/s.exec(s);
    if (!m) {
      this.fail(
        at,
        path,
        `${expected} (the value is not shown)`,
        "the inventory names where a secret comes from, never the secret itself",
      );
      return undefined;
    }
    const rest = m[2] as string;
    if (m[1] === "env") {
      if (IDENTIFIER.test(rest)) return { kind: "env", name: rest, at };
      this.fail(at, path, "env: needs an environment variable name (letters, digits and '_')");
      return undefined;
    }
    if (m[1] === "file") {
      if (rest.trim() !== "" && !/[\r\n\0]/.test(rest))
        return { kind: "file", path: resolve(this.dir, rest), at };
      this.fail(at, path, "file: needs a path");
      return undefined;
    }
    const split = splitCommand(rest);
    if ("argv" in split) return { kind: "cmd", argv: split.argv, at };
    this.fail(at, path, `cmd: ${split.error}`);
    return undefined;
  }

  private timezone(n: YNode | null, at: Pos, path: string): string | undefined {
    const s = this.text(n);
    if (s === undefined) {
      this.typeError(at, path, "a time zone name (a string)", n);
      return undefined;
    }
    if (isTimeZone(s)) return s;
    this.fail(at, path, `unknown time zone ${quote(s)}${timeZoneSuggestion(s)}`);
    return undefined;
  }

  private users(n: YNode | null, at: Pos, path: string, from: From): UserEntry[] | undefined {
    const seq = this.list(n, at, path, "a list of users");
    if (!seq) return undefined;
    const out: UserEntry[] = [];
    this.items(seq, at).forEach((item, i) => {
      const p = sub(path, i);
      const map = this.map(item.node, item.at, p, "a user (a map with name:)");
      if (!map) return;
      let name: Val<string> | undefined;
      let nameSeen = false;
      const spec: UserSpec = { name: "", groups: [], sshKeys: [], at: item.at };
      for (const e of this.entries(map, p, item.at)) {
        const q = sub(p, e.key);
        if (e.key === "name") {
          nameSeen = true;
          const s = this.text(e.value);
          if (s === undefined) this.typeError(e.valueAt, q, "a user name", e.value);
          else if (!LINUX_NAME.test(s))
            this.fail(e.valueAt, q, `${quote(s)} is not a valid user name (${LINUX_NAME_RULE})`);
          else name = { v: s, at: e.valueAt };
        } else if (e.key === "groups") {
          spec.groups =
            this.strings(e.value, e.valueAt, q, "group name", (g, a, gp) => {
              if (LINUX_NAME.test(g)) return true;
              this.fail(a, gp, `${quote(g)} is not a valid group name (${LINUX_NAME_RULE})`);
              return false;
            })?.map((x) => x.v) ?? [];
        } else if (e.key === "ssh_keys") {
          spec.sshKeys = this.sshKeys(e.value, e.valueAt, q) ?? [];
        } else if (e.key === "password_hash") {
          const s =
            isScalar(e.value) && typeof e.value.value === "string" ? e.value.value : undefined;
          if (s !== undefined && CRYPT_HASH.test(s)) spec.passwordHash = s;
          else
            this.fail(
              e.valueAt,
              q,
              "expected a crypt(3) password hash ($y$…, $6$…, $5$…, $2b$…); the value is not shown",
              'make one with "mkpasswd -m yescrypt"; never write a plain password',
            );
        } else this.unknownKey(e.keyAt, p, e.key, USER_KEYS);
      }
      if (!nameSeen) this.fail(item.at, p, "name: is missing");
      if (name) out.push({ spec: { ...spec, name: name.v }, nameAt: name.at, from });
    });
    return out;
  }

  private network(n: YNode | null, at: Pos, path: string, from: From): NetEntry[] | undefined {
    const seq = this.list(n, at, path, "a list of interfaces (maps with interface:, ipv4:, ipv6:)");
    if (!seq) return undefined;
    const out: NetEntry[] = [];
    this.items(seq, at).forEach((item, i) => {
      const p = sub(path, i);
      const map = this.map(item.node, item.at, p, "a map with interface:, ipv4:, ipv6:");
      if (!map) return;
      const spec: NetworkSpec = { ipv4: "dhcp", ipv6: "auto", at: item.at };
      let ok = true;
      for (const e of this.entries(map, p, item.at)) {
        const q = sub(p, e.key);
        if (e.key === "interface") {
          const s = this.text(e.value);
          if (s === undefined) {
            this.typeError(e.valueAt, q, "an interface name", e.value);
            ok = false;
          } else if (
            !/^[^\s/:]{1,15}$/.test(s) ||
            s === "." ||
            s === ".." ||
            Buffer.byteLength(s) > 15
          ) {
            this.fail(
              e.valueAt,
              q,
              `${quote(s)} is not an interface name (1-15 characters, no blanks, '/' or ':')`,
            );
            ok = false;
          } else spec.interface = s;
        } else if (e.key === "ipv4" || e.key === "ipv6") {
          const fam = e.key === "ipv4" ? 4 : 6;
          const word = fam === 4 ? "dhcp" : "auto";
          const s = this.text(e.value);
          if (s === word) continue;
          if (!isMap(e.value)) {
            const got = s === undefined ? kind(e.value) : quote(s);
            this.fail(e.valueAt, q, `expected "${word}" or a map with address:, got ${got}`);
            ok = false;
            continue;
          }
          const ip = this.staticIp(e.value, e.valueAt, q, fam);
          if (ip === undefined) ok = false;
          else if (fam === 4) spec.ipv4 = ip;
          else spec.ipv6 = ip;
        } else {
          this.unknownKey(e.keyAt, p, e.key, NETWORK_KEYS);
          ok = false;
        }
      }
      if (ok) out.push({ spec, from });
    });
    return out;
  }

  private staticIp(map: YAMLMap, at: Pos, path: string, fam: 4 | 6): StaticIp | undefined {
    const example = fam === 4 ? "192.168.1.10/24" : "2001:db8::10/64";
    const max = fam === 4 ? 32 : 128;
    const ipOk = (s: string) => !s.includes("%") && isIP(s) === fam;
    let address: string | undefined;
    let gateway: string | undefined;
    let dns: string[] = [];
    let ok = true;
    let addressSeen = false;
    for (const e of this.entries(map, path, at)) {
      const q = sub(path, e.key);
      const s = this.text(e.value);
      if (e.key === "address") {
        addressSeen = true;
        if (s === undefined) {
          this.typeError(e.valueAt, q, `an address with prefix, e.g. ${example}`, e.value);
          ok = false;
          continue;
        }
        const m = /^([^/]*)\/(\d{1,3})$/.exec(s);
        if (!m) {
          const why = s.includes("/") ? "" : " (it needs a prefix length)";
          this.fail(
            e.valueAt,
            q,
            `expected an IPv${fam} address with prefix, e.g. ${example}, got ${quote(s)}${why}`,
          );
          ok = false;
        } else if (!ipOk(m[1] as string)) {
          this.fail(e.valueAt, q, `${quote(m[1] as string)} is not an IPv${fam} address`);
          ok = false;
        } else if (Number(m[2]) < 1 || Number(m[2]) > max) {
          this.fail(
            e.valueAt,
            q,
            `prefix length /${m[2]} is out of range for IPv${fam} (1-${max})`,
          );
          ok = false;
        } else address = s;
      } else if (e.key === "gateway") {
        if (s === undefined) {
          this.typeError(e.valueAt, q, `an IPv${fam} address`, e.value);
          ok = false;
        } else if (!ipOk(s)) {
          const other = isIP(s) !== 0 ? ` (it is IPv${isIP(s)}; put it under ipv${isIP(s)}:)` : "";
          this.fail(e.valueAt, q, `${quote(s)} is not an IPv${fam} address${other}`);
          ok = false;
        } else gateway = s;
      } else if (e.key === "dns") {
        const list = this.strings(e.value, e.valueAt, q, `IPv${fam} address`, (d, a, dp) => {
          if (ipOk(d)) return true;
          const other = isIP(d) !== 0 ? ` (it is IPv${isIP(d)}; put it under ipv${isIP(d)}:)` : "";
          this.fail(a, dp, `${quote(d)} is not an IPv${fam} address${other}`);
          return false;
        });
        if (list === undefined) ok = false;
        else dns = list.map((x) => x.v);
      } else {
        this.unknownKey(e.keyAt, path, e.key, STATIC_KEYS);
        ok = false;
      }
    }
    if (!addressSeen) {
      this.fail(at, path, `address: is missing (e.g. ${example})`);
      return undefined;
    }
    if (!ok || address === undefined) return undefined;
    return { address, ...(gateway !== undefined ? { gateway } : {}), dns };
  }

  private wifi(n: YNode | null, at: Pos, path: string): (WifiSpec & { pskAt: Pos }) | undefined {
    const map = this.map(n, at, path, "a map with ssid:, country: and psk:");
    if (!map) return undefined;
    let ssid: string | undefined;
    let country: string | undefined;
    let psk: Val<string> | undefined;
    let ok = true;
    for (const e of this.entries(map, path, at)) {
      const q = sub(path, e.key);
      if (e.key === "ssid") {
        const s = this.text(e.value);
        const bytes = s === undefined ? 0 : Buffer.byteLength(s);
        if (s === undefined) this.typeError(e.valueAt, q, "a network name (a string)", e.value);
        else if (bytes < 1 || bytes > 32)
          this.fail(e.valueAt, q, `an SSID is 1-32 bytes, this one is ${bytes}`);
        else ssid = s;
      } else if (e.key === "country") {
        const s = this.text(e.value);
        if (s !== undefined && /^[A-Z]{2}$/.test(s)) country = s;
        else if (s !== undefined && /^[a-z]{2}$/i.test(s))
          this.fail(
            e.valueAt,
            q,
            `expected a country code in capitals; did you mean ${JSON.stringify(s.toUpperCase())}?`,
          );
        else
          this.fail(
            e.valueAt,
            q,
            `expected a two-letter country code (ISO 3166, e.g. DE), got ${s === undefined ? kind(e.value) : quote(s)}`,
          );
      } else if (e.key === "psk") {
        const s =
          isScalar(e.value) && typeof e.value.value === "string" ? e.value.value : undefined;
        const m = s === undefined ? null : /^secret:(.*)$/s.exec(s);
        if (m && IDENTIFIER.test(m[1] as string)) psk = { v: m[1] as string, at: e.valueAt };
        else
          this.fail(
            e.valueAt,
            q,
            "expected secret:NAME, naming one of the host's secrets (the value is not shown)",
            "the passphrase itself never goes into the inventory: add it under secrets: and write psk: secret:NAME",
          );
      } else {
        this.unknownKey(e.keyAt, path, e.key, WIFI_KEYS);
        ok = false;
      }
    }
    for (const [key, v] of [
      ["ssid", ssid],
      ["country", country],
      ["psk", psk],
    ] as const) {
      if (v !== undefined) continue;
      ok = false;
      if (!map.items.some((pair) => this.text(this.deref(pair.key)) === key))
        this.fail(at, path, `${key}: is missing`);
    }
    if (!ok || ssid === undefined || country === undefined || psk === undefined) return undefined;
    return { ssid, country, pskSecret: psk.v, at, pskAt: psk.at };
  }

  // --- checks across fields, and the merge

  /** Checks within one map's own fields (defaults once, each host once). */
  private checkOwn(f: Fields, path: string): void {
    if (f.arch && f.board) this.checkArch(f.arch, f.board, path, true);
    this.checkLists(f.users?.v ?? [], f.network?.v ?? [], path, () => true);
  }

  /** A Pi board with another arch than aarch64; reported at the arch when `ownArch`. */
  private checkArch(arch: Val<string>, board: Val<Board>, path: string, ownArch: boolean): void {
    if (board.v === "generic" || arch.v === "aarch64") return;
    if (ownArch)
      this.fail(
        arch.at,
        sub(path, "arch"),
        `${arch.v} cannot run on board ${board.v} (${formatPos(board.at)}): a Raspberry Pi is aarch64`,
      );
    else
      this.fail(
        board.at,
        sub(path, "board"),
        `${board.v} is aarch64, but defaults.arch is ${arch.v} (${formatPos(arch.at)})`,
      );
  }

  /** Users named twice, interfaces configured twice; `report` says which pairs are new here. */
  private checkLists(
    users: UserEntry[],
    network: NetEntry[],
    path: string,
    report: (a: From, b: From) => boolean,
  ): void {
    users.forEach((u, i) => {
      const first = users.slice(0, i).find((o) => o.spec.name === u.spec.name);
      if (first && report(first.from, u.from))
        this.fail(
          u.nameAt,
          `${path}.users`,
          `user ${u.spec.name} is defined twice (first at ${formatPos(first.nameAt)})`,
        );
    });
    network.forEach((n, i) => {
      const first = network
        .slice(0, i)
        .find((o) => o.spec.interface === n.spec.interface && report(o.from, n.from));
      if (!first) return;
      this.fail(
        n.spec.at,
        `${path}.network`,
        n.spec.interface === undefined
          ? `only one entry may leave out interface: (the first ethernet interface); another is at ${formatPos(first.spec.at)}`
          : `interface ${n.spec.interface} is configured twice (first at ${formatPos(first.spec.at)})`,
      );
    });
  }

  private merge(name: string, at: Pos, d: Fields, h: Fields, path: string): Host {
    const pick = <K extends keyof Fields>(k: K): Fields[K] => (h[k] !== undefined ? h[k] : d[k]);
    const fieldAt: Record<string, Pos> = {};
    for (const k of Object.values(HOST_KEYS)) {
      const v = (h[k] ?? d[k]) as Val<unknown> | undefined;
      if (v) fieldAt[k] = v.at;
    }
    const list = <T>(k: "kargs" | "sshKeys" | "ignition"): T[] => [
      ...((d[k]?.v ?? []) as T[]),
      ...((h[k]?.v ?? []) as T[]),
    ];
    const users = [...(d.users?.v ?? []), ...(h.users?.v ?? [])];
    const network = [...(d.network?.v ?? []), ...(h.network?.v ?? [])];
    const secrets = { ...d.secrets?.v, ...h.secrets?.v };
    const board = pick("board")?.v ?? "generic";
    const arch = pick("arch");

    // Pairs of defaults' entries were checked once, with the defaults.
    this.checkLists(users, network, path, (a, b) => a === "host" || b === "host");
    const boardAt = pick("board");
    // Both set by the host was checked with the host's own fields, both by defaults with them.
    if (arch && boardAt && (h.arch === undefined) !== (h.board === undefined))
      this.checkArch(arch, boardAt, path, h.arch !== undefined);
    const wifi = pick("wifi");
    if (wifi && !Object.hasOwn(secrets, wifi.v.pskSecret)) {
      const known = Object.keys(secrets);
      this.fail(
        wifi.v.pskAt,
        path,
        `wifi psk names secret ${wifi.v.pskSecret}, which is not in the host's secrets${
          known.length > 0 ? ` (${known.join(", ")})${suggestion(wifi.v.pskSecret, known)}` : ""
        }`,
      );
    }

    const host: Host = {
      name,
      at,
      os: pick("os")?.v ?? "fcos",
      board,
      macs: (h.macs?.v ?? []).map((m) => m.v),
      kargs: list<string>("kargs"),
      sshKeys: list<string>("sshKeys"),
      ignition: list<FragmentRef>("ignition"),
      vars: { ...d.vars?.v, ...h.vars?.v },
      secrets,
      boot: pick("boot")?.v ?? "disk",
      users: users.map((u) => u.spec),
      network: network.map((n) => n.spec),
      fieldAt,
    };
    for (const k of ["stream", "channel", "release", "firmware", "timezone"] as const) {
      const v = pick(k)?.v;
      if (v !== undefined) host[k] = v;
    }
    if (arch) host.arch = arch.v;
    else if (board !== "generic") host.arch = "aarch64";
    if (h.disk) host.disk = h.disk.v;
    if (h.uuid) host.uuid = h.uuid.v;
    if (wifi) {
      const { pskAt: _, ...spec } = wifi.v;
      host.wifi = spec;
    }
    return host;
  }
}

const LINUX_NAME_RULE =
  "lowercase letters, digits, '_' and '-', starting with a letter or '_', at most 32 characters";

// ---------------------------------------------------------------------------------------------
// Values

export { normalizeMac } from "../options.js";

/**
 * Why `s` is not an OpenSSH public key line ("TYPE BASE64 [comment]"), or undefined when it is
 * one. The text never echoes the value: a private key pasted by mistake must not be printed.
 */
export function sshKeyProblem(s: string): { text: string; hint?: string } | undefined {
  if (/-----BEGIN|PRIVATE KEY|PuTTY-User-Key-File/.test(s))
    return {
      text: "this is a private key; list public keys only (the value is not shown)",
      hint: "give the contents of the .pub file, e.g. ~/.ssh/id_ed25519.pub, and keep the private key out of the inventory",
    };
  const t = s.trim();
  if (/[\r\n]/.test(t))
    return { text: "one SSH public key per list item (this one has several lines)" };
  const m = /^(\S+)\s+(\S+)(\s.*)?$/.exec(t);
  const type = m?.[1] ?? "";
  const shownType = /^[A-Za-z0-9@._-]{1,40}$/.test(type) ? type : undefined;
  if (type === "ssh-dss")
    return { text: "DSA keys (ssh-dss) are no longer accepted by OpenSSH; use an ed25519 key" };
  if (!m || !SSH_KEY_TYPES.includes(type))
    return {
      text: `not an OpenSSH public key${shownType && m ? ` (unknown key type ${shownType})` : ""}; expected "ssh-ed25519 AAAA… comment"`,
      hint: `key types: ${SSH_KEY_TYPES.join(", ")}`,
    };
  const data = m[2] as string;
  const blob = /^[A-Za-z0-9+/]+={0,2}$/.test(data) ? Buffer.from(data, "base64") : undefined;
  const parts = blob ? sshStrings(blob) : undefined;
  if (!parts || !blobFits(type, parts))
    return { text: `the key data does not match its type ${type}: was the key cut or changed?` };
  return undefined;
}

/** The wire format's strings (uint32 length, bytes) that make up a key blob, all of it. */
function sshStrings(blob: Buffer): Buffer[] | undefined {
  const out: Buffer[] = [];
  let i = 0;
  while (i < blob.length) {
    if (i + 4 > blob.length) return undefined;
    const len = blob.readUInt32BE(i);
    if (i + 4 + len > blob.length) return undefined;
    out.push(blob.subarray(i + 4, i + 4 + len));
    i += 4 + len;
  }
  return out;
}

/** The blob's fields are the ones its type has (RFC 4253, 5656, 8709; OpenSSH PROTOCOL.u2f). */
function blobFits(type: string, parts: Buffer[]): boolean {
  if (parts[0]?.toString("latin1") !== type) return false;
  const curve = /nistp(256|384|521)/.exec(type)?.[0];
  switch (type) {
    case "ssh-ed25519":
      return parts.length === 2 && parts[1]?.length === 32;
    case "sk-ssh-ed25519@openssh.com":
      return parts.length === 3 && parts[1]?.length === 32;
    case "ssh-rsa":
      return parts.length === 3 && (parts[2]?.length ?? 0) >= 128;
    case "sk-ecdsa-sha2-nistp256@openssh.com":
      return parts.length === 4 && parts[1]?.toString("latin1") === curve;
    default:
      return parts.length === 3 && parts[1]?.toString("latin1") === curve;
  }
}

let zones: Set<string> | undefined;
function timeZones(): Set<string> {
  zones ??= new Set([...Intl.supportedValuesOf("timeZone"), "UTC"]);
  return zones;
}

/**
 * An IANA time zone: one ICU lists (plus UTC), or an IANA alias ICU knows (ICU lists
 * Asia/Calcutta and Europe/Kiev; Asia/Kolkata, Europe/Kyiv and Etc/UTC are their current or
 * alias names) written with its capitals, as the zoneinfo file names are.
 */
export function isTimeZone(s: string): boolean {
  if (timeZones().has(s)) return true;
  if (!/^[A-Z][A-Za-z0-9_+-]*(\/[A-Z0-9][A-Za-z0-9_+-]*)*$/.test(s)) return false;
  return resolveZone(s) !== undefined;
}

function resolveZone(s: string): string | undefined {
  try {
    return new Intl.DateTimeFormat("en", { timeZone: s }).resolvedOptions().timeZone;
  } catch {
    return undefined;
  }
}

function timeZoneSuggestion(s: string): string {
  const all = [...timeZones()];
  const lower = s.toLowerCase();
  const same = all.find((z) => z.toLowerCase() === lower);
  if (same) return `; did you mean ${JSON.stringify(same)}?`;
  const city = all.filter((z) => z.toLowerCase().endsWith(`/${lower}`));
  if (city.length === 1) return `; did you mean ${JSON.stringify(city[0])}?`;
  const viaIcu = resolveZone(s);
  if (viaIcu) return `; did you mean ${JSON.stringify(viaIcu)}?`;
  return suggestion(s, all);
}
