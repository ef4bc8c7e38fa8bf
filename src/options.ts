/**
 * Parsers for option values that several commands share. Errors are UsageErrors naming the
 * flag; qemu-test turns every error before the guest runs into its own "could not start".
 */
import { UsageError } from "./errors.js";

/** A repeatable option: commander calls this once per occurrence. */
export const collect = (value: string, previous: string[] = []) => [...previous, value];

/** A positive whole number (a count, MiB, seconds), or undefined when the flag is absent. */
export function positiveInt(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0)
    throw new UsageError(`${flag} must be a positive whole number, got "${value}"`);
  return n;
}

/** A duration: a bare number is seconds; 500ms, 90s, 10m, 1h. Undefined when not one. */
export function parseDuration(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(text);
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = (m[2] ?? "s").toLowerCase();
  const ms =
    unit === "ms" ? n : unit === "s" ? n * 1000 : unit === "m" ? n * 60_000 : n * 3_600_000;
  return ms > 0 ? Math.round(ms) : undefined;
}

/** A duration flag's value in ms, or a UsageError naming the flag. */
export function durationOption(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDuration(String(value));
  if (ms === undefined)
    throw new UsageError(`${flag} must be a duration like 30, 90s or 10m, got "${value}"`);
  return ms;
}

/** `52:54:00:AB:CD:EF`, `52-54-00-ab-cd-ef` or `525400abcdef` → `52:54:00:ab:cd:ef`. */
export function normalizeMac(s: string): string | undefined {
  const t = s.trim().toLowerCase();
  let hex: string;
  if (/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(t) || /^[0-9a-f]{2}(-[0-9a-f]{2}){5}$/.test(t))
    hex = t.replace(/[:-]/g, "");
  else if (/^[0-9a-f]{12}$/.test(t)) hex = t;
  else return undefined;
  return (hex.match(/../g) as string[]).join(":");
}
