/**
 * `provision __complete`: the candidates for the word being completed, found by walking the
 * real commander tree, so the shell scripts (./scripts.ts) know nothing of commands or flags.
 *
 * The protocol, as spf13/cobra's `__complete`:
 *
 *   provision __complete <shell> -- <word>... <partial>
 *
 * gets the words after `provision` up to the cursor, the last one the (possibly empty) word
 * being completed, and prints one candidate a line, `value` or `value<TAB>description` (no
 * descriptions for bash), then a last line `:<directive>`, a bit mask:
 *
 *   1  ERROR    nothing to offer, not even files
 *   2  NOSPACE  no space after the completed word
 *   4  NOFILE   no file names when there are no candidates (without it the shell falls
 *               back to file names, as cobra's default)
 *   16 DIRS     directory names (instead of the candidates)
 *   64 FILES    file names as well as the candidates (cobra has no such bit: flash targets
 *               are disks and image files)
 *
 * For `--flag=partial` the candidates are the values alone; the scripts put `--flag=` back
 * where their shell needs it. Dynamic values load only their own module: the disk list
 * (src/disk/target.ts), the inventory (src/fleet/inventory.ts).
 */
import type { Argument, Command, Option } from "commander";
import { type CompletionHint, completionHint } from "./hints.js";

export const DIRECTIVE = { ERROR: 1, NOSPACE: 2, NOFILE: 4, DIRS: 16, FILES: 64 } as const;

export interface Candidate {
  value: string;
  description?: string;
}

export interface Completion {
  candidates: Candidate[];
  directive: number;
}

/** What the words before the cursor say: the command reached and what was given to it. */
interface Line {
  /** From the root to the command the words reach. */
  chain: Command[];
  /** Positional words given to the last command. */
  operands: string[];
  /** Options given anywhere on the line, with their values ("" for a boolean). */
  given: Map<Option, string[]>;
  /** The word being completed is this option's value (optional: or an operand). */
  pending?: { option: Option; optional: boolean };
  /** After `--`: only operands. */
  dashDash: boolean;
  /** After the implicit `help` command: the word names a subcommand. */
  help: boolean;
}

const last = <T>(a: readonly T[]): T => a[a.length - 1] as T;

function findOption(chain: Command[], flag: string): Option | undefined {
  for (let i = chain.length - 1; i >= 0; i--) {
    const o = chain[i]?.options.find((o) => o.long === flag || o.short === flag);
    if (o) return o;
  }
  return undefined;
}

function hasHelpCommand(cmd: Command): boolean {
  return cmd
    .createHelp()
    .visibleCommands(cmd)
    .some((c) => c.name() === "help" && !cmd.commands.includes(c));
}

/** Parse the complete words as commander would (options anywhere, subcommand first). */
function readLine(root: Command, words: string[]): Line {
  const line: Line = {
    chain: [root],
    operands: [],
    given: new Map(),
    dashDash: false,
    help: false,
  };
  const record = (o: Option, value: string) =>
    line.given.set(o, [...(line.given.get(o) ?? []), value]);
  for (let i = 0; i < words.length; i++) {
    const w = words[i] as string;
    const next = i + 1 < words.length ? (words[i + 1] as string) : undefined;
    const cmd = last(line.chain);
    if (line.dashDash) {
      line.operands.push(w);
      continue;
    }
    if (w === "--") {
      line.dashDash = true;
      continue;
    }
    const valueFor = (o: Option) => {
      // A required value is the next word whatever it looks like; an optional one only when
      // it does not look like an option. The next word may be the one being completed.
      if (next === undefined) {
        line.pending = { option: o, optional: !o.required };
        if (!o.required) record(o, "");
      } else if (o.required || !next.startsWith("-")) {
        record(o, next);
        i++;
      } else record(o, "");
    };
    if (w.startsWith("--")) {
      const eq = w.indexOf("=");
      const o = findOption(line.chain, eq >= 0 ? w.slice(0, eq) : w);
      if (!o) continue;
      if (eq >= 0) record(o, w.slice(eq + 1));
      else if (o.required || o.optional) valueFor(o);
      else record(o, "");
      continue;
    }
    if (w.length > 1 && w.startsWith("-")) {
      // -y, -yq, -ifile, -yi file.
      for (let j = 1; j < w.length; j++) {
        const o = findOption(line.chain, `-${w[j]}`);
        if (!o) break;
        if (!o.required && !o.optional) {
          record(o, "");
          continue;
        }
        if (j + 1 < w.length) record(o, w.slice(j + 1));
        else valueFor(o);
        break;
      }
      continue;
    }
    if (line.help) {
      line.operands.push(w);
      continue;
    }
    if (line.operands.length === 0) {
      const sub = cmd.commands.find((c) => c.name() === w || c.aliases().includes(w));
      if (sub) {
        line.chain.push(sub);
        continue;
      }
      if (w === "help" && hasHelpCommand(cmd)) {
        line.help = true;
        continue;
      }
    }
    line.operands.push(w);
  }
  return line;
}

