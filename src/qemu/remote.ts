/**
 * `qemu-test --connect qemu+ssh://user@host/system`: the same boot test on a libvirt host.
 * One SSH connection (host key checked first) carries everything: the config (and with
 * --upload-image the image) go over SFTP into a private run directory under --remote-dir;
 * `virsh` on the host defines and starts a domain whose XML passes the config through
 * fw_cfg; the serial console file is streamed back with `tail -F` and judged by the same
 * rules as a local run. Afterwards the domain is destroyed and undefined and the run
 * directory removed, unless --keep.
 */
import { randomBytes } from "node:crypto";
import { stat, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { join } from "node:path";
import { describeError, ProvisionError, UsageError } from "../errors.js";
import { shellArg as q, run as runLocal } from "../exec/index.js";
import { domainXml } from "../libvirt/domain.js";
import { RemoteHost } from "../libvirt/ssh.js";
import { DEFAULT_REMOTE_DIR, type LibvirtConnection, parseConnectUri } from "../libvirt/uri.js";
import { formatBytes } from "../progress/index.js";
import type { Arch } from "../source/index.js";
import {
  type BootOptions,
  type BootResult,
  checkOutputs,
  type Guest,
  prepareConfig,
  type RunState,
  settleAll,
  superviseGuest,
  verdictRules,
} from "./boot.js";
import { FW_CFG_NAME } from "./command.js";
import { type BackingImage, type ImageFacts, inspectImage, prepareBacking } from "./image.js";

export interface RemoteOptions {
  /** qemu+ssh://[user@]host[:port]/system[?keyfile=..&no_verify=1&known_hosts=..] */
  connect: string;
  /** Where run directories go on the host. Default DEFAULT_REMOTE_DIR. */
  remoteDir?: string;
  /** Upload the (local) image; without it the image argument is a path on the host. */
  uploadImage?: boolean;
  /** Private key files (after the agent). */
  identities?: string[];
  /** known_hosts file (instead of ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts). */
  knownHosts?: string;
  insecureHostKey?: boolean;
}

export interface RemoteReport {
  uri: string;
  host: string;
  hostKey?: string;
  domain: string;
  dir: string;
  /** Bytes sent over SFTP (config, and the image with --upload-image). */
  uploadedBytes: number;
  uploadSeconds?: number;
  selinuxRelabeled: boolean;
  /** Kept (--keep): the domain is still defined and the directory still there. */
  kept: boolean;
}

const ARCH_OF_UNAME: Record<string, Arch> = {
  aarch64: "aarch64",
  arm64: "aarch64",
  x86_64: "x86_64",
};

export async function bootRemote(
  opts: BootOptions,
  remoteOpts: RemoteOptions,
  result: BootResult,
  run: RunState,
): Promise<void> {
  const { reporter, tmp } = run;
  if (opts.interactive)
    throw new UsageError(
      "--interactive does not work with --connect",
      "run with --keep and attach with virsh console, or run qemu-test on the host",
    );
  if (opts.ssh !== undefined)
    throw new UsageError(
      "--ssh does not work with --connect (the guest's SSH port is not forwarded to this machine)",
      "use --expect with a line your config prints",
    );
  if (opts.usb)
    throw new UsageError("--usb does not work with --connect", "boot the stick locally");
  if (opts.printCommand)
    throw new UsageError(
      "--print-command does not work with --connect",
      "use --keep and virsh dumpxml",
    );
  const conn = parseConnectUri(remoteOpts.connect, userInfo().username);
  const remoteDir = (remoteOpts.remoteDir ?? DEFAULT_REMOTE_DIR).replace(/\/+$/, "");
  if (!remoteDir.startsWith("/"))
    throw new UsageError(`--remote-dir ${remoteDir}: must be an absolute path on the host`);
  const uploadImage = Boolean(remoteOpts.uploadImage) || opts.input.kind === "source";
  const rules = verdictRules(opts, result);
  await checkOutputs(opts);

  const insecure = Boolean(remoteOpts.insecureHostKey) || conn.noVerify;
  if (insecure)
    reporter.warn(
      `not checking the host key of ${conn.host} (--insecure-host-key): anyone in between can read the config`,
    );

  // Independent: the config, the local image (decompress, inspect), the connection.
  const [config, local, host] = await settleAll([
    prepareConfig(opts, tmp, opts.signal ?? new AbortController().signal),
    uploadImage ? prepareLocalImage(opts, run) : Promise.resolve(undefined),
    RemoteHost.connect(conn, {
      identities: remoteOpts.identities?.length
        ? remoteOpts.identities
        : conn.keyfile
          ? [conn.keyfile]
          : undefined,
      knownHosts: remoteOpts.knownHosts
        ? [remoteOpts.knownHosts]
        : conn.knownHosts
          ? [conn.knownHosts]
          : undefined,
      insecureHostKey: insecure,
      signal: opts.signal,
    }),
  ]);
  run.cleanups.push(async () => host.close());
  const name = `provision-${randomBytes(4).toString("hex")}`;
  const dir = `${remoteDir}/${name}`;
  const report: RemoteReport = {
    uri: conn.uri,
    host: host.label,
    hostKey: host.hostKey ? `${host.hostKey.type} (${host.hostKey.verdict})` : undefined,
    domain: name,
    dir,
    uploadedBytes: 0,
    selinuxRelabeled: false,
    kept: Boolean(opts.keep),
  };
  result.remote = report;
  reporter.info(`connected to ${host.label} (host key ${report.hostKey ?? "?"})`);

  const facts = await hostFacts(host, conn, opts.signal);
  const arch = opts.arch ?? local?.facts.arch ?? local?.backing.arch ?? facts.arch;
  if (!arch)
    throw new ProvisionError(`cannot tell which architecture to boot on ${host.label}`, {
      hint: "pass --arch aarch64 or --arch x86_64",
    });
  result.arch = arch;
  result.archFrom = opts.arch
    ? "--arch"
    : local?.facts.arch
      ? local.facts.archFrom
      : local?.backing.arch
        ? "the image source"
        : `the host's (uname -m on ${conn.host})`;
  const accel = await chooseRemoteAccel(host, conn, arch, opts, opts.signal);
  result.accel = accel.type === "kvm" ? "kvm" : "tcg";
  result.accelWhy = accel.why;
  const os = opts.os ?? local?.backing.os ?? local?.facts.os ?? "fcos";
  result.os = os;
  if (opts.bios && arch !== "x86_64") throw new UsageError("--bios is for x86_64 guests only");
  result.firmware = opts.bios
    ? "SeaBIOS (libvirt default)"
    : "UEFI (libvirt firmware auto-selection)";

  // The run directory: 0711, so the qemu user can reach files it knows the name of, and
  // nobody can list it. From here on everything is removed again unless --keep.
  try {
    await host.mkdirp(remoteDir, 0o711);
    await host.mkdirp(dir, 0o711);
  } catch (err) {
    throw new ProvisionError(describeError(err), {
      hint: `pass --remote-dir with a directory ${conn.user} can write on ${conn.host} and the qemu user can reach`,
    });
  }
  if (!opts.keep)
    run.cleanups.push(async () => {
      await host.exec(`rm -rf -- ${q(dir)}`);
    });

  // Uploads. The qemu process runs as its own user (libvirt-qemu, qemu): it must read the
  // config, so the file is 0644 inside the unlistable 0711 directory.
  const uploadStarted = Date.now();
  let configPath: string | undefined;
  if (config.file) {
    configPath = `${dir}/config.ign`;
    await host.upload(config.file, configPath, 0o644);
    report.uploadedBytes += (await stat(config.file)).size;
  }
  let disk: { path: string; format: "qcow2" | "raw" };
  if (local) {
    const file = await localQcow2(local.backing, tmp, opts.signal);
    const size = (await stat(file)).size;
    const remotePath = `${dir}/disk.qcow2`;
    reporter.info(
      `uploading ${local.backing.description} to ${host.label}:${remotePath} (${formatBytes(size)})`,
    );
    await host.upload(file, remotePath, 0o644, (sent, total) =>
      reporter.status?.(`upload ${formatBytes(sent)} / ${formatBytes(total)}`),
    );
    report.uploadedBytes += size;
    // The uploaded copy is ours and thrown away afterwards: the guest may write to it.
    disk = { path: remotePath, format: "qcow2" };
  } else {
    const image = (opts.input as { path: string }).path;
    disk = await remoteOverlay(host, image, dir, opts.signal);
  }
  report.uploadSeconds = (Date.now() - uploadStarted) / 1000;

  if (configPath && facts.selinuxEnforcing) {
    // What the FCOS libvirt docs do: a label the confined qemu process may read.
    await host.check(`chcon --type svirt_home_t ${q(configPath)}`, "chcon (SELinux relabel)");
    report.selinuxRelabeled = true;
  }

  // The console file exists before the domain does, 0644 and ours, so `tail` can read it
  // whoever libvirt makes its owner.
  const consoleLog = `${dir}/console.log`;
  await host.check(
    `: > ${q(consoleLog)} && chmod 0644 ${q(consoleLog)}`,
    "creating the console log",
  );
  const xml = domainXml({
    name,
    title: `provision qemu-test ${result.image}`,
    arch,
    type: accel.type,
    memoryMiB: result.memoryMiB,
    cpus: result.cpus,
    firmware: opts.bios ? "bios" : "efi",
    disk,
    consoleLog,
    ignition: configPath ? { fwCfgName: FW_CFG_NAME[os], file: configPath } : undefined,
    userNet: opts.net === "user",
  });
  const localXml = join(tmp, "domain.xml");
  await writeFile(localXml, xml);
  await host.upload(localXml, `${dir}/domain.xml`, 0o644);
  const virsh = `virsh -q -c ${q(conn.localUri)}`;
  await host.check(`${virsh} define ${q(`${dir}/domain.xml`)}`, `virsh define (domain ${name})`, {
    signal: opts.signal,
  });
  run.cleanups.push(async () => {
    // --nvram: the per-domain VARS copy libvirt made for UEFI goes too.
    if (!opts.keep)
      await host.exec(`${virsh} undefine --nvram ${name} || ${virsh} undefine ${name}`);
  });
  result.command = ["virsh", "-c", conn.localUri, "start", name];
  reporter.info(
    `booting ${result.image} on ${host.label} as domain ${name} (${arch}, ${accel.type === "kvm" ? "KVM" : "TCG"}, ${result.cpus} CPUs, ${result.memoryMiB} MiB)`,
  );
  const guest = await startDomain(host, virsh, name, consoleLog, opts.signal);
  run.stopQemu = () => guest.stop();
  await superviseGuest(guest, { rules }, opts, result, run);
}

async function prepareLocalImage(
  opts: BootOptions,
  run: RunState,
): Promise<{ backing: BackingImage; facts: ImageFacts }> {
  const backing = await prepareBacking(opts.input, run.tmp, {
    reporter: run.reporter,
    signal: opts.signal,
  });
  return { backing, facts: await inspectImage(backing) };
}

/**
 * What goes over the wire: a qcow2 (only the allocated clusters), so the zeros of a raw
 * image are not sent. A qcow2 input is sent as is.
 */
async function localQcow2(b: BackingImage, tmp: string, signal?: AbortSignal): Promise<string> {
  if (b.format === "qcow2" && b.kind === "file") return b.path;
  const out = join(tmp, "upload.qcow2");
  await runLocal("qemu-img", ["convert", "-q", "-f", b.format, "-O", "qcow2", b.path, out], {
    signal,
  });
  return out;
}

interface HostFacts {
  arch?: Arch;
  selinuxEnforcing: boolean;
}

/** The programs we need on the host, its architecture, and whether SELinux enforces. */
async function hostFacts(
  host: RemoteHost,
  conn: LibvirtConnection,
  signal?: AbortSignal,
): Promise<HostFacts> {
  const r = await host.exec(
    [
      "for p in virsh qemu-img; do command -v $p >/dev/null 2>&1 || echo missing=$p; done",
      "echo arch=$(uname -m)",
      "echo selinux=$(getenforce 2>/dev/null || echo none)",
      `err=$(virsh -q -c ${q(conn.localUri)} uri 2>&1 >/dev/null) || echo "virsh=$(printf '%s' "$err" | tail -n 1)"`,
    ].join("; "),
    { signal },
  );
  const kv = new Map<string, string[]>();
  for (const line of r.stdout.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) kv.set(line.slice(0, i), [...(kv.get(line.slice(0, i)) ?? []), line.slice(i + 1)]);
  }
  const missing = kv.get("missing") ?? [];
  if (missing.length)
    throw new ProvisionError(`${host.label} has no ${missing.join(" or ")}`, {
      hint: `install them there (Debian: apt-get install ${missing.map((m) => (m === "virsh" ? "libvirt-clients libvirt-daemon-system" : "qemu-utils")).join(" ")}; Fedora: dnf install libvirt-client qemu-img)`,
    });
  const virshErr = kv.get("virsh")?.[0];
  if (virshErr !== undefined)
    throw new ProvisionError(
      `${host.label}: virsh cannot connect to ${conn.localUri}: ${virshErr || "no message"}`,
      {
        hint: "is libvirtd (or virtqemud) running there, and may this user use it (group libvirt)?",
      },
    );
  return {
    arch: ARCH_OF_UNAME[kv.get("arch")?.[0] ?? ""],
    selinuxEnforcing: kv.get("selinux")?.[0] === "Enforcing",
  };
}

