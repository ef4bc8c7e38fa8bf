/**
 * `fleet show --flatten`: a built config's `ignition.config.merge` children (the data: URLs
 * provision put there) merged into one plain config, the way Ignition merges them
 * (coreos/ignition config/merge: a child's values override its parent's; list entries with
 * the same key are merged field by field, the child winning; other entries are appended),
 * so a person can read what the machine will apply. Children that are not data: URLs (a
 * remote config a fragment merges in) stay in `ignition.config.merge`.
 */
import { isObject } from "../ignition/spec.js";

/** The field that identifies an entry of each keyed list (by dotted path without indexes). */
const LIST_KEYS: Record<string, string> = {
  "storage.files": "path",
  "storage.directories": "path",
  "storage.links": "path",
  "storage.filesystems": "device",
  "storage.disks": "device",
  "storage.disks.partitions": "label",
  "storage.raid": "name",
  "storage.luks": "name",
  "systemd.units": "name",
  "systemd.units.dropins": "name",
  "passwd.users": "name",
  "passwd.groups": "name",
  "ignition.config.merge": "source",
  "ignition.security.tls.certificateAuthorities": "source",
};

/** Files, directories and links share one namespace: a path is one of them. */
const NODE_LISTS = ["storage.files", "storage.directories", "storage.links"];

function decodeDataUrl(source: string): string | undefined {
  const m = /^data:([^,]*),(.*)$/s.exec(source);
  if (!m) return undefined;
  return /;base64$/i.test(m[1] ?? "")
    ? Buffer.from(m[2] ?? "", "base64").toString("utf8")
    : decodeURIComponent(m[2] ?? "");
}

function mergeValue(parent: unknown, child: unknown, path: string): unknown {
  if (child === undefined) return parent;
  if (Array.isArray(parent) && Array.isArray(child)) return mergeList(parent, child, path);
  if (isObject(parent) && isObject(child)) {
    const out: Record<string, unknown> = { ...parent };
    for (const [k, v] of Object.entries(child))
      out[k] = mergeValue(parent[k], v, path ? `${path}.${k}` : k);
    return out;
  }
  return child;
}

function mergeList(parent: unknown[], child: unknown[], path: string): unknown[] {
  const key = LIST_KEYS[path];
  if (!key) {
    // A list of plain values (SSH keys, groups, kernel arguments): a set, in order.
    const out = [...parent];
    for (const v of child)
      if (!out.some((p) => JSON.stringify(p) === JSON.stringify(v))) out.push(v);
    return out;
  }
  const out = [...parent];
  for (const c of child) {
    const id = isObject(c) ? c[key] : undefined;
    const i = id === undefined ? -1 : out.findIndex((p) => isObject(p) && p[key] === id);
    if (i >= 0) out[i] = mergeValue(out[i], c, path);
    else out.push(c);
  }
  return out;
}

/** Merge `child` into `parent` as Ignition does (both plain configs). */
export function mergeConfigs(parent: Record<string, unknown>, child: Record<string, unknown>) {
  const merged = mergeValue(parent, child, "") as Record<string, unknown>;
  // A path taken by the child in one node list leaves the parent's other lists.
  const storage = merged.storage;
  if (isObject(storage) && isObject(child.storage)) {
    for (const list of NODE_LISTS) {
      const name = list.split(".")[1] as string;
      const mine = child.storage[name];
      if (!Array.isArray(mine)) continue;
      const paths = new Set(mine.map((e) => (isObject(e) ? e.path : undefined)));
      for (const other of NODE_LISTS) {
        const o = other.split(".")[1] as string;
        if (o === name || !Array.isArray(storage[o])) continue;
        storage[o] = (storage[o] as unknown[]).filter((e) => !(isObject(e) && paths.has(e.path)));
      }
    }
  }
  return merged;
}

/** The config with its data: URL merge children merged in, recursively. */
export function flattenConfig(config: Record<string, unknown>): Record<string, unknown> {
  const ign = isObject(config.ignition) ? config.ignition : {};
  const cfg = isObject(ign.config) ? ign.config : {};
  const children = Array.isArray(cfg.merge) ? cfg.merge : [];
  const { config: _drop, ...ignRest } = ign;
  let base: Record<string, unknown> = { ...config, ignition: { ...ignRest } };
  const remote: unknown[] = [];
  for (const c of children) {
    const text = isObject(c) && typeof c.source === "string" ? decodeDataUrl(c.source) : undefined;
    if (text === undefined) {
      remote.push(c);
      continue;
    }
    const child = flattenConfig(JSON.parse(text) as Record<string, unknown>);
    const { ignition: childIgn, ...childRest } = child;
    base = mergeConfigs(base, childRest);
    // Keep the children's remote merges (not their versions).
    const cm = isObject(childIgn) && isObject(childIgn.config) ? childIgn.config.merge : undefined;
    if (Array.isArray(cm)) remote.push(...cm);
  }
  const rest = { ...cfg };
  delete rest.merge;
  const ignOut = base.ignition as Record<string, unknown>;
  if (remote.length > 0 || Object.keys(rest).length > 0)
    ignOut.config = { ...rest, ...(remote.length > 0 ? { merge: remote } : {}) };
  return base;
}
