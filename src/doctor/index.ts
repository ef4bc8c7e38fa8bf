/**
 * `provision doctor`: what each command needs on this machine, found or missing. Programs
 * come from the one table in src/exec (package names for Debian/Ubuntu and Fedora, which
 * commands need them); firmware, iPXE, KVM and the libvirt host are judged by the same
 * code the commands use (src/qemu/firmware, src/ipxe/binaries, src/qemu/accel,
 * src/qemu/remote), so doctor and the command cannot disagree.
 */
import { constants } from "node:fs";
import { access, mkdtemp, open, readdir, readFile, rm, stat, statfs } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { cacheRoot, findDistroKeyrings } from "../cache/index.js";
import { describeError, errnoText, ProvisionError } from "../errors.js";
import { findProgram, PROGRAMS, programSearchDirs } from "../exec/index.js";
import {
  efiExecutableArch,
  findBiosBoot,
  findIpxeEfi,
  IPXE_PACKAGES,
  ipxeEfiCandidates,
} from "../ipxe/binaries.js";
import { formatBytes } from "../progress/index.js";
import { chooseAccel, hostArch } from "../qemu/accel.js";
import { QEMU_PROGRAM } from "../qemu/command.js";
import {
  FIRMWARE_PACKAGES,
  type Firmware,
  findFirmware,
  firmwareCandidates,
} from "../qemu/firmware.js";
import type { Arch } from "../source/index.js";
import { PACKAGE_ROOT, versionText } from "../version.js";
import { DOCTOR_COMMANDS, type DoctorCommand } from "./commands.js";

export type Status = "ok" | "warning" | "error";

export interface Packages {
  debian?: string;
  fedora?: string;
}

export interface Check {
  /** What was checked: a program's name, "UEFI firmware x86_64", "KVM", "Node.js", ... */
  name: string;
  kind: "program" | "file" | "kvm" | "libvirt" | "node" | "cache" | "keyring";
  /** ok: there; error: missing and required; warning: missing but optional, or a caveat. */
  status: Status;
  required: boolean;
  /** What the command needs it for. */
  for?: string;
  /** Where it was found. */
  path?: string;
  /** Where it was looked for, when it was not found. */
  looked?: string[];
  /** The packages that provide it (space-separated when several). */
  packages?: Packages;
  /** What was found or went wrong, in words. */
  detail?: string;
  hint?: string;
}

export interface DoctorReport {
  /** Everything the checked commands need is here. */
  ok: boolean;
  version: string;
  /** The commands checked: the one named, else all. */
  checked: DoctorCommand[];
  /** Node.js and the cache: every command depends on them. */
  machine: Check[];
  commands: Partial<Record<DoctorCommand, { ok: boolean; checks: Check[] }>>;
  /** The packages that provide what is missing: required ones, and optional ones. */
  install: {
    debian: string[];
    fedora: string[];
    optionalDebian: string[];
    optionalFedora: string[];
  };
}

export interface DoctorOptions {
  command?: DoctorCommand;
  arch?: Arch;
  ipxeEfi?: string;
  connect?: string;
}

/** When each Node.js major line reaches its end of life (nodejs.org release schedule). */
const NODE_EOL: Record<number, string> = {
  18: "2025-04-30",
  19: "2023-06-01",
  20: "2026-04-30",
  21: "2024-06-01",
  22: "2027-04-30",
  23: "2025-06-01",
  24: "2028-04-30",
  25: "2026-06-01",
  26: "2029-04-30",
};

/** Below this much free space under the cache, a warning: one FCOS image is about 1 GiB. */
const LOW_SPACE = 2 * 1024 ** 3;

const ARCHES: Arch[] = ["x86_64", "aarch64"];

