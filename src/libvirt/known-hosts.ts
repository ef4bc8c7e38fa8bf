/**
 * OpenSSH known_hosts, read the way `ssh` reads it: plain and hashed (`|1|salt|hmac`)
 * host patterns, `[host]:port` for a port other than 22, `*`/`?` wildcards, negation with
 * `!`, `@revoked` markers. `@cert-authority` lines are ignored (ssh2 gives us the raw
 * host key, not a certificate). The verdict says which line decided, so an error can say
 * what to remove.
 */
import { createHmac } from "node:crypto";
import { readFile } from "node:fs/promises";

export type HostKeyVerdict =
  | { kind: "match"; file: string; line: number }
  | { kind: "mismatch"; file: string; line: number; knownType: string }
  | { kind: "revoked"; file: string; line: number }
  | { kind: "unknown" };

/** The name known_hosts uses for a host and port: `host`, or `[host]:port` when not 22. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/**
 * `*` and `?` wildcards, ignoring case. Not a RegExp: `.*.*.*...x` backtracks exponentially
 * (a known_hosts line `**********x` blocked the process for over a minute on a 40-character
 * host name).
 * This is the linear two-pointer matcher: on a mismatch, retry after the last `*` only.
 */
function globMatch(pattern: string, name: string): boolean {
  const same = (a: string, b: string) => a === b || a.toLowerCase() === b.toLowerCase();
  let p = 0;
  let s = 0;
  let starP = -1;
  let starS = 0;
  while (s < name.length) {
    const c = pattern[p];
    if (c === "*") {
      starP = p++;
      starS = s;
    } else if (c !== undefined && (c === "?" || same(c, name[s] as string))) {
      p++;
      s++;
    } else if (starP >= 0) {
      p = starP + 1;
      s = ++starS;
    } else return false;
  }
  while (pattern[p] === "*") p++;
  return p === pattern.length;
}

function hashedMatch(entry: string, name: string): boolean {
  const [, magic, salt64, hash64] = entry.split("|");
  if (magic !== "1" || !salt64 || !hash64) return false;
  const hmac = createHmac("sha1", Buffer.from(salt64, "base64")).update(name).digest("base64");
  return hmac === hash64;
}

/** Does a comma-separated host pattern list (or one hashed entry) name this host? */
function hostsMatch(field: string, name: string): boolean {
  if (field.startsWith("|")) return hashedMatch(field, name);
  let matched = false;
  for (const raw of field.split(",")) {
    const negated = raw.startsWith("!");
    const pattern = negated ? raw.slice(1) : raw;
    if (globMatch(pattern, name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

/**
 * Check `keyType` + `keyBlob` (base64 of the SSH wire-format public key) for `host:port`
 * against the files, in order. A revoked key wins over everything; then a matching line
 * of the same key; else a line for the host with another key of the same type (a changed
 * host key: refuse); else unknown.
 */
export async function checkHostKey(
  files: readonly string[],
  host: string,
  port: number,
  keyType: string,
  keyBlob: string,
): Promise<HostKeyVerdict> {
  const name = knownHostsName(host, port);
  let mismatch: HostKeyVerdict | undefined;
  let match: HostKeyVerdict | undefined;
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch {
      continue;
    }
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = (lines[i] ?? "").trim();
      if (line === "" || line.startsWith("#")) continue;
      const fields = line.split(/\s+/);
      let marker: string | undefined;
      if (fields[0]?.startsWith("@")) marker = fields.shift();
      const [hosts, type, blob] = fields;
      if (!hosts || !type || !blob) continue;
      if (marker === "@cert-authority") continue;
      if (!hostsMatch(hosts, name)) continue;
      if (marker === "@revoked") {
        if (blob === keyBlob) return { kind: "revoked", file, line: i + 1 };
        continue;
      }
      if (type === keyType && blob === keyBlob) match ??= { kind: "match", file, line: i + 1 };
      else if (type === keyType)
        mismatch ??= { kind: "mismatch", file, line: i + 1, knownType: type };
    }
  }
  return match ?? mismatch ?? { kind: "unknown" };
}
