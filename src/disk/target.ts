/**
 * The one model of a write target. `inspectTarget` builds it from a path; the picker
 * (`listCandidateDisks`) builds the same thing for every candidate disk, and the safety
 * checks read it.
 *
 * Facts come from sysfs (size, read-only, removable, partitions, holders, logical sector
 * size) and `lsblk` (model, vendor, serial, transport, hot-plug, filesystem type and label;
 * without udev lsblk knows no labels, so `blkid -p` fills those in when available).
 * Mountpoints come from /proc/self/mountinfo, matched by device numbers.
 */
import { realpath, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { ProvisionError, UsageError } from "../errors.js";
import { hasProgram, run } from "../exec/index.js";
import {
  listDir,
  loopBackingFile,
  loopsBackedBy,
  partitionsOf,
  readSys,
  sysBlockOfName,
  sysBlockOfNode,
  sysSize,
} from "./sys.js";
import { type KeyedMount, loadMounts, mountsOn, systemUseOf, systemUses } from "./usage.js";

export interface TargetPartition {
  /** /dev/<name>; the node may not exist (no udev, no partx). */
  path: string;
  size: number;
  fstype?: string;
  label?: string;
  /** Where a filesystem on it (or on something on top of it) is mounted now. */
  mountpoints: string[];
}

export type FileTarget = { kind: "file"; path: string; exists: boolean; size?: number };

export type BlockTarget = {
  kind: "block";
  /** Resolved real path of the node, e.g. /dev/loop3 (not /dev/disk/by-id/...). */
  path: string;
  /** Kernel name: sdb, mmcblk0, loop3, sdb1. */
  name: string;
  size: number;
  logicalSectorSize: number;
  model?: string;
  vendor?: string;
  serial?: string;
  /** usb, mmc, sata, nvme, loop, virtio... */
  transport?: string;
  removable: boolean;
  /** Hot-pluggable (USB, card readers), also when not flagged removable (USB SSDs). */
  hotplug: boolean;
  readOnly: boolean;
  /** Whole-disk path when this target is a partition. */
  parent?: string;
  /** Every mountpoint whose filesystem lives on this device (its partitions included). */
  mountpoints: string[];
  partitions: TargetPartition[];
  /** Devices on top of it or its partitions: dm-*, md*, loop devices reading from it. */
  holders: string[];
};

export type Target = FileTarget | BlockTarget;

const LSBLK_COLUMNS =
  "NAME,PATH,SIZE,TYPE,RO,RM,HOTPLUG,MODEL,VENDOR,SERIAL,TRAN,LOG-SEC,FSTYPE,LABEL,MOUNTPOINTS,PKNAME";

type LsblkValue = string | number | boolean | null | undefined;
interface LsblkNode {
  name?: string;
  type?: LsblkValue;
  hotplug?: LsblkValue;
  model?: LsblkValue;
  vendor?: LsblkValue;
  serial?: LsblkValue;
  tran?: LsblkValue;
  fstype?: LsblkValue;
  label?: LsblkValue;
  children?: LsblkNode[];
}

function str(v: LsblkValue): string | undefined {
  if (v === null || v === undefined) return undefined;
  const s = String(v).trim();
  return s === "" ? undefined : s;
}

function bool(v: LsblkValue): boolean {
  return v === true || v === 1 || v === "1" || v === "true";
}

/** lsblk's view of the given devices (all when none), by kernel name. Empty if lsblk fails. */
async function lsblk(devices: string[]): Promise<Map<string, LsblkNode>> {
  const map = new Map<string, LsblkNode>();
  if (!(await hasProgram("lsblk"))) return map;
  const r = await run("lsblk", ["--json", "--bytes", "-o", LSBLK_COLUMNS, ...devices], {
    allowFailure: true,
  });
  let parsed: { blockdevices?: LsblkNode[] };
  try {
    parsed = JSON.parse(r.stdout) as { blockdevices?: LsblkNode[] };
  } catch {
    return map;
  }
  const walk = (nodes: LsblkNode[] | undefined) => {
    for (const n of nodes ?? []) {
      if (n.name) map.set(n.name, n);
      walk(n.children);
    }
  };
  walk(parsed.blockdevices);
  return map;
}

/** Filesystem type and label by probing (read-only), for when lsblk has no udev to ask. */
async function probeFs(part: string, disk: string): Promise<{ fstype?: string; label?: string }> {
  if (!(await hasProgram("blkid"))) return {};
  const node = `/dev/${part}`;
  let args: string[];
  if ((await sysBlockOfNode(node))?.name === part) {
    args = ["-p", "-o", "export", node];
  } else if ((await sysBlockOfNode(`/dev/${disk}`))?.name === disk) {
    const start = Number((await readSys(`/sys/class/block/${part}/start`)) ?? 0) * 512;
    args = [
      "-p",
      "-o",
      "export",
      "-O",
      String(start),
      "-S",
      String(await sysSize(part)),
      `/dev/${disk}`,
    ];
  } else {
    return {};
  }
  const r = await run("blkid", args, { allowFailure: true });
  if (r.exitCode !== 0) return {};
  const kv = new Map<string, string>();
  for (const line of r.stdout.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) kv.set(line.slice(0, i), line.slice(i + 1));
  }
  return { fstype: kv.get("TYPE"), label: kv.get("LABEL") };
}

