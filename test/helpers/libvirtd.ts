/**
 * libvirt's system daemon for the remote tests. Uses the one that runs (a developer's
 * systemd libvirtd); else starts virtlogd and libvirtd by hand, with the stock Debian
 * configuration (there is no systemd here to do it), and stops them again afterwards.
 */
import { existsSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { execa } from "execa";

const URI = "qemu:///system";

async function answers(): Promise<boolean> {
  const r = await execa("virsh", ["-c", URI, "version"], { reject: false });
  return r.exitCode === 0;
}

function pidOf(file: string): number | undefined {
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, "utf8").trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** Returns a function that stops what this call started (nothing if it was running). */
export async function ensureLibvirtd(): Promise<() => Promise<void>> {
  if (await answers()) return async () => {};
  const started: string[] = [];
  // Without virtlogd, starting a domain fails ("Failed to connect socket to
  // '/run/libvirt/virtlogd-sock'").
  if (!existsSync("/run/libvirt/virtlogd-sock")) {
    await execa("virtlogd", ["-d"]);
    started.push("/run/virtlogd.pid");
  }
  await execa("libvirtd", ["-d"]);
  started.push("/run/libvirtd.pid");
  const deadline = Date.now() + 15_000;
  while (!(await answers())) {
    if (Date.now() > deadline) throw new Error("libvirtd -d started but virsh cannot connect");
    await sleep(200);
  }
  return async () => {
    // Domains first: a QEMU outlives a killed libvirtd.
    const names = (await execa("virsh", ["-c", URI, "list", "--name"], { reject: false })).stdout
      .split("\n")
      .filter((n) => n.startsWith("provision-"));
    for (const n of names) await execa("virsh", ["-c", URI, "destroy", n], { reject: false });
    for (const file of started.reverse()) {
      const pid = pidOf(file);
      if (pid) {
        try {
          process.kill(pid, "SIGTERM");
        } catch {}
      }
    }
  };
}

/** The provision-* domains libvirt knows (running or defined). */
export async function provisionDomains(): Promise<string[]> {
  const r = await execa("virsh", ["-c", URI, "list", "--all", "--name"]);
  return r.stdout.split("\n").filter((n) => n.startsWith("provision-"));
}
