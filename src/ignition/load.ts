/**
 * Load and validate an Ignition config before anything touches a target.
 *
 * Order of checks, each failing with one UsageError line that names the origin:
 *  1. the bytes are UTF-8; a Butane file is compiled with `butane --strict` (never guessed);
 *  2. the text is JSON (`origin:line:col: what`);
 *  3. `ignition.version` is a spec Fedora CoreOS / Flatcar accept (3.0.0 … 3.5.0);
 *  4. the shapes of the sections we and common tools read (`$.storage.files[2].path ...`);
 *  5. the Ignition spec rules for files, directories, links, units, users, filesystems and
 *     kernel arguments, for every spec version (spec.ts; all problems in one error);
 *  6. `ignition-validate`, when installed and it knows the spec version, for everything else.
 *     When it is skipped (missing, or older than the config's spec), one warning says so.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { describeError, InterruptedError, UsageError } from "../errors.js";
import { hasProgram, run } from "../exec/index.js";
import { getBytes } from "../http/index.js";
import { checkSpec, isObject, typeName } from "./spec.js";

export interface IgnitionConfig {
  /** The exact text the user gave (after butane, if it was a Butane config). */
  text: string;
  json: any;
  /** `ignition.version`, e.g. "3.4.0". */
  version: string;
  /** File path or URL, for messages. */
  origin: string;
  /**
   * Non-fatal findings (ignition-validate warnings, checks skipped because the installed
   * validator is older than the spec version), one line each. Always set by the loader.
   */
  warnings?: string[];
}

export interface LoadOptions {
  signal?: AbortSignal;
  /** Accept `3.N.0-experimental` spec versions (only for development builds of Ignition). */
  allowExperimental?: boolean;
}

/** Stable spec versions that current Fedora CoreOS and Flatcar releases accept. */
export const SUPPORTED_SPEC_VERSIONS = [
  "3.0.0",
  "3.1.0",
  "3.2.0",
  "3.3.0",
  "3.4.0",
  "3.5.0",
] as const;

const BUTANE_URL = "https://coreos.github.io/butane/getting-started/";

export async function loadIgnitionConfig(
  source: { file?: string; url?: string },
  opts: LoadOptions = {},
): Promise<IgnitionConfig> {
  if (source.file !== undefined && source.url !== undefined) {
    throw new UsageError("give an Ignition config as a file or as a URL, not both");
  }
  let origin: string;
  let bytes: Buffer;
  let filesDir: string | undefined;
  if (source.file !== undefined) {
    origin = source.file;
    bytes = await readConfigFile(source.file);
    filesDir = dirname(source.file);
  } else if (source.url !== undefined) {
    origin = source.url;
    bytes = await fetchConfig(source.url, opts.signal);
  } else {
    throw new UsageError("no Ignition config given");
  }

  return await parseConfigText(decodeUtf8(bytes, origin), origin, { ...opts, filesDir });
}

/**
 * A config already in memory, Ignition JSON or Butane (compiled with `butane`, its `local:`
 * references resolved in `filesDir`), checked like a file (the fleet builds its fragments
 * this way, after putting the host's variables in).
 */
export async function parseConfigText(
  text: string,
  origin: string,
  opts: LoadOptions & { filesDir?: string } = {},
): Promise<IgnitionConfig> {
  if (isButane(text)) {
    const compiled = await compileButane(text, origin, opts.filesDir, opts.signal);
    return check(compiled, origin, opts, true);
  }
  return check(text, origin, opts, false);
}

/**
 * Steps 2–5 on text already in memory (used by loadIgnitionConfig; exported for callers that
 * build or receive config text themselves).
 */
export async function parseIgnitionText(
  text: string,
  origin: string,
  opts: LoadOptions = {},
): Promise<IgnitionConfig> {
  return check(text, origin, opts, false);
}

async function check(
  text: string,
  origin: string,
  opts: LoadOptions,
  fromButane: boolean,
): Promise<IgnitionConfig> {
  // Line and column numbers in butane's output would not point into the user's file.
  const where = fromButane ? `${origin} (compiled by butane)` : origin;
  const json = parseJson(text, where);
  const version = checkVersion(json, where, opts.allowExperimental ?? false);
  checkShapes(json, where);
  checkSpec(json, where, version);
  const warnings = await runIgnitionValidate(text, where, version, !fromButane, opts.signal);
  return { text, json, version, origin, warnings };
}

