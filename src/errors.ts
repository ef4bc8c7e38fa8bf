/**
 * Typed errors: every expected failure carries one line for the user, an optional hint
 * (what to do about it) and the exit code the CLI maps it to. The CLI prints
 * `provision: <message>` and, when present, `  hint: <hint>`; never a stack trace.
 */
export const EXIT = {
  OK: 0,
  /** The operation ran and failed: download, write or verify error. */
  FAILED: 1,
  /** Bad input: flags, Ignition config, image source, checksum or signature. */
  USAGE: 2,
  /** Refused for safety: system disk, mounted partitions, too small, not confirmed. */
  REFUSED: 3,
  /** A required program is missing. */
  MISSING_TOOL: 4,
  /** Interrupted by Ctrl-C / SIGTERM. */
  INTERRUPTED: 130,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export class ProvisionError extends Error {
  readonly hint?: string;
  readonly exitCode: number;
  constructor(message: string, opts: { hint?: string; exitCode?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "ProvisionError";
    this.hint = opts.hint;
    this.exitCode = opts.exitCode ?? EXIT.FAILED;
  }
}

/** Bad input from the user (flags, files, configs). */
export class UsageError extends ProvisionError {
  constructor(message: string, hint?: string) {
    super(message, { hint, exitCode: EXIT.USAGE });
    this.name = "UsageError";
  }
}

/** A safety check refused the target. */
export class RefusedError extends ProvisionError {
  constructor(message: string, hint?: string) {
    super(message, { hint, exitCode: EXIT.REFUSED });
    this.name = "RefusedError";
  }
}

export class InterruptedError extends ProvisionError {
  constructor(message = "interrupted") {
    super(message, { exitCode: EXIT.INTERRUPTED });
    this.name = "InterruptedError";
  }
}

/** One line describing any thrown value, for messages that wrap another error. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message.split("\n")[0] ?? String(err);
  return String(err);
}

/**
 * Print a failure the CLI did not handle on its own (one line, the hint under it) and
 * return the exit code: a ProvisionError's own, 130 for an interruption, else 1.
 */
export function reportError(err: unknown): number {
  if (err instanceof ProvisionError) {
    process.stderr.write(`provision: ${err.message}\n`);
    if (err.hint) process.stderr.write(`  hint: ${err.hint}\n`);
    return err.exitCode;
  }
  if ((err as Error)?.name === "AbortError" || (err as Error)?.message === "interrupted") {
    process.stderr.write("provision: interrupted\n");
    return EXIT.INTERRUPTED;
  }
  process.stderr.write(`provision: unexpected error: ${(err as Error)?.message ?? String(err)}\n`);
  if (process.env.PROVISION_DEBUG) process.stderr.write(`${(err as Error)?.stack}\n`);
  return EXIT.FAILED;
}
