/**
 * `--ssh [CMD]`: a throw-away ed25519 key, authorized for user `core` through an Ignition
 * fragment, and a loop that waits until the guest's sshd answers on the forwarded port and
 * then runs CMD once; its exit status is the verdict.
 */
import { readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { run } from "../exec/index.js";

export interface SshKey {
  privateKeyFile: string;
  publicKey: string;
}

export async function generateKey(dir: string, signal?: AbortSignal): Promise<SshKey> {
  const privateKeyFile = join(dir, "id_ed25519");
  await run(
    "ssh-keygen",
    ["-q", "-t", "ed25519", "-N", "", "-C", "provision-qemu-test", "-f", privateKeyFile],
    { signal },
  );
  const publicKey = (await readFile(`${privateKeyFile}.pub`, "utf8")).trim();
  return { privateKeyFile, publicKey };
}

/** The Ignition fragment that lets the key log in as `core` (FCOS and Flatcar both have it). */
export function sshKeyFragment(publicKey: string): object {
  return {
    ignition: { version: "3.0.0" },
    passwd: { users: [{ name: "core", sshAuthorizedKeys: [publicKey] }] },
  };
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export async function freeLocalPort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function sshArgs(key: SshKey, port: number, knownHosts: string): string[] {
  return [
    "-i",
    key.privateKeyFile,
    "-p",
    String(port),
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
    // A new guest has a new host key every time: trust it on first use, in our own file.
    "-o",
    "StrictHostKeyChecking=accept-new",
    "-o",
    `UserKnownHostsFile=${knownHosts}`,
    "-o",
    "ConnectTimeout=5",
    "-o",
    "LogLevel=ERROR",
    "core@127.0.0.1",
  ];
}

export interface SshOutcome {
  exitCode: number;
  /** Last lines of the command's output. */
  output: string;
}

/**
 * Poll until `ssh core@127.0.0.1 true` succeeds, then run `command` once. Ends early (with
 * undefined) when `signal` aborts: the console verdict or the timeout came first.
 */
export async function waitAndRun(
  key: SshKey,
  port: number,
  command: string,
  tmpDir: string,
  signal: AbortSignal,
): Promise<SshOutcome | undefined> {
  const base = sshArgs(key, port, join(tmpDir, "known_hosts"));
  while (!signal.aborted) {
    const probe = await run("ssh", [...base, "true"], { allowFailure: true, signal }).catch(
      () => undefined,
    );
    if (probe?.exitCode === 0) break;
    await sleep(2000, undefined, { signal }).catch(() => {});
  }
  if (signal.aborted) return undefined;
  const r = await run("ssh", [...base, command], { allowFailure: true, signal }).catch(
    () => undefined,
  );
  if (!r) return undefined;
  const output = `${r.stdout}\n${r.stderr}`.trim().split("\n").slice(-20).join("\n");
  return { exitCode: r.exitCode, output };
}
