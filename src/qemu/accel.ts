/**
 * KVM only when it really works. /dev/kvm can exist and open fine while the guest dies
 * with "KVM internal error ... emulation failure" a few milliseconds into the firmware
 * (nested virtualization that does not emulate everything). So the probe runs the same
 * machine and firmware under `-accel kvm` for a moment and watches QEMU's stderr; anything
 * wrong means TCG.
 */
import { access, constants, copyFile } from "node:fs/promises";
import { arch as nodeArch } from "node:os";
import { join } from "node:path";
import { lastLine, spawnStreaming } from "../exec/index.js";
import type { Arch } from "../source/index.js";
import { type Accel, machineArgs, QEMU_PROGRAM } from "./command.js";
import type { Firmware } from "./firmware.js";

export type AccelChoice = "auto" | Accel;

export function hostArch(): Arch | undefined {
  const a = nodeArch();
  return a === "x64" ? "x86_64" : a === "arm64" ? "aarch64" : undefined;
}

/** How long the probe lets the firmware run. Broken KVM fails within milliseconds. */
const PROBE_MS = 1500;
const KVM_BROKEN =
  /KVM internal error|emulation failure|failed to initialize kvm|Could not access KVM|kvm_init_vcpu|KVM_RUN|kvm: .*(failed|error)/i;

const cache = new Map<string, Promise<{ works: boolean; why: string }>>();

export async function chooseAccel(
  want: AccelChoice,
  arch: Arch,
  firmware: Firmware,
  tmpDir: string,
): Promise<{ accel: Accel; why: string }> {
  if (want === "tcg") return { accel: "tcg", why: "--accel tcg" };
  if (want === "kvm") return { accel: "kvm", why: "--accel kvm" };
  const host = hostArch();
  if (host !== arch)
    return { accel: "tcg", why: `KVM cannot run ${arch} guests on a ${host ?? nodeArch()} host` };
  try {
    await access("/dev/kvm", constants.R_OK | constants.W_OK);
  } catch {
    return { accel: "tcg", why: "/dev/kvm is missing or not accessible" };
  }
  const key = `${arch}\0${firmware.kind === "uefi" ? firmware.code : "bios"}`;
  let probe = cache.get(key);
  if (!probe) {
    probe = probeKvm(arch, firmware, tmpDir);
    cache.set(key, probe);
  }
  const r = await probe;
  return r.works ? { accel: "kvm", why: r.why } : { accel: "tcg", why: r.why };
}

async function probeKvm(
  arch: Arch,
  firmware: Firmware,
  tmpDir: string,
): Promise<{ works: boolean; why: string }> {
  let varsCopy: string | undefined;
  if (firmware.kind === "uefi") {
    varsCopy = join(tmpDir, "kvm-probe-vars.fd");
    await copyFile(firmware.vars, varsCopy);
  }
  const args = [
    ...machineArgs({ arch, accel: "kvm", firmware, varsCopy, memoryMiB: 256, cpus: 1 }),
    "-nodefaults",
    "-display",
    "none",
    "-serial",
    "none",
    "-monitor",
    "none",
  ];
  const child = spawnStreaming(QEMU_PROGRAM[arch], args, {
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
  });
  let stderr = "";
  return await new Promise((resolve) => {
    let settled = false;
    const finish = (works: boolean, why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill("SIGKILL");
      resolve({ works, why });
    };
    const timer = setTimeout(
      () => finish(true, `KVM ran the firmware for ${PROBE_MS / 1000}s without an error`),
      PROBE_MS,
    );
    child.stderr?.on("data", (b: Buffer) => {
      stderr += b.toString();
      const m = KVM_BROKEN.exec(stderr);
      if (m) finish(false, `KVM does not work here (QEMU: ${m[0]}); using TCG`);
    });
    child.then(
      (r) =>
        finish(false, `KVM probe: QEMU exited (${r.exitCode ?? r.signal}): ${lastLine(stderr)}`),
      (err: unknown) => finish(false, `KVM probe failed: ${String(err)}`),
    );
  });
}
