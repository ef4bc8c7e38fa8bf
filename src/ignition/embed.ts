/**
 * Put an Ignition config and kernel arguments onto a written FCOS/Flatcar disk or image,
 * without mounting anything where possible: partitions are found through our own GPT reader
 * and ext4 filesystems are edited with debugfs at their byte offset.
 *
 *  - Fedora CoreOS: `/ignition/config.ign` (dir 0700, file 0600, root) on the ext4 filesystem of
 *    the partition named `boot` (or, failing that, the ext4 filesystem labelled `boot`). Like
 *    coreos-installer, refuse when a config is already there.
 *  - Flatcar: `config.ign` at the root of the partition named `OEM`: ext4 via debugfs, btrfs
 *    (current releases) via a loop mount, which needs root.
 */
import { open, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ProvisionError, RefusedError, UsageError } from "../errors.js";
import { requirePrograms } from "../exec/index.js";
import {
  debugfs,
  type ExtLocation,
  isDir,
  isRegular,
  listDir,
  q,
  readExtFile,
  withTempDir,
  writeExtFile,
} from "../ext4/index.js";
import { findPartition, type Gpt, type GptPartition, readGpt } from "../gpt/index.js";
import type { IgnitionConfig } from "./load.js";
import { writeFileViaMount } from "./mount.js";

export type TargetOs = "fcos" | "flatcar";

export async function embedIgnition(
  target: string,
  config: IgnitionConfig,
  opts: { os: TargetOs },
): Promise<{ partition: string; path: string }> {
  const gpt = await readGpt(target);
  if (opts.os === "fcos") {
    const part = await findBootPartition(target, gpt);
    await requireCleanExt(target, part, "boot");
    await writeIgnitionExt(target, part, "/ignition", "config.ign", config.text);
    return { partition: partLabel(part), path: "/ignition/config.ign" };
  }

  const part = findPartition(gpt, "OEM");
  if (!part) {
    throw new UsageError(`${target} has no partition named OEM; is this a Flatcar image?`);
  }
  const fs = await probeFilesystem(target, part.offsetBytes);
  if (fs === "ext") {
    await requireCleanExt(target, part, "OEM");
    await writeIgnitionExt(target, part, "/", "config.ign", config.text);
  } else if (fs === "btrfs") {
    await writeFileViaMount({
      target,
      offset: part.offsetBytes,
      size: part.sizeBytes,
      fsType: "btrfs",
      file: "config.ign",
      content: config.text,
      mode: 0o600,
      refuseExisting: true,
      what: `Flatcar OEM partition (${part.index})`,
    });
  } else {
    throw new ProvisionError(
      `${target}: the OEM partition (${part.index}) has no ext4 or btrfs filesystem; writing the Ignition config there is not supported`,
    );
  }
  return { partition: partLabel(part), path: "/config.ign" };
}

/**
 * Rewrite the `options` line(s) of every BLS entry in boot:/loader/entries/*.conf: remove
 * arguments equal to a `delete` item (`foo=bar`) or, for an item without '=', with that key
 * (`foo` removes `foo` and `foo=anything`); then append each `append` item not already present.
 * Every other byte of the entries stays as it was. Returns the resulting options lines.
 */
