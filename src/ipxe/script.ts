/**
 * The iPXE script on the stick (`/autoexec.ipxe`; the BIOS path loads the same file as the
 * initrd of ipxe.lkrn). It netboots one OS with the Ignition URL on every boot, retries
 * network errors a few times, and then stops with the error on the screen and waits for a
 * key instead of rebooting in a loop.
 */
import { UsageError } from "../errors.js";
import type { PxeBoot } from "../source/index.js";

export interface ScriptOptions {
  boot: PxeBoot;
  ignitionUrl: string;
  hostname?: string;
  kernelArgs?: string[];
  /** Attempts before giving up and waiting for a key. */
  attempts?: number;
  /** Seconds between attempts. */
  retryDelay?: number;
  /** Header comment: what made this script. */
  generator?: string;
}

/**
 * One argument of an iPXE command line: whitespace separates arguments, so none may be in
 * it. `${...}` is left alone on purpose: iPXE expands its settings at boot, so
 * `--ignition-url http://host/${net0/mac}.ign` gives every machine its own config.
 */
function ipxeLiteral(s: string): string {
  if (/\s/.test(s))
    throw new UsageError(`${JSON.stringify(s)}: an iPXE argument cannot contain spaces`);
  return s;
}

export function ipxeScript(o: ScriptOptions): string {
  const attempts = o.attempts ?? 5;
  const delay = o.retryDelay ?? 10;
  const args = [
    ...o.boot.kernelArgs,
    `ignition.config.url=${o.ignitionUrl}`,
    ...(o.hostname ? [`systemd.hostname=${o.hostname}`] : []),
    ...(o.kernelArgs ?? []),
  ].map(ipxeLiteral);
  const initrds = o.boot.initrds.map(
    (i) =>
      `initrd ${i.name ? `--name ${ipxeLiteral(i.name)} ` : ""}${ipxeLiteral(i.url)} || goto failed`,
  );
  const what = o.boot.description;
  return retryingScript({
    header: [
      `# ${o.generator ?? "provision pxe-stick"}: ${what}`,
      "# Netboots on every start; the secrets volume on this stick is mounted by the OS.",
    ],
    announce: `booting ${what}`,
    steps: [
      "echo provision: ${net0/ip} via ${net0/gateway}, fetching the kernel",
      `kernel ${ipxeLiteral(o.boot.kernel)} ${args.join(" ")} || goto failed`,
      ...initrds,
      "boot || goto failed",
    ],
    giveUp: [
      `echo provision: could not netboot ${what} after ${attempts} attempts.`,
      `echo provision: last error \${errno}: see https://ipxe.org/\${errno}`,
      "echo provision: check the cable, the DHCP server and that this URL answers:",
      `echo provision: ${ipxeLiteral(o.boot.kernel)}`,
    ],
    attempts,
    delay,
  });
}

/**
 * The retry loop every stick script shares: DHCP and `steps` up to `attempts` times,
 * `delay` seconds apart; then `giveUp` stays on the screen and a key starts over (never a
 * reboot loop).
 */
function retryingScript(o: {
  header: string[];
  announce: string;
  steps: string[];
  giveUp: string[];
  attempts: number;
  delay: number;
}): string {
  return [
    "#!ipxe",
    ...o.header,
    "",
    "set attempt:int32 0",
    ":retry",
    "inc attempt",
    `echo provision: ${o.announce} (attempt \${attempt} of ${o.attempts})`,
    "dhcp || goto failed",
    ...o.steps,
    ":failed",
    `iseq \${attempt} ${o.attempts} && goto give_up ||`,
    `echo provision: attempt \${attempt} failed (\${errno}); retrying in ${o.delay} s`,
    `sleep ${o.delay}`,
    "goto retry",
    ":give_up",
    "echo",
    ...o.giveUp,
    "prompt provision: press any key to try again",
    "set attempt:int32 0",
    "goto retry",
    "",
  ].join("\n");
}

/**
 * `--fleet URL`: provision serve's address with its token (`http://host:8080/?token=T`, or
 * the full `.../boot.ipxe?token=T` it prints). Returns the /boot.ipxe URL the stick chains to
 * and a form without the token, for messages.
 */
export function fleetBootUrl(url: string): { bootUrl: string; shown: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(
      `--fleet ${url}: not a URL`,
      "pass what provision serve printed: http://HOST:PORT/boot.ipxe?token=T",
    );
  }
  if (u.protocol !== "http:" && u.protocol !== "https:")
    throw new UsageError(`--fleet ${url}: use http (or https with an iPXE that trusts its CA)`);
  const token = u.searchParams.get("token");
  if (!token)
    throw new UsageError(
      "--fleet: the URL needs provision serve's token (?token=...)",
      "pass what provision serve printed: http://HOST:PORT/boot.ipxe?token=T",
    );
  const path = u.pathname.replace(/\/boot\.ipxe$/, "").replace(/\/+$/, "");
  const base = `${u.origin}${path}`;
  return {
    bootUrl: ipxeLiteral(`${base}/boot.ipxe?token=${encodeURIComponent(token)}`),
    shown: base,
  };
}

/** A stick for every machine: DHCP, then chain to provision serve, with the same retries. */
export function fleetScript(o: {
  bootUrl: string;
  shown: string;
  attempts?: number;
  retryDelay?: number;
  generator?: string;
}): string {
  const attempts = o.attempts ?? 5;
  return retryingScript({
    header: [
      `# ${o.generator ?? "provision pxe-stick --fleet"}: ${o.shown}`,
      "# One stick for every machine: provision serve answers each by its MAC.",
    ],
    announce: `asking ${o.shown}`,
    steps: [`chain ${o.bootUrl} || goto failed`],
    giveUp: [
      `echo provision: could not reach ${o.shown} after ${attempts} attempts.`,
      `echo provision: last error \${errno}: see https://ipxe.org/\${errno}`,
    ],
    attempts,
    delay: o.retryDelay ?? 10,
  });
}
