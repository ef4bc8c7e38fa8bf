/**
 * Low-level facts from the kernel: /sys/class/block, /proc/self/mountinfo, /proc/swaps.
 *
 * Devices are identified by their sysfs name (`sdb`, `sdb1`, `loop3p1`, `dm-0`) and found
 * through their major:minor numbers (/sys/dev/block/MAJ:MIN), never through device nodes:
 * on a machine without udev (or without partition nodes) the numbers are all there is.
 *
 * What a mount or a swap area "stands on" is a set of keys: the device's own name, the
 * whole disk of a partition, the devices under a device-mapper/md device (`slaves`), and
 * what a loop device reads from: a block device, or a regular file (`file:DEV:INO`) plus
 * the filesystem device holding that file.
 */
import { access, readdir, readFile, realpath, stat } from "node:fs/promises";
import { basename, dirname } from "node:path";

const CLASS_BLOCK = "/sys/class/block";

export async function readSys(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, "utf8")).trim();
  } catch {
    return undefined;
  }
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

export async function listDir(path: string): Promise<string[]> {
  try {
    return await readdir(path);
  } catch {
    return [];
  }
}

/** "MAJ:MIN" of a dev_t (glibc's gnu_dev_major/gnu_dev_minor encoding). */
export function majMin(dev: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

export function fileKey(st: { dev: bigint; ino: bigint }): string {
  return `file:${majMin(st.dev)}:${st.ino}`;
}

export interface SysBlock {
  /** Kernel name: sdb, sdb1, mmcblk0p1, loop3, dm-0. */
  name: string;
  /** Whole-disk name when this is a partition. */
  parent?: string;
}

/** The block device with these numbers, if the kernel has one. */
export async function sysBlockOfMajMin(mm: string): Promise<SysBlock | undefined> {
  let real: string;
  try {
    real = await realpath(`/sys/dev/block/${mm}`);
  } catch {
    return undefined;
  }
  const name = basename(real);
  if (await pathExists(`${real}/partition`)) return { name, parent: basename(dirname(real)) };
  return { name };
}

export async function sysBlockOfName(name: string): Promise<SysBlock | undefined> {
  const mm = await readSys(`${CLASS_BLOCK}/${name}/dev`);
  return mm ? sysBlockOfMajMin(mm) : undefined;
}

/** The block device a device node (any path, symlinks followed) refers to. */
export async function sysBlockOfNode(path: string): Promise<SysBlock | undefined> {
  try {
    const st = await stat(path, { bigint: true });
    return st.isBlockDevice() ? sysBlockOfMajMin(majMin(st.rdev)) : undefined;
  } catch {
    return undefined;
  }
}

/** Partition names of a whole disk, in partition-number order. */
export async function partitionsOf(disk: string): Promise<string[]> {
  const parts: Array<{ name: string; n: number }> = [];
  for (const e of await listDir(`/sys/block/${disk}`)) {
    const n = await readSys(`/sys/block/${disk}/${e}/partition`);
    if (n !== undefined) parts.push({ name: e, n: Number(n) });
  }
  return parts.sort((a, b) => a.n - b.n).map((p) => p.name);
}

/** Size in bytes: sysfs `size` is always in 512-byte units. */
export async function sysSize(name: string): Promise<number> {
  return Number((await readSys(`${CLASS_BLOCK}/${name}/size`)) ?? 0) * 512;
}

/** The file or device a loop device reads from, if `name` is an attached loop device. */
export async function loopBackingFile(name: string): Promise<string | undefined> {
  const b = await readSys(`${CLASS_BLOCK}/${name}/loop/backing_file`);
  return b ? b.replace(/ \(deleted\)$/, "") : undefined;
}

/**
 * Add to `acc` every key `name` stands on. With `viaHostFs`, a loop device's backing file
 * also leads to the filesystem device holding that file (a mount through it keeps that
 * filesystem busy); without it, only to the file itself.
 */
export async function addLowerKeys(
  name: string,
  acc: Set<string>,
  viaHostFs: boolean,
  viaParent = true,
): Promise<void> {
  if (acc.has(name)) return;
  acc.add(name);
  const base = `${CLASS_BLOCK}/${name}`;
  if (viaParent && (await pathExists(`${base}/partition`))) {
    try {
      await addLowerKeys(basename(dirname(await realpath(base))), acc, viaHostFs, viaParent);
    } catch {}
  }
  for (const s of await listDir(`${base}/slaves`)) await addLowerKeys(s, acc, viaHostFs, viaParent);
  const backing = await loopBackingFile(name);
  if (backing) await addFileKeys(backing, acc, viaHostFs, viaParent);
}

/** Keys of a path that is a block device node or a regular file (swap file, loop backing). */
export async function addFileKeys(
  path: string,
  acc: Set<string>,
  viaHostFs: boolean,
  viaParent = true,
): Promise<void> {
  let st: Awaited<ReturnType<typeof statBig>>;
  try {
    st = await statBig(path);
  } catch {
    return;
  }
  if (st.isBlockDevice()) {
    const b = await sysBlockOfMajMin(majMin(st.rdev));
    if (b) await addLowerKeys(b.name, acc, viaHostFs, viaParent);
    return;
  }
  acc.add(fileKey(st));
  if (!viaHostFs) return;
  const host = await sysBlockOfMajMin(majMin(st.dev));
  if (host) await addLowerKeys(host.name, acc, viaHostFs, viaParent);
}

function statBig(path: string) {
  return stat(path, { bigint: true });
}

export interface MountEntry {
  mountId: number;
  /** MAJ:MIN of the mounted filesystem's device (0:N for btrfs, tmpfs, overlay...). */
  majMin: string;
  mountpoint: string;
  fstype: string;
  source: string;
}

/** Undo the octal escapes (\040 for space...) of /proc/self/mountinfo and /proc/swaps. */
function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

export async function readMounts(): Promise<MountEntry[]> {
  const text = (await readSys("/proc/self/mountinfo")) ?? "";
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (f.length < 7 || sep < 0) continue;
    out.push({
      mountId: Number(f[0]),
      majMin: f[2] ?? "",
      mountpoint: unescapeOctal(f[4] ?? ""),
      fstype: f[sep + 1] ?? "",
      source: unescapeOctal(f[sep + 2] ?? ""),
    });
  }
  return out;
}

