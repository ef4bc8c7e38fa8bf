/**
 * `qemu-test --connect qemu+ssh://user@host/system`: the same boot test on a libvirt host.
 * One SSH connection (host key checked first) carries everything: the config (and with
 * --upload-image the image) go over SFTP into a private run directory under --remote-dir;
 * `virsh` on the host defines and starts a domain whose XML passes the config through
 * fw_cfg; the serial console file is streamed back with `tail -F` and judged by the same
 * rules as a local run. Afterwards the domain is destroyed and undefined and the run
 * directory removed, unless --keep.
 *
 * Round trips are what a remote run costs (each exec also starts the user's login shell, rc
 * files and all), so one exec does all the host-side work: it answers the questions about
 * the host, waits for the go (and the domain XML) on its stdin while SFTP uploads, starts the
 * domain, streams the console, and when its stdin ends stops and removes everything.
 */
import { randomBytes } from "node:crypto";
import { stat } from "node:fs/promises";
import { userInfo } from "node:os";
import { join } from "node:path";
import { describeError, InterruptedError, ProvisionError, UsageError } from "../errors.js";
import { shellArg as q, run as runLocal } from "../exec/index.js";
import { domainXml } from "../libvirt/domain.js";
import {
  failedMessage,
  RemoteHost,
  type Step,
  StepError,
  stepFailure,
  stepsScript,
} from "../libvirt/ssh.js";
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
  /** Where the time went on this side of the boot (seconds). */
  timings?: RemoteTimings;
}

export interface RemoteTimings {
  /** SSH connection: TCP, host key, login. */
  connect?: number;
  /** Connected -> ready to start: host facts, run directory, uploads, the domain XML. */
  prepare?: number;
  /** The go -> the domain runs: console file, domain XML, virsh define, virsh start. */
  launch?: number;
  /** Asked to stop -> destroyed, undefined and the run directory removed (--keep: destroyed). */
  teardown?: number;
}

