// The repair unit as shipped: the script is taken out of the fragment's data URL (what Ignition
// would write to the host), checked with bash -n and shellcheck, and run against loop devices
// this file attaches, after simulating a partition-table rewrite that leaves a protective MBR.
// The fragment goes through ignition-validate (alone and merged into a user config) and the
// unit through systemd-analyze verify.
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import {
  chmod,
  cp,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  stat,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hasProgram } from "../../src/exec/index.js";
import { readGpt } from "../../src/gpt/index.js";
import { mergeFragments, parseIgnitionText } from "../../src/ignition/index.js";
import {
  buildHybridMbr,
  checkHybridForPi,
  mbrEquals,
  REPAIR_SCRIPT,
  REPAIR_SCRIPT_PATH,
  REPAIR_UNIT,
  REPAIR_UNIT_NAME,
  readMbr,
  repairUnitButane,
  repairUnitFragment,
  writeHybridMbr,
} from "../../src/mbr/index.js";
import { partition } from "../helpers/fixtures.js";
import { attachLoop, detachLoop } from "../helpers/loop.js";
import { copyFcos, gptDump, hybridDump, isRoot, mbrDump, ok, sha256, tool } from "./util.js";

interface Fragment {
  ignition: { version: string };
  storage: {
    files: {
      path: string;
      mode: number;
      contents: { source: string; verification: { hash: string } };
    }[];
  };
  systemd: { units: { name: string; enabled: boolean; contents: string }[] };
}

const HAS_SHELLCHECK = await hasProgram("shellcheck");
const HAS_ANALYZE = await hasProgram("systemd-analyze");
const fragment = repairUnitFragment() as Fragment;
const file = fragment.storage.files[0];
const unit = fragment.systemd.units[0];

/** The script as Ignition will write it: decoded from the data URL. */
function shippedScript(): string {
  const source = file?.contents.source ?? "";
  const m = /^data:[^,]*;base64,(.*)$/s.exec(source);
  if (!m) throw new Error(`not a base64 data URL: ${source.slice(0, 40)}`);
  return Buffer.from(m[1] as string, "base64").toString("utf8");
}

let work: string;
let script: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-repair-"));
  script = join(work, "provision-hybrid-mbr");
  await writeFile(script, shippedScript());
  await chmod(script, 0o755);
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("the fragment", () => {
  it("installs the script (0755, sha512-verified) and enables the unit", () => {
    expect(fragment.ignition.version).toBe("3.3.0");
    expect(fragment.storage.files).toHaveLength(1);
    expect(file?.path).toBe("/usr/local/sbin/provision-hybrid-mbr");
    expect(file?.mode).toBe(0o755);
    expect(shippedScript()).toBe(REPAIR_SCRIPT);
    const digest = createHash("sha512").update(shippedScript()).digest("hex");
    expect(file?.contents.verification.hash).toBe(`sha512-${digest}`);
    expect(unit).toEqual({ name: REPAIR_UNIT_NAME, enabled: true, contents: REPAIR_UNIT });
    expect(REPAIR_UNIT).toContain(`ExecStart=${REPAIR_SCRIPT_PATH}\n`);
  });

  it("passes ignition-validate alone and merged into a user config", async () => {
    const validate = async (text: string, name: string) => {
      const f = join(work, name);
      await writeFile(f, text);
      return tool("ignition-validate", [f]);
    };
    const alone = await validate(JSON.stringify(fragment), "fragment.ign");
    expect(alone).toMatchObject({ code: 0, stdout: "", stderr: "" });
    for (const version of ["3.3.0", "3.0.0"]) {
      const user = await parseIgnitionText(
        JSON.stringify({
          ignition: { version },
          passwd: { users: [{ name: "core", sshAuthorizedKeys: ["ssh-ed25519 AAAA test"] }] },
          storage: {
            files: [{ path: "/etc/hostname", mode: 420, contents: { source: "data:,pi" } }],
          },
        }),
        `user-${version}.ign`,
      );
      const merged = mergeFragments(user, [repairUnitFragment()]);
      const r = await validate(merged.text, `merged-${version}.ign`);
      expect(r).toMatchObject({ code: 0, stdout: "", stderr: "" });
      // The fragment is in there, byte for byte, before the user's config.
      const sources = (merged.json.ignition.config.merge as { source: string }[]).map((m) =>
        Buffer.from(m.source.replace(/^data:;base64,/, ""), "base64").toString("utf8"),
      );
      expect(JSON.parse(sources[0] as string)).toEqual(fragment);
      expect(sources[1]).toBe(user.text);
    }
  });

  it("the Butane form carries the same script and unit", () => {
    const y = repairUnitButane();
    expect(y).toMatch(/^variant: fcos\nversion: 1\.4\.0\n/m);
    const block = (after: string, indent: number) => {
      const lines = y.split("\n");
      const start = lines.findIndex((l) => l.trimEnd().endsWith(after)) + 1;
      const out: string[] = [];
      for (const l of lines.slice(start)) {
        if (l !== "" && !l.startsWith(" ".repeat(indent))) break;
        out.push(l.slice(indent));
      }
      while (out.at(-1) === "") out.pop();
      return `${out.join("\n")}\n`;
    };
    expect(block("inline: |", 10)).toBe(REPAIR_SCRIPT);
    expect(block("contents: |", 8)).toBe(REPAIR_UNIT);
    expect(y).toContain(`    - path: ${REPAIR_SCRIPT_PATH}\n      mode: 0755\n`);
    expect(y).toContain(`    - name: ${REPAIR_UNIT_NAME}\n      enabled: true\n`);
    expect(y).not.toMatch(/\t/);
  });
});

