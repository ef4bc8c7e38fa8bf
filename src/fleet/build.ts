/**
 * A host's Ignition config, built in memory from its sources as they are right now:
 *
 *   1. what provision generates from the inventory (hostname, SSH keys, users, network, …,
 *      the hybrid-MBR repair unit for rpi2/3, the secrets mount for pxe hosts);
 *   2. the defaults' fragments, then the host's own, each with its host variables put in,
 *      Butane compiled, `file://` merge/replace sources inlined;
 *
 * merged so that later wins (src/ignition's mergeFragments: the user's fragments win over the
 * generated ones), and checked as any config is. With it comes a fingerprint: the sha256 of
 * the built config and of every source file it read, so "stale" can be measured.
 *
 * Secret values: with `secrets: "placeholder"` (the default) a secret used inside the config
 * (a Wi-Fi passphrase) is put in as `<secret NAME>` and never read; the fingerprint is always
 * of that form, so it does not change with (or reveal) a value. `secrets: "values"` reads
 * them, for a config that goes onto a target and nowhere else.
 */
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { dirname, isAbsolute, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { describeError, UsageError } from "../errors.js";
import {
  type IgnitionConfig,
  isButane,
  mergeFragments,
  parseConfigText,
  parseIgnitionText,
} from "../ignition/index.js";
import { generatedFragments } from "./generate.js";
import { displayPath, formatPos } from "./inventory.js";
import { secretReader } from "./secrets.js";
import { jsonStringEscape, renderTemplate } from "./template.js";
import type { Host, Inventory, Pos } from "./types.js";

export interface SourceFile {
  path: string;
  sha256: string;
}

export interface Fingerprint {
  /** sha256 of the built config (with secret placeholders). */
  sha256: string;
  /** Every file the build read, sorted by path, with its sha256 at that moment. */
  sources: SourceFile[];
}

export interface BuiltHost {
  host: Host;
  config: IgnitionConfig;
  fingerprint: Fingerprint;
  /** Kernel arguments from the inventory. */
  kargs: string[];
  /** Names of the secrets whose values are inside the config (not just on a stick). */
  secretsInConfig: string[];
}

const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

/** The version a config with no fragments of the user's gets (what Debian can validate). */
const BASE_VERSION = "3.3.0";

export async function buildHost(
  inv: Inventory,
  host: Host,
  opts: { secrets?: "placeholder" | "values"; signal?: AbortSignal; env?: NodeJS.ProcessEnv } = {},
): Promise<BuiltHost> {
  const sources = new Map<string, string>();
  const read = async (path: string, at: Pos): Promise<Buffer> => {
    try {
      const b = await readFile(path);
      sources.set(path, sha256(b));
      return b;
    } catch (err) {
      throw new UsageError(
        `${formatPos(at)}: cannot read ${displayPath(path)}: ${describeError(err)}`,
      );
    }
  };
  await read(inv.file, host.at);

  // 1. Generated from the inventory's fields.
  const used = new Set<string>();
  const reader = secretReader(host, opts.env);
  const secretValue = async (name: string) => {
    used.add(name);
    if (opts.secrets === "values") return await reader(name);
    if (!host.secrets[name])
      throw new UsageError(
        `${formatPos(host.at)}: host ${host.name} uses secret ${name}, which is not in its secrets`,
      );
    return `<secret ${name}>`;
  };
  const generated = await generatedFragments(host, secretValue);

  // 2. The fragments the inventory names, in order.
  const configs: IgnitionConfig[] = [];
  for (const ref of host.ignition) {
    const text = (await read(ref.path, ref.at)).toString("utf8");
    const butane = isButane(text);
    const shown = displayPath(ref.path);
    const rendered = renderTemplate(text, shown, host, butane ? undefined : jsonStringEscape);
    let cfg = await parseConfigText(rendered, shown, {
      filesDir: dirname(ref.path),
      signal: opts.signal,
    });
    if (butane)
      for (const f of await butaneLocalFiles(text, dirname(ref.path))) await read(f, ref.at);
    cfg = await inlineLocalSources(cfg, shown, (p) => read(p, ref.at));
    configs.push(cfg);
  }

  const user =
    configs.pop() ??
    (await parseIgnitionText(
      `${JSON.stringify({ ignition: { version: BASE_VERSION } })}\n`,
      `the generated config of ${host.name}`,
    ));
  const merged = mergeFragments(user, [...generated, ...configs.map((c) => c.json as object)]);
  const config: IgnitionConfig = { ...merged, origin: `host ${host.name}` };
  return {
    host,
    config,
    fingerprint: {
      sha256: sha256(config.text),
      sources: [...sources.entries()]
        .map(([path, sum]) => ({ path, sha256: sum }))
        .sort((a, b) => a.path.localeCompare(b.path)),
    },
    kargs: host.kargs,
    secretsInConfig: [...used].sort(),
  };
}

/**
 * Files a Butane config pulls in from its files dir: `local:` under `contents`/`append`
 * (files, certificate authorities, merged configs), `trees` (every file under the directory),
 * `contents_local` (units, drop-ins) and `ssh_authorized_keys_local`. Read from the parsed
 * YAML, so a `local:` inside a file's inline text is not mistaken for one.
 */
export async function butaneLocalFiles(text: string, dir: string): Promise<string[]> {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch {
    return []; // butane itself reported the syntax error
  }
  const out: string[] = [];
  const abs = (p: string) => (isAbsolute(p) ? p : join(dir, p));
  const walk = async (node: unknown, parentKey: string): Promise<void> => {
    if (Array.isArray(node)) {
      for (const n of node) await walk(n, parentKey);
      return;
    }
    if (node === null || typeof node !== "object") return;
    for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
      if (k === "local" && typeof v === "string") {
        if (parentKey === "trees") out.push(...(await filesUnder(abs(v))));
        else out.push(abs(v));
      } else if (k === "contents_local" && typeof v === "string") {
        out.push(abs(v));
      } else if (k === "ssh_authorized_keys_local" && Array.isArray(v)) {
        for (const f of v) if (typeof f === "string") out.push(abs(f));
      } else {
        await walk(v, k);
      }
    }
  };
  await walk(doc, "");
  return [...new Set(out)].sort();
}

async function filesUnder(d: string): Promise<string[]> {
  const entries = await readdir(d, { withFileTypes: true, recursive: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

/**
 * `ignition.config.merge`/`replace` and file `contents`/`append` sources that are `file://`
 * URLs name files on this machine, which the booting machine cannot read: they are read now
 * (and count as sources) and put in as data URLs.
 */
async function inlineLocalSources(
  cfg: IgnitionConfig,
  origin: string,
  read: (path: string) => Promise<Buffer>,
): Promise<IgnitionConfig> {
  let changed = false;
  const visit = async (node: unknown): Promise<void> => {
    if (Array.isArray(node)) {
      for (const n of node) await visit(n);
      return;
    }
    if (node === null || typeof node !== "object") return;
    const o = node as Record<string, unknown>;
    if (typeof o.source === "string" && o.source.startsWith("file://")) {
      const bytes = await read(fileURLToPath(o.source));
      o.source = `data:;base64,${bytes.toString("base64")}`;
      changed = true;
    }
    for (const v of Object.values(o)) await visit(v);
  };
  const json = structuredClone(cfg.json);
  await visit(json);
  if (!changed) return cfg;
  return await parseIgnitionText(`${JSON.stringify(json)}\n`, origin);
}
