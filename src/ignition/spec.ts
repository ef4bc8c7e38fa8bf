/**
 * The Ignition spec rules provision checks itself, for every spec version 3.0.0 … 3.5.0, so a
 * config is judged even when `ignition-validate` is missing or older than its spec version
 * (Debian bookworm's 2.14 knows 3.0.0 … 3.3.0 only).
 *
 * Every rule is one Ignition has (coreos/ignition, config/v3_N/types/*.go `Validate` methods,
 * config/validate/validate.go for duplicates, config/v3_N/types/schema.go for JSON types,
 * config/shared/errors/errors.go for what Ignition calls each problem):
 *  - files, directories, links: `path` absolute and clean (path.go), `mode` an integer in
 *    0…07777 (mode.go), `overwrite` a boolean and not true without `contents.source` (file.go),
 *    `user`/`group` `{id}` or `{name}`, not both (node.go), a link's `target` set (storage.go);
 *    `contents`/`append`: `source` a URL Ignition fetches (url.go), `compression` "gzip",
 *    `verification.hash` `sha512-<hex>`/`sha256-<hex>` of the right length, only with a source
 *    (resource.go, verification.go); one entry per path across all three lists;
 *  - systemd units: `name` with a unit type suffix, drop-in names ending in .conf (unit.go),
 *    `enabled`/`mask` booleans, `contents` a string; one entry per unit and drop-in name;
 *  - passwd: one entry per user and group name, no key or group listed twice for a user;
 *  - filesystems: `device` and `path` absolute and clean, `format` one Ignition knows, and set
 *    when path/label/uuid/wipeFilesystem/options/mountOptions are (filesystem.go); one entry per
 *    device;
 *  - kernelArguments: an argument in at most one place of shouldExist + shouldNotExist.
 * Where the versions differ, the config's own version decides: sha256 from 3.1.0, gs:// URLs
 * from 3.2.0, format "none" from 3.3.0, arn: URLs from 3.4.0.
 *
 * The containers and required keys are checked before this (load.ts checkShapes); values of the
 * wrong type are skipped here so one mistake is reported once.
 */
import { UsageError } from "../errors.js";

/** All problems found, one line each (`$.storage.files[2].path "etc/x" must be …`). */
export function specProblems(json: unknown, version: string): string[] {
  const out: string[] = [];
  if (!isObject(json)) return out;
  const minor = specMinor(version);
  const storage = asObject(json.storage);
  if (storage) {
    checkNodes(storage, minor, out);
    checkFilesystems(storage, minor, out);
  }
  const systemd = asObject(json.systemd);
  if (systemd) checkUnits(systemd, out);
  const passwd = asObject(json.passwd);
  if (passwd) checkPasswd(passwd, out);
  const kargs = asObject(json.kernelArguments);
  if (kargs) checkKernelArguments(kargs, out);
  return out;
}

/** Throws one UsageError for all problems: the first on the line, the others in the hint. */
export function checkSpec(json: unknown, origin: string, version: string): void {
  const problems = specProblems(json, version);
  const [first, ...rest] = problems;
  if (first === undefined) return;
  const shown = rest.slice(0, MAX_IN_HINT);
  const more = rest.length - shown.length;
  throw new UsageError(
    rest.length > 0
      ? `${origin}: ${first} (and ${rest.length} more error${rest.length > 1 ? "s" : ""})`
      : `${origin}: ${first}`,
    rest.length > 0 ? `${shown.join("; ")}${more > 0 ? `; … ${more} more` : ""}` : undefined,
  );
}

const MAX_IN_HINT = 10;

// ---------------------------------------------------------------------------------------------
// Files, directories, links

/** Ignition's order: a path used twice is reported where it is used the second time. */
const NODE_LISTS = ["directories", "files", "links"] as const;