export async function runDoctor(o: DoctorOptions): Promise<DoctorReport> {
  const checked: DoctorCommand[] = o.command ? [o.command] : [...DOCTOR_COMMANDS];
  const host = hostArch();
  const arches = o.arch ? [o.arch] : ARCHES;
  // The architecture whose QEMU and firmware qemu-test cannot do without, and the one
  // pxe-stick builds for by default.
  const qemuArch: Arch = o.arch ?? host ?? "x86_64";
  const pxeArch: Arch = o.arch ?? "x86_64";
  if (o.connect !== undefined) {
    // A malformed URI is bad input (exit 2), not a missing piece.
    const { parseConnectUri } = await import("../libvirt/uri.js");
    parseConnectUri(o.connect, "user");
  }

  const programs = new Map<string, Promise<string | undefined>>();
  const found = (p: string) => {
    let r = programs.get(p);
    if (!r) {
      r = findProgram(p);
      programs.set(p, r);
    }
    return r;
  };
  const firmware = new Map<Arch, Promise<Check & { firmware?: Firmware }>>();
  const firmwareOf = (arch: Arch) => {
    let r = firmware.get(arch);
    if (!r) {
      r = firmwareCheck(arch, arch === qemuArch);
      firmware.set(arch, r);
    }
    return r;
  };

  const groups = await Promise.all(
    checked.map(async (cmd) => {
      const checks: (Check | Promise<Check>)[] = [];
      for (const [name, info] of Object.entries(PROGRAMS)) {
        let required = info.required?.[cmd];
        let optional = info.optional?.[cmd];
        const qemuFor = ARCHES.find((a) => QEMU_PROGRAM[a] === name);
        if (qemuFor) {
          if (!arches.includes(qemuFor)) continue;
          if (cmd === "qemu-test" && qemuFor === qemuArch && optional) {
            required = optional;
            optional = undefined;
          }
        }
        if (required === undefined && optional === undefined) continue;
        checks.push(
          programCheck(
            name,
            await found(name),
            required !== undefined,
            (required ?? optional) as string,
          ),
        );
      }
      if (cmd === "flash") checks.push(...["fcos", "flatcar"].map(keyringCheck));
      if (cmd === "qemu-test") {
        for (const a of arches) checks.push(firmwareOf(a));
        if (host && arches.includes(host))
          checks.push(kvmCheck(host, await found(QEMU_PROGRAM[host]), await firmwareOf(host)));
        if (o.connect) checks.push(libvirtCheck(o.connect));
      }
      if (cmd === "pxe-stick") {
        const fileArch = await givenEfiArch(o.ipxeEfi);
        for (const a of arches) {
          const given =
            o.ipxeEfi !== undefined &&
            (o.arch !== undefined ||
              fileArch === a ||
              (a === pxeArch && !ARCHES.includes(fileArch as Arch)))
              ? o.ipxeEfi
              : undefined;
          checks.push(ipxeCheck(a, a === pxeArch, given));
        }
        if (arches.includes("x86_64")) checks.push(biosBootCheck());
      }
      const list = order(await Promise.all(checks));
      return [cmd, { ok: list.every((c) => c.status !== "error"), checks: list }] as const;
    }),
  );
  const machine = (await Promise.all([nodeCheck(), cacheCheck()])).map(tidy);
  const commands = Object.fromEntries(groups) as DoctorReport["commands"];
  const all = [...machine, ...groups.flatMap(([, g]) => g.checks)];
  const pick = (required: boolean, distro: keyof Packages) => [
    ...new Set(
      all
        .filter((c) => c.status !== "ok" && c.required === required && c.packages?.[distro])
        .flatMap((c) => (c.packages?.[distro] as string).split(" ")),
    ),
  ];
  const debian = pick(true, "debian");
  const fedora = pick(true, "fedora");
  return {
    ok: all.every((c) => c.status !== "error"),
    version: versionText(),
    checked,
    machine,
    commands,
    install: {
      debian,
      fedora,
      optionalDebian: pick(false, "debian").filter((p) => !debian.includes(p)),
      optionalFedora: pick(false, "fedora").filter((p) => !fedora.includes(p)),
    },
  };
}

/** Required before optional; otherwise as checked. */
function order(checks: Check[]): Check[] {
  return [...checks.filter((c) => c.required), ...checks.filter((c) => !c.required)].map(tidy);
}

const KEYS = [
  "name",
  "kind",
  "status",
  "required",
  "for",
  "path",
  "looked",
  "packages",
  "detail",
  "hint",
] as const;

/** The same keys in the same order for every check (and nothing else) in the JSON. */
function tidy(c: Check): Check {
  const out: Record<string, unknown> = {};
  for (const k of KEYS) if (c[k] !== undefined) out[k] = c[k];
  return out as unknown as Check;
}