/** One line of a description: the first sentence, at most 90 characters. */
function short(text: string | undefined): string | undefined {
  if (!text) return undefined;
  let s = text.replace(/\s+/g, " ").trim();
  const stop = s.search(/[.;](\s|$)/);
  if (stop > 0) s = s.slice(0, stop);
  return s.length > 90 ? `${s.slice(0, 89)}…` : s || undefined;
}

function commandCandidates(cmd: Command, cur: string): Candidate[] {
  const out: Candidate[] = [];
  for (const c of cmd.createHelp().visibleCommands(cmd)) {
    const description = short(c.description());
    if (c.name().startsWith(cur)) out.push({ value: c.name(), description });
    else for (const a of c.aliases()) if (a.startsWith(cur)) out.push({ value: a, description });
  }
  return out;
}

function flagCandidates(line: Line, cur: string): Candidate[] {
  const cmd = last(line.chain);
  const options = [...cmd.createHelp().visibleOptions(cmd)];
  // The root's own options (--debug) work after any command; -V, --version and --help do not
  // mean more there.
  for (const a of line.chain.slice(0, -1))
    for (const o of a.options)
      if (!o.hidden && o.long !== "--version" && !options.includes(o)) options.push(o);
  const withShort = cur === "-" || (cur.length === 2 && cur !== "--");
  const out: Candidate[] = [];
  for (const o of options) {
    const repeatable = o.variadic || o.parseArg !== undefined;
    if (line.given.has(o) && !repeatable) continue;
    const description = short(o.description);
    for (const flag of [o.long, withShort ? o.short : undefined])
      if (flag?.startsWith(cur)) out.push({ value: flag, description });
  }
  return out;
}

/** The hint for an option's or argument's value: explicit, choices, else from its name. */
function hintOf(x: Option | Argument, isOption: boolean): CompletionHint {
  const explicit = completionHint(x);
  if (explicit) return explicit;
  if (x.argChoices) return x.argChoices;
  let names: string[];
  if (isOption) {
    const o = x as Option;
    if (o.long === "--host") return "hosts";
    // A directory on the libvirt host (qemu-test --connect), not on this machine.
    if (o.long === "--remote-dir") return "none";
    names = (/[<[]([^>\]]*)[>\]]/.exec(o.flags)?.[1] ?? "").toLowerCase().split("|");
  } else {
    const name = (x as Argument).name().toLowerCase();
    if (name === "target" || name === "targets") return "disks";
    if (name === "host" || name === "hosts") return "hosts";
    names = [name];
  }
  if (names.some((n) => ["file", "path", "tarball", "image"].includes(n))) return "files";
  if (names.includes("dir")) return "dirs";
  return "none";
}

async function diskCandidates(cur: string, exclude: string[]): Promise<Candidate[]> {
  if (!"/dev/".startsWith(cur) && !cur.startsWith("/dev/")) return [];
  const { listCandidateDisks } = await import("../disk/target.js");
  const { describeTarget } = await import("../disk/prompt.js");
  const out: Candidate[] = [];
  for (const d of await listCandidateDisks()) {
    if (!d.path.startsWith(cur) || exclude.includes(d.path)) continue;
    const head = describeTarget(d)[0] ?? "";
    out.push({ value: d.path, description: head.slice(d.path.length).trim() || undefined });
  }
  return out;
}

async function hostCandidates(line: Line, cur: string, exclude: string[]): Promise<Candidate[]> {
  const { findInventory, loadInventory } = await import("../fleet/inventory.js");
  let given: string | undefined;
  for (const [o, values] of line.given) if (o.long === "--inventory") given = last(values);
  // The shell has not expanded a ~ in the words it passes on.
  if (given?.startsWith("~/")) given = `${process.env.HOME ?? "~"}${given.slice(1)}`;
  let file: string;
  try {
    file = await findInventory({ file: given });
  } catch {
    return [];
  }
  let hosts: Candidate[];
  try {
    hosts = (await loadInventory(file)).hosts.map((h) => ({
      value: h.name,
      description: [h.os, h.arch, h.board === "generic" ? undefined : h.board, h.boot]
        .filter(Boolean)
        .join(" "),
    }));
  } catch {
    // An inventory with a mistake in it still names its hosts.
    hosts = await rawHostNames(file);
  }
  return hosts.filter((h) => h.value.startsWith(cur) && !exclude.includes(h.value));
}

