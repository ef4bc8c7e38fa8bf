// Property tests for the Ignition loader's text checks (src/ignition/load.ts
// parseIgnitionText: JSON syntax with line:col, spec version, shapes, ignition-validate).
// Fetching is not tested here. ignition-validate is switched off (hasProgram says it is not
// installed) except in one property with few cases, so the run stays fast.
import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import { UsageError } from "../../src/errors.js";
import { parseIgnitionText, SUPPORTED_SPEC_VERSIONS } from "../../src/ignition/load.js";
import { outcome, params, timeoutFor } from "./support.js";

const ctl = vi.hoisted(() => ({ validator: false, validatorRuns: 0 }));
vi.mock("../../src/exec/index.js", async (importOriginal) => {
  const orig = await importOriginal<typeof import("../../src/exec/index.js")>();
  return {
    ...orig,
    hasProgram: async (p: string) =>
      p === "ignition-validate" && !ctl.validator ? false : orig.hasProgram(p),
    run: (async (cmd: string, ...rest: unknown[]) => {
      if (cmd === "ignition-validate") ctl.validatorRuns++;
      return (orig.run as (...a: unknown[]) => unknown)(cmd, ...rest);
    }) as typeof orig.run,
  };
});

const ORIGIN = "config.ign";

const anyish = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 12 }) },
  fc.constantFrom("/etc/hostname", "data:,x", "https://h/x.ign", "", "relative/path"),
  fc.jsonValue({ maxDepth: 2 }),
);
/** An object with the given fields, each present or not, plus arbitrary extra keys. */
function objectWith(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<unknown> {
  return fc.oneof(
    { weight: 6, arbitrary: fc.record(fields, { requiredKeys: [] }) },
    fc.jsonValue({ maxDepth: 2 }),
  );
}
const arrayOf = (a: fc.Arbitrary<unknown>) =>
  fc.oneof({ weight: 6, arbitrary: fc.array(a, { maxLength: 3 }) }, fc.jsonValue({ maxDepth: 1 }));
const resource = objectWith({ source: anyish, compression: anyish, verification: anyish });
const named = (key: string, more: Record<string, fc.Arbitrary<unknown>> = {}) =>
  arrayOf(objectWith({ [key]: anyish, ...more }));

const versionArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...SUPPORTED_SPEC_VERSIONS) },
  fc.constantFrom(
    "3.6.0-experimental",
    "3.5.0-experimental",
    "2.2.0",
    "1.0.0",
    "3.4",
    "",
    "3.4.0 ",
  ),
  anyish,
);

const ignitionFields = {
  config: objectWith({ merge: arrayOf(resource), replace: resource }),
  timeouts: objectWith({ httpTotal: anyish }),
  security: objectWith({ tls: anyish }),
  proxy: objectWith({ httpProxy: anyish }),
};

/**
 * Objects shaped like Ignition configs: the sections and keys load.ts and Ignition read.
 * `withVersion`: always an `ignition` object with a supported version, so that most cases
 * get past the version check to the shapes and ignition-validate.
 */
const configArbOf = (withVersion: boolean) =>
  fc.record(
    {
      ignition: withVersion
        ? fc.record(
            { version: fc.constantFrom(...SUPPORTED_SPEC_VERSIONS), ...ignitionFields },
            { requiredKeys: ["version"] },
          )
        : objectWith({ version: versionArb, ...ignitionFields }),
      storage: objectWith({
        disks: named("device", { partitions: anyish }),
        raid: named("name"),
        filesystems: arrayOf(objectWith({ device: anyish, format: anyish, path: anyish })),
        files: named("path", { contents: resource, append: arrayOf(resource), mode: anyish }),
        directories: named("path"),
        links: named("path", { target: anyish }),
        luks: named("name"),
      }),
      systemd: objectWith({
        units: named("name", { enabled: anyish, contents: anyish, dropins: named("name") }),
      }),
      passwd: objectWith({
        users: named("name", { sshAuthorizedKeys: arrayOf(anyish), groups: arrayOf(anyish) }),
        groups: named("name"),
      }),
      kernelArguments: objectWith({
        shouldExist: arrayOf(anyish),
        shouldNotExist: arrayOf(anyish),
      }),
    },
    { requiredKeys: withVersion ? ["ignition"] : [] },
  );
/**
 * Configs that get past the shape checks (right containers, mostly right types) but may
 * still be wrong for Ignition (relative paths, bad unit names, duplicates, bad URLs): what
 * ignition-validate judges.
 */
