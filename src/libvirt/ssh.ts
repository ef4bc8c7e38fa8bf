/**
 * One SSH connection to a libvirt host (the `ssh2` library, no `ssh` binary): the host key
 * is checked against known_hosts before anything is sent, then commands run over exec
 * channels and files move over SFTP with an explicit mode (never the remote umask's).
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import ssh2, { type ClientChannel, type ConnectConfig, type SFTPWrapper } from "ssh2";
import { describeError, InterruptedError, ProvisionError } from "../errors.js";
import { lastLine } from "../exec/index.js";
import { checkHostKey, type HostKeyVerdict, knownHostsName } from "./known-hosts.js";

export interface SshTarget {
  host: string;
  port: number;
  user: string;
}

export interface ConnectOptions {
  /** Private key files to offer, in order (after the agent). Default: ~/.ssh/id_{ed25519,ecdsa,rsa}. */
  identities?: string[];
  /** known_hosts files. Default: ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts. */
  knownHosts?: string[];
  /** Accept any host key (the caller warns). */
  insecureHostKey?: boolean;
  signal?: AbortSignal;
  /** Connect timeout. */
  timeoutMs?: number;
}

export interface ExecResult {
  code: number | null;
  signal?: string;
  stdout: string;
  stderr: string;
}

/** A remote command's output, as it arrives. */
export interface RemoteProcess {
  stdout: Readable;
  /** Settles when the command ends (or the channel closes). */
  done: Promise<{ code: number | null; signal?: string; stderr: string }>;
  /** Write to the command's stdin. */
  write(text: string): void;
  /** End the command's stdin (EOF): a script that waits for it goes on. */
  end(): void;
  /** Close the channel (the remote command gets SIGHUP). */
  close(): void;
  /** Settles once the stdout bytes received so far have been handed on to `stdout`'s reader. */
  drained(): Promise<void>;
}

/** One step of a script that runs several commands in one exec (see stepsScript). */
export interface Step {
  command: string;
  /** What the error message calls it: "<host>: <what> failed (exit N): <last line>". */
  what: string;
}

/** A step of stepsScript failed: `step` is its index. */
export class StepError extends ProvisionError {
  constructor(
    message: string,
    readonly step: number,
    opts?: { hint?: string },
  ) {
    super(message, opts);
  }
}

const STEP = "provision-step:";
const STEP_FAILED = "provision-step-failed:";

/**
 * Shell text that runs the steps in order and stops at the first that fails, with its exit
 * status. Their output goes to stderr, between markers that stepFailure reads back, so one
 * exec (one login shell, one round trip) can do what several `check` calls did and still
 * name the step that failed.
 */
export function stepsScript(steps: Step[]): string {
  return steps
    .map(
      (step, i) =>
        `echo '${STEP} ${i}' >&2\n{ ${step.command}\n} >&2 || { r=$?; echo "${STEP_FAILED} ${i} $r" >&2; exit $r; }`,
    )
    .join("\n");
}

/** `HOST: WHAT failed (exit N): LAST LINE`, the one shape of a failed remote command. */
export function failedMessage(label: string, what: string, code: string, output: string): string {
  const last = lastLine(output);
  return `${label}: ${what} failed (exit ${code})${last ? `: ${last}` : ""}`;
}

/**
 * The error for a stepsScript that did not get through, naming the step that failed and its
 * last line of output. Undefined when every step passed.
 */
export function stepFailure(
  label: string,
  steps: Step[],
  r: { code: number | null; signal?: string; stderr: string },
): StepError | undefined {
  const lines = r.stderr.split("\n");
  let current = -1;
  let failed: { index: number; code: string } | undefined;
  let output: string[] = [];
  for (const line of lines) {
    if (line.startsWith(`${STEP} `)) {
      current = Number(line.slice(STEP.length + 1));
      output = [];
    } else if (line.startsWith(`${STEP_FAILED} `)) {
      const [index, code] = line.slice(STEP_FAILED.length + 1).split(" ");
      failed = { index: Number(index), code: code ?? "" };
      break;
    } else output.push(line);
  }
  if (!failed) {
    if (r.code === 0 && current === steps.length - 1) return undefined;
    // No marker: the channel ended in the middle of a step (a signal, a lost connection), or
    // before the first one (the shell could not run the script).
    failed = { index: current, code: String(r.code ?? r.signal) };
  }
  const what = steps[failed.index]?.what ?? "the remote shell";
  return new StepError(failedMessage(label, what, failed.code, output.join("\n")), failed.index);
}