/** Keys a mounted filesystem stands on: its device numbers, and its source when that is a device node. */
export async function mountKeys(m: MountEntry): Promise<Set<string>> {
  const acc = new Set<string>();
  const b = await sysBlockOfMajMin(m.majMin);
  if (b) await addLowerKeys(b.name, acc, true);
  // btrfs (and a few others) report an anonymous 0:N device; the source names the real one.
  if (m.source.startsWith("/dev/")) {
    const s = await sysBlockOfNode(m.source);
    if (s) await addLowerKeys(s.name, acc, true);
  }
  return acc;
}

export interface SwapEntry {
  path: string;
  type: string;
}

export async function readSwaps(): Promise<SwapEntry[]> {
  const text = (await readSys("/proc/swaps")) ?? "";
  return text
    .split("\n")
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 2 && f[0])
    .map((f) => ({
      path: unescapeOctal(f[0] ?? "").replace(/ \(deleted\)$/, ""),
      type: f[1] ?? "",
    }));
}

/** Loop devices whose backing file is the block device `name` (mount -o loop,offset=... creates them). */
export async function loopsBackedBy(name: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await listDir("/sys/block")) {
    if (!e.startsWith("loop")) continue;
    const backing = await loopBackingFile(e);
    if (!backing?.startsWith("/dev/")) continue;
    const b = await sysBlockOfNode(backing);
    if (b?.name === name) out.push(e);
  }
  return out;
}