function programCheck(
  name: string,
  path: string | undefined,
  required: boolean,
  what: string,
): Check {
  const info = PROGRAMS[name];
  const packages: Packages = { debian: info?.debian, fedora: info?.fedora };
  if (path) return { name, kind: "program", status: "ok", required, for: what, path, packages };
  return {
    name,
    kind: "program",
    status: required ? "error" : "warning",
    required,
    for: what,
    looked: programSearchDirs(),
    packages,
    hint: info?.url ? `where no package has it: ${info.url}` : undefined,
  };
}

async function firmwareCheck(
  arch: Arch,
  required: boolean,
): Promise<Check & { firmware?: Firmware }> {
  const name = `UEFI firmware ${arch}`;
  const what = `${arch} guests`;
  try {
    const fw = await findFirmware(arch);
    const path = fw.kind === "uefi" ? `${fw.code} + ${fw.vars}` : undefined;
    return { name, kind: "file", status: "ok", required, for: what, path, firmware: fw };
  } catch (err) {
    return {
      name,
      kind: "file",
      status: required ? "error" : "warning",
      required,
      for: what,
      looked: firmwareCandidates(arch).map(([code, vars]) => `${code} + ${vars}`),
      packages: FIRMWARE_PACKAGES[arch],
      detail: describeError(err),
    };
  }
}

/**
 * KVM for guests of this host's architecture: /dev/kvm must open read-write, and then QEMU
 * must really run under it (src/qemu/accel's probe, as qemu-test --accel auto does). Without
 * it guests run under TCG: slower, but they run, so this is a warning at worst.
 */