const opt = { requiredKeys: [] as never[] };
const pathArb = fc.oneof(
  { weight: 5, arbitrary: fc.stringMatching(/^\/[a-z]{1,6}(\/[a-z]{1,6}){0,2}$/) },
  fc.constantFrom("/etc/hostname", "relative/x", "/", "/etc/../x", "/a//b"),
);
const plausibleConfigArb = fc.record(
  {
    ignition: fc.record({ version: fc.constantFrom(...SUPPORTED_SPEC_VERSIONS) }),
    storage: fc.record(
      {
        files: fc.array(
          fc.record(
            {
              path: pathArb,
              contents: fc.record(
                {
                  source: fc.constantFrom(
                    "data:,x",
                    "https://h/x",
                    "not a url",
                    "",
                    "data:;base64,eA==",
                  ),
                },
                opt,
              ),
              mode: fc.oneof(fc.integer({ min: 0, max: 0o7777 }), fc.constantFrom(-1, 0o10000)),
              overwrite: fc.boolean(),
            },
            { requiredKeys: ["path"] },
          ),
          { maxLength: 3 },
        ),
        directories: fc.array(
          fc.record({ path: pathArb, mode: fc.nat(0o7777) }, { requiredKeys: ["path"] }),
          { maxLength: 2 },
        ),
        links: fc.array(
          fc.record(
            { path: pathArb, target: pathArb, hard: fc.boolean() },
            { requiredKeys: ["path"] },
          ),
          { maxLength: 2 },
        ),
      },
      opt,
    ),
    systemd: fc.record(
      {
        units: fc.array(
          fc.record(
            {
              name: fc.constantFrom("a.service", "b.timer", "bad name", "x", "a.service"),
              enabled: fc.boolean(),
              mask: fc.boolean(),
              contents: fc.constantFrom("[Unit]\nDescription=x\n", "garbage", ""),
            },
            { requiredKeys: ["name"] },
          ),
          { maxLength: 3 },
        ),
      },
      opt,
    ),
    passwd: fc.record(
      {
        users: fc.array(
          fc.record(
            {
              name: fc.constantFrom("core", "root", "", "x y"),
              sshAuthorizedKeys: fc.array(fc.constantFrom("ssh-ed25519 AAAA", "junk", ""), {
                maxLength: 2,
              }),
              groups: fc.array(fc.constantFrom("wheel", "sudo", ""), { maxLength: 2 }),
            },
            { requiredKeys: ["name"] },
          ),
          { maxLength: 2 },
        ),
      },
      opt,
    ),
  },
  { requiredKeys: ["ignition"] },
);

const configArb = fc.oneof(configArbOf(false), configArbOf(true), plausibleConfigArb);

const validConfigArb = fc.record({
  version: fc.constantFrom(...SUPPORTED_SPEC_VERSIONS),
  // Distinct paths and unit names, all files in one directory: Ignition rejects duplicates
  // and a file that is another one's parent.
  files: fc.uniqueArray(
    fc.record({
      path: fc.stringMatching(/^\/etc\/[a-z]{1,8}$/),
      contents: fc.record({ source: fc.constantFrom("data:,hello", "data:,") }),
    }),
    { maxLength: 3, selector: (f) => f.path },
  ),
  units: fc.uniqueArray(fc.record({ name: fc.stringMatching(/^[a-z]{1,8}\.service$/) }), {
    maxLength: 2,
    selector: (u) => u.name,
  }),
  indent: fc.constantFrom(0, 2),
});

type ValidConfig = typeof validConfigArb extends fc.Arbitrary<infer T> ? T : never;

/** For an "origin:line:col: invalid JSON" error, line and col point into the text. */
function checkPosition(message: string, text: string): void {
  const m = /^config\.ign:(\d+):(\d+): invalid JSON: /.exec(message);
  if (!m) return;
  const lines = text.split("\n");
  const line = Number(m[1]);
  const col = Number(m[2]);
  expect(line).toBeGreaterThanOrEqual(1);
  expect(line).toBeLessThanOrEqual(lines.length);
  expect(col).toBeGreaterThanOrEqual(1);
  expect(col).toBeLessThanOrEqual((lines[line - 1] as string).length + 1);
}

async function check(text: string): Promise<void> {
  const r = await outcome(() => parseIgnitionText(text, ORIGIN), UsageError);
  if (r.ok) {
    expect(r.value.text).toBe(text);
    expect(r.value.origin).toBe(ORIGIN);
    expect(SUPPORTED_SPEC_VERSIONS as readonly string[]).toContain(r.value.version);
    expect(r.value.json).toEqual(JSON.parse(text));
    expect(Array.isArray(r.value.warnings)).toBe(true);
  } else {
    expect(r.error.message.startsWith(`${ORIGIN}`)).toBe(true);
    checkPosition(r.error.message, text);
  }
}