/** Markers the run's script writes to stderr (openSession). */
const FACTS_END = "provision-facts-end";
const STARTED = "provision-domain-started";
const STATE = "provision-domain-state:";
const TORN_DOWN = "provision-domain-torn-down";

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
  const hostImage = uploadImage ? undefined : (opts.input as { path: string }).path;
  if (hostImage !== undefined && !hostImage.startsWith("/"))
    throw new UsageError(
      `${hostImage}: with --connect the image is a path on the host, and must be absolute`,
      "or pass --upload-image to send a local image",
    );
  const rules = verdictRules(opts, result);
  await checkOutputs(opts);

  const insecure = Boolean(remoteOpts.insecureHostKey) || conn.noVerify;
  if (insecure)
    reporter.warn(
      `not checking the host key of ${conn.host} (--insecure-host-key): anyone in between can read the config`,
    );

  // Independent: the config, the local image (decompress, inspect, convert), the connection.
  const timings: RemoteTimings = {};
  const since = (t: number) => (Date.now() - t) / 1000;
  const connectStarted = Date.now();
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
    }).then((h) => {
      timings.connect = since(connectStarted);
      return h;
    }),
  ]);
  run.cleanups.push(async () => host.close());
  const connected = Date.now();
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
    timings,
  };
  result.remote = report;
  reporter.info(`connected to ${host.label} (host key ${report.hostKey ?? "?"})`);
  const virsh = virshOn(conn);
  const configPath = config.file ? `${dir}/config.ign` : undefined;
  const consoleLog = `${dir}/console.log`;
  const overlayPath = `${dir}/overlay.qcow2`;

  // The run's one exec, started now: it asks the host everything (programs, architecture,
  // SELinux, KVM, the image there) and then waits for the go. Meanwhile SFTP makes the run
  // directory and uploads into it; if the host cannot run the test, the uploads stop.
  // Everything made on the host is removed again unless --keep: by the run's script once it
  // got its go (see openSession), else by this.
  const state = { dirMade: false, launched: false, tornDown: false };
  const knownArch = opts.arch ?? local?.facts.arch ?? local?.backing.arch;
  const ask = {
    kvmArch: (opts.accel ?? "auto") === "tcg" ? undefined : (knownArch ?? ("host" as const)),
    image: hostImage,
  };
  const steps: Step[] = [];
  if (hostImage !== undefined)
    // An image on the host boots through a qcow2 overlay in the run directory; $fmt is its
    // format, from the go line (checked to be raw or qcow2).
    steps.push({
      command: `qemu-img create -q -f qcow2 -F "$fmt" -b ${q(hostImage)} ${q(overlayPath)} && chmod 0644 ${q(overlayPath)}`,
      what: "qemu-img create (overlay)",
    });
  // What the FCOS libvirt docs do: a label the confined qemu process may read. $relabel
  // comes with the go: SELinux enforces there.
  const chconStep = configPath ? steps.length : -1;
  if (configPath)
    steps.push({
      command: `[ "$relabel" != 1 ] || chcon --type svirt_home_t ${q(configPath)}`,
      what: "chcon (SELinux relabel)",
    });
  // The console file exists before the domain does, 0644 and ours, so `tail` can read it
  // whoever libvirt makes its owner.
  steps.push({
    command: `: > ${q(consoleLog)} && chmod 0644 ${q(consoleLog)}`,
    what: "creating the console log",
  });
  const xmlPath = `${dir}/domain.xml`;
  const xmlEnd = `PROVISION_XML_END_${randomBytes(6).toString("hex")}`;
  steps.push(
    {
      // The XML follows the go line on stdin, up to a line of its own.
      command: `while IFS= read -r l && [ "$l" != ${xmlEnd} ]; do printf '%s\\n' "$l"; done > ${q(xmlPath)} && chmod 0644 ${q(xmlPath)}`,
      what: "writing the domain XML",
    },
    { command: `${virsh} define ${q(xmlPath)}`, what: `virsh define (domain ${name})` },
    { command: `${virsh} start ${name}`, what: `virsh start ${name}` },
  );
  const session = openSession(host, {
    facts: factsScript(conn, ask),
    steps,
    virsh,
    name,
    dir,
    consoleLog,
    keep: Boolean(opts.keep),
    signal: opts.signal,
    onTornDown: (seconds) => {
      state.tornDown = true;
      if (seconds !== undefined) timings.teardown = seconds;
    },
  });
  run.cleanups.push(async () => {
    // The script cleans up after itself once its stdin ended (the guest was stopped, or the
    // run abandoned); this is for when it could not.
    await session.done.catch(() => {});
    if (opts.keep || state.tornDown || !(state.dirMade || state.launched)) return;
    await host.exec(`${state.launched ? `${undefineCmd(virsh, name)}; ` : ""}rm -rf -- ${q(dir)}`);
  });
  const transfers = new AbortController();
  const stopTransfers = () => transfers.abort();
  opts.signal?.addEventListener("abort", stopTransfers, { once: true });
  const factsDone = session.facts.then((r) => parseFacts(host, conn, ask, r));
  factsDone.catch(stopTransfers);
  const dirDone = (async () => {
    // 0711: the qemu user can reach files it knows the name of, and nobody can list it.
    state.dirMade = true;
    try {
      await host.mkdirp(dir, 0o711); // and --remote-dir above it, the same way
    } catch (err) {
      throw new ProvisionError(describeError(err), {
        hint: `pass --remote-dir with a directory ${conn.user} can write on ${conn.host} and the qemu user can reach`,
      });
    }
  })();
  dirDone.catch(stopTransfers);
  // The qemu process runs as its own user (libvirt-qemu, qemu): it must read the config and
  // the disk, so they are 0644 inside the unlistable 0711 directory.
  const uploadsDone = dirDone.then(async () => {
    const started = Date.now();
    await settleAll([
      (async () => {
        if (!config.file || !configPath) return;
        await host.upload(config.file, configPath, 0o644, undefined, transfers.signal);
        report.uploadedBytes += (await stat(config.file)).size;
      })(),
      (async () => {
        if (!local) return;
        const size = (await stat(local.qcow2)).size;
        const remotePath = `${dir}/disk.qcow2`;
        reporter.info(
          `uploading ${local.backing.description} to ${host.label}:${remotePath} (${formatBytes(size)})`,
        );
        await host.upload(
          local.qcow2,
          remotePath,
          0o644,
          (sent, total) => reporter.status?.(`upload ${formatBytes(sent)} / ${formatBytes(total)}`),
          transfers.signal,
        );
        report.uploadedBytes += size;
      })(),
    ]);
    report.uploadSeconds = since(started);
  });
  let facts: HostFacts;
  try {
    [facts] = await settleAll([factsDone, dirDone, uploadsDone]);
  } catch (err) {
    session.abandon();
    throw err;
  } finally {
    opts.signal?.removeEventListener("abort", stopTransfers);
  }

  let go: { relabel: boolean; format: string; xml: string };
  let accel: { type: "kvm" | "qemu"; why: string };
  let arch: Arch;
  try {
    const known = knownArch ?? facts.arch;
    if (!known)
      throw new ProvisionError(`cannot tell which architecture to boot on ${host.label}`, {
        hint: "pass --arch aarch64 or --arch x86_64",
      });
    arch = known;
    result.arch = arch;
    result.archFrom = opts.arch
      ? "--arch"
      : local?.facts.arch
        ? local.facts.archFrom
        : local?.backing.arch
          ? "the image source"
          : `the host's (uname -m on ${conn.host})`;
    accel = chooseRemoteAccel(host, conn, arch, opts, facts);
    result.accel = accel.type === "kvm" ? "kvm" : "tcg";
    result.accelWhy = accel.why;
    const os = opts.os ?? local?.backing.os ?? local?.facts.os ?? "fcos";
    result.os = os;
    if (opts.bios && arch !== "x86_64") throw new UsageError("--bios is for x86_64 guests only");
    result.firmware = opts.bios
      ? "SeaBIOS (libvirt default)"
      : "UEFI (libvirt firmware auto-selection)";
    // The uploaded copy is ours and thrown away afterwards: the guest may write to it.
    const disk: { path: string; format: "qcow2" } = local
      ? { path: `${dir}/disk.qcow2`, format: "qcow2" }
      : { path: overlayPath, format: "qcow2" };
    const format = hostImage !== undefined ? hostImageFormat(host, hostImage, facts) : "-";
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
    go = { relabel: Boolean(configPath && facts.selinuxEnforcing), format, xml };
  } catch (err) {
    session.abandon();
    throw err;
  }
  timings.prepare = since(connected);
  result.command = ["virsh", "-c", conn.localUri, "start", name];
  reporter.info(
    `booting ${result.image} on ${host.label} as domain ${name} (${arch}, ${accel.type === "kvm" ? "KVM" : "TCG"}, ${result.cpus} CPUs, ${result.memoryMiB} MiB)`,
  );
  state.launched = true;
  const launchStarted = Date.now();
  const guest = await session
    .launch(`go ${go.relabel ? 1 : 0} ${go.format}\n${go.xml}\n${xmlEnd}\n`)
    .catch((err: unknown) => {
      // A step after the relabel failed: the relabel was done.
      if (go.relabel && err instanceof StepError && err.step > chconStep)
        report.selinuxRelabeled = true;
      throw err;
    });
  timings.launch = since(launchStarted);
  report.selinuxRelabeled = go.relabel;
  run.stopQemu = () => guest.stop();
  await superviseGuest(guest, { rules }, opts, result, run);
}

