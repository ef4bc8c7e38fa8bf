/**
 * The SSH side of `qemu-test --connect`, against a real OpenSSH server on 127.0.0.1 with a
 * throw-away host key: host-key checking (right, wrong, unknown, hashed, skipped), login,
 * commands, and SFTP uploads landing with the mode we asked for.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkHostKey } from "../../src/libvirt/known-hosts.js";
import {
  RemoteHost,
  type Step,
  StepError,
  stepFailure,
  stepsScript,
} from "../../src/libvirt/ssh.js";
import { parseConnectUri } from "../../src/libvirt/uri.js";
import { type Sshd, startSshd } from "../helpers/sshd.js";

let sshd: Sshd;
let work: string;
beforeAll(async () => {
  sshd = await startSshd();
  work = await mkdtemp(join(tmpdir(), "provision-ssh-test-"));
});
afterAll(async () => {
  await sshd?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

const target = () => ({ host: "127.0.0.1", port: sshd.port, user: "root" });

describe("known_hosts", () => {
  it("matches plain, [host]:port and hashed entries the way ssh does, and tells a changed key", async () => {
    const [type, blob] = sshd.hostKeyPub.split(/\s+/) as [string, string];
    expect(await checkHostKey([sshd.knownHosts], "127.0.0.1", sshd.port, type, blob)).toEqual({
      kind: "match",
      file: sshd.knownHosts,
      line: 1,
    });
    // The same host on another port is another host.
    expect((await checkHostKey([sshd.knownHosts], "127.0.0.1", 22, type, blob)).kind).toBe(
      "unknown",
    );
    // ssh-keygen -H hashes the host names; the hashed file must still match.
    const hashed = join(work, "known_hosts.hashed");
    await writeFile(hashed, await readFile(sshd.knownHosts));
    await execa("ssh-keygen", ["-H", "-f", hashed]);
    expect(await readFile(hashed, "utf8")).toMatch(/^\|1\|/);
    expect((await checkHostKey([hashed], "127.0.0.1", sshd.port, type, blob)).kind).toBe("match");
    // What `ssh-keygen -F` finds, we find.
    const f = await execa("ssh-keygen", ["-F", `[127.0.0.1]:${sshd.port}`, "-f", hashed]);
    expect(f.stdout).toContain(blob);
    // The wrong key for this host: a mismatch, naming the line.
    expect(await checkHostKey([sshd.wrongKnownHosts], "127.0.0.1", sshd.port, type, blob)).toEqual({
      kind: "mismatch",
      file: sshd.wrongKnownHosts,
      line: 1,
      knownType: type,
    });
    // Wildcards, negation, @revoked.
    const patterns = join(work, "known_hosts.patterns");
    await writeFile(
      patterns,
      `# comment\n[127.0.0.*]:${sshd.port},!10.0.0.1 ${type} ${blob}\n@revoked * ${type} AAAArevoked\n`,
    );
    expect((await checkHostKey([patterns], "127.0.0.1", sshd.port, type, blob)).kind).toBe("match");
    expect((await checkHostKey([patterns], "127.0.0.1", sshd.port, type, "AAAArevoked")).kind).toBe(
      "revoked",
    );
  });

  it("reads libvirt's URI syntax: user, port, keyfile, no_verify, known_hosts", () => {
    const c = parseConnectUri(
      "qemu+ssh://alice@virthost:2200/system?keyfile=/k&no_verify=1&known_hosts=/kh",
      "me",
    );
    expect(c).toMatchObject({
      host: "virthost",
      port: 2200,
      user: "alice",
      localUri: "qemu:///system",
      keyfile: "/k",
      knownHosts: "/kh",
      noVerify: true,
    });
    expect(parseConnectUri("qemu+ssh://virthost/session", "me")).toMatchObject({
      user: "me",
      port: 22,
      localUri: "qemu:///session",
      noVerify: false,
    });
    expect(() => parseConnectUri("qemu:///system", "me")).toThrow(/only qemu\+ssh/);
    expect(() => parseConnectUri("qemu+ssh://h/system?socket=/x", "me")).toThrow(
      /unsupported parameter "socket"/,
    );
  });
});

/** A RemoteHost logged in to the test sshd with the right key and known_hosts, closed after fn. */
async function withHost(fn: (host: RemoteHost) => Promise<void>): Promise<void> {
  const host = await RemoteHost.connect(target(), {
    identities: [sshd.clientKey],
    knownHosts: [sshd.knownHosts],
  });
  try {
    await fn(host);
  } finally {
    host.close();
  }
}

