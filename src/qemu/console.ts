/**
 * The serial console, read as it streams: split into lines, cleaned of terminal escapes,
 * and matched against what must appear (`--expect`) and what must not (`--fail` and the
 * failure patterns coreos-assembler's kola uses). No process per line, no polling: one
 * `push()` per chunk QEMU writes.
 */
import { StringDecoder } from "node:string_decoder";

/** Console lines that mean the boot failed (../shared/README.md, "QEMU boot checks"). */
export const BUILTIN_FAILURES: readonly { name: string; re: RegExp }[] = [
  {
    name: "emergency shell",
    re: /Starting Emergency Shell|You are in emergency mode|Press Enter for emergency shell/,
  },
  { name: "dracut gave up", re: /dracut: Refusing to continue/ },
  { name: "kernel panic", re: /Kernel panic - not syncing/ },
  { name: "kernel oops", re: /Oops:/ },
  { name: "Go panic", re: /(?:^|\s)panic: / },
  { name: "segmentation fault", re: /SIGSEGV/ },
  { name: "systemd ordering cycle", re: /Ordering cycle found/ },
  { name: "OOM killer", re: /invoked oom-killer/ },
  { name: "Ignition could not fetch its config", re: /ignition\[[^\]]*\]: failed to fetch config/ },
];

/** A login prompt: what a booted FCOS or Flatcar prints on the serial console. */
export const DEFAULT_EXPECT = "login:";

export interface Rule {
  /** The pattern as the user gave it (or the built-in's name). */
  pattern: string;
  re: RegExp;
  builtin?: boolean;
}

export interface Match {
  pattern: string;
  line: string;
  /** Seconds since the watcher started. */
  seconds: number;
  builtin?: boolean;
}

/** Compile user patterns; a bad one is the caller's input error. */
export function compilePatterns(patterns: readonly string[], what: string): Rule[] {
  return patterns.map((pattern) => {
    try {
      return { pattern, re: new RegExp(pattern) };
    } catch (err) {
      throw new SyntaxError(`${what} ${JSON.stringify(pattern)}: ${(err as Error).message}`);
    }
  });
}

// CSI (colours, cursor moves: firmware and GRUB draw with them), OSC, two-byte escapes,
// an escape cut off at the end of a partial line, and every other control character but tab.
const ESCAPES =
  /\x1b\[[0-9;?=>]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[@-Z\\-_=>]|\x1b\[[0-9;?=>]*$|[\x00-\x08\x0b-\x1f\x7f]/g;

/** A console line as a person would read it. */
export function cleanLine(raw: string): string {
  return raw.replace(ESCAPES, "").trimEnd();
}

const MAX_KEPT_TEXT = 8 << 20;
const TAIL_LINES = 40;

export class ConsoleWatcher {
  readonly expects: Rule[];
  readonly fails: Rule[];
  /** When each expect was first seen (undefined: not yet). */
  readonly seen: (Match | undefined)[];
  failure?: Match;
  /** The last non-empty line (or the growing partial line), cleaned. */
  lastLine = "";
  /** Bytes of console output so far. */
  bytes = 0;
  private readonly decoder = new StringDecoder("utf8");
  private pending = "";
  private readonly tailLines: string[] = [];
  private kept: string[] = [];
  private keptLength = 0;
  private readonly started = Date.now();
  /** Expects matched on a partial line: their line is replaced once it is complete. */
  private readonly partialSeen = new Set<number>();
  private lineEndWaiters: (() => void)[] = [];

  constructor(
    rules: { expects: Rule[]; fails: Rule[] },
    private readonly onChange?: (w: ConsoleWatcher) => void,
  ) {
    this.expects = rules.expects;
    this.fails = rules.fails;
    this.seen = rules.expects.map(() => undefined);
  }

  get allSeen(): boolean {
    return this.seen.every((m) => m !== undefined);
  }

  /** True once the verdict is known from the console alone (a failure, or every expect). */
  get decided(): boolean {
    return this.failure !== undefined || this.allSeen;
  }

  push(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.feed(this.decoder.write(chunk));
  }

  /** The stream ended: the last partial line counts as a line. */
  end(): void {
    this.feed(this.decoder.end());
    if (this.pending !== "") {
      this.line(this.pending, true);
      this.pending = "";
    }
  }

  /**
   * Resolves when the current partial line is complete (or at once if there is none), or
   * after `ms`: so that a log does not end in the middle of the line that decided.
   */
  async lineEnd(ms: number): Promise<void> {
    if (this.pending === "") return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.lineEndWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** The last lines of the console, cleaned, for reports. */
  tail(n = TAIL_LINES): string[] {
    return this.tailLines.slice(-n);
  }

  /** Everything read (cleaned of escapes), at most the last 8 MiB. */
  text(): string {
    const partial = this.pending === "" ? "" : cleanLine(this.pending);
    return this.kept.join("") + partial;
  }

  private feed(s: string): void {
    if (s === "") return;
    const parts = (this.pending + s).split(/\r\n|\n|\r/);
    this.pending = parts.pop() ?? "";
    for (const p of parts) this.line(p, true);
    // Prompts ("localhost login: ") end without a newline: match the partial line too.
    if (this.pending !== "") this.line(this.pending, false);
    else if (this.lineEndWaiters.length > 0) {
      for (const w of this.lineEndWaiters.splice(0)) w();
    }
  }

  private line(raw: string, complete: boolean): void {
    const line = cleanLine(raw);
    if (complete) this.keep(`${line}\n`);
    if (line.trim() === "") return;
    if (complete) {
      // Only whole lines: a verdict's "last console line" is never cut mid-word.
      this.lastLine = line;
      this.tailLines.push(line);
      if (this.tailLines.length > TAIL_LINES * 2) this.tailLines.splice(0, TAIL_LINES);
    }
    if (this.failure === undefined) {
      const seconds = (Date.now() - this.started) / 1000;
      const bad = this.fails.find((r) => r.re.test(line));
      if (bad) {
        this.failure = { pattern: bad.pattern, line, seconds, builtin: bad.builtin };
      } else {
        this.expects.forEach((r, i) => {
          if (this.seen[i] === undefined && r.re.test(line)) {
            this.seen[i] = { pattern: r.pattern, line, seconds };
            if (!complete) this.partialSeen.add(i);
          } else if (complete && this.partialSeen.has(i) && r.re.test(line)) {
            // The same line, now complete: report all of it.
            this.seen[i] = { ...(this.seen[i] as Match), line };
            this.partialSeen.delete(i);
          }
        });
      }
    }
    this.onChange?.(this);
  }

  private keep(s: string): void {
    this.kept.push(s);
    this.keptLength += s.length;
    if (this.keptLength > MAX_KEPT_TEXT * 2) {
      const all = this.kept.join("");
      const cut = all.slice(all.length - MAX_KEPT_TEXT);
      this.kept = [cut];
      this.keptLength = cut.length;
    }
  }
}

/** The built-in failure rules plus the user's `--fail` patterns. */
export function failureRules(userFails: readonly string[], builtins = true): Rule[] {
  const rules: Rule[] = builtins
    ? BUILTIN_FAILURES.map((b) => ({ pattern: b.re.source, re: b.re, builtin: true }))
    : [];
  return [...rules, ...compilePatterns(userFails, "--fail")];
}
