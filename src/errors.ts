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
  /** An internal error (a bug): report it with --debug. */
  INTERNAL: 70,
  /** Interrupted: 130 by Ctrl-C (SIGINT), 143 by SIGTERM, 129 by SIGHUP. */
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

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "is a directory",
  ENOTDIR: "not a directory",
  EROFS: "read-only file system",
  ENOSPC: "no space left on the device",
  EDQUOT: "disk quota exceeded",
  EIO: "input/output error",
  EBUSY: "in use",
  EEXIST: "already exists",
  ENXIO: "no such device",
  ENODEV: "no such device",
  EFBIG: "file too big",
};

/**
 * The hint for a permission error: "run with sudo" only when we are not root already; as
 * root the cause is elsewhere (a write-protect switch, a read-only or immutable file).
 */
export function permissionHint(doing: string): string {
  const root = typeof process.getuid === "function" && process.getuid() === 0;
  return root
    ? `${doing} was refused although provision runs as root: is it write-protected, read-only or immutable (lsattr)?`
    : `${doing} needs root: run with sudo`;
}

/** "no space left on the device (ENOSPC)" for an errno error; undefined for other errors. */
export function errnoText(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (typeof code !== "string" || !/^E[A-Z]+$/.test(code)) return undefined;
  return `${ERRNO_TEXT[code] ?? code.toLowerCase()} (${code})`;
}

/**
 * Print a failure the CLI did not handle on its own (one line, the hint under it) and
 * return the exit code: a ProvisionError's own, 130 for an interruption, 1 for a file-system
 * error that names its path, else 70 (an internal error: a bug to report).
 */
export function reportError(err: unknown, cleanupsDone: string[] = []): number {
  const f = failureOf(err, cleanupsDone);
  process.stderr.write(`provision: ${f.message}\n`);
  if (f.hint) process.stderr.write(`  hint: ${f.hint}\n`);
  if (
    f.exitCode !== EXIT.INTERRUPTED &&
    !(err instanceof ProvisionError) &&
    process.env.PROVISION_DEBUG
  )
    process.stderr.write(`${(err as Error)?.stack}\n`);
  return f.exitCode;
}

/**
 * What a failure says and the exit code it gives, whatever was thrown: a ProvisionError's
 * own, "interrupted" (130), a file-system error naming its path (1), else an internal error
 * (70, a bug to report). reportError prints it; jsonError puts it in a JSON document.
 */
function failureOf(
  err: unknown,
  cleanupsDone: string[] = [],
): { message: string; hint?: string; exitCode: number } {
  if (err instanceof ProvisionError)
    return { message: err.message, hint: err.hint, exitCode: err.exitCode };
  if ((err as Error)?.name === "AbortError" || (err as Error)?.message === "interrupted")
    return { message: "interrupted", exitCode: EXIT.INTERRUPTED };
  const fsErr = err as NodeJS.ErrnoException;
  const text = errnoText(err);
  if (text && fsErr.path) return { message: `${fsErr.path}: ${text}`, exitCode: EXIT.FAILED };
  return { message: internalError(err, cleanupsDone), exitCode: EXIT.INTERNAL };
}

/** "internal error: <first line>; <what the cleanups did>; report it with --debug". */
export function internalError(err: unknown, cleanupsDone: string[] = []): string {
  const msg = ((err as Error)?.message ?? String(err)).split("\n")[0];
  const done = cleanupsDone.length ? `; ${cleanupsDone.join("; ")}` : "";
  return `internal error: ${msg}${done}; report it with --debug`;
}

/**
 * The failure as one JSON document for --json output on stdout (stderr still gets the line
 * from reportError): `{"error": {"message", "hint"?, "exitCode"}}`. `mapExitCode` maps the
 * code as the CLI does before exiting (lifecycle's finalExitCode: SIGTERM gives 143).
 */
export function jsonError(err: unknown, mapExitCode: (code: number) => number = (c) => c): string {
  const { message, hint, exitCode } = failureOf(err);
  const error = { message, ...(hint ? { hint } : {}), exitCode: mapExitCode(exitCode) };
  return `${JSON.stringify({ error }, null, 2)}\n`;
}

/** --json was asked for on the command line (also when the parser stopped before it). */
export function jsonRequested(argv: readonly string[]): boolean {
  const end = argv.indexOf("--");
  return (end === -1 ? argv : argv.slice(0, end)).includes("--json");
}

/**
 * commander's outputError: the parser's message (a bad value, an unknown flag, flags that
 * cannot go together) on stderr and, with --json, as a JSON document on stdout too, with
 * the exit code the command gives parser errors.
 */
export function parserErrorOutput(
  argv: readonly string[],
  exitCode: number,
): (str: string, write: (s: string) => void) => void {
  return (str, write) => {
    write(str);
    if (!jsonRequested(argv)) return;
    const line =
      str
        .trim()
        .split("\n")[0]
        ?.replace(/^error: /, "") ?? "";
    process.stdout.write(jsonError(new UsageError(line), () => exitCode));
  };
}