async function kvmCheck(
  host: Arch,
  qemu: string | undefined,
  fw: Check & { firmware?: Firmware },
): Promise<Check> {
  const base = { name: "KVM", kind: "kvm" as const, required: false, for: `fast ${host} guests` };
  try {
    const fh = await open("/dev/kvm", constants.O_RDWR);
    await fh.close();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return {
      ...base,
      status: "warning",
      path: "/dev/kvm",
      detail: `/dev/kvm: ${errnoText(err) ?? describeError(err)}; guests run under TCG (slower)`,
      hint:
        code === "ENOENT"
          ? "enable virtualization in the firmware settings and load kvm_intel or kvm_amd"
          : code === "EACCES" || code === "EPERM"
            ? "add yourself to the kvm group (sudo usermod -aG kvm $USER) and log in again"
            : undefined,
    };
  }
  if (!qemu || !fw.firmware)
    return {
      ...base,
      status: "ok",
      path: "/dev/kvm",
      detail: "/dev/kvm opens read-write (not tried with QEMU: QEMU or firmware missing)",
    };
  const tmp = await mkdtemp(join(tmpdir(), "provision-doctor-"));
  try {
    const r = await chooseAccel("auto", host, fw.firmware, tmp);
    return r.accel === "kvm"
      ? { ...base, status: "ok", path: "/dev/kvm", detail: r.why }
      : {
          ...base,
          status: "warning",
          path: "/dev/kvm",
          detail: `${r.why.replace(/; using TCG$/, "")}; guests run under TCG (slower)`,
        };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

async function libvirtCheck(uri: string): Promise<Check> {
  const base = {
    name: `libvirt ${uri}`,
    kind: "libvirt" as const,
    required: true,
    for: "--connect",
  };
  const { probeLibvirtHost } = await import("../qemu/remote.js");
  try {
    const r = await probeLibvirtHost(uri);
    const facts = [
      r.hostKey ? `host key ${r.hostKey}` : undefined,
      r.arch,
      r.selinuxEnforcing ? "SELinux enforcing" : undefined,
    ].filter(Boolean);
    return {
      ...base,
      status: "ok",
      detail: `${r.host}: virsh answers${facts.length ? ` (${facts.join(", ")})` : ""}`,
    };
  } catch (err) {
    return {
      ...base,
      status: "error",
      detail: describeError(err),
      hint: err instanceof ProvisionError ? err.hint : undefined,
    };
  }
}

/** The architecture an --ipxe-efi file is built for; undefined for a URL or no file. */
async function givenEfiArch(file: string | undefined): Promise<string | null | undefined> {
  if (file === undefined || /^https?:\/\//.test(file)) return undefined;
  return await readFile(file).then(efiExecutableArch, () => undefined);
}

/** An iPXE EFI binary for `arch` that runs /autoexec.ipxe, judged as pxe-stick judges it. */
async function ipxeCheck(arch: Arch, required: boolean, given: string | undefined): Promise<Check> {
  const base = {
    name: `iPXE EFI ${arch}`,
    kind: "file" as const,
    required,
    for: `pxe-stick --arch ${arch}${given ? " --ipxe-efi" : ""}`,
  };
  try {
    const path = await findIpxeEfi(arch, given, { offline: true });
    return { ...base, status: "ok", path, detail: "runs /autoexec.ipxe" };
  } catch (err) {
    const notFound = given === undefined && /^no iPXE EFI binary/.test(describeError(err));
    return {
      ...base,
      status: required ? "error" : "warning",
      looked: given === undefined ? [...ipxeEfiCandidates(arch)] : [given],
      // A build without autoexec is installed already: its package would not help.
      packages: notFound ? IPXE_PACKAGES[arch] : undefined,
      detail: describeError(err),
      hint: err instanceof ProvisionError ? err.hint : undefined,
    };
  }
}

async function biosBootCheck(): Promise<Check> {
  const base = {
    name: "BIOS boot (ipxe.lkrn, syslinux)",
    kind: "file" as const,
    required: false,
    for: "pxe-stick --boot both|bios",
  };
  const r = await findBiosBoot(undefined, { offline: true });
  if ("missing" in r)
    return {
      ...base,
      status: "warning",
      packages: IPXE_PACKAGES.bios,
      detail: `missing ${r.missing}; --boot both makes a UEFI-only stick`,
      hint: r.hint,
    };
  return { ...base, status: "ok", path: `${r.lkrn} + ${r.gptmbr} + ${r.modulesDir}/ldlinux.c32` };
}

/** The host's keyrings flash checks signatures with when no --keyring is given. */
async function keyringCheck(os: string): Promise<Check> {
  const base = {
    name: `${os === "fcos" ? "Fedora" : "Flatcar"} signing keys`,
    kind: "keyring" as const,
    required: false,
    for: `--os ${os} signatures without --keyring`,
  };
  const found = await findDistroKeyrings(os);
  if (found.length) return { ...base, status: "ok", path: found.join(" ") };
  return {
    ...base,
    status: "warning",
    looked: os === "fcos" ? ["/etc/pki/rpm-gpg"] : ["/usr/share/keyrings", "/etc/pki/rpm-gpg"],
    detail: "none found, so downloads are checked by sha256 only (--require-signature fails)",
    hint:
      os === "fcos"
        ? "pass --keyring with Fedora's key (https://fedoraproject.org/security/; Fedora: dnf install fedora-gpg-keys)"
        : "pass --keyring with Flatcar's image signing key (F88C FEDE FF29 A5B4 D952 3864 E25D 9AED 0593 B34A)",
  };
}

/** Node.js: at least package.json's engines, and a warning past its line's end of life. */
async function nodeCheck(): Promise<Check> {
  const version = process.versions.node;
  const base = { name: "Node.js", kind: "node" as const, required: true, path: process.execPath };
  const engines = JSON.parse(await readFile(join(PACKAGE_ROOT, "package.json"), "utf8")) as {
    engines?: { node?: string };
  };
  const min = /(\d+)\.(\d+)\.(\d+)/
    .exec(engines.engines?.node ?? "")
    ?.slice(1)
    .map(Number);
  const have = version.split(".").map(Number);
  const below = (a: number[], b: number[]) => {
    for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) < (b[i] ?? 0);
    return false;
  };
  if (min && below(have, min))
    return {
      ...base,
      status: "error",
      detail: `${version} is too old: provision needs ${min.join(".")} or newer`,
      hint: "install Node.js 22 or 24 (https://nodejs.org/)",
    };
  const major = have[0] as number;
  const eol = NODE_EOL[major];
  const today = new Date().toISOString().slice(0, 10);
  if (eol && eol < today)
    return {
      ...base,
      status: "warning",
      detail: `${version} is past its end of life (${eol}): no more security fixes`,
      hint: "install a supported Node.js line (22 or 24): provision runs on them unchanged",
    };
  return {
    ...base,
    status: "ok",
    detail: eol ? `${version} (supported until ${eol})` : version,
  };
}

/** Bytes in the files under `dir` (0 when it does not exist). */
async function sizeOf(dir: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  const walk = async (d: string): Promise<void> => {
    const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        bytes += (await stat(p).catch(() => ({ size: 0 }))).size;
        files++;
      }
    }
  };
  await walk(dir);
  return { bytes, files };
}