function checkNodes(storage: Record<string, unknown>, minor: number, out: string[]): void {
  const seen = new Map<string, string>();
  for (const list of NODE_LISTS) {
    items(storage[list]).forEach((node, i) => {
      if (!isObject(node)) return;
      const at = `$.storage.${list}[${i}]`;
      if (typeof node.path === "string") {
        const problem = pathProblem(node.path);
        if (problem) out.push(`${at}.path ${show(node.path)} ${problem}`);
        const first = seen.get(node.path);
        if (first !== undefined) out.push(`${at}.path ${show(node.path)} ${duplicateOf(first)}`);
        else seen.set(node.path, at);
      }
      if (list !== "links") checkMode(node.mode, `${at}.mode`, out);
      checkBoolean(node.overwrite, `${at}.overwrite`, out);
      checkOwner(node.user, `${at}.user`, out);
      checkOwner(node.group, `${at}.group`, out);
      if (list === "files") checkFileContents(node, at, minor, out);
      if (list === "links") {
        checkBoolean(node.hard, `${at}.hard`, out);
        if (!isSet(node.target) || node.target === "")
          out.push(`${at}.target is required (the path the link points to)`);
        else checkString(node.target, `${at}.target`, out);
      }
    });
  }
}

function checkFileContents(
  file: Record<string, unknown>,
  at: string,
  minor: number,
  out: string[],
): void {
  const contents = asObject(file.contents);
  if (contents) checkResource(contents, `${at}.contents`, minor, out);
  items(file.append).forEach((r, j) => {
    if (isObject(r)) checkResource(r, `${at}.append[${j}]`, minor, out);
  });
  if (file.overwrite === true && !isSet(contents?.source))
    out.push(
      `${at}.overwrite is true but ${at}.contents.source is not set (Ignition refuses that: give the contents or drop overwrite)`,
    );
}

/** `mode`: a decimal integer in 0…07777 (JSON has no octal). */
function checkMode(v: unknown, at: string, out: string[]): void {
  if (!isSet(v)) return;
  if (typeof v === "string")
    out.push(`${at} ${show(v)} must be an integer, not a string (${modeFix(v)})`);
  else if (typeof v !== "number") out.push(`${at} must be an integer, not ${typeName(v)}`);
  else if (!Number.isInteger(v)) out.push(`${at} ${v} must be an integer`);
  else if (v < 0 || v > 0o7777)
    out.push(`${at} ${v} is not a file mode (0 to 4095, i.e. 0o7777, written in decimal)`);
}

/** "0644" is octal; "755" is probably octal too, but "420" may be the right decimal, quoted. */
function modeFix(v: string): string {
  const s = v.trim();
  const octal = /^0o?([0-7]{1,4})$/i.exec(s)?.[1];
  if (octal !== undefined)
    return `use the decimal ${Number.parseInt(octal, 8)} for 0${octal.replace(/^0/, "")}`;
  if (/^[0-7]{3,4}$/.test(s))
    return `for 0${s} use the decimal ${Number.parseInt(s, 8)}; for the decimal ${s} drop the quotes`;
  if (/^\d+$/.test(s)) return "drop the quotes";
  return "JSON has no octal: write the decimal, e.g. 420 for 0644";
}

/** `user`/`group`: `{"id": 1000}` or `{"name": "core"}`, not both. */
function checkOwner(v: unknown, at: string, out: string[]): void {
  if (!isSet(v)) return;
  if (!isObject(v)) {
    out.push(`${at} must be an object like {"name": "core"} or {"id": 1000}, not ${typeName(v)}`);
    return;
  }
  checkInteger(v.id, `${at}.id`, out);
  checkString(v.name, `${at}.name`, out);
  if (isSet(v.id) && typeof v.name === "string" && v.name !== "")
    out.push(`${at} sets both id and name (give one of them)`);
}

// ---------------------------------------------------------------------------------------------
// Resources (file contents and append)

function checkResource(r: Record<string, unknown>, at: string, minor: number, out: string[]) {
  const source = r.source;
  if (checkString(source, `${at}.source`, out) && source !== "") {
    const problem = urlProblem(source as string, minor);
    if (problem) out.push(`${at}.source ${show(source)} ${problem}`);
  }
  if (
    checkString(r.compression, `${at}.compression`, out) &&
    !["", "gzip"].includes(r.compression as string)
  )
    out.push(
      `${at}.compression ${show(r.compression)} is not supported (use "gzip" or leave it out)`,
    );
  if (!isSet(r.verification)) return;
  if (!isObject(r.verification)) {
    out.push(`${at}.verification must be an object, not ${typeName(r.verification)}`);
    return;
  }
  const hash = r.verification.hash;
  if (!checkString(hash, `${at}.verification.hash`, out)) return;
  if (!isSet(source)) {
    out.push(`${at}.verification.hash is set but ${at}.source is not (verify what is fetched)`);
    return;
  }
  const problem = hashProblem(hash as string, minor);
  if (problem) out.push(`${at}.verification.hash ${show(hash)} ${problem}`);
}

