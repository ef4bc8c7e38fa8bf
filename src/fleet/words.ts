/**
 * Small text helpers for the inventory: "did you mean" suggestions and splitting a secret's
 * `cmd:` into argv the way a shell splits words, without ever running a shell.
 */

/** Levenshtein edit distance (insertions, deletions, substitutions of one character). */
export function levenshtein(a: string, b: string): number {
  if (a === b) return 0;
  if (a.length === 0) return b.length;
  if (b.length === 0) return a.length;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min(
        (prev[j] as number) + 1,
        (cur[j - 1] as number) + 1,
        (prev[j - 1] as number) + cost,
      );
    }
    prev = cur;
  }
  return prev[b.length] as number;
}

/**
 * The candidate closest to `word` within `max` edits (case differences are free first), when
 * exactly one candidate is that close; undefined when none is, or when several tie.
 */
export function didYouMean(
  word: string,
  candidates: readonly string[],
  max = 2,
): string | undefined {
  const lower = word.toLowerCase();
  const sameCase = candidates.filter((c) => c.toLowerCase() === lower && c !== word);
  if (sameCase.length === 1) return sameCase[0];
  // A one-letter word is within two edits of every short key: no suggestion is better.
  const limit = Math.min(max, Math.max(0, word.length - 1));
  let best: string | undefined;
  let bestDist = Number.POSITIVE_INFINITY;
  let tie = false;
  for (const c of candidates) {
    if (c === word) continue;
    const d = levenshtein(lower, c.toLowerCase());
    if (d > limit) continue;
    if (d < bestDist) {
      best = c;
      bestDist = d;
      tie = false;
    } else if (d === bestDist) tie = true;
  }
  return tie ? undefined : best;
}

/** `; did you mean "board"?` or "". */
export function suggestion(word: string, candidates: readonly string[], max = 2): string {
  const s = didYouMean(word, candidates, max);
  return s === undefined ? "" : `; did you mean ${JSON.stringify(s)}?`;
}

export type SplitResult = { argv: string[] } | { error: string };

const OPERATORS = new Set(["|", "&", ";", "<", ">", "(", ")"]);

/**
 * Split a command line into argv as a POSIX shell splits words: blanks separate words,
 * '…' is literal, "…" is literal except for \\ \" \$ \` and \<newline>, an unquoted
 * backslash quotes the next character. Nothing is expanded and no shell runs the result, so
 * whatever a shell would treat specially (operators such as | ; > &, $ and `…` expansions,
 * a leading ~ or #, a leading VAR=value assignment) is an error rather than a silent
 * difference; quote it to mean it literally.
 */
export function splitCommand(line: string): SplitResult {
  const argv: string[] = [];
  let word = "";
  let inWord = false;
  let firstUnquotedAssign = false;
  let quotedSomething = false;
  const needsShell = (what: string) => ({
    error: `${what} needs a shell, and the command runs without one: quote it, or run sh -c '…'`,
  });
  let i = 0;
  const end = () => {
    if (!inWord) return;
    if (argv.length === 0 && !quotedSomething && /^[A-Za-z_][A-Za-z0-9_]*=/.test(word))
      firstUnquotedAssign = true;
    argv.push(word);
    word = "";
    inWord = false;
    quotedSomething = false;
  };
  while (i < line.length) {
    const c = line[i] as string;
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      end();
      i++;
      continue;
    }
    if (c === "'") {
      const close = line.indexOf("'", i + 1);
      if (close === -1) return { error: "unterminated single quote" };
      word += line.slice(i + 1, close);
      inWord = true;
      quotedSomething = true;
      i = close + 1;
      continue;
    }
    if (c === '"') {
      inWord = true;
      quotedSomething = true;
      i++;
      for (;;) {
        if (i >= line.length) return { error: "unterminated double quote" };
        const d = line[i] as string;
        if (d === '"') {
          i++;
          break;
        }
        if (d === "\\") {
          const e = line[i + 1];
          if (e === undefined) return { error: "unterminated double quote" };
          if (e === "\n") {
            i += 2;
            continue;
          }
          if ('\\"$`'.includes(e)) {
            word += e;
            i += 2;
            continue;
          }
          word += d;
          i++;
          continue;
        }
        if (d === "$" || d === "`") return needsShell(`${JSON.stringify(d)} (an expansion)`);
        word += d;
        i++;
      }
      continue;
    }
    if (c === "\\") {
      const e = line[i + 1];
      if (e === undefined) return { error: "the command ends with a lone backslash" };
      if (e !== "\n") {
        word += e;
        inWord = true;
        quotedSomething = true;
      }
      i += 2;
      continue;
    }
    if (OPERATORS.has(c)) return needsShell(JSON.stringify(c));
    if (c === "$" || c === "`") return needsShell(`${JSON.stringify(c)} (an expansion)`);
    if (!inWord && c === "#") return needsShell('"#" (a comment)');
    if (!inWord && c === "~") return needsShell('"~" (the home directory)');
    word += c;
    inWord = true;
    i++;
  }
  end();
  if (argv.length === 0) return { error: "the command is empty" };
  if (firstUnquotedAssign)
    return { error: "a leading VAR=value assignment needs a shell; write env VAR=value COMMAND" };
  return { argv };
}