/**
 * `provision doctor --connect URI`: log in as a run would (host key checked; keys from the
 * agent, ?keyfile= or ~/.ssh), then ask what a run asks first: virsh and qemu-img are
 * there and virsh answers on the host's libvirt URI. Throws what a run would throw.
 */
export async function probeLibvirtHost(
  uri: string,
  signal?: AbortSignal,
): Promise<{ host: string; hostKey?: string; arch?: Arch; selinuxEnforcing: boolean }> {
  const conn = parseConnectUri(uri, userInfo().username);
  const host = await RemoteHost.connect(conn, {
    identities: conn.keyfile ? [conn.keyfile] : undefined,
    knownHosts: conn.knownHosts ? [conn.knownHosts] : undefined,
    insecureHostKey: conn.noVerify,
    signal,
  });
  try {
    const facts = await hostFacts(host, conn, signal);
    return {
      host: host.label,
      hostKey: host.hostKey ? `${host.hostKey.type} (${host.hostKey.verdict})` : undefined,
      ...facts,
    };
  } finally {
    host.close();
  }
}

/** KVM when asked, or (auto) when libvirt reports it for this architecture; else TCG. */
async function chooseRemoteAccel(
  host: RemoteHost,
  conn: LibvirtConnection,
  arch: Arch,
  opts: BootOptions,
  signal?: AbortSignal,
): Promise<{ type: "kvm" | "qemu"; why: string }> {
  const choice = opts.accel ?? "auto";
  if (choice === "tcg") return { type: "qemu", why: "--accel tcg" };
  const r = await host.exec(
    `virsh -q -c ${q(conn.localUri)} domcapabilities --virttype kvm --arch ${arch} >/dev/null`,
    { signal },
  );
  if (r.code === 0) return { type: "kvm", why: `libvirt on ${conn.host} offers KVM for ${arch}` };
  const why =
    r.stderr
      .trim()
      .split("\n")
      .pop()
      ?.replace(/^error: /, "") ?? "";
  if (choice === "kvm")
    throw new ProvisionError(
      `--accel kvm: ${host.label} cannot run ${arch} guests with KVM: ${why}`,
    );
  return { type: "qemu", why: `TCG: libvirt on ${conn.host} has no KVM for ${arch}` };
}