const HASH_HEX_DIGITS = new Map([
  ["sha512", 128],
  ["sha256", 64],
]);

function hashProblem(hash: string, minor: number): string | undefined {
  const dash = hash.indexOf("-");
  const fn = hash.slice(0, dash);
  const sum = hash.slice(dash + 1);
  const digits = minor < 1 && fn === "sha256" ? undefined : HASH_HEX_DIGITS.get(fn);
  if (dash >= 0 && digits !== undefined && sum.length === digits && /^[0-9a-fA-F]*$/.test(sum))
    return undefined;
  return minor < 1
    ? "must be sha512-<128 hex digits> (sha256 needs spec 3.1.0 or newer)"
    : "must be sha512-<128 hex digits> or sha256-<64 hex digits>";
}

/** The URL schemes Ignition fetches (url.go), by the spec version's minor number. */
function urlSchemes(minor: number): string[] {
  return [
    "http",
    "https",
    "tftp",
    "s3",
    ...(minor >= 2 ? ["gs"] : []),
    ...(minor >= 4 ? ["arn"] : []),
    "data",
  ];
}

function urlProblem(url: string, minor: number): string | undefined {
  // Go's url.Parse: a scheme is a letter then letters, digits, + - .; compared in lower case.
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(url)?.[1]?.toLowerCase() ?? "";
  const schemes = urlSchemes(minor);
  if (!schemes.includes(scheme)) {
    const later =
      scheme === "gs"
        ? " (gs needs spec 3.2.0)"
        : scheme === "arn"
          ? " (arn needs spec 3.4.0)"
          : "";
    return `is not a URL Ignition can fetch${later} (use ${schemes.join(", ")}; a local file goes in as a data: URL)`;
  }
  return scheme === "data" ? dataUrlProblem(url) : undefined;
}

/** RFC 2397, as github.com/vincent-petithory/dataurl (Ignition's parser) reads it. */
function dataUrlProblem(url: string): string | undefined {
  const fix = "write data:,<percent-encoded text> or data:;base64,<base64>";
  if (!url.startsWith("data:"))
    return `is not a valid data URL: "data:" must be lower case (${fix})`;
  const comma = url.indexOf(",");
  if (comma < 0) return `is not a valid data URL: no comma before the data (${fix})`;
  const [media = "", ...params] = url.slice(5, comma).split(";");
  if (media !== "" && !MEDIA_TYPE.test(media))
    return `is not a valid data URL: ${show(media)} is not a media type like text/plain (${fix})`;
  const data = url.slice(comma + 1);
  const ok = params.includes("base64")
    ? /^[A-Za-z0-9+/=\n]*$/.test(data)
    : /^[!$-;=?-Z_a-z~]*$/.test(data) && !/%(?![0-9A-Fa-f]{2})/.test(data);
  return ok
    ? undefined
    : `is not a valid data URL: its data has characters that must be percent-encoded (${fix})`;
}

