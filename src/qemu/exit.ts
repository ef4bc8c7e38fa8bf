/** qemu-test's exit codes, and how cli.ts tells a qemu-test command line (no heavy imports). */

/** qemu-test's own exit codes. */
export const QEMU_EXIT = {
  PASS: 0,
  FAILED: 1,
  TIMEOUT: 2,
  /** Missing qemu/firmware, bad input, invalid Ignition config: the guest never ran. */
  NOT_STARTED: 3,
  /** Stopped by a signal before a verdict (143 for SIGTERM, 129 for SIGHUP: src/lifecycle). */
  INTERRUPTED: 130,
} as const;

/** For cli.ts: commander's own usage errors for qemu-test are "could not start" too. */
export function isQemuTestArgv(argv: readonly string[]): boolean {
  return argv.slice(2).find((a) => !a.startsWith("-")) === "qemu-test";
}
