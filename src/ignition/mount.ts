/**
 * Write one file into a filesystem that e2fsprogs cannot edit (Flatcar's btrfs OEM partition):
 * attach the partition's byte range as a loop device, mount it, write, unmount, detach. Needs
 * root. Everything set up is torn down again in reverse order, whatever fails.
 */
import { chmod, chown, mkdtemp, open, rmdir, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeError, ProvisionError } from "../errors.js";
import { requirePrograms, run } from "../exec/index.js";

export interface MountedWrite {
  target: string;
  offset: number;
  size: number;
  fsType: string;
  /** Path inside the filesystem, relative to its root, e.g. "config.ign". */
  file: string;
  content: string;
  mode: number;
  /** Refuse when the file already exists. */
  refuseExisting: boolean;
  /** For messages, e.g. "Flatcar OEM partition (6)". */
  what: string;
}

export async function writeFileViaMount(w: MountedWrite): Promise<void> {
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    throw new ProvisionError(
      `writing the Ignition config into the ${w.what} (${w.fsType}) needs root: it has to be mounted`,
      {
        hint: "run provision with sudo",
      },
    );
  }
  await requirePrograms(["losetup", "mount", "umount"]);
  const mnt = await mkdtemp(join(tmpdir(), "provision-mnt-"));
  let loop: string | undefined;
  let mounted = false;
  let failure: unknown;
  try {
    const r = await run("losetup", [
      "--find",
      "--show",
      "--offset",
      String(w.offset),
      "--sizelimit",
      String(w.size),
      w.target,
    ]);
    loop = r.stdout.trim();
    if (!loop.startsWith("/dev/"))
      throw new ProvisionError(`losetup did not print a loop device (got ${JSON.stringify(loop)})`);
    await run("mount", ["-t", w.fsType, "-o", "rw,nosuid,nodev,noexec", loop, mnt]);
    mounted = true;
    const dest = join(mnt, w.file);
    if (w.refuseExisting && (await exists(dest))) {
      throw new ProvisionError(
        `${w.target}: the ${w.what} already has /${w.file}; refusing to overwrite it`,
        {
          hint: "start from a freshly written image",
        },
      );
    }
    await writeFile(dest, w.content, { mode: w.mode, flag: w.refuseExisting ? "wx" : "w" });
    await chmod(dest, w.mode);
    await chown(dest, 0, 0);
    const fh = await open(dest, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    failure = err;
  }

  // Tear down in reverse order, whatever happened above.
  const problems: string[] = [];
  if (mounted) {
    const u = await run("umount", [mnt], { allowFailure: true });
    if (u.exitCode !== 0)
      problems.push(`umount ${mnt}: ${u.stderr.trim() || `exit code ${u.exitCode}`}`);
  }
  if (loop) {
    const d = await run("losetup", ["-d", loop], { allowFailure: true });
    if (d.exitCode !== 0)
      problems.push(`losetup -d ${loop}: ${d.stderr.trim() || `exit code ${d.exitCode}`}`);
  }
  if (problems.length === 0) await rmdir(mnt).catch(() => {});
  if (failure !== undefined) {
    if (problems.length > 0 && failure instanceof ProvisionError && failure.hint === undefined) {
      throw new ProvisionError(failure.message, {
        hint: `also clean up by hand: ${problems.join("; ")}`,
        exitCode: failure.exitCode,
        cause: failure,
      });
    }
    throw failure;
  }
  if (problems.length > 0) {
    throw new ProvisionError(
      `the ${w.what} was written but cleaning up failed: ${problems.join("; ")}`,
    );
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === "ENOENT") return false;
    throw new ProvisionError(`cannot check ${p}: ${describeError(err)}`);
  }
}
