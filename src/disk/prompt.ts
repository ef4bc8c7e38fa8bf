/**
 * What the user sees before a write: the description of the target, the confirmation,
 * and the interactive disk picker. Prompts go to stderr (stdout stays for output).
 */
import { InterruptedError, RefusedError, UsageError } from "../errors.js";
import { formatSize } from "./format.js";
import { listCandidateDisks, type Target } from "./target.js";

/**
 * Lines for the confirmation prompt and the picker:
 * "/dev/sdb  SanDisk Ultra  31.9 GB  usb  removable", then one line per partition.
 */
export function describeTarget(t: Target): string[] {
  if (t.kind === "file") {
    return [
      t.exists
        ? `${t.path}  existing file  ${formatSize(t.size ?? 0)}  (will be overwritten)`
        : `${t.path}  new image file`,
    ];
  }
  let name = t.model ?? "";
  if (t.vendor && !name.toLowerCase().startsWith(t.vendor.toLowerCase()))
    name = `${t.vendor} ${name}`.trim();
  const flags = [
    t.parent ? `partition of ${t.parent}` : undefined,
    t.transport,
    t.removable ? "removable" : t.hotplug ? "hot-plug" : undefined,
    t.readOnly ? "read-only" : undefined,
    t.holders.length > 0 ? `in use by ${t.holders.join(", ")}` : undefined,
  ].filter((x): x is string => Boolean(x));
  const head = [t.path, name || undefined, formatSize(t.size), ...flags].filter(Boolean).join("  ");
  const lines = [head];
  if (t.parent === undefined && t.partitions.length === 0 && t.mountpoints.length > 0) {
    lines.push(`  mounted on ${t.mountpoints.join(", ")}`);
  }
  for (const p of t.partitions) {
    const parts = [
      `  ${p.path}`,
      formatSize(p.size),
      p.fstype,
      p.label ? `"${p.label}"` : undefined,
    ];
    if (p.mountpoints.length > 0) parts.push(`mounted on ${p.mountpoints.join(", ")}`);
    lines.push(parts.filter(Boolean).join("  "));
  }
  return lines;
}

function isPromptExit(err: unknown): boolean {
  const name = (err as { name?: string })?.name;
  return name === "ExitPromptError" || name === "AbortPromptError";
}

export interface ConfirmOptions {
  /** --yes: do not ask. */
  yes?: boolean;
  /** Whether there is a terminal to ask on (stdin and stderr are TTYs). */
  isTTY: boolean;
  /** Ask the question; defaults to @inquirer/prompts `confirm` (default answer: no). */
  prompt?: (message: string) => Promise<boolean>;
}

/**
 * Ask before erasing a disk. A file target (an image file) has nothing to confirm.
 * Without --yes and without a terminal, refuses; "no" refuses.
 */
export async function confirmWrite(t: Target, opts: ConfirmOptions): Promise<void> {
  if (opts.yes || t.kind === "file") return;
  if (!opts.isTTY) {
    throw new RefusedError(
      `refusing to write ${t.path} without confirmation: no terminal to ask on; pass --yes`,
    );
  }
  for (const line of describeTarget(t)) process.stderr.write(`${line}\n`);
  const message = `Erase ${t.path} and write the image to it? Everything on it will be lost.`;
  const ask =
    opts.prompt ??
    (async (msg: string) => {
      const { confirm } = await import("@inquirer/prompts");
      return confirm({ message: msg, default: false }, { output: process.stderr });
    });
  let ok: boolean;
  try {
    ok = await ask(message);
  } catch (err) {
    if (isPromptExit(err)) throw new InterruptedError();
    throw err;
  }
  if (!ok) throw new RefusedError("not confirmed; nothing was written");
}

export interface PickChoice {
  name: string;
  value: string;
  description?: string;
}

export interface PickOptions {
  /** Whether there is a terminal to ask on. Default: stdin and stderr are TTYs (true with `prompt`). */
  isTTY?: boolean;
  /** Ask the question; defaults to @inquirer/prompts `select`. Returns the chosen value. */
  prompt?: (message: string, choices: PickChoice[]) => Promise<string>;
}

/** Let the user pick a removable disk; returns its path. */
export async function pickDisk(opts: PickOptions = {}): Promise<string> {
  const isTTY =
    opts.isTTY ?? (opts.prompt ? true : Boolean(process.stdin.isTTY && process.stderr.isTTY));
  if (!isTTY) {
    throw new UsageError("no target given and no terminal to pick a disk on; pass a target path");
  }
  const disks = await listCandidateDisks();
  if (disks.length === 0)
    throw new UsageError("no removable disks found; insert the card or pass a target path");
  const choices: PickChoice[] = disks.map((d) => {
    const [head, ...rest] = describeTarget(d);
    const c: PickChoice = { name: head ?? d.path, value: d.path };
    if (rest.length > 0) c.description = rest.join("\n");
    return c;
  });
  const ask =
    opts.prompt ??
    (async (msg: string, ch: PickChoice[]) => {
      const { select } = await import("@inquirer/prompts");
      return select<string>({ message: msg, choices: ch }, { output: process.stderr });
    });
  try {
    return await ask("Which disk should the image be written to?", choices);
  } catch (err) {
    if (isPromptExit(err)) throw new InterruptedError();
    throw err;
  }
}
