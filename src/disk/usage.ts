/**
 * Who uses a device: mounted filesystems (decided from /proc/self/mountinfo), active swap
 * (/proc/swaps), and what the running system stands on.
 */
import {
  addFileKeys,
  addLowerKeys,
  type MountEntry,
  mountKeys,
  readMounts,
  readSwaps,
  sysBlockOfName,
} from "./sys.js";
import type { Target } from "./target.js";

/** Mountpoints whose disk is the running system's. */
export const SYSTEM_MOUNTPOINTS = ["/", "/usr", "/boot", "/boot/efi", "/efi", "/var"] as const;

export type KeyedMount = MountEntry & { keys: Set<string> };

/** Every mount of this process's namespace, with the keys of what it stands on. */
export async function loadMounts(): Promise<KeyedMount[]> {
  const out: KeyedMount[] = [];
  for (const m of await readMounts()) out.push({ ...m, keys: await mountKeys(m) });
  return out;
}

export interface SystemUse {
  /** "/ (the running system)", "active swap (/dev/sda3)". */
  what: string;
  keys: Set<string>;
}

/** What the running system stands on: its system mountpoints and every active swap area. */
export async function systemUses(mounts?: KeyedMount[]): Promise<SystemUse[]> {
  const all = mounts ?? (await loadMounts());
  const out: SystemUse[] = [];
  for (const mp of SYSTEM_MOUNTPOINTS) {
    for (const m of all) {
      if (m.mountpoint === mp && m.keys.size > 0)
        out.push({ what: `${mp} (the running system)`, keys: m.keys });
    }
  }
  for (const s of await readSwaps()) {
    const keys = new Set<string>();
    await addFileKeys(s.path, keys, true);
    if (keys.size > 0) out.push({ what: `active swap (${s.path})`, keys });
  }
  return out;
}

/**
 * Keys of what writing to the target overwrites: the device itself, what a dm/md device
 * sits on, what a loop device reads from (a device, or its backing file); for an image file,
 * the file. Not the whole disk of a partition: writing sdb1 does not touch sdb2.
 */
export async function writeKeys(t: Target): Promise<Set<string>> {
  const acc = new Set<string>();
  if (t.kind === "block") await addLowerKeys(t.name, acc, false, false);
  else if (t.exists) await addFileKeys(t.path, acc, false, false);
  return acc;
}

function intersects(a: Set<string>, b: Set<string>): boolean {
  for (const k of a) if (b.has(k)) return true;
  return false;
}

/** Mounts whose filesystem lives on what the target overwrites. */
export async function mountsOn(t: Target, mounts?: KeyedMount[]): Promise<KeyedMount[]> {
  const w = await writeKeys(t);
  return (mounts ?? (await loadMounts())).filter((m) => intersects(m.keys, w));
}

/**
 * The system use that makes the target a system disk, if any. A partition counts as on the
 * system disk when its whole disk is one (`viaDisk` then names that disk).
 */
export async function systemUseOf(
  t: Target,
  uses?: SystemUse[],
): Promise<{ what: string; viaDisk?: string } | undefined> {
  const all = uses ?? (await systemUses());
  const w = await writeKeys(t);
  for (const u of all) if (intersects(u.keys, w)) return { what: u.what };
  // The whole disks of partitions (also of partitions under a dm device) count too.
  const disks = new Set<string>();
  for (const k of w) {
    if (k.startsWith("file:")) continue;
    const b = await sysBlockOfName(k);
    if (b?.parent) disks.add(b.parent);
  }
  for (const d of disks) {
    for (const u of all) if (u.keys.has(d)) return { what: u.what, viaDisk: `/dev/${d}` };
  }
  return undefined;
}
