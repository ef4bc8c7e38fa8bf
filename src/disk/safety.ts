/**
 * Safety checks before writing to a target. Each refusal is a RefusedError with one line
 * naming the device and the fix. Mounts are decided from /proc/self/mountinfo alone.
 */
import { stat } from "node:fs/promises";
import { describeError, RefusedError } from "../errors.js";
import { requirePrograms, run } from "../exec/index.js";
import { formatSizes } from "./format.js";
import { currentHolders, inspectTarget, type Target } from "./target.js";
import { type KeyedMount, loadMounts, mountsOn, systemUseOf, systemUses } from "./usage.js";

export interface SafetyOptions {
  /** Unmount filesystems mounted from the target instead of refusing. */
  unmount?: boolean;
  /** Bytes the image needs; refused when the block device is smaller. */
  imageSize?: number;
  /** Refuse partitions: the image is a whole-disk image. */
  wholeDiskOnly?: true;
  /** The command has no --unmount flag: do not suggest it (mbr fix). */
  noUnmountFlag?: true;
}

/** Refuse a partition where a whole disk is expected. */
export function ensureWholeDisk(t: Target): void {
  if (t.kind === "block" && t.parent) {
    throw new RefusedError(`${t.path} is a partition; pass the whole disk ${t.parent}`);
  }
}

function mountedMessage(t: Target, on: KeyedMount[], canUnmount: boolean): string {
  const where = [...new Set(on.map((m) => m.mountpoint))].join(", ");
  const or = canUnmount ? " or pass --unmount" : " first";
  if (t.kind === "file") {
    return `${t.path} is mounted through a loop device (${where}); unmount it${or}`;
  }
  if (t.partitions.length > 0)
    return `${t.path} has mounted partitions (${where}); unmount them${or}`;
  return `${t.path} is mounted (${where}); unmount it${or}`;
}

/**
 * Throw RefusedError unless writing the image to `t` is safe. The disk the running system
 * stands on (/, /usr, /boot, /var, active swap) is always refused, however it is reached:
 * a partition, a dm/md device on top of it, or the bare disk. With `unmount`, mounted
 * filesystems on the target are unmounted (deepest first) and the target checked again.
 */
export async function checkTargetSafe(t: Target, opts: SafetyOptions = {}): Promise<void> {
  const mounts = await loadMounts();
  const sys = await systemUseOf(t, await systemUses(mounts));
  if (sys) {
    const via = sys.viaDisk ? ` is on ${sys.viaDisk}, which` : "";
    throw new RefusedError(
      `${t.path}${via} holds ${sys.what}; refusing to write to it`,
      "pick another disk; `lsblk` lists them",
    );
  }
  if (t.kind === "block") {
    if (opts.wholeDiskOnly) ensureWholeDisk(t);
    if (t.readOnly) {
      throw new RefusedError(
        `${t.path} is read-only; check the card's write-protect switch, or run \`blockdev --setrw ${t.path}\``,
      );
    }
  }

  const on = await mountsOn(t, mounts);
  if (on.length > 0) {
    if (!opts.unmount) throw new RefusedError(mountedMessage(t, on, !opts.noUnmountFlag));
    await unmountAll(on);
    const again = await inspectTarget(t.path);
    return checkTargetSafe(again, { ...opts, unmount: false });
  }

  if (t.kind === "file") return;
  const holders = await currentHolders(t);
  if (holders.length > 0) {
    throw new RefusedError(
      `${t.path} is in use by ${holders.join(", ")} (device-mapper/LVM, RAID or a loop device on top of it); stop that first`,
      `\`lsblk ${t.path}\` shows what; e.g. vgchange -an, cryptsetup close, mdadm --stop, losetup -d`,
    );
  }
  if (opts.imageSize !== undefined && opts.imageSize > t.size) {
    const [img, disk] = formatSizes(opts.imageSize, t.size);
    throw new RefusedError(`image is ${img} but ${t.path} holds ${disk}`, "use a bigger disk");
  }
}

/** Unmount, deepest first (and the later of two stacked mounts first). */
async function unmountAll(on: KeyedMount[]): Promise<string[]> {
  await requirePrograms(["umount"]);
  const depth = (p: string) => (p === "/" ? 0 : p.split("/").length);
  const order = [...on].sort(
    (a, b) => depth(b.mountpoint) - depth(a.mountpoint) || b.mountId - a.mountId,
  );
  const done: string[] = [];
  for (const m of order) {
    try {
      await run("umount", [m.mountpoint]);
    } catch (err) {
      throw new RefusedError(
        `could not unmount ${m.mountpoint}: ${describeError(err)}`,
        `close whatever uses it (\`fuser -vm ${m.mountpoint}\` shows what), then retry`,
      );
    }
    done.push(m.mountpoint);
  }
  return done;
}

/**
 * Unmount every filesystem that lives on the target (its partitions, and dm/loop devices
 * on top of it). Refuses the running system's disk. Returns the mountpoints unmounted.
 */
export async function unmountPartitions(t: Target): Promise<string[]> {
  const mounts = await loadMounts();
  const sys = await systemUseOf(t, await systemUses(mounts));
  if (sys)
    throw new RefusedError(`${t.path} holds ${sys.what}; refusing to unmount anything on it`);
  return unmountAll(await mountsOn(t, mounts));
}

/**
 * Drop cached pages of a device or file, so that reading it back reads the medium:
 * `blockdev --flushbufs` for a block device, `dd iflag=nocache count=0` for a file.
 */
export async function dropPageCache(path: string): Promise<void> {
  const st = await stat(path);
  if (st.isBlockDevice()) {
    await run("blockdev", ["--flushbufs", path]);
  } else if (st.isFile()) {
    await run("dd", [`if=${path}`, "iflag=nocache", "count=0", "status=none"]);
  }
}
