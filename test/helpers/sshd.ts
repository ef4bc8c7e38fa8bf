/**
 * A real OpenSSH server on 127.0.0.1 for the remote tests: its own throw-away host key, its
 * own config, a client key authorized for root, and a known_hosts file that names it.
 * Nothing of the machine's own sshd configuration is used or changed.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { execa } from "execa";
import { freeLocalPort } from "../../src/qemu/ssh.js";

export interface Sshd {
  port: number;
  dir: string;
  /** The client's private key (authorized for root). */
  clientKey: string;
  /** A known_hosts file with the server's real host key. */
  knownHosts: string;
  /** A known_hosts file naming the server with some other key. */
  wrongKnownHosts: string;
  hostKeyPub: string;
  /** What sshd logged (-e). */
  log(): string;
  stop(): Promise<void>;
}

async function keygen(file: string, comment: string): Promise<string> {
  await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", file]);
  return (await readFile(`${file}.pub`, "utf8")).trim();
}

/** `env` lines go to the session's environment (sshd SetEnv), e.g. PATH with fakes first. */
export async function startSshd(opts: { env?: Record<string, string> } = {}): Promise<Sshd> {
  const dir = await mkdtemp(join(tmpdir(), "provision-sshd-"));
  // sshd's privilege separation directory (Debian creates it from its init script).
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const port = await freeLocalPort();
  const hostKey = join(dir, "host_ed25519");
  const hostKeyPub = await keygen(hostKey, "provision-test-host");
  const otherPub = await keygen(join(dir, "other_host_ed25519"), "some-other-host");
  const clientKey = join(dir, "client_ed25519");
  const clientPub = await keygen(clientKey, "provision-test-client");
  await writeFile(join(dir, "authorized_keys"), `${clientPub}\n`, { mode: 0o600 });
  const [type, blob] = hostKeyPub.split(/\s+/);
  const [otype, oblob] = otherPub.split(/\s+/);
  const knownHosts = join(dir, "known_hosts");
  const wrongKnownHosts = join(dir, "known_hosts.wrong");
  await writeFile(knownHosts, `[127.0.0.1]:${port} ${type} ${blob}\n`);
  await writeFile(wrongKnownHosts, `[127.0.0.1]:${port} ${otype} ${oblob}\n`);
  const setEnv = Object.entries(opts.env ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
  const config = [
    `Port ${port}`,
    "ListenAddress 127.0.0.1",
    `HostKey ${hostKey}`,
    `PidFile ${join(dir, "sshd.pid")}`,
    "PermitRootLogin prohibit-password",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PubkeyAuthentication yes",
    `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
    "StrictModes no",
    "UsePAM no",
    // A strict umask: an upload must get its mode from us, not from the server.
    "Subsystem sftp internal-sftp -u 077",
    "LogLevel VERBOSE",
    setEnv ? `SetEnv ${setEnv}` : "",
  ]
    .filter(Boolean)
    .join("\n");
  const configFile = join(dir, "sshd_config");
  await writeFile(configFile, `${config}\n`);
  let log = "";
  const child: ChildProcess = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", configFile], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout?.on("data", (b: Buffer) => {
    log += b.toString();
  });
  child.stderr?.on("data", (b: Buffer) => {
    log += b.toString();
  });
  // Wait until it accepts connections.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host: "127.0.0.1", port }, () => {
        s.end();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) break;
    if (child.exitCode !== null || Date.now() > deadline)
      throw new Error(`sshd did not start: ${log}`);
    await sleep(50);
  }
  return {
    port,
    dir,
    clientKey,
    knownHosts,
    wrongKnownHosts,
    hostKeyPub,
    log: () => log,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((r) => child.once("exit", r));
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