// ---------------------------------------------------------------------------------------------
// Reading

async function readConfigFile(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "ENOENT") throw new UsageError(`${file}: no such file`);
    if (code === "EISDIR") throw new UsageError(`${file} is a directory, not an Ignition config`);
    if (code === "EACCES" || code === "EPERM") throw new UsageError(`${file}: permission denied`);
    throw new UsageError(`${file}: cannot read: ${describeError(err)}`);
  }
}

async function fetchConfig(url: string, signal?: AbortSignal): Promise<Buffer> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`${url} is not a valid URL`);
  }
  if (parsed.protocol === "file:") return readConfigFile(fileURLToPath(parsed));
  if (parsed.protocol === "data:") return dataUrlBytes(url);
  if (!["http:", "https:"].includes(parsed.protocol)) {
    throw new UsageError(
      `${url}: unsupported URL scheme ${parsed.protocol} (use http, https or a local file)`,
    );
  }
  try {
    return await getBytes(url, { signal, maxBytes: 16 << 20 });
  } catch (err) {
    if (signal?.aborted) throw new InterruptedError();
    throw new UsageError(`cannot fetch the Ignition config: ${describeError(err)}`);
  }
}

/** The bytes of a data: URL (RFC 2397), as Ignition reads them. */
function dataUrlBytes(url: string): Buffer {
  const m = /^data:([^,]*),(.*)$/s.exec(url);
  if (!m) throw new UsageError(`${url.slice(0, 40)}…: not a valid data: URL`);
  const meta = m[1] ?? "";
  const data = m[2] ?? "";
  try {
    return /;base64$/i.test(meta)
      ? Buffer.from(decodeURIComponent(data), "base64")
      : Buffer.from(decodeURIComponent(data), "utf8");
  } catch {
    throw new UsageError("the data: URL is not validly percent-encoded");
  }
}

function decodeUtf8(bytes: Buffer, origin: string): string {
  try {
    // ignoreBOM keeps a BOM in the text, so the JSON check reports it instead of hiding it.
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new UsageError(`${origin}: not UTF-8 text; an Ignition config is a JSON file`);
  }
}

// ---------------------------------------------------------------------------------------------
// Butane

/** A Butane config is YAML whose top level has `variant:` and `version:` keys. */
export function isButane(text: string): boolean {
  if (/^\s*[{[]/.test(text)) return false;
  return /^variant:[ \t]*\S/m.test(text) && /^version:[ \t]*\S/m.test(text);
}

async function compileButane(
  text: string,
  origin: string,
  filesDir: string | undefined,
  signal?: AbortSignal,
): Promise<string> {
  if (!(await hasProgram("butane"))) {
    throw new UsageError(
      `${origin} is a Butane config; install butane (${BUTANE_URL}) or pass the compiled .ign`,
    );
  }
  // --files-dir lets `local:` references resolve next to the Butane file, as its docs do.
  const args = ["--strict", ...(filesDir !== undefined ? ["--files-dir", filesDir] : [])];
  const r = await run("butane", args, { input: text, allowFailure: true, signal });
  if (r.exitCode !== 0) {
    const lines = r.stderr
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "");
    const first =
      lines.find((l) => /^(error|warning)/i.test(l)) ??
      lines[lines.length - 1] ??
      `exit code ${r.exitCode}`;
    const more = lines.filter((l) => /^(error|warning) at/i.test(l)).length - 1;
    throw new UsageError(`${origin}: butane: ${first}${more > 0 ? ` (and ${more} more)` : ""}`);
  }
  return r.stdout.endsWith("\n") ? r.stdout : `${r.stdout}\n`;
}

// ---------------------------------------------------------------------------------------------
// JSON syntax

function parseJson(text: string, origin: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const msg = describeError(err);
    const found = findJsonError(text);
    const m = / in JSON at position (\d+)/.exec(msg);
    const pos = found?.pos ?? (m ? Number(m[1]) : 0);
    let what =
      found?.what ??
      msg.replace(/ in JSON at position \d+.*$/, "").replace(/, ".*" is not valid JSON$/, "");
    if (text.charCodeAt(0) === 0xfeff && pos === 0)
      what = "starts with a byte order mark (BOM); save the file as UTF-8 without BOM";
    const { line, col } = lineCol(text, pos);
    const hint = /^\s*(---|[A-Za-z_][\w-]*:)/.test(text)
      ? "this looks like YAML: a Butane config needs top-level 'variant:' and 'version:' keys, then compile it with butane"
      : undefined;
    throw new UsageError(`${origin}:${line}:${col}: invalid JSON: ${what}`, hint);
  }
}

