/**
 * KVM only when it really works. /dev/kvm can exist and open fine while the guest dies
 * with "KVM internal error ... emulation failure" a few milliseconds into the firmware
 * (nested virtualization that does not emulate everything). So the probe runs the same
 * machine and firmware under `-accel kvm` for a moment and watches QEMU's stderr; anything
 * wrong means TCG.
 */
import { access, constants, copyFile, writeFile } from "node:fs/promises";
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
const PROBE_MS = 1000;
/** How long a working KVM may take to boot the test boot sector. */
const SPEED_MS = 1500;
const PROBE_MARKER = "PROVISION-KVM-OK";
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
  if (arch === "x86_64") {
    const speed = await probeBootSector(tmpDir);
    if (!speed.works) return speed;
    if (firmware.kind === "bios") return speed;
  }
  return await probeFirmware(arch, firmware, tmpDir);
}

/**
 * Stage 1 (x86_64): a 512-byte boot sector that writes a marker to COM1, booted by SeaBIOS.
 * Working KVM prints it in a fraction of a second (TCG: about 0.3 s). Nested KVM that traps
 * every port access to an outer hypervisor "works" but takes seconds: as good as broken.
 */
async function probeBootSector(tmpDir: string): Promise<{ works: boolean; why: string }> {
  const code: number[] = [0xba, 0xf8, 0x03]; // mov dx, 0x3f8
  for (const c of Buffer.from(`${PROBE_MARKER}\n`)) code.push(0xb0, c, 0xee); // mov al, c; out dx, al
  code.push(0xfa, 0xf4, 0xeb, 0xfd); // cli; hlt; jmp hlt
  const img = Buffer.alloc(1 << 20); // SeaBIOS ignores disks of one sector
  Buffer.from(code).copy(img);
  img[510] = 0x55;
  img[511] = 0xaa;
  const disk = join(tmpDir, "kvm-probe.img");
  await writeFile(disk, img);
  const args = ["-M", "pc", "-accel", "kvm", "-m", "64", "-nodefaults", "-display", "none"];
  args.push("-serial", "stdio", "-drive", `if=ide,format=raw,file=${disk.replace(/,/g, ",,")}`);
  return await watchProbe(args, "x86_64", SPEED_MS, {
    onStdout: (text) => text.includes(PROBE_MARKER),
    pass: "KVM booted a test guest",
    slow: `KVM is too slow here (a test guest did not boot within ${SPEED_MS / 1000}s; TCG takes 0.3s); using TCG`,
  });
}

/** Stage 2: the firmware the guest will use, under KVM for a moment, must not fail. */
async function probeFirmware(
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
  return await watchProbe(args, arch, PROBE_MS, {
    pass: "KVM works (probed)",
  });
}

/**
 * Run QEMU for at most `ms`. Works when `onStdout` returns true, or (without `onStdout`)
 * when the time passes without an error on stderr.
 */
async function watchProbe(
  args: string[],
  arch: Arch,
  ms: number,
  o: { onStdout?: (text: string) => boolean; pass: string; slow?: string },
): Promise<{ works: boolean; why: string }> {
  const child = spawnStreaming(QEMU_PROGRAM[arch], args, {
    stdin: "ignore",
    stdout: o.onStdout ? "pipe" : "ignore",
    stderr: "pipe",
  });
  let stderr = "";
  let stdout = "";
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
      () => (o.onStdout ? finish(false, o.slow ?? "KVM probe timed out") : finish(true, o.pass)),
      ms,
    );
    child.stdout?.on("data", (b: Buffer) => {
      stdout += b.toString("latin1");
      if (o.onStdout?.(stdout)) finish(true, o.pass);
    });
    child.stdout?.resume();
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