async function prepareLocalImage(
  opts: BootOptions,
  run: RunState,
): Promise<{ backing: BackingImage; facts: ImageFacts; qcow2: string }> {
  const backing = await prepareBacking(opts.input, run.tmp, {
    reporter: run.reporter,
    signal: opts.signal,
  });
  // Inspect it and make what goes over the wire at the same time.
  const [facts, qcow2] = await settleAll([
    inspectImage(backing),
    localQcow2(backing, run.tmp, opts.signal),
  ]);
  return { backing, facts, qcow2 };
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
  /** Asked for with `kvmArch`: does libvirt offer KVM for it (else its last error line). */
  kvm?: { ok: boolean; why: string };
  /** Asked for with `image`: `qemu-img info` of the image on the host. */
  image?:
    | { kind: "missing" }
    | { kind: "info"; json: string }
    | { kind: "error"; code: string; last: string };
}

/** virsh on the host, talking to the connection's libvirt (qemu:///system or session). */
function virshOn(conn: LibvirtConnection): string {
  return `virsh -q -c ${q(conn.localUri)}`;
}

interface FactsAsk {
  /** Does libvirt offer KVM for this architecture ("host": the host's own)? */
  kvmArch?: Arch | "host";
  /** An image on the host to run `qemu-img info` on. */
  image?: string;
}