/** type/subtype of tokens, the type one dataurl accepts (discrete, composite or x-). */
const MEDIA_TYPE =
  /^(?:(?:text|image|audio|video|application|message|multipart)[^()<>@,;:\\"/[\]?=\s]*|[xX]-[^()<>@,;:\\"/[\]?=\s]*)\/[^()<>@,;:\\"/[\]?=\s]+$/;

// ---------------------------------------------------------------------------------------------
// systemd units

const UNIT_TYPES = [
  ".service",
  ".socket",
  ".device",
  ".mount",
  ".automount",
  ".swap",
  ".target",
  ".path",
  ".timer",
  ".snapshot",
  ".slice",
  ".scope",
];

function checkUnits(systemd: Record<string, unknown>, out: string[]): void {
  const seen = new Map<string, string>();
  items(systemd.units).forEach((unit, i) => {
    if (!isObject(unit)) return;
    const at = `$.systemd.units[${i}]`;
    if (typeof unit.name === "string") {
      if (!UNIT_TYPES.includes(goExt(unit.name)))
        out.push(
          `${at}.name ${show(unit.name)} must end in a unit type (${UNIT_TYPES.slice(0, -1).join(", ")} or ${UNIT_TYPES[UNIT_TYPES.length - 1]})`,
        );
      const first = seen.get(unit.name);
      if (first !== undefined) out.push(`${at}.name ${show(unit.name)} ${duplicateOf(first)}`);
      else seen.set(unit.name, at);
    }
    checkBoolean(unit.enabled, `${at}.enabled`, out);
    checkBoolean(unit.mask, `${at}.mask`, out);
    checkString(unit.contents, `${at}.contents`, out);
    const dropins = new Map<string, string>();
    items(unit.dropins).forEach((d, j) => {
      if (!isObject(d)) return;
      const dat = `${at}.dropins[${j}]`;
      if (typeof d.name === "string") {
        if (goExt(d.name) !== ".conf") out.push(`${dat}.name ${show(d.name)} must end in .conf`);
        const first = dropins.get(d.name);
        if (first !== undefined) out.push(`${dat}.name ${show(d.name)} ${duplicateOf(first)}`);
        else dropins.set(d.name, dat);
      }
      checkString(d.contents, `${dat}.contents`, out);
    });
  });
}

/** Go's path.Ext: from the last dot of the last element, "" without one. */
function goExt(name: string): string {
  const base = name.slice(name.lastIndexOf("/") + 1);
  const dot = base.lastIndexOf(".");
  return dot < 0 ? "" : base.slice(dot);
}

// ---------------------------------------------------------------------------------------------
// Users and groups

function checkPasswd(passwd: Record<string, unknown>, out: string[]): void {
  for (const list of ["users", "groups"] as const) {
    const seen = new Map<string, string>();
    items(passwd[list]).forEach((entry, i) => {
      if (!isObject(entry)) return;
      const at = `$.passwd.${list}[${i}]`;
      if (typeof entry.name === "string") {
        const first = seen.get(entry.name);
        if (first !== undefined) out.push(`${at}.name ${show(entry.name)} ${duplicateOf(first)}`);
        else seen.set(entry.name, at);
      }
      if (list === "users") {
        listedTwice(entry.sshAuthorizedKeys, `${at}.sshAuthorizedKeys`, out);
        listedTwice(entry.groups, `${at}.groups`, out);
      }
    });
  }
}

/** Strings of one list that repeat an earlier one (Ignition rejects them as duplicates). */
function listedTwice(v: unknown, at: string, out: string[]): void {
  const seen = new Map<string, number>();
  items(v).forEach((s, i) => {
    if (typeof s !== "string") return;
    const first = seen.get(s);
    if (first !== undefined)
      out.push(
        `${at}[${i}] ${show(s)} ${duplicateOf(`${at}[${first}]`, "list it once", "repeats")}`,
      );
    else seen.set(s, i);
  });
}

// ---------------------------------------------------------------------------------------------
// Filesystems

function fsFormats(minor: number): string[] {
  return ["ext4", "btrfs", "xfs", "vfat", "swap", ...(minor >= 3 ? ["none"] : [])];
}

function checkFilesystems(storage: Record<string, unknown>, minor: number, out: string[]) {
  const seen = new Map<string, string>();
  items(storage.filesystems).forEach((fs, i) => {
    if (!isObject(fs)) return;
    const at = `$.storage.filesystems[${i}]`;
    if (!isSet(fs.device) || fs.device === "")
      out.push(`${at}.device is required (e.g. "/dev/disk/by-label/data")`);
    else if (checkString(fs.device, `${at}.device`, out)) {
      const device = fs.device as string;
      const problem = pathProblem(device);
      if (problem) out.push(`${at}.device ${show(device)} ${problem}`);
      const first = seen.get(device);
      if (first !== undefined) out.push(`${at}.device ${show(device)} ${duplicateOf(first)}`);
      else seen.set(device, at);
    }
    if (checkString(fs.path, `${at}.path`, out) && fs.path !== "") {
      const problem = pathProblem(fs.path as string);
      if (problem) out.push(`${at}.path ${show(fs.path)} ${problem}`);
    }
    if (isSet(fs.format) && !checkString(fs.format, `${at}.format`, out)) return;
    const formats = fsFormats(minor);
    if (isSet(fs.format) && fs.format !== "") {
      if (!formats.includes(fs.format as string)) {
        const later = fs.format === "none" ? " (none needs spec 3.3.0)" : "";
        out.push(
          `${at}.format ${show(fs.format)} is not a format Ignition knows${later} (use ${formats.slice(0, -1).join(", ")} or ${formats[formats.length - 1]})`,
        );
      }
    } else {
      const given = ["path", "label", "uuid", "wipeFilesystem", "options", "mountOptions"].filter(
        (k) =>
          fs[k] === true ||
          (typeof fs[k] === "string" && fs[k] !== "") ||
          (Array.isArray(fs[k]) && (fs[k] as unknown[]).length > 0),
      );
      if (given.length > 0)
        out.push(
          `${at}.format is required when ${given.join(", ")} ${given.length > 1 ? "are" : "is"} set`,
        );
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Kernel arguments (spec 3.3.0+)

function checkKernelArguments(kargs: Record<string, unknown>, out: string[]): void {
  const seen = new Map<string, string>();
  for (const list of ["shouldExist", "shouldNotExist"] as const) {
    items(kargs[list]).forEach((arg, i) => {
      if (typeof arg !== "string") return;
      const at = `$.kernelArguments.${list}[${i}]`;
      const first = seen.get(arg);
      if (first !== undefined)
        out.push(
          `${at} ${show(arg)} ${duplicateOf(first, "list an argument once, in one of the two lists", "is already in")}`,
        );
      else seen.set(arg, at);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Ignition's validatePath: set, absolute and as path.Clean leaves it. */
function pathProblem(p: string): string | undefined {
  if (!p.startsWith("/"))
    return p === ""
      ? "must be an absolute path"
      : `must be an absolute path (did you mean ${show(cleanPath(`/${p}`))}?)`;
  const clean = cleanPath(p);
  if (clean !== p) return `is not fully simplified (write ${show(clean)})`;
  return undefined;
}

/** Go's path.Clean for an absolute path. */
function cleanPath(p: string): string {
  const parts: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return `/${parts.join("/")}`;
}

function duplicateOf(
  first: string,
  fix = "merge them into one entry",
  verb = "is already used by",
): string {
  return `${verb} ${first} (Ignition rejects duplicates: ${fix})`;
}

/** Null is how Ignition configs say "unset"; it is valid for every optional field. */
function isSet(v: unknown): boolean {
  return v !== undefined && v !== null;
}

function items(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function asObject(v: unknown): Record<string, unknown> | undefined {
  return isObject(v) ? v : undefined;
}

/** True when the value is a string; records a problem when it is set to something else. */
function checkString(v: unknown, at: string, out: string[]): boolean {
  if (typeof v === "string") return true;
  if (isSet(v)) out.push(`${at} must be a string, not ${typeName(v)}`);
  return false;
}

function checkBoolean(v: unknown, at: string, out: string[]): void {
  if (!isSet(v) || typeof v === "boolean") return;
  const fix = v === "true" || v === "false" ? ` (write ${v} without quotes)` : "";
  out.push(`${at} must be true or false, not ${typeName(v)}${fix}`);
}

function checkInteger(v: unknown, at: string, out: string[]): void {
  if (!isSet(v)) return;
  if (typeof v !== "number") out.push(`${at} must be an integer, not ${typeName(v)}`);
  else if (!Number.isInteger(v)) out.push(`${at} ${v} must be an integer`);
}

/** A value for a message: JSON, shortened. */
function show(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}…"` : s;
}

/** "3.4.0" → 4; an experimental 3.N.0-experimental gets the newest rules. */
function specMinor(version: string): number {
  const m = /^3\.(\d+)\.0$/.exec(version);
  return m ? Number(m[1]) : Number.POSITIVE_INFINITY;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  return `a ${typeof v}`;
}
