/**
 * How a run ends, on every path. One place handles the signals, the forced exit, the
 * last-resort handler for a bug, and the cleanups that must still happen there:
 *
 * - SIGINT, SIGTERM and SIGHUP (the terminal was closed) abort the run once; the command's
 *   own cleanup runs and the exit code is 128 + the signal (130, 143, 129).
 * - A second signal exits at once, but first runs the registered *urgent* cleanups, which
 *   are synchronous and fast: zero the first MiB of a half-written target, remove a staging
 *   directory that holds secret values, kill child processes.
 * - An uncaught exception or unhandled rejection (a bug, or a library throwing from an event
 *   no try/catch reaches) runs the same cleanups and ends in one line,
 *   `provision: internal error: ...; <what the cleanup did>; report it with --debug`, exit 70.
 */
import { EXIT, internalError } from "./errors.js";

/** A synchronous cleanup; returns what it did ("wiped /dev/sdb"), or nothing. */
export type UrgentCleanup = () => string | undefined;

const cleanups = new Set<UrgentCleanup>();
let lastSignal: NodeJS.Signals | undefined;

const SIGNAL_EXIT: Partial<Record<NodeJS.Signals, number>> = {
  SIGHUP: 129,
  SIGINT: 130,
  SIGTERM: 143,
};

/** Register a cleanup for the forced exit and for internal errors; returns its remover. */
export function onUrgentExit(fn: UrgentCleanup): () => void {
  cleanups.add(fn);
  return () => {
    cleanups.delete(fn);
  };
}

/**
 * Run (once each) every registered cleanup, newest first (a child started while writing is
 * killed before the target it writes is wiped); returns what they did.
 */
export function runUrgentCleanups(): string[] {
  const done: string[] = [];
  for (const fn of [...cleanups].reverse()) {
    cleanups.delete(fn);
    try {
      const what = fn();
      if (what) done.push(what);
    } catch {}
  }
  return done;
}

/** The exit code for an interruption by the signal that came (130 when none did). */
export function interruptedExitCode(): number {
  return (lastSignal && SIGNAL_EXIT[lastSignal]) ?? EXIT.INTERRUPTED;
}

/** Map a run's exit code: an interruption reports the signal that caused it. */
export function finalExitCode(code: number): number {
  return code === EXIT.INTERRUPTED ? interruptedExitCode() : code;
}

function write(line: string): void {
  try {
    process.stderr.write(`${line}\n`);
  } catch {}
}

/**
 * Abort the run on SIGINT, SIGTERM or SIGHUP. `onFirst` prints what is being stopped; a
 * second signal runs the urgent cleanups and exits now.
 */
export function interruptSignal(
  opts: { onFirst?: (sig: NodeJS.Signals) => void } = {},
): AbortSignal {
  const ac = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (ac.signal.aborted) {
      const done = runUrgentCleanups();
      write(
        `provision: ${sig === "SIGINT" ? "Ctrl-C" : sig} again: exiting now${done.length ? `; ${done.join("; ")}` : ""}`,
      );
      process.exit(interruptedExitCode());
    }
    lastSignal = sig;
    opts.onFirst?.(sig);
    ac.abort(new Error("interrupted"));
  };
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, onSignal);
  return ac.signal;
}

/** Installed once by the CLI entry points. */
export function installLastResort(): void {
  const die = (err: unknown) => {
    write(`provision: ${internalError(err, runUrgentCleanups())}`);
    if (debugEnabled()) write(String((err as Error)?.stack ?? err));
    process.exit(EXIT.INTERNAL);
  };
  process.on("uncaughtException", die);
  process.on("unhandledRejection", die);
  // `provision ... | head -1`: the reader went away. That is not an error of ours.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE") {
        runUrgentCleanups();
        process.exit(typeof process.exitCode === "number" ? process.exitCode : 0);
      }
      die(err);
    });
  }
}

export function debugEnabled(): boolean {
  return Boolean(process.env.PROVISION_DEBUG);
}