/**
 * Shell text that prints the host's facts as key=value lines: the programs we need, its
 * architecture, whether SELinux enforces, whether virsh answers on the libvirt URI, and what
 * `ask` asks. The slow questions run side by side.
 */
function factsScript(conn: LibvirtConnection, ask: FactsAsk): string {
  const virsh = virshOn(conn);
  const lastLine = (v: string) => `$(printf '%s' "${v}" | tail -n 1)`;
  const lines = [
    "for p in virsh qemu-img; do command -v $p >/dev/null 2>&1 || echo missing=$p; done",
    "echo arch=$(uname -m)",
    "echo selinux=$(getenforce 2>/dev/null || echo none)",
  ];
  if (ask.kvmArch)
    lines.push(
      `{ ${ask.kvmArch === "host" ? `a=$(uname -m); [ "$a" = arm64 ] && a=aarch64` : `a=${ask.kvmArch}`}; if e=$(${virsh} domcapabilities --virttype kvm --arch "$a" 2>&1 >/dev/null); then echo kvm=yes; else echo "kvm=no ${lastLine("$e")}"; fi; } &`,
    );
  if (ask.image !== undefined) {
    const img = q(ask.image);
    lines.push(
      `{ if [ ! -e ${img} ]; then echo image=missing; else i=$(qemu-img info --output=json -U ${img} 2>&1); c=$?; if [ $c = 0 ]; then printf 'image=info %s\\n' "$(printf '%s' "$i" | tr -d '\\n')"; else echo "image=error $c ${lastLine("$i")}"; fi; fi; } &`,
    );
  }
  lines.push(`err=$(${virsh} uri 2>&1 >/dev/null) || echo "virsh=${lastLine("$err")}"`, "wait");
  return lines.join("\n");
}

/** factsScript's answer, read; throws when the host cannot run a test. */
function parseFacts(
  host: RemoteHost,
  conn: LibvirtConnection,
  ask: FactsAsk,
  r: { stdout: string },
): HostFacts {
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
  const facts: HostFacts = {
    arch: ARCH_OF_UNAME[kv.get("arch")?.[0] ?? ""],
    selinuxEnforcing: kv.get("selinux")?.[0] === "Enforcing",
  };
  if (ask.kvmArch) {
    const kvm = kv.get("kvm")?.[0];
    facts.kvm =
      kvm === "yes"
        ? { ok: true, why: "" }
        : {
            ok: false,
            why: (kvm ?? "")
              .replace(/^no ?/, "")
              .trim()
              .replace(/^error: /, ""),
          };
  }
  if (ask.image !== undefined) {
    const image = kv.get("image")?.[0];
    if (image === "missing") facts.image = { kind: "missing" };
    else if (image?.startsWith("info ")) facts.image = { kind: "info", json: image.slice(5) };
    else {
      const m = /^error (\S+) ?(.*)$/.exec(image ?? "");
      facts.image = {
        kind: "error",
        code: m?.[1] ?? "?",
        last: m?.[2]?.trim() ?? "",
      };
    }
  }
  return facts;
}

