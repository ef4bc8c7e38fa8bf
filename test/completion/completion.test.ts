// Shell completion through the real shells. bash and zsh run interactively on a
// pseudo-terminal (capture.zsh): the partial line is typed, TAB pressed, and the candidates
// their completion produced are read back; fish answers `complete -C LINE`. The scripts are
// what `provision completion <shell>` prints; they call the `provision` on PATH, here a
// wrapper running this checkout's bin/provision.js. Also: the __complete protocol itself.
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../helpers/fixtures.js";
import { attachLoop, detachLoop } from "../helpers/loop.js";

type Shell = "bash" | "zsh" | "fish";
const SHELLS: Shell[] = ["bash", "zsh", "fish"];
const BIN = join(repoRoot, "bin", "provision.js");
const CAPTURE = join(repoRoot, "test", "completion", "capture.zsh");

let work: string;
let binDir: string;
/** A directory with an inventory, an Ignition config and a subdirectory. */
let fleetDir: string;
/** A directory with no inventory in it or above. */
let elsewhere: string;
const script: Record<Shell, string> = { bash: "", zsh: "", fish: "" };
let loopDev: string | undefined;

function env(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: `${binDir}:${process.env.PATH}`,
    HOME: join(work, "home"),
    XDG_CONFIG_HOME: join(work, "home", ".config"),
    XDG_DATA_HOME: join(work, "home", ".local", "share"),
    XDG_CACHE_HOME: join(work, "cache"),
    PROVISION_INVENTORY: "",
    TERM: "xterm",
    CI: "1",
    ...extra,
  };
}