describe("the script, statically", () => {
  it("bash -n", async () => {
    expect(await tool("bash", ["-n", script])).toMatchObject({ code: 0, stderr: "" });
  });

  it("shellcheck finds nothing", async () => {
    const r = await tool("shellcheck", ["--shell=bash", "--severity=style", script]);
    expect(r.stdout).toBe("");
    expect(r.code).toBe(0);
  });

  it("uses only bash builtins, coreutils and util-linux", () => {
    const allowed = new Set([
      // util-linux
      "findmnt",
      "lsblk",
      "sfdisk",
      "blockdev",
      // coreutils
      "dd",
      "od",
      "tr",
      "head",
      "readlink",
    ]);
    // Commands at the start of a pipeline stage or after $( : the words that are not builtins.
    const builtins = new Set(
      "echo printf local return exit set export if then else fi for do done while break continue die default_disk le32 read_entries true false".split(
        " ",
      ),
    );
    const used = new Set<string>();
    for (const raw of REPAIR_SCRIPT.split("\n")) {
      // Without comments, quoted strings and arithmetic: what is left starts commands.
      const line = raw
        .replace(/(^|\s)#.*$/, "")
        .replace(/"[^"]*"|'[^']*'|\(\([^)]*\)\)/g, "")
        .trim();
      for (const m of line.matchAll(/(?:^|\$\(|\|\s*|&&\s*|\|\|\s*)([a-z][a-z_.-]*)(?=\s|$|\))/g)) {
        const word = m[1] as string;
        if (!builtins.has(word) && !line.startsWith(`${word}=`) && !line.endsWith("() {"))
          used.add(word);
      }
    }
    expect([...used].filter((w) => !allowed.has(w))).toEqual([]);
    // The scan does see the commands (it is not vacuous).
    expect([...used].sort()).toEqual([...allowed].sort());
  });
});

describe("systemd-analyze verify", () => {
  it("passes with the script installed under --root, and fails without it", async () => {
    // --root looks up every unit under the root: give it this host's unit directory.
    const root = join(work, "root");
    await mkdir(join(root, "etc/systemd/system"), { recursive: true });
    await mkdir(join(root, "usr/lib/systemd"), { recursive: true });
    await cp("/usr/lib/systemd/system", join(root, "usr/lib/systemd/system"), {
      recursive: true,
      verbatimSymlinks: true,
    });
    const unitPath = `/etc/systemd/system/${REPAIR_UNIT_NAME}`;
    await writeFile(join(root, unitPath), REPAIR_UNIT);
    const verify = () => tool("systemd-analyze", ["verify", `--root=${root}`, unitPath]);

    const without = await verify();
    expect(without.code).not.toBe(0);
    expect(without.stderr).toContain(`Command ${REPAIR_SCRIPT_PATH} is not executable`);

    await mkdir(join(root, "usr/local/sbin"), { recursive: true });
    await writeFile(join(root, REPAIR_SCRIPT_PATH), shippedScript());
    await chmod(join(root, REPAIR_SCRIPT_PATH), 0o755);
    const r = await verify();
    expect(r).toMatchObject({ code: 0, stdout: "", stderr: "" });
  });
});

describe("the script on loop devices (attached here)", () => {
  const esp = () => partition("EFI-SYSTEM");
  let backing: string;
  let loop: string | undefined;
  let loops: (string | undefined)[] = [];
  const run = (args: string[]) => tool("bash", [script, ...args]);

  beforeAll(async () => {
    // A flashed card: the fixture with the hybrid MBR, on a bigger disk (room for root to grow).
    backing = await copyFcos(join(work, "card.img"));
    await writeHybridMbr(backing, buildHybridMbr(await readGpt(backing)));
    await truncate(backing, (await stat(backing)).size + (64 << 20));
    loop = await attachLoop(backing);
    loops.push(loop);
  });
  afterAll(async () => {
    for (const l of loops) await detachLoop(l);
    loops = [];
  });

  it("a partition-table rewrite that grows root leaves a protective MBR (the simulation)", async () => {
    const dev = loop as string;
    expect(await mbrDump(dev)).toEqual(hybridDump());
    // Re-create the GPT the way a table rewrite does (libfdisk creates a new label, and with it
    // a protective MBR): same partitions and GUIDs, root grown to the end of the bigger disk,
    // backup header moved to the end. (Growing root in place with `sgdisk -e -d 4 -n 4:...` or
    // `sfdisk -N 4` keeps a hybrid MBR: they write the GPT only.)
    const dump = (await ok("sfdisk", ["-d", dev]))
      .split("\n")
      .filter((l) => !l.startsWith("last-lba:"))
      .map((l) => (l.includes('name="root"') ? l.replace(/size=\s*\d+,\s*/, "") : l))
      .join("\n");
    await ok("sfdisk", ["--no-reread", "--no-tell-kernel", "-q", dev], `${dump}\n`);
    await ok("blockdev", ["--flushbufs", dev]);

    const total = (await stat(backing)).size / 512;
    expect(await mbrDump(dev)).toEqual([`start= 1, size= ${total - 1}, type=ee`]);
    const gpt = await readGpt(dev);
    expect(gpt.backupValid).toBe(true);
    expect(gpt.backupLba).toBe(total - 1);
    const root = gpt.partitions.find((p) => p.name === "root");
    expect(root?.lastLba).toBeGreaterThan(partition("root").end);
    expect(checkHybridForPi(await readMbr(dev), gpt)).toHaveLength(1);
  });

  it("restores the hybrid, writing sector 0 bytes 446–511 only", async () => {
    const dev = loop as string;
    const size = (await stat(backing)).size;
    const gptBefore = await gptDump(dev);
    const restHash = await sha256(backing, 512, size);
    const bootHash = await sha256(backing, 0, 446);

    const r = await run([dev]);
    expect(r).toMatchObject({
      code: 0,
      stdout: `hybrid MBR restored on ${dev} (ESP at LBA ${esp().start}, ${esp().sectors} sectors)`,
      stderr: "",
    });
    expect(await mbrDump(dev)).toEqual(hybridDump());
    expect(await gptDump(dev)).toEqual(gptBefore);
    expect(await sha256(backing, 512, size)).toBe(restHash);
    expect(await sha256(backing, 0, 446)).toBe(bootHash);
    // The same bytes that `provision mbr fix` writes.
    const gpt = await readGpt(dev);
    expect(mbrEquals(await readMbr(dev), buildHybridMbr(gpt))).toBe(true);
    expect(checkHybridForPi(await readMbr(backing), gpt)).toEqual([]);
    expect((await ok("sgdisk", ["-v", dev])).trim()).toMatch(/^No problems found\./);
  });

  it("run again: says so and writes nothing (no write open of the disk)", async () => {
    const dev = loop as string;
    const hash = await sha256(backing);
    const mtime = (await stat(backing)).mtimeMs;
    const r = await run([dev]);
    expect(r).toMatchObject({
      code: 0,
      stdout: `hybrid MBR already correct on ${dev}`,
      stderr: "",
    });
    expect(await sha256(backing)).toBe(hash);
    expect((await stat(backing)).mtimeMs).toBe(mtime);
    const log = join(work, "strace.log");
    const t = await tool("strace", ["-f", "-e", "trace=openat", "-o", log, "bash", script, dev]);
    expect(t.code).toBe(0);
    const opens = (await readFile(log, "utf8")).split("\n").filter((l) => l.includes(`"${dev}"`));
    expect(opens.length).toBeGreaterThan(0); // it did read the disk
    expect(opens.filter((l) => /O_WRONLY|O_RDWR/.test(l))).toEqual([]);
  });

  it("without an argument, finds the disk holding /boot (private mount namespace)", async () => {
    const dev = loop as string;
    expect(existsSync("/boot"), "/boot must exist to mount the test's boot partition on").toBe(
      true,
    );
    await ok("partx", ["-a", dev]);
    try {
      // /boot is the ext4 "boot" partition, mounted read-only in a namespace of its own.
      const r = await tool("unshare", [
        "-m",
        "--propagation",
        "private",
        "bash",
        "-c",
        `mount -o ro ${dev}p3 /boot && exec bash ${script}`,
      ]);
      expect(r).toMatchObject({ code: 0, stdout: `hybrid MBR already correct on ${dev}` });
    } finally {
      await ok("partx", ["-d", dev]);
    }
  });

  it("does nothing, successfully, on a disk without an EFI-SYSTEM partition", async () => {
    const plain = join(work, "plain.img");
    await writeFile(plain, "");
    await truncate(plain, 64 << 20);
    await ok("sgdisk", ["-n", "1:2048:0", "-t", "1:8300", "-c", "1:data", plain]);
    const dev = await attachLoop(plain);
    loops.push(dev);
    const hash = await sha256(plain);
    const mtime = (await stat(plain)).mtimeMs;
    const r = await run([dev]);
    expect(r).toMatchObject({
      code: 0,
      stdout: `no EFI-SYSTEM partition on ${dev}; nothing to do`,
      stderr: "",
    });
    expect(await sha256(plain)).toBe(hash);
    expect((await stat(plain)).mtimeMs).toBe(mtime);

    // No partition table at all: the same.
    const blank = join(work, "blank.img");
    await writeFile(blank, "");
    await truncate(blank, 8 << 20);
    const bdev = await attachLoop(blank);
    loops.push(bdev);
    const b = await run([bdev]);
    expect(b.code).toBe(0);
    expect(b.stdout).toBe(`no partition table on ${bdev}; no EFI-SYSTEM partition, nothing to do`);
    expect((await stat(blank)).blocks).toBe(0);
  });

  it("fails with one line on a path that is not a disk", async () => {
    const r = await run([join(work, "does-not-exist")]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/^provision-hybrid-mbr: .* is not a block device or a disk image$/);
  });
});