/** The facts on their own, in one exec (doctor). */
async function hostFacts(
  host: RemoteHost,
  conn: LibvirtConnection,
  signal?: AbortSignal,
): Promise<HostFacts> {
  const r = await host.exec(factsScript(conn, {}), { signal });
  if (signal?.aborted) throw new InterruptedError();
  return parseFacts(host, conn, {}, r);
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
function chooseRemoteAccel(
  host: RemoteHost,
  conn: LibvirtConnection,
  arch: Arch,
  opts: BootOptions,
  facts: HostFacts,
): { type: "kvm" | "qemu"; why: string } {
  const choice = opts.accel ?? "auto";
  if (choice === "tcg") return { type: "qemu", why: "--accel tcg" };
  // facts.kvm answers for `arch`: the one known before asking, else the host's own.
  if (facts.kvm?.ok) return { type: "kvm", why: `libvirt on ${conn.host} offers KVM for ${arch}` };
  if (choice === "kvm")
    throw new ProvisionError(
      `--accel kvm: ${host.label} cannot run ${arch} guests with KVM: ${facts.kvm?.why ?? ""}`,
    );
  return { type: "qemu", why: `TCG: libvirt on ${conn.host} has no KVM for ${arch}` };
}

/** An image already on the host: its format (raw or qcow2), from the facts' `qemu-img info`. */
function hostImageFormat(host: RemoteHost, image: string, facts: HostFacts): "raw" | "qcow2" {
  const info = facts.image;
  if (!info || info.kind === "missing")
    throw new UsageError(
      `${host.label}:${image}: no such file`,
      "the image argument is a path on the host; pass --upload-image to send a local image",
    );
  if (info.kind === "error")
    throw new ProvisionError(
      `${host.label}: qemu-img info ${image} failed (exit ${info.code})${info.last ? `: ${info.last}` : ""}`,
    );
  let format: string;
  try {
    format = String((JSON.parse(info.json) as { format?: string }).format);
  } catch (err) {
    throw new ProvisionError(`qemu-img info ${image}: unreadable answer: ${describeError(err)}`);
  }
  if (format !== "raw" && format !== "qcow2")
    throw new UsageError(
      `${host.label}:${image} is ${format}; compressed images must be decompressed first`,
      "pass the local file with --upload-image: it is decompressed here and sent as qcow2",
    );
  return format;
}

/** Undefine a domain (shut off, or running: it becomes transient and goes when stopped). */
function undefineCmd(virsh: string, name: string): string {
  // --nvram: the per-domain VARS copy libvirt made for UEFI goes too.
  return `{ ${virsh} undefine --nvram ${name} || ${virsh} undefine ${name}; } >/dev/null 2>&1`;
}

interface Session {
  /** Settles when the exec ended (after its cleanup, if it got that far). */
  done: Promise<unknown>;
  /** The facts script's output (key=value lines). */
  facts: Promise<{ stdout: string }>;
  /** Send the go (and what the steps read from stdin); resolves once the domain runs. */
  launch(input: string): Promise<Guest>;
  /** No go: the script ends without touching anything. */
  abandon(): void;
}

/**
 * The run's one exec on the host. First the facts (factsScript), on stderr up to a marker.
 * Then it waits for a go line on stdin ("go RELABEL FORMAT", followed by what the steps read)
 * and runs the steps (console file, domain XML, virsh define, virsh start, ...); it ends at
 * once if stdin ends instead. Once the domain runs, its console is streamed back (`tail -F`
 * of the file) for as long as it runs, watched through libvirt's lifecycle events (a state
 * check at least every 2 s). The guest ends by itself (poweroff, reboot and crash are all
 * "destroy" in the XML), or when this side ends the exec's stdin: after a verdict, on Ctrl-C,
 * or when the connection is lost. Then the same script destroys the domain and, unless
 * --keep, undefines it and removes the run directory: stopping costs no further round trip.
 */
function openSession(
  host: RemoteHost,
  o: {
    facts: string;
    steps: Step[];
    virsh: string;
    name: string;
    dir: string;
    consoleLog: string;
    keep: boolean;
    signal?: AbortSignal;
    /** The script cleaned up (seconds from the stop, when it was asked to stop). */
    onTornDown: (seconds?: number) => void;
  },
): Session {
  const { virsh: v, name: n } = o;
  const removeDir = o.keep ? "" : `rm -rf -- ${q(o.dir)}`;
  const undefine = undefineCmd(v, n);
  const script = [
    // The script finishes its work even when the connection is gone (no SIGPIPE, no SIGHUP):
    // its stdin then ends, which means "stop and clean up".
    `trap '' HUP PIPE`,
    `f=$(\n${o.facts}\n)`,
    `printf '%s\\n${FACTS_END}\\n' "$f" >&2`,
    // No go (stdin ended): nothing was started; what was uploaded goes unless --keep.
    `read -r go relabel fmt && [ "$go" = go ] || { ${removeDir ? `${removeDir}; echo ${TORN_DOWN} >&2; ` : ""}exit 0; }`,
    // A step that fails takes back what the steps did (unless --keep).
    `( ${stepsScript(o.steps)}\n)`,
    `c=$?; if [ $c != 0 ]; then ${o.keep ? "" : `${undefine}; ${removeDir}; `}echo ${TORN_DOWN} >&2; exit $c; fi`,
    `echo ${STARTED} >&2`,
    // stdin stays open on fd 3 for the one process that waits for its EOF, and only there.
    `exec 3<&0`,
    `tail -c +1 -F -s 0.2 ${q(o.consoleLog)} 2>/dev/null 3<&- & t=$!`,
    `( while [ "$(${v} domstate ${n} 2>/dev/null)" = running ]; do ${v} event --domain ${n} --event lifecycle --timeout 2 >/dev/null 2>&1; done ) </dev/null >/dev/null 2>&1 3<&- & w=$!`,
    `trap 'kill $t $w 2>/dev/null' EXIT`,
    `( cat <&3 >/dev/null 2>&1; kill $w 2>/dev/null ) </dev/null >/dev/null 2>&1 & r=$!`,
    `exec 3<&-`,
    `wait $w; s=$?`,
    // Ended by itself: tail follows the file with inotify; give it a moment for the last lines,
    // tell the state, and wait for this side to be done with the guest.
    `[ $s -gt 128 ] || sleep 0.25`,
    `kill $t 2>/dev/null`,
    `if [ $s -le 128 ]; then d=$(${v} domstate --reason ${n} 2>&1); echo "${STATE} $d" >&2; wait $r; fi`,
    // --keep: only stopped. Else undefined first (a running domain becomes transient and goes
    // with the destroy; --nvram: the per-domain VARS copy libvirt made for UEFI goes too), the
    // run directory removed while the destroy waits for QEMU to be gone.
    o.keep ? `u=0` : `${undefine}; u=$?; ${removeDir} &`,
    `if [ $s -gt 128 ]; then k=1; else case $d in "shut off"*) k=0 ;; *) k=1 ;; esac; fi`,
    `[ $k = 0 ] || ${v} destroy ${n} >/dev/null 2>&1`,
    o.keep ? "" : `[ $u = 0 ] || ${undefine}`,
    `wait`,
    `[ $s -le 128 ] || echo "${STATE} shut off (destroyed)" >&2`,
    `echo ${TORN_DOWN} >&2`,
  ]
    .filter(Boolean)
    .join("\n");

  let stderr = "";
  let factsText: string | undefined;
  let onFacts: (text: string) => void = () => {};
  const factsSeen = new Promise<string>((resolve) => {
    onFacts = resolve;
  });
  let onStarted: () => void = () => {};
  const started = new Promise<void>((resolve) => {
    onStarted = resolve;
  });
  let onState: (line: string) => void = () => {};
  const stateLine = new Promise<string>((resolve) => {
    onState = resolve;
  });
  // What the steps wrote starts after the facts.
  let afterFacts = "";
  const proc = host.stream(script, {
    onStderr: (text) => {
      if (factsText === undefined) {
        stderr += text;
        const i = stderr.indexOf(`${FACTS_END}\n`);
        if (i < 0) return;
        factsText = stderr.slice(0, i);
        onFacts(factsText);
        text = stderr.slice(i + FACTS_END.length + 1);
      }
      afterFacts += text;
      if (afterFacts.includes(`${STARTED}\n`)) onStarted();
      const m = new RegExp(`${STATE} (.*)\n`).exec(afterFacts);
      if (m) onState(m[1] ?? "");
      if (afterFacts.length > 65536) afterFacts = afterFacts.slice(-16384);
    },
  });
  proc.stdout.pause();
  let stopping: number | undefined;
  const stop = () => {
    stopping ??= Date.now();
    proc.end();
  };
  const done = proc.done.then((r) => {
    if (r.stderr.includes(TORN_DOWN))
      o.onTornDown(stopping === undefined ? undefined : (Date.now() - stopping) / 1000);
    return r;
  });
  done.catch(() => {});
  // Ctrl-C: stdin ends. Before the go, the script ends; during the steps, it goes on to the
  // end of them and, if the domain started, stops and removes it again at once.
  const onAbort = () => stop();
  if (o.signal?.aborted) onAbort();
  o.signal?.addEventListener("abort", onAbort, { once: true });
  const interrupted = new Promise<never>((_, reject) => {
    const fail = () => reject(new InterruptedError());
    if (o.signal?.aborted) fail();
    o.signal?.addEventListener("abort", fail, { once: true });
  });
  interrupted.catch(() => {});

  const facts = Promise.race([
    factsSeen.then((stdout) => ({ stdout })),
    done.then((r) => {
      // Ended before the marker: the connection went, or the shell could not run it.
      if (factsText !== undefined) return { stdout: factsText };
      throw new ProvisionError(
        failedMessage(
          host.label,
          "asking for the host's facts",
          String(r.code ?? r.signal),
          r.stderr,
        ),
      );
    }),
    interrupted,
  ]);

  return {
    done,
    facts,
    abandon: () => {
      o.signal?.removeEventListener("abort", onAbort);
      stop();
    },
    launch: async (input) => {
      proc.write(input);
      try {
        const ok = await Promise.race([started.then(() => true), done.then(() => false)]);
        if (!ok) {
          const r = await done;
          if (o.signal?.aborted) throw new InterruptedError();
          const last = o.steps.length - 1;
          // Every step passed and still no domain: the last one (virsh start) said nothing.
          const err =
            stepFailure(host.label, o.steps, { ...r, stderr: afterFacts }) ??
            new StepError(failedMessage(host.label, o.steps[last]?.what ?? "?", "0", ""), last);
          if (/Permission denied/.test(err.message) && err.step === last)
            throw new StepError(err.message, err.step, {
              hint: "QEMU runs as its own user on the host (libvirt-qemu, qemu): the image must be readable by it and every directory above it searchable (chmod o+x), or use --upload-image",
            });
          throw err;
        }
        if (o.signal?.aborted) {
          await done;
          throw new InterruptedError();
        }
      } finally {
        o.signal?.removeEventListener("abort", onAbort);
      }
      // The domain stopped by itself when its state line comes before we asked it to stop.
      const exited = Promise.race([
        stateLine.then(async (state) => {
          await proc.drained();
          return state;
        }),
        done.then(() => undefined),
      ]).then((state) => ({
        description: `domain ${o.name} stopped: ${state?.trim() || "state unknown"}`,
      }));
      return {
        console: proc.stdout,
        exited,
        stderr: () => "",
        stop: async () => {
          stop();
          await done;
          await exited;
        },
      };
    },
  };
}
