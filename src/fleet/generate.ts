/**
 * The Ignition fragments provision generates for a host from its inventory fields, so most
 * hosts need no hand-written fragment (like Raspberry Pi Imager's "OS customisation"). One
 * fragment per concern, in this order, each present only when the host has something for it:
 *
 *   1. hostname   /etc/hostname = NAME\n (0644)
 *   2. ssh_keys   passwd.users core: sshAuthorizedKeys = host.sshKeys
 *   3. timezone   /etc/localtime -> ../usr/share/zoneinfo/ZONE (FCOS docs "Configuring time
 *                 zone": a relative symlink, as localtime(5) allows)
 *   4. users      passwd.users: name, groups, sshAuthorizedKeys, passwordHash
 *   5. network    NetworkManager keyfiles (FCOS) or networkd .network files (Flatcar): ./network.ts
 *   6. wifi       NetworkManager Wi-Fi keyfile and the regulatory country (FCOS): ./wifi.ts
 *   7. board      rpi2/rpi3: the hybrid-MBR repair unit (src/mbr/repair-unit.ts)
 *   8. boot pxe   the secrets volume mount and its SSH keys unit (src/ipxe/fragment.ts)
 *
 * Each is a plain Ignition 3.x config object using only what spec 3.0.0 to 3.3.0 have. Ours
 * carry no `ignition.version` (mergeFragments gives them the user's); 7 and 8 come from their
 * modules as they are (with their own 3.3.0). Every file is written whole (overwrite: true)
 * from a base64 data URL. A secret value (the Wi-Fi passphrase) goes only into its file's
 * data URL and is never part of a message.
 *
 * Errors are UsageErrors that name the inventory place of the field: `file:line:col: …`.
 */
import { UsageError } from "../errors.js";
import { secretsFragment } from "../ipxe/fragment.js";
import { repairUnitFragment } from "../mbr/repair-unit.js";
import { ignitionFile, where } from "./ignition-file.js";
import { networkFragment } from "./network.js";
import type { Host, UserSpec } from "./types.js";
import { wifiFragment } from "./wifi.js";

/** hostname(5): up to 64 characters, letters, digits, "-" and ".", newline-terminated. */
const HOSTNAME = /^(?=.{1,64}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$/;
/** A tz database name: "UTC", "Europe/Berlin", "America/Port-au-Prince", "Etc/GMT+1". */
const TIMEZONE = /^[A-Za-z0-9_+-]+(?:\/[A-Za-z0-9_+-]+)*$/;
/** A user name useradd takes (at most 32 characters). */
const USER_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;
/** A crypt(3) hash: `$id$…` (yescrypt, sha512crypt, …), no spaces or colons. */
const CRYPT_HASH = /^\$[A-Za-z0-9]+\$[^\s:]+$/;

export const HOSTNAME_PATH = "/etc/hostname";
export const LOCALTIME_PATH = "/etc/localtime";

export function hostnameFragment(host: Host): object {
  if (!HOSTNAME.test(host.name))
    throw new UsageError(
      `${where(host.at)}: host name ${JSON.stringify(host.name)} is not a hostname (up to 64 letters, digits, "-" and ".")`,
    );
  return { storage: { files: [ignitionFile(HOSTNAME_PATH, 0o644, `${host.name}\n`)] } };
}

export function sshKeysFragment(host: Host): object | undefined {
  if (host.sshKeys.length === 0) return undefined;
  return { passwd: { users: [{ name: "core", sshAuthorizedKeys: [...new Set(host.sshKeys)] }] } };
}

export function timezoneFragment(host: Host): object | undefined {
  const tz = host.timezone;
  if (tz === undefined) return undefined;
  if (!TIMEZONE.test(tz))
    throw new UsageError(
      `${where(host.fieldAt.timezone ?? host.at)}: timezone ${JSON.stringify(tz)} is not a tz database name (like Europe/Berlin or UTC)`,
      "timedatectl list-timezones shows them",
    );
  return {
    storage: {
      links: [
        {
          path: LOCALTIME_PATH,
          target: `../usr/share/zoneinfo/${tz}`,
          hard: false,
          overwrite: true,
        },
      ],
    },
  };
}

function userEntry(u: UserSpec): Record<string, unknown> {
  const at = where(u.at);
  if (!USER_NAME.test(u.name))
    throw new UsageError(
      `${at}: user name ${JSON.stringify(u.name)} is not a user name (up to 32 letters, digits, "_", "." or "-", not starting with a digit)`,
    );
  if (u.passwordHash !== undefined && !CRYPT_HASH.test(u.passwordHash))
    // Not shown: it may be a password put there by mistake.
    throw new UsageError(
      `${at}: the passwordHash of user ${u.name} is not a crypt(3) hash ($y$…, $6$…)`,
      "make one with `mkpasswd -m yescrypt`; never put a plain password in the inventory",
    );
  const entry: Record<string, unknown> = { name: u.name };
  if (u.groups.length) entry.groups = [...new Set(u.groups)];
  if (u.sshKeys.length) entry.sshAuthorizedKeys = [...new Set(u.sshKeys)];
  if (u.passwordHash !== undefined) entry.passwordHash = u.passwordHash;
  return entry;
}

export function usersFragment(host: Host): object | undefined {
  if (host.users.length === 0) return undefined;
  const seen = new Map<string, UserSpec>();
  for (const u of host.users) {
    const first = seen.get(u.name);
    if (first)
      throw new UsageError(
        `${where(u.at)}: user ${u.name} is listed twice; the other entry is at ${where(first.at)}`,
      );
    seen.set(u.name, u);
  }
  return { passwd: { users: host.users.map(userEntry) } };
}

export async function generatedFragments(
  host: Host,
  secretValue: (name: string) => Promise<string>,
): Promise<object[]> {
  const parts: (object | undefined)[] = [
    hostnameFragment(host),
    sshKeysFragment(host),
    timezoneFragment(host),
    usersFragment(host),
    networkFragment(host),
    await wifiFragment(host, secretValue),
    host.board === "rpi2" || host.board === "rpi3" ? repairUnitFragment() : undefined,
    host.boot === "pxe" ? secretsFragment() : undefined,
  ];
  return parts.filter((p): p is object => p !== undefined);
}