async function rawHostNames(file: string): Promise<Candidate[]> {
  try {
    const { readFile } = await import("node:fs/promises");
    const { parse } = await import("yaml");
    const doc = parse(await readFile(file, "utf8")) as { hosts?: unknown } | null;
    const hosts = doc?.hosts;
    if (!hosts || typeof hosts !== "object" || Array.isArray(hosts)) return [];
    return Object.keys(hosts).map((value) => ({ value }));
  } catch {
    return [];
  }
}

async function valueCompletion(
  line: Line,
  x: Option | Argument,
  isOption: boolean,
  cur: string,
  exclude: string[],
): Promise<Completion> {
  const hint = hintOf(x, isOption);
  const nofile = (candidates: Candidate[]) => ({ candidates, directive: DIRECTIVE.NOFILE });
  if (hint === "files") return { candidates: [], directive: DIRECTIVE.FILES };
  if (hint === "dirs") return { candidates: [], directive: DIRECTIVE.DIRS };
  if (hint === "none") return nofile([]);
  if (hint === "disks")
    return { candidates: await diskCandidates(cur, exclude), directive: DIRECTIVE.FILES };
  if (hint === "hosts") return nofile(await hostCandidates(line, cur, exclude));
  return nofile(
    hint.filter((v) => v.startsWith(cur) && !exclude.includes(v)).map((value) => ({ value })),
  );
}

async function operandCompletion(line: Line, cur: string): Promise<Completion> {
  const cmd = last(line.chain);
  if (line.help)
    return line.operands.length === 0
      ? { candidates: commandCandidates(cmd, cur), directive: DIRECTIVE.NOFILE }
      : { candidates: [], directive: DIRECTIVE.NOFILE };
  if (cmd.commands.length > 0 && line.operands.length === 0 && !line.dashDash)
    return { candidates: commandCandidates(cmd, cur), directive: DIRECTIVE.NOFILE };
  const args = cmd.registeredArguments;
  const lastArg = args.length > 0 ? last(args) : undefined;
  const arg =
    line.operands.length < args.length
      ? args[line.operands.length]
      : lastArg?.variadic
        ? lastArg
        : undefined;
  if (!arg) return { candidates: [], directive: DIRECTIVE.NOFILE };
  const exclude = arg.variadic ? line.operands.slice(args.length - 1) : [];
  return valueCompletion(line, arg, false, cur, exclude);
}

/** The candidates for the last word of `words` (the words after the program's name). */
export async function complete(root: Command, words: string[]): Promise<Completion> {
  const all = words.length > 0 ? words : [""];
  const cur = last(all);
  const line = readLine(root, all.slice(0, -1));
  let r: Completion;
  if (line.pending && !(line.pending.optional && cur.startsWith("-"))) {
    const o = line.pending.option;
    r = await valueCompletion(line, o, true, cur, []);
    if (line.pending.optional && r.candidates.length === 0) r = await operandCompletion(line, cur);
  } else if (!line.dashDash && cur.startsWith("--") && cur.includes("=")) {
    const eq = cur.indexOf("=");
    const o = findOption(line.chain, cur.slice(0, eq));
    r =
      o && (o.required || o.optional)
        ? await valueCompletion(line, o, true, cur.slice(eq + 1), [])
        : { candidates: [], directive: DIRECTIVE.NOFILE };
  } else if (!line.dashDash && cur.startsWith("-")) {
    r = { candidates: flagCandidates(line, cur), directive: DIRECTIVE.NOFILE };
  } else {
    r = await operandCompletion(line, cur);
    // Nothing else to offer on an empty word: the required flags not given yet (as cobra).
    if (r.candidates.length === 0 && r.directive === DIRECTIVE.NOFILE && cur === "") {
      const required = new Set(last(line.chain).options.filter((o) => o.mandatory));
      r.candidates = flagCandidates(line, "--").filter((c) =>
        [...required].some((o) => o.long === c.value),
      );
    }
  }
  const seen = new Set<string>();
  r.candidates = r.candidates.filter((c) => !seen.has(c.value) && seen.add(c.value));
  return r;
}

/** The protocol's output: a candidate a line, then `:<directive>`. */
export function formatCompletion(r: Completion, shell: string): string {
  const clean = (s: string) => s.replace(/[\t\r\n]+/g, " ");
  const lines = r.candidates.map((c) =>
    c.description && shell !== "bash"
      ? `${clean(c.value)}\t${clean(c.description)}`
      : clean(c.value),
  );
  return `${[...lines, `:${r.directive}`].join("\n")}\n`;
}