export async function editKernelArgs(
  target: string,
  opts: { append: string[]; delete: string[] },
): Promise<string[]> {
  for (const a of [...opts.append, ...opts.delete]) checkKarg(a);
  const gpt = await readGpt(target);
  const part = await findBootPartition(target, gpt);
  await requireCleanExt(target, part, "boot");
  const loc: ExtLocation = { target, offset: part.offsetBytes };
  // In FCOS /loader is a symlink (to loader.0 or loader.1); debugfs follows it inside a path.
  const dir = "/loader/entries";
  const entries = await listDir(loc, dir);
  const confs = (entries ?? [])
    .filter((e) => isRegular(e) && e.name.endsWith(".conf"))
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  if (confs.length === 0) {
    throw new ProvisionError(
      `${target}: no boot loader entries (${dir}/*.conf) on the boot partition; cannot set kernel arguments`,
    );
  }
  const lines: string[] = [];
  for (const e of confs) {
    const path = `${dir}/${e.name}`;
    // latin1 maps bytes 1:1, so lines we do not touch are written back byte for byte.
    const before = (await readExtFile(loc, path)).toString("latin1");
    const { text, options } = rewriteOptions(
      before,
      opts.append.map(toLatin1),
      opts.delete.map(toLatin1),
    );
    if (text !== before) {
      await writeExtFile(loc, dir, e.name, Buffer.from(text, "latin1"), {
        mode: e.mode & 0o7777,
        uid: e.uid,
        gid: e.gid,
        replace: true,
        what: `updating ${path} on ${target}`,
      });
    }
    lines.push(...options.map((l) => Buffer.from(l, "latin1").toString("utf8")));
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------

function partLabel(p: GptPartition): string {
  return p.name !== "" ? p.name : `partition ${p.index}`;
}

/** The partition named `boot`, else the one whose ext2/3/4 filesystem is labelled `boot`. */
async function findBootPartition(target: string, gpt: Gpt): Promise<GptPartition> {
  const byName = findPartition(gpt, "boot");
  if (byName) return byName;
  for (const p of gpt.partitions) {
    const sb = await readExtSuperblock(target, p.offsetBytes);
    if (sb?.label === "boot") return p;
  }
  throw new UsageError(
    `${target} has no partition named boot and no ext4 filesystem labelled boot; is this a Fedora CoreOS image?`,
  );
}

interface ExtSuperblock {
  label: string;
  needsRecovery: boolean;
}

async function readAt(target: string, position: number, length: number): Promise<Buffer> {
  const fh = await open(target, "r");
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, position);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The ext2/3/4 superblock fields we need, or undefined when there is no ext filesystem. */
async function readExtSuperblock(
  target: string,
  offset: number,
): Promise<ExtSuperblock | undefined> {
  const sb = await readAt(target, offset + 1024, 1024);
  if (sb.length < 1024 || sb.readUInt16LE(0x38) !== 0xef53) return undefined;
  const name = sb.subarray(0x78, 0x88);
  const nul = name.indexOf(0);
  return {
    label: name.subarray(0, nul === -1 ? 16 : nul).toString("utf8"),
    // s_feature_incompat & EXT3_FEATURE_INCOMPAT_RECOVER
    needsRecovery: (sb.readUInt32LE(0x60) & 0x4) !== 0,
  };
}

async function probeFilesystem(
  target: string,
  offset: number,
): Promise<"ext" | "btrfs" | undefined> {
  if (await readExtSuperblock(target, offset)) return "ext";
  const magic = await readAt(target, offset + 0x10040, 8);
  if (magic.toString("latin1") === "_BHRfS_M") return "btrfs";
  return undefined;
}

/** debugfs writes bypass the journal: refuse a filesystem with an unreplayed journal. */
async function requireCleanExt(target: string, part: GptPartition, what: string): Promise<void> {
  const sb = await readExtSuperblock(target, part.offsetBytes);
  if (!sb) {
    throw new ProvisionError(
      `${target}: the ${what} partition (${part.index}) has no ext4 filesystem`,
    );
  }
  if (sb.needsRecovery) {
    throw new RefusedError(
      `${target}: the ${what} filesystem (partition ${part.index}) was not unmounted cleanly; refusing to edit it`,
      `if it is mounted, unmount it; otherwise run: e2fsck -f '${target}?offset=${part.offsetBytes}'`,
    );
  }
  await requirePrograms(["debugfs"]);
}

/**
 * Write `dir/name` (0600, root) with `text`; `dir` other than "/" is created 0700 if missing.
 * Refuses when the file exists. Reads the file back and compares.
 */
async function writeIgnitionExt(
  target: string,
  part: GptPartition,
  dir: string,
  name: string,
  text: string,
): Promise<void> {
  const loc: ExtLocation = { target, offset: part.offsetBytes };
  const path = dir === "/" ? `/${name}` : `${dir}/${name}`;
  const cmds: string[] = [];
  if (dir !== "/") {
    const parent = await listDir(loc, "/");
    const base = dir.replace(/^\//, "");
    const existing = parent?.find((e) => e.name === base);
    if (existing && !isDir(existing)) {
      throw new ProvisionError(
        `${target}: ${dir} on partition ${part.index} exists and is not a directory`,
      );
    }
    if (!existing) cmds.push(`mkdir ${q(dir)}`);
    cmds.push(`sif ${q(dir)} mode 040700`, `sif ${q(dir)} uid 0`, `sif ${q(dir)} gid 0`);
  }
  const inDir = await listDir(loc, dir);
  if (inDir?.some((e) => e.name === name)) {
    throw new RefusedError(
      `${target}: ${path} already exists on the ${partLabel(part)} partition; refusing to overwrite it (as coreos-installer does)`,
      "start from a freshly written image",
    );
  }
  await withTempDir(async (tmp) => {
    const local = join(tmp, "config.ign");
    await writeFile(local, text, { mode: 0o600 });
    cmds.push(
      `cd ${q(dir)}`,
      `write ${q(local)} ${q(name)}`,
      `sif ${q(name)} mode 0100600`,
      `sif ${q(name)} uid 0`,
      `sif ${q(name)} gid 0`,
    );
    await debugfs(loc, cmds, { write: true, what: `writing ${path} to ${target}` });
  });
  const back = await readExtFile(loc, path);
  if (!back.equals(Buffer.from(text, "utf8"))) {
    throw new ProvisionError(`${target}: ${path} reads back different from what was written`);
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel argument editing (pure)

const toLatin1 = (s: string) => Buffer.from(s, "utf8").toString("latin1");

/** One kernel argument: no whitespace outside double quotes, balanced quotes, not empty. */
function checkKarg(a: string): void {
  if (
    a === "" ||
    /[\r\n]/.test(a) ||
    splitArgs(a).length !== 1 ||
    splitArgs(a)[0] !== a ||
    (a.match(/"/g)?.length ?? 0) % 2 !== 0
  ) {
    throw new UsageError(
      `invalid kernel argument ${JSON.stringify(a)}: give one argument per flag, like foo=bar`,
    );
  }
}

/** Split an options value into arguments; double quotes group (`foo="a b"` is one argument). */
export function splitArgs(s: string): string[] {
  return s.match(/(?:[^\s"]+|"[^"]*"?)+/g) ?? [];
}

const keyOf = (arg: string) => {
  const eq = arg.indexOf("=");
  return eq === -1 ? arg : arg.slice(0, eq);
};

/**
 * Rewrite a BLS entry's text. Only `options` lines change (and only when an argument is
 * removed or added); a new `options` line is added at the end when there is none and
 * something is appended.
 */
export function rewriteOptions(
  text: string,
  append: string[],
  del: string[],
): { text: string; options: string[] } {
  const parts = text.split("\n");
  const optionIdx: number[] = [];
  const re = /^([ \t]*options)([ \t]+(.*?))?(\r?)$/;
  parts.forEach((line, i) => {
    if (re.test(line)) optionIdx.push(i);
  });
  const drop = (arg: string) => del.some((d) => (d.includes("=") ? arg === d : keyOf(arg) === d));
  const present = new Set<string>();
  const lineArgs = new Map<number, string[]>();
  for (const i of optionIdx) {
    const m = re.exec(parts[i] as string) as RegExpExecArray;
    const args = splitArgs(m[3] ?? "");
    const kept = args.filter((a) => !drop(a));
    for (const a of kept) present.add(a);
    lineArgs.set(i, kept);
    if (kept.length !== args.length)
      parts[i] = `${m[1]}${kept.length > 0 ? " " : ""}${kept.join(" ")}${m[4]}`;
  }
  const toAdd: string[] = [];
  for (const a of append) {
    if (!present.has(a)) {
      present.add(a);
      toAdd.push(a);
    }
  }
  if (toAdd.length > 0) {
    const last = optionIdx[optionIdx.length - 1];
    if (last === undefined) {
      const line = `options ${toAdd.join(" ")}`;
      // Before the final newline, if the file ends with one.
      if (parts[parts.length - 1] === "") parts.splice(parts.length - 1, 0, line);
      else parts.push(line);
      optionIdx.push(parts[parts.length - 1] === "" ? parts.length - 2 : parts.length - 1);
    } else {
      const cur = parts[last] as string;
      const m = re.exec(cur) as RegExpExecArray;
      const body = cur.slice(0, cur.length - (m[4] as string).length);
      const hasArgs = (lineArgs.get(last)?.length ?? 0) > 0;
      // Keep the existing arguments (and their spacing) as they are; add after them.
      parts[last] = `${hasArgs ? body.replace(/[ \t]+$/, "") : m[1]} ${toAdd.join(" ")}${m[4]}`;
    }
  }
  return {
    text: parts.join("\n"),
    options: optionIdx.map((i) => (parts[i] as string).replace(/\r$/, "")),
  };
}
