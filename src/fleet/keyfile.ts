/**
 * NetworkManager keyfiles (nm-settings-keyfile(5)): GKeyFile-style INI, one `[setting]` group
 * per setting, `key=value` lines; lists (dns) are `a;b;`. Values are written the way
 * GKeyFile's string reader takes them back: `\\` for a backslash and `\s` for a space at
 * either end (GKeyFile drops the spaces around `=`). Groups are separated by an empty line,
 * as NetworkManager writes them.
 */

export type KeyfileGroup = [name: string, entries: [key: string, value: string][]];

export function renderKeyfile(groups: KeyfileGroup[]): string {
  return groups
    .map(([name, entries]) => `[${name}]\n${entries.map(([k, v]) => `${k}=${v}\n`).join("")}`)
    .join("\n");
}

/** A string value as g_key_file_get_string reads it back unchanged (printable text only). */
export function keyfileString(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/^ /, "\\s").replace(/ $/, "\\s");
}

/** A list value: every item followed by `;` (`dns=192.0.2.1;192.0.2.2;`). */
export function keyfileList(items: string[]): string {
  return items.map((i) => `${i};`).join("");
}

/**
 * An SSID (a byte string): as plain text when NetworkManager's reader takes it back exactly
 * (printable ASCII, no `;` or `\`, no space at either end), else as the byte list form
 * `72;111;109;101;` (decimal bytes, each followed by `;`), which it always reads as bytes.
 */
export function keyfileSsid(ssid: string): string {
  if (/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(ssid) && !/[;\\]/.test(ssid)) return ssid;
  return keyfileList([...Buffer.from(ssid, "utf8")].map(String));
}
