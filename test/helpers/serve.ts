// `provision serve` as a child process for tests, and detached signatures made with the
// fixtures' throw-away GnuPG homes (fixtures/build-all.sh), for upstream files it verifies.
import { type ChildProcess, spawn } from "node:child_process";
import { cp, mkdtemp, readFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { repoRoot } from "./fixtures.js";

/** Sign `file` with the key in the GnuPG home `homedir` (copied to `work` first). */
export async function detachSign(homedir: string, file: string, work: string): Promise<Buffer> {
  const home = await mkdtemp(join(work, "gpg-"));
  await cp(homedir, home, { recursive: true });
  await execa("gpg", [
    "--homedir",
    home,
    "--batch",
    "--yes",
    "--quiet",
    "--pinentry-mode",
    "loopback",
    "--passphrase",
    "",
    "--detach-sign",
    "--output",
    `${file}.sig`,
    file,
  ]);
  await execa("gpgconf", ["--homedir", home, "--kill", "all"], { reject: false });
  return await readFile(`${file}.sig`);
}

export interface ServeChild {
  proc: ChildProcess;
  /** The URL it listens on (from its start-up line), e.g. http://127.0.0.1:41234. */
  url: string;
  /** Its stdout lines (the request log). */
  out: string[];
}

/** `provision serve ARGS` on 127.0.0.1:0; resolves once it listens, rejects if it exits. */
export function spawnServe(
  args: string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv },
): { proc: ChildProcess; out: string[]; stderr: () => string; listening: Promise<string> } {
  const proc = spawn(
    "node",
    [join(repoRoot, "bin", "provision.js"), "serve", "--listen", "127.0.0.1:0", ...args],
    { cwd: opts.cwd, env: opts.env, stdio: ["ignore", "pipe", "pipe"] },
  );
  const out: string[] = [];
  proc.stdout?.on("data", (d: Buffer) => out.push(...d.toString().split("\n").filter(Boolean)));
  let err = "";
  const listening = new Promise<string>((resolve, reject) => {
    proc.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
      const m = / host\(s\) from .* on (http:\/\/127\.0\.0\.1:\d+)/.exec(err);
      if (m) resolve(m[1] as string);
    });
    proc.on("exit", (c) => reject(new Error(`serve exited ${c}: ${err}`)));
  });
  listening.catch(() => {});
  return { proc, out, stderr: () => err, listening };
}

export async function startServe(
  args: string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv },
): Promise<ServeChild> {
  const s = spawnServe(args, opts);
  return { proc: s.proc, out: s.out, url: await s.listening };
}
