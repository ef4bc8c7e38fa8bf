/**
 * What shell completion offers for an option's or argument's value when commander's
 * `.choices()` cannot say it: values that are suggested but not enforced (a `--stream` the
 * resolver checks itself), files, directories, disks, inventory hosts. Set where the option
 * is defined; read by ./complete.ts. No imports: every command module may use this.
 */

/** A value list (suggested, not enforced), or a kind of dynamic value. */
export type CompletionHint = readonly string[] | "files" | "dirs" | "disks" | "hosts" | "none";

const HINTS = new WeakMap<object, CompletionHint>();

/** Attach a completion hint to a commander Option or Argument; returns it, for chaining. */
export function completeWith<T extends object>(target: T, hint: CompletionHint): T {
  HINTS.set(target, hint);
  return target;
}

/** The hint attached with completeWith, if any. */
export function completionHint(target: object): CompletionHint | undefined {
  return HINTS.get(target);
}