/** Character-level edits of a text: delete a range, insert a token, replace one character. */
const editArb = fc.oneof(
  fc.record({
    op: fc.constant("delete" as const),
    at: fc.nat(),
    len: fc.integer({ min: 1, max: 8 }),
  }),
  fc.record({
    op: fc.constant("insert" as const),
    at: fc.nat(),
    token: fc.oneof(
      fc.constantFrom(
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        '"',
        "\\",
        "'",
        "\n",
        "\ufeff",
        "tru",
        "null",
        "-",
        "0",
        "01",
        "1e",
        "\u0000",
        "\t",
        "/*",
        "//",
      ),
      fc.string({ unit: "binary", maxLength: 3 }),
    ),
  }),
  fc.record({
    op: fc.constant("replace" as const),
    at: fc.nat(),
    ch: fc.string({ unit: "binary", minLength: 1, maxLength: 1 }),
  }),
);

function applyEdits(
  text: string,
  edits: readonly { op: string; at: number; len?: number; token?: string; ch?: string }[],
): string {
  let t = text;
  for (const e of edits) {
    const at = e.at % (t.length + 1);
    if (e.op === "delete") t = t.slice(0, at) + t.slice(at + (e.len ?? 1));
    else if (e.op === "insert") t = t.slice(0, at) + (e.token ?? "") + t.slice(at);
    else t = t.slice(0, at) + (e.ch ?? "") + t.slice(at + 1);
  }
  return t;
}

function validText(c: ValidConfig): string {
  const doc = {
    ignition: { version: c.version },
    storage: { files: c.files },
    systemd: { units: c.units },
  };
  return `${JSON.stringify(doc, null, c.indent)}\n`;
}

describe("property: parseIgnitionText", () => {
  it(
    "arbitrary strings and JSON-token soup: a config or a UsageError with line:col inside the text",
    async () => {
      const token = fc.oneof(
        fc.constantFrom(
          "{",
          "}",
          "[",
          "]",
          ",",
          ":",
          '"',
          '"a"',
          "\\",
          "'",
          " ",
          "\n",
          "\r\n",
          "\ufeff",
          "true",
          "fals",
          "null",
          "-",
          "0",
          "12",
          "1.5e3",
          "01",
          '"ignition"',
          '"version"',
          '"3.4.0"',
          "variant: fcos\n",
          "---\n",
        ),
        fc.string({ unit: "binary", maxLength: 3 }),
      );
      const textArb = fc.oneof(
        fc.string({ unit: "binary" }),
        fc.array(token, { maxLength: 30 }).map((t) => t.join("")),
      );
      await fc.assert(fc.asyncProperty(textArb, check), params(3));
    },
    timeoutFor(3),
  );

  it(
    "valid configs round-trip; with character edits, a config or a UsageError pointing into the text",
    async () => {
      await fc.assert(
        fc.asyncProperty(validConfigArb, fc.array(editArb, { maxLength: 4 }), async (c, edits) => {
          const text = validText(c);
          if (edits.length === 0) {
            const r = await outcome(() => parseIgnitionText(text, ORIGIN), UsageError);
            if (!r.ok) throw new Error(`valid config refused: ${r.error.message}`);
            expect(r.value.version).toBe(c.version);
          }
          await check(applyEdits(text, edits));
        }),
        params(3),
      );
    },
    timeoutFor(3),
  );

  it(
    "arbitrary JSON objects shaped like configs: a config or a UsageError",
    async () => {
      await fc.assert(
        fc.asyncProperty(configArb, fc.constantFrom(0, 2), async (cfg, indent) => {
          await check(JSON.stringify(cfg, null, indent));
        }),
        params(3),
      );
    },
    timeoutFor(3),
  );

  it(
    "with ignition-validate (when installed): plausible configs give a config or a UsageError",
    async () => {
      const actual =
        await vi.importActual<typeof import("../../src/exec/index.js")>("../../src/exec/index.js");
      const installed = await actual.hasProgram("ignition-validate");
      ctl.validator = installed;
      ctl.validatorRuns = 0;
      try {
        await fc.assert(
          fc.asyncProperty(plausibleConfigArb, async (cfg) => check(JSON.stringify(cfg))),
          params(0.2),
        );
      } finally {
        ctl.validator = false;
      }
      // Not vacuous: some cases got past the shape checks to the validator.
      if (installed) expect(ctl.validatorRuns).toBeGreaterThan(0);
    },
    timeoutFor(0.2, 500),
  );

  // Found by this property: invalid JSON nested a few thousand levels deep made
  // findJsonError (the recursive walker that locates the syntax error) overflow the stack,
  // and a RangeError escaped instead of a UsageError. The walker now stops at 500 levels.
  it(
    "deeply nested invalid JSON: a UsageError, not a stack overflow",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom("[", '{"a":', '[[{"b":'),
          fc.integer({ min: 20_000, max: 60_000 }),
          fc.constantFrom("", "x", "]", "}"),
          async (open, depth, tail) => check(open.repeat(depth) + tail),
        ),
        { ...params(0.05), numRuns: Math.min(20, params(0.05).numRuns ?? 5) },
      );
    },
    timeoutFor(0.05),
  );
});
