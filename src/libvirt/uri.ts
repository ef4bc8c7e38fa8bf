/**
 * `--connect qemu+ssh://[user@]host[:port]/system[?keyfile=PATH&no_verify=1&known_hosts=PATH]`:
 * the libvirt URI syntax people already use with virsh, read into what we need. The
 * query parameters mean what they mean to libvirt.
 */
import { UsageError } from "../errors.js";
import type { SshTarget } from "./ssh.js";

/** Where run directories go on the host unless --remote-dir says otherwise. */
export const DEFAULT_REMOTE_DIR = "/var/lib/libvirt/images/provision";

export interface LibvirtConnection extends SshTarget {
  /** The URI virsh uses on the host itself: qemu:///system or qemu:///session. */
  localUri: string;
  keyfile?: string;
  knownHosts?: string;
  noVerify: boolean;
  /** As given, for messages. */
  uri: string;
}

export function parseConnectUri(uri: string, defaultUser: string): LibvirtConnection {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw new UsageError(`--connect ${uri}: not a URI`, "use qemu+ssh://user@host/system");
  }
  if (u.protocol !== "qemu+ssh:")
    throw new UsageError(
      `--connect ${uri}: only qemu+ssh:// is supported`,
      "without --connect qemu-test runs QEMU on this machine; for a remote host use qemu+ssh://user@host/system",
    );
  if (!u.hostname)
    throw new UsageError(`--connect ${uri}: no host`, "use qemu+ssh://user@host/system");
  const path = u.pathname.replace(/\/+$/, "") || "/system";
  if (path !== "/system" && path !== "/session")
    throw new UsageError(`--connect ${uri}: the path must be /system or /session`);
  const known = new Set(["keyfile", "no_verify", "known_hosts"]);
  for (const k of u.searchParams.keys())
    if (!known.has(k))
      throw new UsageError(
        `--connect ${uri}: unsupported parameter "${k}"`,
        "supported: keyfile, no_verify, known_hosts",
      );
  return {
    host: u.hostname.replace(/^\[|\]$/g, ""),
    port: u.port ? Number(u.port) : 22,
    user: decodeURIComponent(u.username) || defaultUser,
    localUri: `qemu://${path}`,
    keyfile: u.searchParams.get("keyfile") ?? undefined,
    knownHosts: u.searchParams.get("known_hosts") ?? undefined,
    noVerify: u.searchParams.get("no_verify") === "1",
    uri,
  };
}
