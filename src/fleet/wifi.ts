/**
 * Wi-Fi from a host's `wifi` entry (Fedora CoreOS only).
 *
 * The connection: a NetworkManager keyfile, mode 0600, in the form of the FCOS docs' "Enabling
 * Wi-Fi" example (fedora-coreos-docs sysconfig-enabling-wifi.adoc) without its device pinning
 * (mac-address, cloned-mac-address), so it takes any Wi-Fi device:
 *
 *   [connection]     id=wifi  type=wifi
 *   [wifi]           mode=infrastructure  ssid=SSID
 *   [wifi-security]  auth-alg=open  key-mgmt=wpa-psk  psk=PASSPHRASE
 *   [ipv4] / [ipv6]  method=auto
 *
 * The passphrase is read through `secretValue` and goes into this file's data URL only.
 *
 * The regulatory country: the FCOS docs say nothing about it. It is the `ieee80211_regdom`
 * parameter of the cfg80211 module (net/wireless/reg.c), set here with a modprobe.d file,
 * `options cfg80211 ieee80211_regdom=DE`, as Raspberry Pi's rpi-image-gen does
 * (/etc/modprobe.d/cfg80211_regdomain.conf). cfg80211 is a module on Fedora, loaded with the
 * first Wi-Fi driver in the real root, so no kernel argument (and no extra first-boot reboot)
 * is needed.
 *
 * Not done here: FCOS does not ship NetworkManager-wifi nor Wi-Fi firmware; the docs add them
 * with rpm-ostree (over a wired network on first boot). Without them the keyfile is inert.
 *
 * Flatcar documents no Wi-Fi setup (networkd needs a wpa_supplicant it does not configure):
 * a wifi entry on a Flatcar host is an error.
 */
import { UsageError } from "../errors.js";
import { ignitionFile, where } from "./ignition-file.js";
import { keyfileSsid, keyfileString, renderKeyfile } from "./keyfile.js";
import { NM_CONNECTIONS_DIR } from "./network.js";
import type { Host, WifiSpec } from "./types.js";

/** The connection id and file name of the Wi-Fi keyfile. */
export const WIFI_CONNECTION = "wifi";
export const WIFI_KEYFILE = `${NM_CONNECTIONS_DIR}/${WIFI_CONNECTION}.nmconnection`;
export const REGDOM_CONF = "/etc/modprobe.d/cfg80211_regdomain.conf";

/** A WPA passphrase (8 to 63 printable ASCII characters) or a raw PSK (64 hex digits). */
const PSK = /^(?:[\x20-\x7e]{8,63}|[0-9A-Fa-f]{64})$/;

export function wifiKeyfile(wifi: WifiSpec, psk: string): string {
  return renderKeyfile([
    [
      "connection",
      [
        ["id", WIFI_CONNECTION],
        ["type", "wifi"],
      ],
    ],
    [
      "wifi",
      [
        ["mode", "infrastructure"],
        ["ssid", keyfileSsid(wifi.ssid)],
      ],
    ],
    [
      "wifi-security",
      [
        ["auth-alg", "open"],
        ["key-mgmt", "wpa-psk"],
        ["psk", keyfileString(psk)],
      ],
    ],
    ["ipv4", [["method", "auto"]]],
    ["ipv6", [["method", "auto"]]],
  ]);
}

export function regdomConf(country: string): string {
  return `# Wi-Fi regulatory domain (ISO 3166-1 alpha-2), from the provision inventory
options cfg80211 ieee80211_regdom=${country}
`;
}

/** The Wi-Fi fragment, or undefined when the host has no wifi entry. */
export async function wifiFragment(
  host: Host,
  secretValue: (name: string) => Promise<string>,
): Promise<object | undefined> {
  const wifi = host.wifi;
  if (!wifi) return undefined;
  const at = where(wifi.at);
  if (host.os !== "fcos")
    throw new UsageError(
      `${at}: wifi is supported for fcos only`,
      "Flatcar documents no Wi-Fi setup; configure it with a fragment of your own",
    );
  const ssidBytes = Buffer.byteLength(wifi.ssid, "utf8");
  if (ssidBytes < 1 || ssidBytes > 32)
    throw new UsageError(`${at}: wifi ssid must be 1 to 32 bytes long (it is ${ssidBytes})`);
  const country = wifi.country.toUpperCase();
  if (!/^[A-Z]{2}$/.test(country))
    throw new UsageError(
      `${at}: wifi country ${JSON.stringify(wifi.country)} is not a two-letter ISO 3166 country code (like DE or US)`,
    );
  if (host.network.some((n) => n.interface === WIFI_CONNECTION))
    throw new UsageError(
      `${at}: the Wi-Fi connection is named ${WIFI_CONNECTION}, and so is a network entry's interface`,
    );
  if (!Object.hasOwn(host.secrets, wifi.pskSecret))
    throw new UsageError(
      `${at}: wifi psk secret ${wifi.pskSecret} is not in the secrets of host ${host.name}`,
    );
  const psk = await secretValue(wifi.pskSecret);
  // The message names the secret, never its value.
  if (!PSK.test(psk))
    throw new UsageError(
      `${at}: secret ${wifi.pskSecret} is not a WPA passphrase (8 to 63 printable ASCII characters) or a 64-hex-digit PSK`,
    );
  return {
    storage: {
      files: [
        ignitionFile(WIFI_KEYFILE, 0o600, wifiKeyfile(wifi, psk)),
        ignitionFile(REGDOM_CONF, 0o644, regdomConf(country)),
      ],
    },
  };
}