async function provision(args: string[], cwd = fleetDir) {
  const r = await execa("node", [BIN, ...args], {
    reject: false,
    stdin: "ignore",
    stripFinalNewline: false,
    cwd,
    env: env(),
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

let captures = 0;
/** What `shell` offers for `line` typed in `cwd` and TAB: the values, without descriptions. */
async function candidates(
  shell: Shell,
  line: string,
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<string[]> {
  const options = {
    cwd: opts.cwd ?? fleetDir,
    env: env(opts.env),
    stdin: "ignore" as const,
    timeout: 60_000,
  };
  let lines: string[];
  if (shell === "fish") {
    const r = await execa(
      "fish",
      ["--no-config", "-c", `source ${script.fish}; complete --do-complete="$LINE"`],
      { ...options, env: { ...options.env, LINE: line } },
    );
    lines = r.stdout.split("\n");
  } else {
    const out = join(work, `capture-${captures++}`);
    const r = await execa("zsh", ["-f", CAPTURE, shell, script[shell], out, line], {
      ...options,
      reject: false,
    });
    if (r.exitCode !== 0)
      throw new Error(
        `capture.zsh ${shell} "${line}": exit ${r.exitCode} ${r.timedOut ? "(timed out)" : ""}`,
      );
    lines = (await readFile(out, "utf8")).split("\n");
  }
  // fish: "value<TAB>description"; directories end in "/" (fish) or not (bash, zsh).
  const values = lines.map((l) => (l.split("\t")[0] ?? "").replace(/(.)\/$/, "$1"));
  return [...new Set(values.filter((v) => v !== ""))].sort();
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-completion-"));
  binDir = join(work, "bin");
  fleetDir = join(work, "fleet");
  elsewhere = join(work, "elsewhere");
  for (const d of [binDir, join(fleetDir, "configs"), elsewhere, join(work, "home")])
    await mkdir(d, { recursive: true });
  const wrapper = join(binDir, "provision");
  await writeFile(
    wrapper,
    `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} "$@"\n`,
  );
  await chmod(wrapper, 0o755);
  await writeFile(
    join(fleetDir, "provision.yaml"),
    "hosts:\n  alpha-node:\n    arch: x86_64\n  beta-node:\n    board: rpi4\n    boot: pxe\n",
  );
  await writeFile(join(work, "home", "lab.yaml"), "hosts:\n  gamma:\n    arch: aarch64\n");
  await writeFile(join(fleetDir, "config.ign"), '{"ignition": {"version": "3.4.0"}}\n');
  // zsh: the script goes into a directory on $fpath as _provision, as the README says.
  const files: Record<Shell, string> = {
    bash: join(work, "provision.bash"),
    zsh: join(work, "zfunc", "_provision"),
    fish: join(work, "provision.fish"),
  };
  await mkdir(join(work, "zfunc"));
  for (const shell of SHELLS) {
    const r = await provision(["completion", shell]);
    expect(r.code, r.stderr).toBe(0);
    await writeFile(files[shell], r.stdout);
    script[shell] = files[shell];
  }
});

afterAll(async () => {
  await detachLoop(loopDev);
  if (work) await rm(work, { recursive: true, force: true });
});

describe("provision completion", () => {
  it.each(SHELLS)("%s: the script is valid for its shell", async (shell) => {
    const r = await execa(shell, ["-n", script[shell]], { reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
  });

  it("an unknown shell is a usage error; the help shows the install lines", async () => {
    const bad = await provision(["completion", "tcsh"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("Allowed choices are bash, zsh, fish");
    const help = await provision(["completion", "--help"]);
    expect(help.stdout).toContain(
      "provision completion bash > ~/.local/share/bash-completion/completions/provision",
    );
    expect(help.stdout).toContain("~/.config/fish/completions/provision.fish");
  });
});

describe.each(SHELLS)("%s completes", (shell) => {
  const byShell = (flag: string, values: string[]) =>
    shell === "fish" ? values.map((v) => `${flag}=${v}`) : values;

  it("commands and subcommands (never the hidden __complete)", async () => {
    expect(await candidates(shell, "provision fl")).toEqual(["flash", "fleet"]);
    expect(await candidates(shell, "provision cache ")).toEqual(["help", "list", "prune"]);
    const all = await candidates(shell, "provision ");
    expect(all).toEqual(expect.arrayContaining(["completion", "flash", "mbr", "pxe-stick"]));
    expect(all.some((c) => c.startsWith("__"))).toBe(false);
    expect(await candidates(shell, "provision fleet sh")).toEqual(["show"]);
  });

  it("flags", async () => {
    expect(await candidates(shell, "provision flash --bo")).toEqual(["--board"]);
    expect(await candidates(shell, "provision fleet build --o")).toEqual(["--out"]);
    // A flag already given is not offered again (unless it is repeatable).
    expect(await candidates(shell, "provision mbr show --json --j")).toEqual([]);
    expect(await candidates(shell, "provision flash --append-karg a --append-k")).toEqual([
      "--append-karg",
    ]);
  });

  it("flag values: choices and the known values of --stream and --channel", async () => {
    expect(await candidates(shell, "provision flash --board ")).toEqual([
      "generic",
      "rpi2",
      "rpi3",
      "rpi4",
    ]);
    expect(await candidates(shell, "provision pxe-stick --boot ")).toEqual([
      "bios",
      "both",
      "uefi",
    ]);
    expect(await candidates(shell, "provision qemu-test --arch ")).toEqual(["aarch64", "x86_64"]);
    expect(await candidates(shell, "provision flash --os ")).toEqual(["fcos", "flatcar"]);
    expect(await candidates(shell, "provision qemu-test --stream ")).toEqual([
      "next",
      "stable",
      "testing",
    ]);
    expect(await candidates(shell, "provision flash --os flatcar --channel ")).toEqual([
      "alpha",
      "beta",
      "stable",
    ]);
    expect(await candidates(shell, "provision flash --stream=te")).toEqual(
      byShell("--stream", ["testing"]),
    );
    expect(await candidates(shell, "provision completion ")).toEqual(["bash", "fish", "zsh"]);
  });

  it("--host: the inventory's hosts (here or above, or --inventory FILE)", async () => {
    expect(await candidates(shell, "provision flash --host ")).toEqual(["alpha-node", "beta-node"]);
    expect(
      await candidates(shell, "provision qemu-test --host b", { cwd: join(fleetDir, "configs") }),
    ).toEqual(["beta-node"]);
    expect(
      await candidates(shell, "provision fleet show --inventory ../fleet/provision.yaml a", {
        cwd: elsewhere,
      }),
    ).toEqual(["alpha-node"]);
    expect(
      await candidates(shell, "provision pxe-stick --inventory=../fleet/provision.yaml --host=", {
        cwd: elsewhere,
      }),
    ).toEqual(byShell("--host", ["alpha-node", "beta-node"]));
    expect(
      await candidates(shell, "provision flash --inventory ~/lab.yaml --host ", { cwd: elsewhere }),
    ).toEqual(["gamma"]);
    // fleet check takes several hosts: one given is not offered again.
    expect(await candidates(shell, "provision fleet check alpha-node ")).toEqual(["beta-node"]);
    // No inventory: nothing (not file names).
    expect(await candidates(shell, "provision flash --host ", { cwd: elsewhere })).toEqual([]);
  });

  it("files for path flags, directories for directory flags", async () => {
    expect(await candidates(shell, "provision flash -i ")).toEqual([
      "config.ign",
      "configs",
      "provision.yaml",
    ]);
    expect(await candidates(shell, "provision flash --ignition=con")).toEqual(
      byShell("--ignition", ["config.ign", "configs"]),
    );
    expect(await candidates(shell, "provision fleet build --out ")).toEqual(["configs"]);
    // Free text: no file names.
    expect(await candidates(shell, "provision flash --sha256 ")).toEqual([]);
  });

  it("targets of flash and pxe-stick: the disks the picker offers, and files", async () => {
    if (process.getuid?.() !== 0) return; // a loop device needs root
    if (!loopDev) {
      const img = join(work, "disk.img");
      await writeFile(img, "");
      await execa("truncate", ["-s", "16M", img]);
      loopDev = await attachLoop(img);
    }
    const picker = { env: { PROVISION_PICKER_INCLUDE_LOOP: "1" } };
    expect(await candidates(shell, "provision flash /dev/lo", picker)).toContain(loopDev);
    const both = await candidates(shell, "provision pxe-stick ", picker);
    expect(both).toEqual(expect.arrayContaining([loopDev, "config.ign"]));
    expect(await candidates(shell, "provision flash ")).toContain("config.ign");
  });
});

describe("provision __complete (the protocol)", () => {
  it("a candidate a line, value<TAB>description, then :directive", async () => {
    const r = await provision(["__complete", "zsh", "--", "flash", "--bo"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      "--board\ttarget board: Pi boards get firmware, config.txt and (rpi2/3) a hybrid MBR\n:4\n",
    );
    // bash shows no descriptions: none are sent.
    expect((await provision(["__complete", "bash", "--", "flash", "--bo"])).stdout).toBe(
      "--board\n:4\n",
    );
    // Files (64), directories (16), nothing at all for an unknown flag's value.
    expect((await provision(["__complete", "bash", "--", "flash", "-i", ""])).stdout).toBe(":64\n");
    expect(
      (await provision(["__complete", "bash", "--", "fleet", "build", "--out", ""])).stdout,
    ).toBe(":16\n");
    expect((await provision(["__complete", "bash", "--", "flash", "--nope="])).stdout).toBe(":4\n");
    // Words after -- on the line are operands: no flags there.
    expect((await provision(["__complete", "bash", "--", "flash", "--", "--"])).stdout).toBe(
      ":64\n",
    );
  });

  it("is hidden from the help", async () => {
    const r = await provision(["--help"]);
    expect(r.stdout).toContain("completion");
    expect(r.stdout).not.toContain("__complete");
  });

  it("--stream still takes any value: the resolver names the ones there are", async () => {
    const r = await provision(["flash", "x.img", "--stream", "rawhide", "--dry-run"], elsewhere);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown FCOS stream "rawhide"');
    expect(r.stderr).toContain("use one of: stable, testing, next");
  });
});
