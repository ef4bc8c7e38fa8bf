// Property tests for the known_hosts parser and matcher (src/libvirt/known-hosts.ts
// checkHostKey): arbitrary files give a verdict (never an exception, never a hang), and
// lines built for the host give the verdict OpenSSH would.
import { createHmac } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  checkHostKey,
  type HostKeyVerdict,
  knownHostsName,
} from "../../src/libvirt/known-hosts.js";
import { outcome, params, timeoutFor } from "./support.js";

let dir: string;
let n = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "prop-kh-"));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function file(text: string): Promise<string> {
  const path = join(dir, `known_hosts-${n++ % 8}`);
  await writeFile(path, text);
  return path;
}

const hostArb = fc.oneof(
  fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}$/),
  fc.constantFrom("localhost", "127.0.0.1", "::1", "fe80::1%eth0", "host.example"),
  fc.string({ unit: "binary", minLength: 1, maxLength: 20 }).filter((s) => !/[\s,]/.test(s)),
);
const portArb = fc.oneof(fc.constant(22), fc.integer({ min: 1, max: 65535 }));
const keyTypeArb = fc.constantFrom("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa");
const blobArb = fc.base64String({ minLength: 4, maxLength: 48 }).filter((s) => s.length > 0);

function hashed(name: string, salt: Uint8Array): string {
  const s = Buffer.from(salt);
  return `|1|${s.toString("base64")}|${createHmac("sha1", s).update(name).digest("base64")}`;
}

/** A pattern that matches `name`: some characters replaced by ?, some runs by *. */
const patternFor = (name: string) =>
  fc
    .array(fc.constantFrom("keep", "keep", "keep", "?", "*", "**"), {
      minLength: name.length,
      maxLength: name.length,
    })
    .map((ops) =>
      [...name]
        .map((c, i) =>
          ops[i] === "keep"
            ? c
            : ops[i] === "?" && c.length === 1
              ? "?"
              : ops[i] === "*"
                ? "*"
                : `${c}*`,
        )
        .join(""),
    );

/** Pieces of known_hosts lines, valid and not. */
const fieldArb = fc.oneof(
  fc.constantFrom(
    "@revoked",
    "@cert-authority",
    "@other",
    "#",
    "|1|",
    "|1|x|y",
    "|2|a|b",
    "*",
    "?",
    "!",
    "[",
    "]",
    ":",
    ",",
    "!*",
    "[h]:22",
    "ssh-ed25519",
    "ssh-rsa",
    "AAAA",
    "\t",
    " ",
    "\r",
  ),
  fc.string({ unit: "binary", maxLength: 10 }),
  fc.stringMatching(/^[*?a-z.]{1,40}$/),
);
const lineArb = fc.array(
  fc.array(fieldArb, { maxLength: 5 }).map((f) => f.join(" ")),
  { maxLength: 10 },
);

function lineOf(v: HostKeyVerdict): number | undefined {
  return "line" in v ? v.line : undefined;
}

describe("property: checkHostKey (known_hosts)", () => {
  it(
    "arbitrary known_hosts files: a verdict that names an existing line, never an exception",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          lineArb,
          fc.string({ unit: "binary", maxLength: 200 }),
          hostArb,
          portArb,
          keyTypeArb,
          blobArb,
          async (lines, junk, host, port, type, blob) => {
            const texts = [lines.join("\n"), junk];
            const paths = [
              await file(texts[0] as string),
              await file(texts[1] as string),
              join(dir, "missing"),
            ];
            const r = await outcome(() => checkHostKey(paths, host, port, type, blob));
            if (!r.ok) throw new Error(`threw ${r.error.message}`);
            const v = r.value;
            expect(["match", "mismatch", "revoked", "unknown"]).toContain(v.kind);
            if (v.kind !== "unknown") {
              const i = paths.indexOf(v.file);
              expect(i === 0 || i === 1).toBe(true);
              const count = (texts[i] as string).split("\n").length;
              expect(lineOf(v)).toBeGreaterThanOrEqual(1);
              expect(lineOf(v)).toBeLessThanOrEqual(count);
            }
          },
        ),
        params(2),
      );
    },
    timeoutFor(2),
  );

  it(
    "wildcard patterns with many * and ? against long names answer within the time bound",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 40 }),
          fc.stringMatching(/^[a-c*?]{0,6}$/),
          fc.integer({ min: 1, max: 200 }),
          fc.constantFrom("a", "ab", "b"),
          async (stars, tail, len, unit) => {
            const pattern = `${"*".repeat(stars)}${"a*".repeat(stars % 7)}${tail}x`;
            const host = unit.repeat(len).slice(0, 253);
            const path = await file(`${pattern} ssh-ed25519 AAAA\n`);
            const r = await outcome(() => checkHostKey([path], host, 22, "ssh-ed25519", "AAAA"));
            if (!r.ok) throw new Error(`threw ${r.error.message}`);
            // The pattern ends in x and the host has none: it cannot match.
            expect(r.value).toEqual({ kind: "unknown" });
          },
        ),
        params(0.5),
      );
    },
    timeoutFor(0.5),
  );

  it(
    "lines for the host (plain, [host]:port, wildcard, hashed) give match / mismatch / revoked as OpenSSH does",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          hostArb.chain((host) =>
            fc.record({
              host: fc.constant(host),
              port: portArb,
              pattern: patternFor(knownHostsName(host, 22)),
              salt: fc.uint8Array({ minLength: 20, maxLength: 20 }),
              form: fc.constantFrom("plain", "pattern", "hashed", "list"),
              upper: fc.boolean(),
            }),
          ),
          keyTypeArb,
          blobArb,
          blobArb,
          fc.constantFrom("match", "mismatch", "revoked", "negated"),
          lineArb,
          async (h, type, blob, otherBlob, want, noise) => {
            fc.pre(blob !== otherBlob);
            const name = knownHostsName(h.host, h.port);
            const ascii = /^[\x20-\x7e]*$/.test(name);
            let hosts: string;
            if (h.form === "hashed") hosts = hashed(name, h.salt);
            else if (h.form === "pattern" && h.port === 22) hosts = h.pattern;
            else if (h.form === "list") hosts = `other.invalid,${name},*.nowhere.invalid`;
            else hosts = h.upper && ascii ? name.toUpperCase() : name;
            if (want === "negated") hosts = h.form === "hashed" ? hosts : `*,!${name}`;
            const line =
              want === "revoked"
                ? `@revoked ${hosts} ${type} ${blob}`
                : `${hosts} ${type} ${want === "mismatch" ? otherBlob : blob}`;
            // Noise lines that cannot name the host (they have no host field of it) come first.
            const safeNoise = noise.filter(
              (l) => !/[*?|]/.test(l) && !l.toLowerCase().includes(name.toLowerCase()),
            );
            const prefix = safeNoise.map((l) => `${l}\n`).join("");
            const text = `${prefix}${line}\n`;
            const r = await outcome(async () =>
              checkHostKey([await file(text)], h.host, h.port, type, blob),
            );
            if (!r.ok) throw new Error(`threw ${r.error.message}`);
            const at = prefix.split("\n").length;
            if (want === "negated" && h.form !== "hashed")
              expect(r.value).toEqual({ kind: "unknown" });
            else if (want === "negated" || want === "match")
              expect(r.value).toMatchObject({ kind: "match", line: at });
            else if (want === "mismatch")
              expect(r.value).toMatchObject({ kind: "mismatch", line: at, knownType: type });
            else expect(r.value).toMatchObject({ kind: "revoked", line: at });
          },
        ),
        params(2),
      );
    },
    timeoutFor(2),
  );
});
