/**
 * The QEMU command line, as data. One function builds it for the run, for the KVM probe
 * and for `--print-command`, so what the harness runs is exactly what a person can run.
 */
import type { Arch } from "../source/index.js";
import type { Firmware } from "./firmware.js";

export type Accel = "kvm" | "tcg";

export interface MachineSpec {
  arch: Arch;
  accel: Accel;
  firmware: Firmware;
  /** The guest's writable copy of the VARS file (UEFI). */
  varsCopy?: string;
  memoryMiB: number;
  cpus: number;
}

export interface QemuSpec extends MachineSpec {
  /** The qcow2 overlay the guest boots from. */
  disk: string;
  /** Attach it as a USB stick (qemu-xhci + usb-storage) instead of virtio-blk. */
  usb?: boolean;
  /** The Ignition config file and the fw_cfg name it goes under. */
  ignition?: { file: string; fwCfgName: string };
  /** User networking; with a host port forwarded to the guest's SSH port. */
  net?: { sshPort?: number; mac?: string };
  /** Serial console multiplexed with the monitor on the terminal (Ctrl-A X quits). */
  interactive?: boolean;
}

export const QEMU_PROGRAM: Record<Arch, string> = {
  aarch64: "qemu-system-aarch64",
  x86_64: "qemu-system-x86_64",
};

export const FW_CFG_NAME = {
  fcos: "opt/com.coreos/config",
  flatcar: "opt/org.flatcar-linux/config",
} as const;

/** A path inside a QEMU option string: a comma is written twice. */
const p = (path: string) => path.replace(/,/g, ",,");

/** Machine, CPU, accelerator, memory and firmware: shared by the run and the KVM probe. */
export function machineArgs(m: MachineSpec): string[] {
  const args: string[] = [];
  if (m.arch === "aarch64") {
    args.push("-M", "virt", "-cpu", m.accel === "kvm" ? "host" : "cortex-a57");
  } else {
    args.push("-M", "q35", "-cpu", m.accel === "kvm" ? "host" : "max");
  }
  args.push("-accel", m.accel === "kvm" ? "kvm" : "tcg,thread=multi");
  args.push("-smp", String(m.cpus), "-m", String(m.memoryMiB));
  if (m.firmware.kind === "uefi") {
    args.push(
      "-drive",
      `if=pflash,format=raw,unit=0,readonly=on,file=${p(m.firmware.code)}`,
      "-drive",
      `if=pflash,format=raw,unit=1,file=${p(m.varsCopy ?? m.firmware.vars)}`,
    );
  }
  return args;
}

export function qemuArgs(spec: QemuSpec): string[] {
  const args = machineArgs(spec);
  // cache=unsafe: the overlay is thrown away, so its writes need no flushing.
  if (spec.usb) {
    // The way a PC sees a boot stick: on an xHCI controller, first in the boot order.
    args.push(
      "-device",
      "qemu-xhci,id=xhci",
      "-drive",
      `if=none,id=stick,format=qcow2,cache=unsafe,file=${p(spec.disk)}`,
      "-device",
      "usb-storage,bus=xhci.0,drive=stick,bootindex=0",
    );
  } else args.push("-drive", `if=virtio,format=qcow2,cache=unsafe,file=${p(spec.disk)}`);
  if (spec.ignition) {
    args.push("-fw_cfg", `name=${spec.ignition.fwCfgName},file=${p(spec.ignition.file)}`);
  }
  if (spec.net) {
    const fwd = spec.net.sshPort ? `,hostfwd=tcp:127.0.0.1:${spec.net.sshPort}-:22` : "";
    const mac = spec.net.mac ? `,mac=${spec.net.mac}` : "";
    args.push("-netdev", `user,id=n0${fwd}`, "-device", `virtio-net-pci,netdev=n0${mac}`);
  }
  // Entropy for the guest: without it early boot can stall waiting for the RNG.
  args.push("-device", "virtio-rng-pci");
  // -nodefaults: no default NIC, VGA, monitor or parallel port; the serial console is the
  // only output. -no-reboot: a guest that reboots ends the run instead of looping.
  args.push(
    "-nodefaults",
    "-display",
    "none",
    "-serial",
    spec.interactive ? "mon:stdio" : "stdio",
    "-no-reboot",
  );
  return args;
}