function inferTransport(name: string, isLoop: boolean): string | undefined {
  if (isLoop) return "loop";
  if (/^mmcblk\d+$/.test(name)) return "mmc";
  if (name.startsWith("nvme")) return "nvme";
  if (/^vd[a-z]+$/.test(name)) return "virtio";
  return undefined;
}

function mountpointsOf(name: string, mounts: KeyedMount[]): string[] {
  return [...new Set(mounts.filter((m) => m.keys.has(name)).map((m) => m.mountpoint))];
}

async function holdersOf(name: string): Promise<string[]> {
  return [...(await listDir(`/sys/class/block/${name}/holders`)), ...(await loopsBackedBy(name))];
}

/** Holders of a block target and of its partitions, as they are now. */
export async function currentHolders(t: BlockTarget): Promise<string[]> {
  const names = [t.name, ...(t.parent ? [] : await partitionsOf(t.name))];
  const out: string[] = [];
  for (const n of names) out.push(...(await holdersOf(n)));
  return [...new Set(out)];
}

interface Context {
  lsblk: Map<string, LsblkNode>;
  mounts: KeyedMount[];
}

async function blockTarget(
  name: string,
  parent: string | undefined,
  path: string,
  ctx: Context,
): Promise<BlockTarget> {
  const disk = parent ?? name;
  const dn = ctx.lsblk.get(disk) ?? {};
  const isLoop = (await loopBackingFile(disk)) !== undefined;
  const t: BlockTarget = {
    kind: "block",
    path,
    name,
    size: await sysSize(name),
    logicalSectorSize: Number(await readSys(`/sys/block/${disk}/queue/logical_block_size`)) || 512,
    removable: (await readSys(`/sys/block/${disk}/removable`)) === "1",
    hotplug: bool(dn.hotplug),
    readOnly: (await readSys(`/sys/class/block/${name}/ro`)) === "1",
    mountpoints: [],
    partitions: [],
    holders: await holdersOf(name),
  };
  const sysDevice = `/sys/block/${disk}/device`;
  const model =
    str(dn.model) ??
    str(await readSys(`${sysDevice}/model`)) ??
    str(await readSys(`${sysDevice}/name`));
  const vendor = str(dn.vendor) ?? str(await readSys(`${sysDevice}/vendor`));
  const serial = str(dn.serial);
  const transport = str(dn.tran) ?? inferTransport(disk, isLoop);
  if (model) t.model = model;
  if (vendor) t.vendor = vendor;
  if (serial) t.serial = serial;
  if (transport) t.transport = transport;
  if (parent) t.parent = `/dev/${parent}`;
  if (!parent) {
    for (const p of await partitionsOf(name)) {
      const pn = ctx.lsblk.get(p) ?? {};
      let fstype = str(pn.fstype);
      let label = str(pn.label);
      if (!fstype) ({ fstype, label } = await probeFs(p, name));
      const part: TargetPartition = {
        path: `/dev/${p}`,
        size: await sysSize(p),
        mountpoints: mountpointsOf(p, ctx.mounts),
      };
      if (fstype) part.fstype = fstype;
      if (label) part.label = label;
      t.partitions.push(part);
      t.holders.push(...(await holdersOf(p)));
    }
  }
  t.holders = [...new Set(t.holders)];
  // The same rule the safety check applies: mounts on anything writing here would overwrite.
  t.mountpoints = [...new Set((await mountsOn(t, ctx.mounts)).map((m) => m.mountpoint))];
  return t;
}