// ssh2 is CommonJS: its named exports exist only on the default export under plain Node.
const { Client, utils } = ssh2;
type Client = InstanceType<typeof Client>;

function keyTypeOf(blob: Buffer): string {
  const len = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + len).toString("ascii");
}

function defaultIdentities(): string[] {
  const dir = join(homedir(), ".ssh");
  return ["id_ed25519", "id_ecdsa", "id_rsa"].map((f) => join(dir, f)).filter((f) => existsSync(f));
}

function defaultKnownHosts(): string[] {
  return [join(homedir(), ".ssh", "known_hosts"), "/etc/ssh/ssh_known_hosts"];
}

export class RemoteHost {
  private sftpSession?: Promise<SFTPWrapper>;
  /** What the host-key check decided (for the caller's report). */
  hostKey?: { type: string; verdict: HostKeyVerdict["kind"] | "skipped" };

  private constructor(
    readonly target: SshTarget,
    private readonly client: Client,
  ) {}

  get label(): string {
    return `${this.target.user}@${knownHostsName(this.target.host, this.target.port)}`;
  }

  static async connect(target: SshTarget, opts: ConnectOptions = {}): Promise<RemoteHost> {
    const client = new Client();
    const remote = new RemoteHost(target, client);
    const where = remote.label;
    const knownHosts = opts.knownHosts ?? defaultKnownHosts();
    let hostKeyError: ProvisionError | undefined;

    const identityFiles = opts.identities ?? defaultIdentities();
    const keys: { file: string; key: Buffer }[] = [];
    for (const file of identityFiles) {
      let key: Buffer;
      try {
        key = await readFile(file);
      } catch (err) {
        if (opts.identities) throw new ProvisionError(`identity ${file}: ${describeError(err)}`);
        continue;
      }
      const parsed = utils.parseKey(key);
      if (parsed instanceof Error) {
        // An encrypted key needs its passphrase; the agent is the way to use it.
        if (opts.identities)
          throw new ProvisionError(`identity ${file}: ${parsed.message}`, {
            hint: "an encrypted key must be loaded into ssh-agent (ssh-add) instead",
          });
        continue;
      }
      keys.push({ file, key });
    }
    const methods: NonNullable<ConnectConfig["authHandler"]> = [];
    if (process.env.SSH_AUTH_SOCK)
      methods.push({
        type: "agent",
        username: target.user,
        agent: process.env.SSH_AUTH_SOCK,
      } as never);
    for (const k of keys)
      methods.push({ type: "publickey", username: target.user, key: k.key } as never);
    if (methods.length === 0)
      throw new ProvisionError(`no SSH key to log in to ${where} with`, {
        hint: "start ssh-agent and ssh-add a key, or pass --identity FILE (or ?keyfile= in the URI)",
      });

    const config: ConnectConfig = {
      host: target.host,
      port: target.port,
      username: target.user,
      readyTimeout: opts.timeoutMs ?? 20_000,
      keepaliveInterval: 15_000,
      authHandler: methods,
      hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
        const type = keyTypeOf(key);
        const blob = key.toString("base64");
        if (opts.insecureHostKey) {
          remote.hostKey = { type, verdict: "skipped" };
          verify(true);
          return;
        }
        checkHostKey(knownHosts, target.host, target.port, type, blob).then(
          (v) => {
            remote.hostKey = { type, verdict: v.kind };
            if (v.kind === "match") return verify(true);
            const name = knownHostsName(target.host, target.port);
            if (v.kind === "mismatch")
              hostKeyError = new ProvisionError(
                `the ${type} host key of ${name} does not match ${v.file}:${v.line}: refusing to connect (the host was reinstalled, or someone is in between)`,
                {
                  hint: `if the host really changed, remove the old key with: ssh-keygen -R '${name}' -f ${v.file}`,
                },
              );
            else if (v.kind === "revoked")
              hostKeyError = new ProvisionError(
                `the host key of ${name} is marked @revoked in ${v.file}:${v.line}: refusing to connect`,
              );
            else
              hostKeyError = new ProvisionError(
                `the host key of ${name} (${type}) is not in ${knownHosts.join(" or ")}: refusing to connect`,
                {
                  hint: `connect once with ssh ${target.port === 22 ? "" : `-p ${target.port} `}${target.user}@${target.host} to check and record it, or pass --insecure-host-key`,
                },
              );
            verify(false);
          },
          (err) => {
            hostKeyError = new ProvisionError(`known_hosts: ${describeError(err)}`);
            verify(false);
          },
        );
      },
    } as ConnectConfig;

    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        client.end();
        reject(new ProvisionError("interrupted"));
      };
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      client.once("ready", () => {
        opts.signal?.removeEventListener("abort", onAbort);
        resolve();
      });
      client.once("error", (err: Error & { level?: string }) => {
        opts.signal?.removeEventListener("abort", onAbort);
        if (hostKeyError) return reject(hostKeyError);
        if (err.level === "client-authentication")
          return reject(
            new ProvisionError(`${where} did not accept any of our SSH keys`, {
              hint: `tried ${[process.env.SSH_AUTH_SOCK ? "the agent" : "", ...keys.map((k) => k.file)].filter(Boolean).join(", ")}; pass --identity FILE`,
            }),
          );
        reject(new ProvisionError(`cannot connect to ${where}: ${describeError(err)}`));
      });
      client.connect(config);
    });
    return remote;
  }

  /** Run a command (a `sh -c` string); collects its output. */
  async exec(command: string, opts: { signal?: AbortSignal } = {}): Promise<ExecResult> {
    const p = this.stream(command);
    const chunks: Buffer[] = [];
    p.stdout.on("data", (b: Buffer) => chunks.push(b));
    const onAbort = () => p.close();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const r = await p.done;
      return { ...r, stdout: Buffer.concat(chunks).toString("utf8") };
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Start a command and hand back its stdout as a stream. `onStderr` sees its stderr as it
   * arrives (the text is also in `done`'s stderr).
   */
  stream(command: string, opts: { onStderr?: (text: string) => void } = {}): RemoteProcess {
    let channel: ClientChannel | undefined;
    let ended = false;
    let closed = false;
    const pending: string[] = [];
    const out = new PassThrough();
    const done = new Promise<{ code: number | null; signal?: string; stderr: string }>(
      (resolve, reject) => {
        this.client.exec(command, (err, ch) => {
          if (err) {
            out.end();
            return reject(
              new ProvisionError(`${this.label}: cannot run a command: ${err.message}`),
            );
          }
          channel = ch;
          for (const t of pending) ch.write(t);
          pending.length = 0;
          if (ended) ch.end();
          if (closed) ch.close();
          let stderr = "";
          let code: number | null = null;
          let signal: string | undefined;
          ch.stderr.on("data", (b: Buffer) => {
            const text = b.toString();
            stderr = (stderr + text).slice(-16384);
            opts.onStderr?.(text);
          });
          ch.on("exit", (c: number | null, s?: string) => {
            code = c;
            signal = s ?? undefined;
          });
          ch.pipe(out);
          ch.on("close", () => resolve({ code, signal, stderr }));
        });
      },
    );
    return {
      stdout: out,
      done,
      write: (text) => {
        if (ended) return;
        if (channel) channel.write(text);
        else pending.push(text);
      },
      end: () => {
        if (ended) return;
        ended = true;
        channel?.end();
      },
      close: () => {
        closed = true;
        channel?.close();
      },
      drained: () =>
        new Promise<void>((resolve) => {
          // SSH delivers a channel's messages in order; what is left is Node's stream buffers,
          // which a reader empties within a few ticks. Polled (ssh2 has no event for "read
          // out"), for at most 0.5 s: a reader that stopped reading must not hold the exit.
          const check = (n: number) => {
            if (((channel?.readableLength ?? 0) === 0 && out.readableLength === 0) || n >= 50)
              setImmediate(resolve);
            else setTimeout(() => check(n + 1), 10);
          };
          check(0);
        }),
    };
  }

  /** The connection's SFTP session; a session that closes (see upload) is opened anew next time. */
  private sftp(): Promise<SFTPWrapper> {
    if (this.sftpSession) return this.sftpSession;
    const p = new Promise<SFTPWrapper>((resolve, reject) =>
      this.client.sftp((err, s) => {
        if (err) {
          reject(new ProvisionError(`${this.label}: SFTP is not available: ${err.message}`));
          return;
        }
        s.once("close", () => {
          if (this.sftpSession === p) this.sftpSession = undefined;
        });
        resolve(s);
      }),
    );
    p.catch(() => {
      if (this.sftpSession === p) this.sftpSession = undefined;
    });
    this.sftpSession = p;
    return p;
  }

  /** mkdir -p with a mode for the directories it creates. */
  async mkdirp(dir: string, mode: number): Promise<void> {
    const s = await this.sftp();
    const parts = dir.split("/").filter(Boolean);
    let path = "";
    for (const part of parts) {
      path += `/${part}`;
      const exists = await new Promise<boolean>((resolve) => s.stat(path, (err) => resolve(!err)));
      if (exists) continue;
      await new Promise<void>((resolve, reject) =>
        s.mkdir(path, { mode }, (err) =>
          err
            ? reject(new ProvisionError(`${this.label}: mkdir ${path}: ${err.message}`))
            : resolve(),
        ),
      );
      await this.chmod(path, mode);
    }
  }

  async chmod(path: string, mode: number): Promise<void> {
    const s = await this.sftp();
    await new Promise<void>((resolve, reject) =>
      s.chmod(path, mode, (err) =>
        err
          ? reject(new ProvisionError(`${this.label}: chmod ${path}: ${err.message}`))
          : resolve(),
      ),
    );
  }

  /**
   * Upload a local file with this mode: ssh2's fastPut sets it with fchmod after the
   * upload (chmod on servers without it), so the server's umask does not decide it.
   * `onBytes` sees the running total.
   */
  async upload(
    local: string,
    remote: string,
    mode: number,
    onBytes?: (sent: number, total: number) => void,
    signal?: AbortSignal,
  ): Promise<void> {
    const s = await this.sftp();
    if (signal?.aborted) throw new InterruptedError(`${this.label}: upload ${remote}: interrupted`);
    // fastPut cannot be cancelled by itself: ending the SFTP session fails what is in flight
    // (the next SFTP call opens a new one).
    const onAbort = () => s.end();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await this.put(s, local, remote, mode, onBytes);
    } catch (err) {
      throw signal?.aborted
        ? new InterruptedError(`${this.label}: upload ${remote}: interrupted`)
        : err;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  private put(
    s: SFTPWrapper,
    local: string,
    remote: string,
    mode: number,
    onBytes?: (sent: number, total: number) => void,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) =>
      s.fastPut(
        local,
        remote,
        {
          mode,
          concurrency: 64,
          chunkSize: 32768,
          step: onBytes
            ? (sent: number, _chunk: number, total: number) => onBytes(sent, total)
            : undefined,
        },
        (err) =>
          err
            ? reject(new ProvisionError(`${this.label}: upload ${remote}: ${describeError(err)}`))
            : resolve(),
      ),
    );
  }

  close(): void {
    this.client.end();
  }
}
