/**
 * Host variables in fragments: `{{ host.name }}`, `{{ host.vars.KEY }}`, `{{ host.arch }}` and
 * the other host fields. Only expressions that start with `host.` are variables, so other
 * `{{ … }}` (a Go or Jinja template inside a file's contents) pass through untouched. An
 * unknown variable is an error naming `file:line:col`, never an empty string.
 */
import { UsageError } from "../errors.js";
import { lineCol } from "../ignition/load.js";
import type { Host } from "./types.js";

const VARIABLE = /\{\{\s*(host(?:\.[A-Za-z0-9_-]+)+)\s*\}\}/g;

/** What a fragment can refer to, by dotted name (`host.name`, `host.vars.site`). */
export function hostVariables(host: Host): Record<string, unknown> {
  return {
    name: host.name,
    os: host.os,
    stream: host.stream,
    channel: host.channel,
    release: host.release,
    arch: host.arch,
    board: host.board,
    disk: host.disk,
    macs: host.macs,
    mac: host.macs[0],
    uuid: host.uuid,
    boot: host.boot,
    timezone: host.timezone,
    kargs: host.kargs,
    vars: host.vars,
  };
}

function lookup(root: Record<string, unknown>, path: string[]): { found: boolean; value: unknown } {
  let v: unknown = root;
  for (const k of path) {
    if (v === null || typeof v !== "object" || !Object.hasOwn(v, k))
      return { found: false, value: undefined };
    v = (v as Record<string, unknown>)[k];
  }
  return { found: v !== undefined && v !== null, value: v };
}

function asText(value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return JSON.stringify(value);
}

/**
 * Replace every host variable in `text`. `escape` is applied to each value (JSON string
 * escaping for .ign files, where variables sit inside JSON strings); every unknown variable
 * is reported, with its position in `file`.
 */
export function renderTemplate(
  text: string,
  file: string,
  host: Host,
  escape: (s: string) => string = (s) => s,
): string {
  const vars = hostVariables(host);
  const problems: string[] = [];
  const out = text.replace(VARIABLE, (whole, expr: string, index: number) => {
    const { found, value } = lookup(vars, expr.split(".").slice(1));
    if (!found) {
      const { line, col } = lineCol(text, index);
      const known = expr.startsWith("host.vars.")
        ? Object.keys(host.vars).map((k) => `host.vars.${k}`)
        : Object.keys(vars).map((k) => `host.${k}`);
      problems.push(
        `${file}:${line}:${col}: ${expr} is not set for host ${host.name} (known: ${known.join(", ") || "none"})`,
      );
      return whole;
    }
    return escape(asText(value));
  });
  if (problems.length > 0)
    throw new UsageError(
      problems.length === 1
        ? (problems[0] as string)
        : `${problems[0]} (and ${problems.length - 1} more)`,
      problems.length > 1
        ? problems.slice(1, 20).join("\n")
        : "set it in the host's vars (or in defaults: vars:)",
    );
  return out;
}

/** Escaping for a value placed inside a JSON string literal. */
export function jsonStringEscape(s: string): string {
  return JSON.stringify(s).slice(1, -1);
}