/** The cache directory: where it is, how big, the free space under it, writable. */
async function cacheCheck(): Promise<Check> {
  const root = cacheRoot();
  const base = {
    name: "cache",
    kind: "cache" as const,
    required: true,
    for: "downloads (flash, qemu-test, serve, pxe-stick --ipxe-efi URL)",
    path: root,
  };
  // The cache is created on first use: judge the nearest directory that exists.
  let existing = root;
  while (
    !(await stat(existing).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  ) {
    const up = dirname(existing);
    if (up === existing) break;
    existing = up;
  }
  try {
    await access(existing, constants.W_OK);
  } catch (err) {
    return {
      ...base,
      status: "error",
      detail: `${existing}: not writable: ${errnoText(err) ?? describeError(err)}`,
      hint: "set XDG_CACHE_HOME to a directory you can write",
    };
  }
  const fs = await statfs(existing);
  const free = fs.bavail * fs.bsize;
  const used =
    existing === root
      ? `${formatBytes((await sizeOf(root)).bytes)} used`
      : `not created yet (under ${existing})`;
  const detail = `${used}, ${formatBytes(free)} free`;
  if (free < LOW_SPACE)
    return {
      ...base,
      status: "warning",
      detail: `${detail}: an FCOS image needs about 1 GiB`,
      hint: "free some space (provision cache prune) or set XDG_CACHE_HOME elsewhere",
    };
  return { ...base, status: "ok", detail };
}

const MARK: Record<Status, string> = { ok: "✔", warning: "!", error: "✖" };

function packagesText(p: Packages | undefined): string {
  if (!p || (!p.debian && !p.fedora)) return "";
  return `; Debian/Ubuntu: ${p.debian ?? "no package"}, Fedora: ${p.fedora ?? "no package"}`;
}

/** One line for a check (and one for its hint). */
export function checkLines(c: Check): string[] {
  let text: string;
  let name = c.name;
  if (c.status === "ok") {
    text = [c.path, c.detail].filter(Boolean).join(" — ");
  } else {
    if (c.for) name += ` (${c.required ? "needed" : "optional"} for ${c.for})`;
    const looked =
      c.looked?.length && (c.kind === "program" || !c.detail?.includes(c.looked[0] as string))
        ? ` (looked in ${c.kind === "program" ? c.looked.join(":") : c.looked.join(", ")})`
        : "";
    text = `${c.detail ?? "missing"}${packagesText(c.packages)}${looked}`;
  }
  const lines = [`  ${MARK[c.status]} ${name}: ${text}`];
  if (c.hint && c.status !== "ok") lines.push(`      hint: ${c.hint}`);
  return lines;
}

/** The human output: one line per check grouped by command, then what to install. */
export function formatDoctor(r: DoctorReport): string[] {
  const lines = [`provision ${r.version}`];
  lines.push("this machine");
  for (const c of r.machine) lines.push(...checkLines(c));
  for (const cmd of r.checked) {
    const g = r.commands[cmd];
    if (!g) continue;
    lines.push(cmd);
    for (const c of g.checks) lines.push(...checkLines(c));
    if (g.checks.length === 0) lines.push("  ✔ nothing beyond the cache directory (above)");
  }
  const scope = r.checked.length === 1 ? `${r.checked[0]} needs` : "the commands need";
  const apt = (pkgs: string[], rpm: string[]) =>
    `${pkgs.length ? `apt-get install ${pkgs.join(" ")}` : "nothing from apt"} (Fedora: dnf install ${rpm.join(" ")})`;
  const optional = r.install.optionalFedora.length
    ? `optional: ${apt(r.install.optionalDebian, r.install.optionalFedora)}`
    : "";
  if (r.ok) {
    lines.push(`✔ everything ${scope} is here${optional ? `; ${optional}` : ""}`);
    return lines;
  }
  const failed = [r.machine, ...r.checked.map((c) => r.commands[c]?.checks ?? [])]
    .flat()
    .filter((c) => c.status === "error");
  lines.push(`✖ missing what ${scope}: ${[...new Set(failed.map((c) => c.name))].join(", ")}`);
  const install = r.install.fedora.length
    ? `install it: ${apt(r.install.debian, r.install.fedora)}`
    : "no package to install for it: see the hints above";
  lines.push(optional ? `${install}; ${optional}` : install);
  return lines;
}
