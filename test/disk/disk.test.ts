/**
 * src/disk against real things: files, the machine's own system disk (inspected and
 * refused, never written), and a loop device on a 64 MiB temp file with a GPT and two
 * partitions. The only devices written to are the loop device this file attaches and its
 * partitions; every one is detached in afterAll.
 */
import {
  access,
  mkdir,
  mkdtemp,
  readFile,
  realpath,
  rm,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  type BlockTarget,
  checkTargetSafe,
  confirmWrite,
  describeTarget,
  dropPageCache,
  inspectTarget,
  listCandidateDisks,
  pickDisk,
} from "../../src/disk/index.js";
import { RefusedError, UsageError } from "../../src/errors.js";
import { run } from "../../src/exec/index.js";

const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** Mountpoints in /proc/self/mountinfo, read independently of src/disk. */
async function mountpoints(): Promise<string[]> {
  const text = await readFile("/proc/self/mountinfo", "utf8");
  return text
    .split("\n")
    .filter(Boolean)
    .map((l) => (l.split(" ")[4] ?? "").replace(/\\040/g, " "));
}

/** The whole disk that holds `/`, from mountinfo's MAJ:MIN; undefined if / is not on a disk. */
async function systemDisk(): Promise<string | undefined> {
  let mm: string | undefined;
  for (const l of (await readFile("/proc/self/mountinfo", "utf8")).split("\n")) {
    const f = l.split(" ");
    if (f[4] === "/") mm = f[2];
  }
  if (!mm) return undefined;
  let sys: string;
  try {
    sys = await realpath(`/sys/dev/block/${mm}`);
  } catch {
    return undefined;
  }
  const name = (await exists(`${sys}/partition`)) ? basename(dirname(sys)) : basename(sys);
  return (await exists(`/dev/${name}`)) ? `/dev/${name}` : undefined;
}

async function withEnv<T>(
  name: string,
  value: string | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  const old = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  try {
    return await fn();
  } finally {
    if (old === undefined) delete process.env[name];
    else process.env[name] = old;
  }
}

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "provision-disk-"));
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("file targets", () => {
  it("inspects an existing regular file", async () => {
    const f = join(dir, "existing.img");
    await writeFile(f, Buffer.alloc(4096));
    expect(await inspectTarget(f)).toEqual({ kind: "file", path: f, exists: true, size: 4096 });
  });

  it("inspects a path that does not exist yet", async () => {
    const f = join(dir, "new.img");
    expect(await inspectTarget(f)).toEqual({ kind: "file", path: f, exists: false });
  });

  it("refuses a file in a directory that does not exist", async () => {
    const f = join(dir, "nope", "new.img");
    await expect(inspectTarget(f)).rejects.toThrow(UsageError);
    await expect(inspectTarget(f)).rejects.toThrow(`directory ${join(dir, "nope")} does not exist`);
  });

  it("refuses a missing device path with a hint to pick one", async () => {
    const dev = (await exists("/dev/sdz")) ? "/dev/provision-test-missing" : "/dev/sdz";
    const err = await inspectTarget(dev).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toBe(
      `${dev} does not exist; run \`provision flash\` without a target to pick a disk, or \`lsblk\` to list them`,
    );
  });

  it("refuses directories and character devices", async () => {
    await expect(inspectTarget(dir)).rejects.toThrow(/is a directory/);
    await expect(inspectTarget("/dev/null")).rejects.toThrow(UsageError);
    await expect(inspectTarget("/dev/null")).rejects.toThrow(/character device/);
  });

  it("checks nothing size-related for files and needs no confirmation", async () => {
    const t = await inspectTarget(join(dir, "existing.img"));
    await checkTargetSafe(t, { imageSize: 10 * 1024 * MiB, wholeDiskOnly: true });
    await confirmWrite(t, { isTTY: false });
    expect(describeTarget(t)[0]).toContain(join(dir, "existing.img"));
  });
});

