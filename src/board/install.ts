/**
 * Copy staged Pi boot files and config.txt onto the ESP of a target, with mtools at the ESP's
 * byte offset (works the same on an image file and on a whole-disk block device).
 *
 * Never overwrites: the ESP is listed first (one `mdir`), files it already has (compared
 * case-insensitively, as FAT does) are skipped and reported, and only the rest are copied.
 * mcopy also gets `-D s` ("skip on a name clash") as a second guard; note that mcopy exits 1
 * when it skipped something, so a non-zero exit is treated as an error here (nothing else
 * should be writing to the ESP meanwhile).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ProvisionError } from "../errors.js";
import { requirePrograms } from "../exec/index.js";
import {
  describeEsp,
  fatInfo,
  freeBytes,
  listEsp,
  locateEsp,
  mib,
  mtools,
  mtoolsError,
} from "./esp.js";
import type { StagedFile } from "./firmware.js";

export interface InstallResult {
  /** ESP paths written, in the order written (config.txt last). */
  written: string[];
  /** ESP paths the ESP already had, left untouched. */
  skipped: string[];
  /** False when the ESP already had a config.txt (ours was not written). */
  configTxtWritten: boolean;
}

/** Source files per mcopy call. */
const BATCH = 100;

export async function installBootFiles(
  target: string,
  staged: { files: readonly StagedFile[] },
  opts: { configTxt: string; tmpDir?: string },
): Promise<InstallResult> {
  await requirePrograms(["mdir", "mmd", "mcopy", "minfo", "mtype"]);
  const esp = await locateEsp(target);
  const where = describeEsp(esp);
  const info = await fatInfo(esp.image, `cannot read ${where}`);
  const existing = new Map<string, boolean>(); // lower-case path -> is a directory
  for (const e of await listEsp(esp.image, `cannot list ${where}`)) {
    existing.set(e.path.toLowerCase(), e.dir);
  }

  const tmp = await mkdtemp(path.join(opts.tmpDir ?? tmpdir(), "provision-esp-"));
  try {
    const configSource = path.join(tmp, "config.txt");
    await writeFile(configSource, opts.configTxt, { mode: 0o600 });
    const configFile: StagedFile = {
      path: "config.txt",
      source: configSource,
      size: Buffer.byteLength(opts.configTxt),
    };
    const all: StagedFile[] = [
      ...staged.files.filter((f) => f.path.toLowerCase() !== "config.txt"),
      configFile,
    ];

    const toWrite: StagedFile[] = [];
    const skipped: string[] = [];
    const newDirs: string[] = [];
    const plannedDirs = new Set<string>();
    for (const f of all) {
      if (existing.has(f.path.toLowerCase())) {
        skipped.push(f.path);
        continue;
      }
      const parts = f.path.split("/");
      for (let i = 1; i < parts.length; i++) {
        const dir = parts.slice(0, i).join("/");
        const key = dir.toLowerCase();
        const isDir = existing.get(key);
        if (isDir === false) {
          throw new ProvisionError(
            `cannot create the directory ${dir} on ${where}: a file of that name exists`,
            { hint: `remove ${dir} from the ESP (mdel -i '${esp.image}' ::/${dir}) and retry` },
          );
        }
        if (isDir === undefined && !plannedDirs.has(key)) {
          plannedDirs.add(key);
          newDirs.push(dir);
        }
      }
      toWrite.push(f);
    }

    // Room for it? Each file and directory takes whole clusters.
    const cluster = info.clusterSectors * info.sectorSize;
    const need =
      toWrite.reduce((n, f) => n + Math.ceil(f.size / cluster) * cluster, 0) +
      newDirs.length * cluster;
    const free = await freeBytes(esp.image, `cannot read ${where}`);
    if (free !== undefined && need > free) {
      throw new ProvisionError(
        `not enough room on ${where}: the Pi boot files need ${mib(need)}, ${mib(free)} is free`,
        {
          hint: "give a firmware directory with only the files this board needs, or use an image with a bigger ESP",
        },
      );
    }

    if (newDirs.length > 0) {
      await mtools(
        "mmd",
        ["-i", esp.image, ...newDirs.map((d) => `::/${d}`)],
        `cannot create directories on ${where}`,
      );
    }

    // One mcopy per destination directory (and per BATCH files) for files keeping their name;
    // one per file for those renamed on the way (U-Boot from u-boot-rpi*.bin, config.txt).
    const groups = new Map<string, StagedFile[]>();
    const renamed: StagedFile[] = [];
    for (const f of toWrite) {
      if (f === configFile) continue;
      if (path.basename(f.source) !== path.posix.basename(f.path)) {
        renamed.push(f);
        continue;
      }
      const dir = path.posix.dirname(f.path);
      const list = groups.get(dir) ?? [];
      list.push(f);
      groups.set(dir, list);
    }
    const written: string[] = [];
    const what = `copying the Pi boot files onto ${where} failed`;
    for (const [dir, list] of groups) {
      const dest = dir === "." ? "::/" : `::/${dir}/`;
      for (let i = 0; i < list.length; i += BATCH) {
        const chunk = list.slice(i, i + BATCH);
        await mtools(
          "mcopy",
          ["-m", "-D", "s", "-i", esp.image, ...chunk.map((f) => f.source), dest],
          what,
        );
        written.push(...chunk.map((f) => f.path));
      }
    }
    const config = toWrite.includes(configFile) ? configFile : undefined;
    for (const f of renamed) {
      await mtools("mcopy", ["-m", "-D", "s", "-i", esp.image, f.source, `::/${f.path}`], what);
      written.push(f.path);
    }
    if (config) {
      await mtools(
        "mcopy",
        ["-D", "s", "-i", esp.image, config.source, "::/config.txt"],
        `writing config.txt onto ${where} failed`,
      );
      written.push("config.txt");
    }

    // Read back: everything written is listed, and config.txt has our text.
    const after = new Set(
      (await listEsp(esp.image, `cannot list ${where}`)).map((e) => e.path.toLowerCase()),
    );
    const lost = written.filter((p) => !after.has(p.toLowerCase()));
    if (lost.length > 0) {
      throw new ProvisionError(`after copying, ${where} does not list ${lost.join(", ")}`, {
        hint: "the ESP may be damaged: check it with fsck.vfat",
      });
    }
    if (config) {
      const r = await mtools(
        "mtype",
        ["-i", esp.image, "::/config.txt"],
        `cannot read back config.txt`,
        { allowFailure: true },
      );
      if (r.exitCode !== 0) throw mtoolsError("cannot read back config.txt", r.stderr);
      if (r.stdout.trimEnd() !== opts.configTxt.trimEnd()) {
        throw new ProvisionError(`config.txt on ${where} does not read back as written`);
      }
    }
    return { written, skipped, configTxtWritten: config !== undefined };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
