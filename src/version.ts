/**
 * provision's version: package.json's, and when the package root is a git checkout, the
 * commit, read from `.git` (HEAD, then the loose ref or packed-refs) without running git:
 * `provision --version` is timed against `node -e 0`. Only node:fs, node:path, node:url.
 */
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The package root: dist/version.js (or src/version.ts) is one level below it. */
export const PACKAGE_ROOT: string = fileURLToPath(new URL("..", import.meta.url));

/** package.json's version. */
export const VERSION: string = (
  JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8")) as { version: string }
).version;

const read = (path: string): string | undefined => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
};

const SHA = /^[0-9a-f]{40}(?:[0-9a-f]{24})?$/;

/**
 * The commit checked out in `root` (a repository or a worktree, whose `.git` is a file
 * naming the real git directory), or undefined when it is none or the refs cannot be read.
 */
export function gitCommit(root: string = PACKAGE_ROOT): string | undefined {
  let gitDir = join(root, ".git");
  let head = read(join(gitDir, "HEAD"));
  if (head === undefined) {
    const link = /^gitdir: (.+)$/m.exec(read(gitDir) ?? "")?.[1]?.trim();
    if (!link) return undefined;
    gitDir = resolve(root, link);
    head = read(join(gitDir, "HEAD"));
    if (head === undefined) return undefined;
  }
  head = head.trim();
  if (SHA.test(head)) return head; // a detached HEAD
  const ref = /^ref: (refs\/\S+)$/.exec(head)?.[1];
  if (!ref) return undefined;
  // A worktree keeps HEAD to itself and shares the refs of the main repository.
  const common = read(join(gitDir, "commondir"))?.trim();
  const commonDir = common ? resolve(gitDir, common) : gitDir;
  for (const dir of new Set([gitDir, commonDir])) {
    const loose = read(join(dir, ref))?.trim();
    if (loose && SHA.test(loose)) return loose;
  }
  for (const line of (read(join(commonDir, "packed-refs")) ?? "").split("\n")) {
    const [sha, name] = line.trim().split(" ");
    if (name === ref && sha && SHA.test(sha)) return sha;
  }
  return undefined;
}

/** What `provision --version` prints: "0.1.0", or "0.1.0 (commit 2628e23d1f0a)" from git. */
export function versionText(): string {
  const commit = gitCommit();
  return commit ? `${VERSION} (commit ${commit.slice(0, 12)})` : VERSION;
}
