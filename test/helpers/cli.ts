// Run the real CLI (bin/provision.js over dist/, built by `npm test`) as a child process with
// no terminal, the way CI and scripts run it.

import path from "node:path";
import { execa } from "execa";
import { repoRoot } from "./fixtures.js";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function runCli(
  args: string[],
  opts: { cacheHome: string; env?: Record<string, string> },
): Promise<CliResult> {
  const r = await execa("node", [path.join(repoRoot, "bin", "provision.js"), ...args], {
    reject: false,
    stdin: "ignore",
    env: { XDG_CACHE_HOME: opts.cacheHome, CI: "1", ...opts.env },
    timeout: 300_000,
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Start the CLI without waiting, for tests that interrupt it. */
export function startCli(
  args: string[],
  opts: { cacheHome: string; env?: Record<string, string> },
) {
  return execa("node", [path.join(repoRoot, "bin", "provision.js"), ...args], {
    reject: false,
    stdin: "ignore",
    env: { XDG_CACHE_HOME: opts.cacheHome, CI: "1", ...opts.env },
    timeout: 300_000,
  });
}
