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