/** An image already on the host: boot it through a qcow2 overlay in the run directory. */
async function remoteOverlay(
  host: RemoteHost,
  image: string,
  dir: string,
  signal?: AbortSignal,
): Promise<{ path: string; format: "qcow2" }> {
  if (!image.startsWith("/"))
    throw new UsageError(
      `${image}: with --connect the image is a path on the host, and must be absolute`,
      "or pass --upload-image to send a local image",
    );
  if (!(await host.exists(image)))
    throw new UsageError(
      `${host.label}:${image}: no such file`,
      "the image argument is a path on the host; pass --upload-image to send a local image",
    );
  const info = await host.check(
    `qemu-img info --output=json -U ${q(image)}`,
    `qemu-img info ${image}`,
    { signal },
  );
  let format: string;
  try {
    format = String((JSON.parse(info) as { format?: string }).format);
  } catch (err) {
    throw new ProvisionError(`qemu-img info ${image}: unreadable answer: ${describeError(err)}`);
  }
  if (format !== "raw" && format !== "qcow2")
    throw new UsageError(
      `${host.label}:${image} is ${format}; compressed images must be decompressed first`,
      "pass the local file with --upload-image: it is decompressed here and sent as qcow2",
    );
  const overlay = `${dir}/overlay.qcow2`;
  await host.check(
    `qemu-img create -q -f qcow2 -F ${format} -b ${q(image)} ${q(overlay)} && chmod 0644 ${q(overlay)}`,
    "qemu-img create (overlay)",
    { signal },
  );
  return { path: overlay, format: "qcow2" };
}