/**
 * What `path` is as a write target. A path that does not exist (in an existing directory)
 * or a regular file is an image file; a block device (symlinks followed) is a disk or
 * partition. Anything else is a UsageError.
 */
export async function inspectTarget(path: string): Promise<Target> {
  const abs = resolve(path);
  const inDev = abs.startsWith("/dev/") && !abs.startsWith("/dev/shm/");
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" && inDev) {
      throw new UsageError(
        `${path} does not exist; run \`provision flash\` without a target to pick a disk, or \`lsblk\` to list them`,
      );
    }
    if (code === "ENOENT" || code === "ENOTDIR") {
      const dir = dirname(abs);
      let dirOk = false;
      try {
        dirOk = (await stat(dir)).isDirectory();
      } catch {}
      if (!dirOk) throw new UsageError(`directory ${dir} does not exist`);
      return { kind: "file", path: abs, exists: false };
    }
    if (code === "EACCES") throw new UsageError(`cannot access ${path}: permission denied`);
    throw new UsageError(`cannot access ${path}: ${(err as Error).message}`);
  }
  if (st.isFile()) {
    if (inDev) {
      throw new UsageError(
        `${path} is a regular file, not a disk (left over from writing to a disk that was not there?); remove it and pass the disk`,
      );
    }
    return { kind: "file", path: abs, exists: true, size: st.size };
  }
  if (st.isDirectory())
    throw new UsageError(`${path} is a directory; pass an image file or a disk`);
  if (st.isCharacterDevice()) {
    throw new UsageError(
      `${path} is a character device, not a disk; pass a block device such as /dev/sdb`,
    );
  }
  if (!st.isBlockDevice())
    throw new UsageError(`${path} is neither a regular file nor a block device`);

  const real = await realpath(abs);
  const sb = await sysBlockOfNode(real);
  if (!sb)
    throw new ProvisionError(
      `${path} is a block device the kernel does not list in /sys/class/block`,
    );
  const disk = sb.parent ?? sb.name;
  const diskNode = `/dev/${disk}`;
  const lsblkOn = (await sysBlockOfNode(diskNode))?.name === disk ? diskNode : real;
  const ctx: Context = { lsblk: await lsblk([lsblkOn]), mounts: await loadMounts() };
  return blockTarget(sb.name, sb.parent, real, ctx);
}

/** eMMC hardware boot areas and the like: disks in /sys/block that are never flash targets. */
const NEVER_CANDIDATES = /^(mmcblk\d+(boot\d+|rpmb)|sr\d+|ram\d+|zram\d+|dm-\d+|md\d+.*|nbd\d+)$/;

/**
 * Whole disks the picker offers: removable or hot-plug (USB, SD/MMC) disks that the running
 * system does not stand on. Loop devices only with PROVISION_PICKER_INCLUDE_LOOP=1.
 */
export async function listCandidateDisks(): Promise<BlockTarget[]> {
  const includeLoop = process.env.PROVISION_PICKER_INCLUDE_LOOP === "1";
  const mounts = await loadMounts();
  const uses = await systemUses(mounts);
  const ctx: Context = { lsblk: await lsblk([]), mounts };
  const out: BlockTarget[] = [];
  const names = (await listDir("/sys/block")).sort((a, b) =>
    a.localeCompare(b, "en", { numeric: true }),
  );
  for (const name of names) {
    if (NEVER_CANDIDATES.test(name)) continue;
    const isLoop = (await loopBackingFile(name)) !== undefined;
    if (name.startsWith("loop") && !(isLoop && includeLoop)) continue;
    if ((await sysSize(name)) === 0) continue;
    if (str(ctx.lsblk.get(name)?.type) === "rom") continue;
    const sb = await sysBlockOfName(name);
    if (!sb || sb.parent) continue;
    const t = await blockTarget(name, undefined, `/dev/${name}`, ctx);
    const pluggable = t.removable || t.hotplug || t.transport === "usb" || t.transport === "mmc";
    if (!isLoop && !pluggable) continue;
    if (await systemUseOf(t, uses)) continue;
    out.push(t);
  }
  return out;
}