describe("RemoteHost against a real sshd", () => {
  it("logs in with the key when the host key is in known_hosts, runs commands, and uploads with the asked mode", async () => {
    await withHost(async (host) => {
      expect(host.hostKey).toEqual({ type: "ssh-ed25519", verdict: "match" });
      const r = await host.exec("id -u; echo err >&2; exit 3");
      expect(r).toMatchObject({ code: 3, stdout: "0\n", stderr: "err\n" });

      const dir = join(work, "remote", "a", "b");
      await host.mkdirp(dir, 0o711);
      expect((await stat(dir)).mode & 0o777).toBe(0o711);
      expect((await stat(join(work, "remote"))).mode & 0o777).toBe(0o711);
      const local = join(work, "payload.bin");
      const payload = randomBytes(3 * 1024 * 1024 + 17);
      await writeFile(local, payload);
      const seen: number[] = [];
      // The server's umask (022, or 077 under a hardened sshd) must not decide the mode.
      await host.upload(local, join(dir, "config.ign"), 0o644, (sent) => seen.push(sent));
      await host.upload(local, join(dir, "private"), 0o600);
      const st = await stat(join(dir, "config.ign"));
      expect(st.mode & 0o777).toBe(0o644);
      expect((await stat(join(dir, "private"))).mode & 0o777).toBe(0o600);
      expect((await readFile(join(dir, "config.ign"))).equals(payload)).toBe(true);
      expect(seen.at(-1)).toBe(payload.length);
    });
  });

  it("runs several steps in one exec and names the one that failed, with its last line", async () => {
    await withHost(async (host) => {
      const steps = async (list: Step[]) =>
        stepFailure(host.label, list, await host.exec(stepsScript(list)));
      const file = join(work, "steps.txt");
      expect(
        await steps([
          { command: `echo one > ${file}`, what: "writing" },
          { command: `echo to-stdout; echo to-stderr >&2; echo two >> ${file}`, what: "talking" },
        ]),
      ).toBeUndefined();
      expect(await readFile(file, "utf8")).toBe("one\ntwo\n");
      const err = await steps([
        { command: "true", what: "the first" },
        { command: "echo half >&2; echo done-for >&2; exit 4", what: "the second" },
        { command: `touch ${join(work, "never")}`, what: "the third" },
      ]);
      expect(err).toBeInstanceOf(StepError);
      expect(err?.step).toBe(1);
      expect(err?.message).toBe(
        `root@[127.0.0.1]:${sshd.port}: the second failed (exit 4): done-for`,
      );
      await expect(stat(join(work, "never"))).rejects.toThrow(/ENOENT/);
      // A step that kills the shell leaves no marker: that step is named all the same.
      const killed = await steps([
        { command: "true", what: "the first" },
        { command: "echo going >&2; kill -9 $$", what: "the killer" },
      ]);
      expect(killed?.step).toBe(1);
      expect(killed?.message).toMatch(/the killer failed \(exit .*\): going$/);
    });
  });

  it("stops an upload when its signal aborts, and the next one works", async () => {
    await withHost(async (host) => {
      const local = join(work, "big.bin");
      await writeFile(local, randomBytes(64 * 1024 * 1024));
      const abort = new AbortController();
      const started = Date.now();
      const upload = host.upload(
        local,
        join(work, "big.copy"),
        0o644,
        () => abort.abort(),
        abort.signal,
      );
      await expect(upload).rejects.toThrow(/upload .*big\.copy: interrupted/);
      expect(Date.now() - started).toBeLessThan(5000);
      await host.upload(local, join(work, "big.copy2"), 0o600);
      expect((await stat(join(work, "big.copy2"))).size).toBe(64 * 1024 * 1024);
    });
  });

  it("refuses a host whose key differs from known_hosts, before logging in, and says how to fix it", async () => {
    const before = sshd
      .log()
      .split("\n")
      .filter((l) => /Accepted publickey/.test(l)).length;
    const err = await RemoteHost.connect(target(), {
      identities: [sshd.clientKey],
      knownHosts: [sshd.wrongKnownHosts],
    }).catch((e: Error & { hint?: string }) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(
      new RegExp(
        `host key of \\[127\\.0\\.0\\.1\\]:${sshd.port} does not match .*known_hosts\\.wrong:1: refusing`,
      ),
    );
    expect((err as { hint?: string }).hint).toContain("ssh-keygen -R");
    const after = sshd
      .log()
      .split("\n")
      .filter((l) => /Accepted publickey/.test(l)).length;
    expect(after).toBe(before);
  });

  it("refuses an unknown host unless told not to check, and names a key the server rejects", async () => {
    const empty = join(work, "known_hosts.empty");
    await writeFile(empty, "");
    await expect(
      RemoteHost.connect(target(), { identities: [sshd.clientKey], knownHosts: [empty] }),
    ).rejects.toThrow(/is not in .*known_hosts\.empty: refusing to connect/);

    const insecure = await RemoteHost.connect(target(), {
      identities: [sshd.clientKey],
      knownHosts: [empty],
      insecureHostKey: true,
    });
    expect(insecure.hostKey?.verdict).toBe("skipped");
    expect((await insecure.exec("echo ok")).stdout).toBe("ok\n");
    insecure.close();

    const stranger = join(work, "stranger");
    await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", stranger]);
    await expect(
      RemoteHost.connect(target(), { identities: [stranger], knownHosts: [sshd.knownHosts] }),
    ).rejects.toThrow(/did not accept any of our SSH keys/);
  });
});