/**
 * Start the domain and stream its console: `tail -F` of the console file, for as long as
 * the domain runs (one `virsh domstate` a second). The stream ends by itself when the
 * guest powers off, reboots or crashes (all "destroy" in the XML) or is destroyed by us.
 */
async function startDomain(
  host: RemoteHost,
  virsh: string,
  name: string,
  consoleLog: string,
  signal?: AbortSignal,
): Promise<Guest> {
  try {
    await host.check(`${virsh} start ${name}`, `virsh start ${name}`, { signal });
  } catch (err) {
    if (err instanceof ProvisionError && /Permission denied/.test(err.message))
      throw new ProvisionError(err.message, {
        hint: "QEMU runs as its own user on the host (libvirt-qemu, qemu): the image must be readable by it and every directory above it searchable (chmod o+x), or use --upload-image",
      });
    throw err;
  }
  const script = [
    `tail -c +1 -F ${q(consoleLog)} 2>/dev/null & t=$!`,
    `trap 'kill $t 2>/dev/null' EXIT HUP INT TERM`,
    `while [ "$(${virsh} domstate ${name} 2>/dev/null)" = running ]; do sleep 1; done`,
    // tail -F polls once a second: let it deliver the last lines before it goes.
    `sleep 1.2`,
    `echo "provision-domain-state: $(${virsh} domstate --reason ${name} 2>&1)" >&2`,
  ].join("\n");
  const proc = host.stream(script);
  proc.stdout.pause();
  let stopped = false;
  const exited = proc.done.then((r) => {
    const m = /provision-domain-state: (.*)/.exec(r.stderr);
    return { description: `domain ${name} stopped: ${m?.[1]?.trim() || "state unknown"}` };
  });
  return {
    console: proc.stdout,
    exited,
    stderr: () => "",
    stop: async () => {
      if (!stopped) {
        stopped = true;
        await host.exec(`${virsh} destroy ${name} >/dev/null 2>&1 || true`);
        // The guest is gone: no need to wait for the console loop's last poll and grace
        // period (it ends by itself on the host within a second).
        proc.close();
      }
      await exited;
    },
  };
}
