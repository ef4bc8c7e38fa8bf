/**
 * The libvirt domain for one boot test: what `qemuArgs` is for a local run. The Ignition
 * config goes in as `-fw_cfg` through `<qemu:commandline>` (libvirt has no element for
 * it; this is what the FCOS docs do), the serial console to a file we created, and every
 * way the guest ends (poweroff, reboot, crash) destroys it: the same as -no-reboot.
 */
import { escapeXml } from "../qemu/junit.js";
import type { Arch } from "../source/index.js";

export interface DomainSpec {
  name: string;
  arch: Arch;
  /** "kvm" or "qemu" (TCG). */
  type: "kvm" | "qemu";
  memoryMiB: number;
  cpus: number;
  /** UEFI through libvirt's firmware auto-selection, or SeaBIOS (x86_64 only). */
  firmware: "efi" | "bios";
  disk: { path: string; format: "qcow2" | "raw" };
  consoleLog: string;
  /** fw_cfg name and the file on the host. */
  ignition?: { fwCfgName: string; file: string };
  /** User-mode networking (no libvirt network needed). */
  userNet?: boolean;
  /** A title, shown by virsh list --title. */
  title?: string;
}

/** A path inside a QEMU option string: a comma is written twice. */
const qemuOptPath = (path: string) => path.replace(/,/g, ",,");

export function domainXml(d: DomainSpec): string {
  const e = escapeXml;
  const machine = d.arch === "aarch64" ? "virt" : "q35";
  const cpu =
    d.type === "kvm"
      ? `<cpu mode='host-passthrough'/>`
      : d.arch === "aarch64"
        ? `<cpu mode='custom' match='exact'><model fallback='allow'>cortex-a57</model></cpu>`
        : `<cpu mode='maximum' check='none'/>`;
  const features = d.arch === "x86_64" ? "<acpi/><apic/>" : "<acpi/>";
  const lines = [
    `<domain type='${d.type}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>`,
    `  <name>${e(d.name)}</name>`,
    d.title ? `  <title>${e(d.title)}</title>` : "",
    `  <memory unit='MiB'>${d.memoryMiB}</memory>`,
    `  <vcpu>${d.cpus}</vcpu>`,
    d.firmware === "efi" ? `  <os firmware='efi'>` : `  <os>`,
    `    <type arch='${d.arch}' machine='${machine}'>hvm</type>`,
    // Auto-selection prefers the Secure Boot builds with Microsoft's keys enrolled; a local
    // run uses the plain build, and so does this (an unsigned loader must boot too).
    d.firmware === "efi"
      ? `    <firmware><feature enabled='no' name='secure-boot'/><feature enabled='no' name='enrolled-keys'/></firmware>`
      : "",
    `    <boot dev='hd'/>`,
    `  </os>`,
    `  <features>${features}</features>`,
    `  ${cpu}`,
    `  <on_poweroff>destroy</on_poweroff>`,
    `  <on_reboot>destroy</on_reboot>`,
    `  <on_crash>destroy</on_crash>`,
    `  <devices>`,
    `    <disk type='file' device='disk'>`,
    `      <driver name='qemu' type='${d.disk.format}' cache='unsafe'/>`,
    `      <source file='${e(d.disk.path)}'/>`,
    `      <target dev='vda' bus='virtio'/>`,
    `    </disk>`,
    d.userNet ? `    <interface type='user'><model type='virtio'/></interface>` : "",
    `    <serial type='file'>`,
    `      <source path='${e(d.consoleLog)}' append='on'/>`,
    `      <target port='0'/>`,
    `    </serial>`,
    `    <console type='file'>`,
    `      <source path='${e(d.consoleLog)}' append='on'/>`,
    `      <target type='serial' port='0'/>`,
    `    </console>`,
    `    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>`,
    `    <memballoon model='none'/>`,
    `  </devices>`,
  ];
  if (d.ignition) {
    lines.push(
      `  <qemu:commandline>`,
      `    <qemu:arg value='-fw_cfg'/>`,
      `    <qemu:arg value='${e(`name=${d.ignition.fwCfgName},file=${qemuOptPath(d.ignition.file)}`)}'/>`,
      `  </qemu:commandline>`,
    );
  }
  lines.push(`</domain>`, "");
  return lines.filter((l) => l !== "").join("\n");
}