describe("the system disk", () => {
  it("is inspected and always refused, without writing", async () => {
    const sys = await systemDisk();
    expect(sys, "the disk holding / was not found in /proc/self/mountinfo").toBeTruthy();
    if (!sys) return;
    const t = await inspectTarget(sys);
    expect(t.kind).toBe("block");
    if (t.kind !== "block") return;
    expect(t.size).toBeGreaterThan(0);
    const err = await checkTargetSafe(t, { wholeDiskOnly: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RefusedError);
    expect((err as Error).message).toBe(
      `${sys} holds / (the running system); refusing to write to it`,
    );
    // Also without any options, and also when the image would fit.
    await expect(checkTargetSafe(t, { imageSize: 1 })).rejects.toThrow(
      /holds \/ \(the running system\)/,
    );
  });

  it("is never a candidate for the picker", async () => {
    const sys = await systemDisk();
    for (const env of ["1", undefined]) {
      const disks = await withEnv("PROVISION_PICKER_INCLUDE_LOOP", env, listCandidateDisks);
      if (sys) expect(disks.map((d) => d.path)).not.toContain(sys);
      if (env === undefined) expect(disks.filter((d) => d.transport === "loop")).toEqual([]);
    }
  });

  it("is refused by confirmWrite without a terminal before anything is asked", async () => {
    const sys = await systemDisk();
    expect(sys, "the disk holding / was not found in /proc/self/mountinfo").toBeTruthy();
    if (!sys) return;
    const t = await inspectTarget(sys);
    await expect(confirmWrite(t, { isTTY: false })).rejects.toThrow(
      `refusing to write ${sys} without confirmation: no terminal to ask on; pass --yes`,
    );
  });
});

describe.skipIf(!isRoot)("a loop device with a GPT and two partitions", () => {
  let img: string;
  let mnt: string;
  let loop: string | undefined;
  let extraLoop: string | undefined;
  let partsAdded = false;

  async function isMounted(p: string): Promise<boolean> {
    return (await mountpoints()).includes(p);
  }

  beforeAll(async () => {
    img = join(dir, "disk.img");
    mnt = join(dir, "mnt");
    await mkdir(mnt);
    await writeFile(img, "");
    await truncate(img, 64 * MiB);
    await run("sgdisk", ["-n", "1:2048:+20M", "-c", "1:one", "-n", "2:0:0", "-c", "2:two", img]);
    loop = (await run("losetup", ["-f", "--show", img])).stdout.trim();
    expect(loop).toMatch(/^\/dev\/loop\d+$/);
    await run("partx", ["-a", loop]);
    partsAdded = true;
    // devtmpfs creates the partition nodes; without it, make them from sysfs.
    for (const n of [1, 2]) {
      const node = `${loop}p${n}`;
      if (await exists(node)) continue;
      const [maj, min] = (await readFile(`/sys/class/block/${basename(node)}/dev`, "utf8"))
        .trim()
        .split(":");
      await run("mknod", [node, "b", maj ?? "", min ?? ""]);
    }
    await run("mkfs.ext4", ["-q", "-L", "PROVTEST", `${loop}p1`]);
  });

  afterAll(async () => {
    for (const p of [mnt]) {
      if (p && (await isMounted(p))) await run("umount", [p], { allowFailure: true });
    }
    if (extraLoop) await run("losetup", ["-d", extraLoop], { allowFailure: true });
    if (loop && partsAdded) await run("partx", ["-d", loop], { allowFailure: true });
    if (loop) await run("losetup", ["-d", loop], { allowFailure: true });
  });

  function dev(): string {
    if (!loop) throw new Error("no loop device");
    return loop;
  }

  async function inspectBlock(p: string): Promise<BlockTarget> {
    const t = await inspectTarget(p);
    if (t.kind !== "block") throw new Error(`${p} inspected as ${t.kind}`);
    return t;
  }

  it("is inspected as a block device with its partitions", async () => {
    const t = await inspectBlock(dev());
    expect(t.path).toBe(dev());
    expect(t.name).toBe(basename(dev()));
    expect(t.size).toBe(64 * MiB);
    expect(t.logicalSectorSize).toBe(512);
    expect(t.transport).toBe("loop");
    expect(t.readOnly).toBe(false);
    expect(t.parent).toBeUndefined();
    expect(t.holders).toEqual([]);
    expect(t.mountpoints).toEqual([]);
    expect(t.partitions.map((p) => p.path)).toEqual([`${dev()}p1`, `${dev()}p2`]);
    expect(t.partitions[0]?.size).toBe(20 * MiB);
    // Sector 43008 to the last usable one (64 MiB minus the 33-sector backup GPT, minus one).
    expect(t.partitions[1]?.size).toBe((131038 - 43008 + 1) * 512);
    if (await exists("/usr/sbin/blkid")) {
      expect(t.partitions[0]).toMatchObject({ fstype: "ext4", label: "PROVTEST" });
    }
    await checkTargetSafe(t, { wholeDiskOnly: true, imageSize: 32 * MiB });
  });

  it("refuses a partition where a whole disk is expected", async () => {
    const p = await inspectBlock(`${dev()}p1`);
    expect(p.parent).toBe(dev());
    expect(p.size).toBe(20 * MiB);
    const err = await checkTargetSafe(p, { wholeDiskOnly: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RefusedError);
    expect((err as Error).message).toBe(`${dev()}p1 is a partition; pass the whole disk ${dev()}`);
  });

  it("refuses an image bigger than the disk", async () => {
    const t = await inspectBlock(dev());
    await expect(checkTargetSafe(t, { imageSize: 128 * MiB })).rejects.toThrow(
      `image is 134.2 MB but ${dev()} holds 67.1 MB`,
    );
    // Sizes that print the same are given in bytes.
    await expect(checkTargetSafe(t, { imageSize: 64 * MiB + 1 })).rejects.toThrow(
      `image is ${64 * MiB + 1} bytes but ${dev()} holds ${64 * MiB} bytes`,
    );
  });

  it("refuses a disk with a mounted partition, and unmounts it with unmount", async () => {
    await run("mount", [`${dev()}p1`, mnt]);
    try {
      const t = await inspectBlock(dev());
      expect(t.partitions[0]?.mountpoints).toEqual([mnt]);
      expect(t.mountpoints).toEqual([mnt]);
      expect(describeTarget(t).join("\n")).toContain(`mounted on ${mnt}`);
      const err = await checkTargetSafe(t, { wholeDiskOnly: true }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RefusedError);
      expect((err as Error).message).toBe(
        `${dev()} has mounted partitions (${mnt}); unmount them or pass --unmount`,
      );
      expect(await isMounted(mnt)).toBe(true);
      // The partition itself is mounted too.
      const p = await inspectBlock(`${dev()}p1`);
      await expect(checkTargetSafe(p, {})).rejects.toThrow(`${dev()}p1 is mounted (${mnt})`);
      // The other partition is not.
      await checkTargetSafe(await inspectBlock(`${dev()}p2`), {});

      await checkTargetSafe(t, { wholeDiskOnly: true, unmount: true });
      expect(await isMounted(mnt)).toBe(false);
    } finally {
      if (await isMounted(mnt)) await run("umount", [mnt], { allowFailure: true });
    }
  });

  it("sees a mount through a second loop device on the same image file", async () => {
    // A partition mounted via its own loop device at an offset into the same file (what
    // `mount -o loop,offset=` does), attached here explicitly so that we detach it.
    extraLoop = (
      await run("losetup", [
        "-f",
        "--show",
        "-o",
        String(MiB),
        "--sizelimit",
        String(20 * MiB),
        img,
      ])
    ).stdout.trim();
    await run("mount", [extraLoop, mnt]);
    try {
      const t = await inspectBlock(dev());
      expect(t.mountpoints).toEqual([mnt]);
      await expect(checkTargetSafe(t, {})).rejects.toThrow(
        `${dev()} has mounted partitions (${mnt})`,
      );
      // The image file itself is in use too.
      const f = await inspectTarget(img);
      await expect(checkTargetSafe(f, {})).rejects.toThrow(
        `${img} is mounted through a loop device (${mnt})`,
      );
      await checkTargetSafe(t, { unmount: true });
      expect(await isMounted(mnt)).toBe(false);
    } finally {
      if (await isMounted(mnt)) await run("umount", [mnt], { allowFailure: true });
      await run("losetup", ["-d", extraLoop], { allowFailure: true });
      extraLoop = undefined;
    }
  });

  it("does not count a loop device on the same image file as a holder", async () => {
    extraLoop = (await run("losetup", ["-f", "--show", "-o", String(MiB), img])).stdout.trim();
    try {
      // This one reads from the image file, not from our loop device: not a holder.
      expect((await inspectBlock(dev())).holders).toEqual([]);
    } finally {
      await run("losetup", ["-d", extraLoop], { allowFailure: true });
      extraLoop = undefined;
    }
  });

  it("refuses a read-only device", async () => {
    extraLoop = (await run("losetup", ["-f", "--show", "-r", img])).stdout.trim();
    try {
      const t = await inspectBlock(extraLoop);
      expect(t.readOnly).toBe(true);
      expect(describeTarget(t)[0]).toContain("read-only");
      await expect(checkTargetSafe(t, {})).rejects.toThrow(`${extraLoop} is read-only`);
    } finally {
      await run("losetup", ["-d", extraLoop], { allowFailure: true });
      extraLoop = undefined;
    }
  });

  it("drops cached pages of the device and of the image file", async () => {
    await dropPageCache(dev());
    await dropPageCache(img);
  });

  it("asks before writing and refuses without a yes", async () => {
    const t = await inspectBlock(dev());
    await expect(confirmWrite(t, { isTTY: false })).rejects.toThrow(
      `refusing to write ${dev()} without confirmation: no terminal to ask on; pass --yes`,
    );
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      const no = vi.fn(async (_message: string) => false);
      const err = await confirmWrite(t, { isTTY: true, prompt: no }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RefusedError);
      expect((err as Error).message).toBe("not confirmed; nothing was written");
      expect(no).toHaveBeenCalledOnce();
      expect(no.mock.calls[0]?.[0]).toContain(dev());
      const printed = stderr.mock.calls.map((c) => String(c[0])).join("");
      expect(printed).toContain(`${dev()}  67.1 MB  loop`);
      expect(printed).toContain(`${dev()}p1  21.0 MB  ext4`);

      await confirmWrite(t, { isTTY: true, prompt: async () => true });
      const never = vi.fn(async () => false);
      await confirmWrite(t, { yes: true, isTTY: false, prompt: never });
      expect(never).not.toHaveBeenCalled();
    } finally {
      stderr.mockRestore();
    }
  });

  it("is a picker candidate only with PROVISION_PICKER_INCLUDE_LOOP=1", async () => {
    const sys = await systemDisk();
    const withLoop = await withEnv("PROVISION_PICKER_INCLUDE_LOOP", "1", listCandidateDisks);
    expect(withLoop.map((d) => d.path)).toContain(dev());
    if (sys) expect(withLoop.map((d) => d.path)).not.toContain(sys);
    const mine = withLoop.find((d) => d.path === dev());
    expect(mine).toMatchObject({ kind: "block", size: 64 * MiB, transport: "loop" });
    expect(mine?.partitions).toHaveLength(2);

    const without = await withEnv("PROVISION_PICKER_INCLUDE_LOOP", undefined, listCandidateDisks);
    expect(without.map((d) => d.path)).not.toContain(dev());

    const picked = await withEnv("PROVISION_PICKER_INCLUDE_LOOP", "1", () =>
      pickDisk({
        prompt: async (_msg, choices) => {
          const c = choices.find((x) => x.value === dev());
          expect(c?.name).toContain("67.1 MB");
          return c?.value ?? "";
        },
      }),
    );
    expect(picked).toBe(dev());
    if (without.length === 0) {
      await expect(
        withEnv("PROVISION_PICKER_INCLUDE_LOOP", undefined, () =>
          pickDisk({ prompt: async () => "" }),
        ),
      ).rejects.toThrow("no removable disks found; insert the card or pass a target path");
    }
  });
});