export function lineCol(text: string, pos: number): { line: number; col: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < pos && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, col: Math.min(pos, text.length) - lineStart + 1 };
}

/**
 * A small JSON grammar walker that finds the first syntax error and its position; V8's
 * messages only sometimes carry a position ("Unexpected token 'x', ... is not valid JSON").
 */
function findJsonError(text: string): { pos: number; what: string } | undefined {
  let i = 0;
  class Fail {
    constructor(
      readonly pos: number,
      readonly what: string,
    ) {}
  }
  const fail = (what: string, pos = i): never => {
    throw new Fail(pos, what);
  };
  const describe = (pos: number) =>
    pos >= text.length
      ? "unexpected end of input"
      : `unexpected character ${JSON.stringify(text[pos])}`;
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i] as string)) i++;
  };
  const str = () => {
    i++; // opening quote
    for (;;) {
      if (i >= text.length) fail("unterminated string");
      const c = text.charCodeAt(i);
      if (c === 34) {
        i++;
        return;
      }
      if (c < 0x20) fail("control character in string (escape newlines and tabs as \\n, \\t)");
      if (c === 92) {
        const e = text[i + 1];
        if (e === "u") {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail("bad \\u escape in string");
          i += 6;
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else fail("bad escape in string", i + 1);
      } else i++;
    }
  };
  const num = () => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!m) fail(describe(i));
    i += (m as RegExpExecArray)[0].length;
    if (/^[0-9]/.test(text[i] ?? "")) fail("numbers cannot have leading zeros");
  };
  // Nesting is bounded: a config is never deep, and recursion must not overflow the stack.
  let depth = 0;
  const value = (): void => {
    if (++depth > 500) fail("nested more than 500 levels deep");
    try {
      valueAt();
    } finally {
      depth--;
    }
  };
  const valueAt = (): void => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      ws();
      if (text[i] === "}") {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (text[i] !== '"')
          fail(
            text[i] === "}"
              ? "trailing comma before '}'"
              : `expected a double-quoted property name, ${describe(i)}`,
          );
        str();
        ws();
        if (text[i] !== ":") fail(`expected ':' after property name, ${describe(i)}`);
        i++;
        value();
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return;
        }
        fail(`expected ',' or '}' after property value, ${describe(i)}`);
      }
    }
    if (c === "[") {
      i++;
      ws();
      if (text[i] === "]") {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (text[i] === "]") fail("trailing comma before ']'");
        value();
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return;
        }
        fail(`expected ',' or ']' after array element, ${describe(i)}`);
      }
    }
    if (c === '"') {
      str();
      return;
    }
    if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) {
      num();
      return;
    }
    for (const lit of ["true", "false", "null"]) {
      if (c === lit[0]) {
        for (let k = 0; k < lit.length; k++)
          if (text[i + k] !== lit[k]) fail(describe(i + k), i + k);
        i += lit.length;
        return;
      }
    }
    fail(c === "'" ? "strings must use double quotes" : describe(i));
  };
  try {
    value();
    ws();
    if (i < text.length)
      fail(`unexpected ${JSON.stringify(text[i])} after the end of the JSON value`);
    return undefined;
  } catch (e) {
    if (e instanceof Fail) return { pos: e.pos, what: e.what };
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Version

function checkVersion(json: unknown, origin: string, allowExperimental: boolean): string {
  if (!isObject(json))
    throw new UsageError(
      `${origin}: an Ignition config must be a JSON object, not ${typeName(json)}`,
    );
  const ign = json.ignition;
  if (ign === undefined) {
    throw new UsageError(
      `${origin}: $.ignition.version is missing; this is not an Ignition config`,
      'an Ignition config starts with {"ignition": {"version": "3.4.0"}, ...}',
    );
  }
  if (!isObject(ign))
    throw new UsageError(`${origin}: $.ignition must be an object, not ${typeName(ign)}`);
  const v = ign.version;
  if (v === undefined) throw new UsageError(`${origin}: $.ignition.version is missing`);
  if (typeof v !== "string")
    throw new UsageError(`${origin}: $.ignition.version must be a string, not ${typeName(v)}`);
  if ((SUPPORTED_SPEC_VERSIONS as readonly string[]).includes(v)) return v;
  const range = `${SUPPORTED_SPEC_VERSIONS[0]} to ${SUPPORTED_SPEC_VERSIONS[SUPPORTED_SPEC_VERSIONS.length - 1]}`;
  if (/^[12]\./.test(v)) {
    throw new UsageError(
      `${origin}: Ignition spec ${v} is too old; Fedora CoreOS and Flatcar need spec 3.x (${range})`,
      "write the config as Butane (variant: fcos or flatcar) and compile it with butane, or upgrade the spec-2 config to spec 3",
    );
  }
  if (/^3\.\d+\.0-experimental$/.test(v)) {
    if (allowExperimental) return v;
    throw new UsageError(
      `${origin}: Ignition spec ${v} is experimental; released Fedora CoreOS and Flatcar reject it`,
      `use a stable spec version (${range})`,
    );
  }
  throw new UsageError(
    `${origin}: unsupported Ignition spec version ${JSON.stringify(v)} (supported: ${range})`,
  );
}

// ---------------------------------------------------------------------------------------------
// Shapes. Only the containers and keys that we, Ignition's merge and common tools read; the
// full schema is ignition-validate's job.

type Shape =
  | { t: "string" }
  | { t: "object"; fields?: Record<string, Shape>; required?: string[] }
  | { t: "array"; of?: Shape };

const STR: Shape = { t: "string" };
const OBJ: Shape = { t: "object" };
const arrayOf = (of: Shape): Shape => ({ t: "array", of });
const entries = (key: string, fields: Record<string, Shape> = {}): Shape =>
  arrayOf({ t: "object", fields: { [key]: STR, ...fields }, required: [key] });
const RESOURCE: Shape = { t: "object", fields: { source: STR } };

const CONFIG_SHAPE: Shape = {
  t: "object",
  fields: {
    ignition: {
      t: "object",
      fields: {
        version: STR,
        config: { t: "object", fields: { merge: arrayOf(RESOURCE), replace: RESOURCE } },
        timeouts: OBJ,
        security: OBJ,
        proxy: OBJ,
      },
    },
    storage: {
      t: "object",
      fields: {
        disks: entries("device"),
        raid: entries("name"),
        filesystems: arrayOf(OBJ),
        files: entries("path", { contents: RESOURCE, append: arrayOf(RESOURCE) }),
        directories: entries("path"),
        links: entries("path"),
        luks: entries("name"),
      },
    },
    systemd: { t: "object", fields: { units: entries("name", { dropins: entries("name") }) } },
    passwd: {
      t: "object",
      fields: {
        users: entries("name", { sshAuthorizedKeys: arrayOf(STR), groups: arrayOf(STR) }),
        groups: entries("name"),
      },
    },
    kernelArguments: {
      t: "object",
      fields: { shouldExist: arrayOf(STR), shouldNotExist: arrayOf(STR) },
    },
  },
};

/** Throws UsageError `origin: $.path must be ...` for the first wrong shape. */
export function checkShapes(json: unknown, origin: string): void {
  const problem = shapeProblem(json, CONFIG_SHAPE, "$");
  if (problem) throw new UsageError(`${origin}: ${problem}`);
}

function shapeProblem(v: unknown, s: Shape, path: string): string | undefined {
  if (s.t === "string")
    return typeof v === "string" ? undefined : `${path} must be a string, not ${typeName(v)}`;
  if (s.t === "array") {
    if (!Array.isArray(v)) return `${path} must be an array, not ${typeName(v)}`;
    if (s.of) {
      for (let i = 0; i < v.length; i++) {
        const p = shapeProblem(v[i], s.of, `${path}[${i}]`);
        if (p) return p;
      }
    }
    return undefined;
  }
  if (!isObject(v)) return `${path} must be an object, not ${typeName(v)}`;
  for (const key of s.required ?? []) {
    if (v[key] === undefined || v[key] === null) return `${path}.${key} is required`;
  }
  for (const [key, sub] of Object.entries(s.fields ?? {})) {
    // null is how Ignition configs say "unset"; it is valid for every optional field.
    if (v[key] === undefined || v[key] === null) continue;
    const p = shapeProblem(v[key], sub, `${path}.${key}`);
    if (p) return p;
  }
  return undefined;
}

export { isObject };

// ---------------------------------------------------------------------------------------------
// ignition-validate

/**
 * Run ignition-validate (if installed) on the text. Errors become one UsageError line; its
 * warnings are returned. A missing validator, or one older than the config's spec version
 * (Debian bookworm's 2.14 knows 3.0.0–3.3.0), cannot judge it: one warning line says that the
 * full check was skipped and that our own spec checks (spec.ts, run before this) passed.
 */
async function runIgnitionValidate(
  text: string,
  origin: string,
  version: string,
  withLineCol: boolean,
  signal?: AbortSignal,
): Promise<string[]> {
  // The verdict is a function of these inputs (the validator does not change while we run):
  // a text judged once is not judged again, and callers asking at the same time share one
  // run. `provision serve` builds the same fragments for many machines at once.
  const key = createHash("sha256")
    .update(`${origin}\0${version}\0${withLineCol}\0`)
    .update(text)
    .digest("hex");
  let verdict = validated.get(key);
  if (!verdict) {
    verdict = validateOnce(text, origin, version, withLineCol, signal);
    validated.set(key, verdict);
    if (validated.size > VALIDATED_MAX) validated.delete(validated.keys().next().value as string);
    // A run stopped by the caller's signal is no verdict: the next caller runs it again.
    verdict.catch(() => {
      if (signal?.aborted) validated.delete(key);
    });
  }
  return [...(await verdict)];
}

/** Verdicts by the sha256 of (origin, version, line/col, text), oldest dropped first. */
const validated = new Map<string, Promise<string[]>>();
const VALIDATED_MAX = 1024;

async function validateOnce(
  text: string,
  origin: string,
  version: string,
  withLineCol: boolean,
  signal?: AbortSignal,
): Promise<string[]> {
  if (!(await hasProgram("ignition-validate")))
    return [`${origin}: ignition-validate is not installed, so ${SKIPPED}`];
  const r = await run("ignition-validate", ["-"], { input: text, allowFailure: true, signal });
  const lines = `${r.stdout}\n${r.stderr}`
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  const errors = lines
    .filter((l) => /^error/i.test(l))
    .map((l) => formatValidatorLine(l, origin, withLineCol));
  const warnings = lines
    .filter((l) => /^warning/i.test(l))
    .map((l) => formatValidatorLine(l, origin, withLineCol));
  if (r.exitCode === 0) return warnings;
  if (errors.length === 0 && lines.some((l) => /unsupported config version/.test(l))) {
    const vr = await run("ignition-validate", ["-version"], { allowFailure: true, signal });
    const which = vr.stdout.trim();
    const validator = which ? `ignition-validate (${which})` : "the installed ignition-validate";
    return [...warnings, `${origin}: ${validator} does not know spec ${version}, so ${SKIPPED}`];
  }
  const first =
    errors[0] ??
    `${origin}: ignition-validate: ${lines[lines.length - 1] ?? `exit code ${r.exitCode}`}`;
  const rest = errors.slice(1);
  throw new UsageError(
    rest.length > 0
      ? `${first} (and ${rest.length} more error${rest.length > 1 ? "s" : ""})`
      : first,
    rest.length > 0 ? rest.join("; ") : undefined,
  );
}

const SKIPPED =
  "Ignition's full check was skipped; provision's own spec checks (files, directories, links, units, users, filesystems, kernel arguments) passed";

/** `error at $.storage.files.2.path, line 1 col 89: path not absolute` → `origin:1:89: $.storage.files[2].path: path not absolute`. */
function formatValidatorLine(line: string, origin: string, withLineCol: boolean): string {
  const m = /^(?:error|warning) at (\S+?),(?: line (\d+) col (\d+))?: (.*)$/i.exec(line);
  if (!m) return `${origin}: ${line}`;
  const path = (m[1] as string).replace(/\.(\d+)(?=\.|$)/g, "[$1]");
  const where = withLineCol && m[2] !== undefined ? `${origin}:${m[2]}:${m[3]}` : origin;
  return `${where}: ${path}: ${m[4]}`;
}
