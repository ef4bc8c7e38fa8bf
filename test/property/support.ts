/**
 * Shared settings for the property tests (fast-check).
 *
 *   FC_SEED     seed for every property (default 20261201, so CI runs are reproducible)
 *   FC_RUNS     base number of cases per property (default 300); each property scales it by
 *               its weight (cheap ones run more, ones that spawn a process run fewer)
 *   FC_CASE_MS  time bound for one case in ms (default 2000): a case that takes longer fails,
 *               which is how a hang or a super-linear blow-up (regex backtracking) shows up
 *
 * scripts/fuzz.sh runs these files with a random seed and many more cases.
 */
import fc from "fast-check";
import { expect } from "vitest";
import { ProvisionError } from "../../src/errors.js";

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got "${raw}"`);
  return n;
}

export const SEED = envInt("FC_SEED", 20261201);
export const BASE_RUNS = envInt("FC_RUNS", 300);
export const CASE_MS = envInt("FC_CASE_MS", 2000);

/** Cases for a property of the given weight (1 = the base number). */
export function runs(weight = 1): number {
  return Math.max(1, Math.round(BASE_RUNS * weight));
}

/** fc.assert parameters: the fixed (or FC_SEED) seed and the weighted number of runs. */
export function params<T>(weight = 1): fc.Parameters<T> {
  return { seed: SEED, numRuns: runs(weight), endOnFailure: false };
}

/** Test timeout for a property: every case may take CASE_MS, plus slack. */
export function timeoutFor(weight = 1, perCaseMs = 50): number {
  return 30_000 + runs(weight) * perCaseMs;
}

/** ProvisionError or one of its subclasses (UsageError, RefusedError...). */
export type ErrorClass = abstract new (...args: never[]) => ProvisionError;

/** One line, not empty: what the CLI prints after `provision: `. */
export function expectOneLine(message: string): void {
  expect(message.trim()).not.toBe("");
  expect(message).not.toContain("\n");
}

/**
 * The thrown value is the typed error (ProvisionError or the given subclass) with a
 * one-line message; anything else (TypeError, RangeError, a plain Error) fails the property
 * with the original error attached.
 */
export function expectTyped(err: unknown, cls: ErrorClass = ProvisionError): void {
  if (!(err instanceof cls)) {
    const what = err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err);
    throw new Error(`expected a ${cls.name}, got ${what}`, { cause: err });
  }
  expectOneLine(err.message);
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: ProvisionError };

function tooSlow(ms: number): Error {
  return new Error(`one case took ${Math.round(ms)} ms (bound FC_CASE_MS=${CASE_MS}): a hang?`);
}

/**
 * Run one case of an async parser: its result, or its typed error (anything else throws).
 * An async hang is cut off after CASE_MS; a synchronous one cannot be interrupted in this
 * thread, so the elapsed time is checked afterwards (and scripts/fuzz.sh wraps the whole
 * run in `timeout`).
 */
export async function outcome<T>(
  fn: () => Promise<T>,
  cls: ErrorClass = ProvisionError,
): Promise<Outcome<T>> {
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  let timedOut = false;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(tooSlow(performance.now() - t0));
    }, CASE_MS);
  });
  let result: Outcome<T> | { ok: false; thrown: unknown };
  try {
    result = { ok: true, value: await Promise.race([fn(), limit]) };
  } catch (err) {
    if (timedOut) throw err;
    result = { ok: false, thrown: err };
  } finally {
    clearTimeout(timer);
  }
  return settle(t0, result, cls);
}

/** The same for a synchronous function. */
export function outcomeSync<T>(fn: () => T, cls: ErrorClass = ProvisionError): Outcome<T> {
  const t0 = performance.now();
  let result: Outcome<T> | { ok: false; thrown: unknown };
  try {
    result = { ok: true, value: fn() };
  } catch (err) {
    result = { ok: false, thrown: err };
  }
  return settle(t0, result, cls);
}

function settle<T>(
  t0: number,
  result: Outcome<T> | { ok: false; thrown: unknown },
  cls: ErrorClass,
): Outcome<T> {
  checkElapsed(t0);
  if (result.ok) return result;
  const thrown = "thrown" in result ? result.thrown : result.error;
  expectTyped(thrown, cls);
  return { ok: false, error: thrown as ProvisionError };
}

/** Fails when more than CASE_MS passed since t0 (performance.now()). */
export function checkElapsed(t0: number): void {
  const ms = performance.now() - t0;
  if (ms > CASE_MS) throw tooSlow(ms);
}
