/**
 * The secrets volume's contents, staged in a private (0700) directory that the caller
 * always removes: SSH public keys as `authorized_keys`, `--secret NAME=VALUE` as a file
 * NAME, each `--secrets-env PREFIX` as `PREFIX_env` (the PREFIX_* variables of the
 * environment, in the KEY="value" syntax both sh and systemd's EnvironmentFile= read), and
 * `--secrets-dir` copied as is. Plus `reproduce.sh`: how the stick was built, naming the
 * secrets but never their values.
 *
 * Nothing here prints or returns a value: the summary has names only.
 */
import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  readdir,
  readFile,
  stat,
  writeFile,
} from "node:fs/promises";
import { homedir } from "node:os";
import { join, relative } from "node:path";
import { describeError, UsageError } from "../errors.js";

export interface SecretsInput {
  /** Public key files. */
  sshKeys: string[];
  /** --secret NAME=VALUE, split. */
  secrets: { name: string; value: string }[];
  /** --secrets-env prefixes, as given (K3S or K3S_). */
  envPrefixes: string[];
  secretsDir?: string;
  env: NodeJS.ProcessEnv;
}

export interface StagedSecrets {
  /** Paths on the volume (relative, "/"-separated) of regular files, sorted. */
  files: string[];
  directories: string[];
  /** What each env file holds: variable names only. */
  envFiles: { file: string; variables: string[] }[];
  sshKeyCount: number;
  /** One line each, for the user. */
  warnings: string[];
}

/** Names the tool writes itself. */
const RESERVED = new Set(["authorized_keys", "reproduce.sh", "lost+found"]);
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** The groups ephemeros' services read; a node without one runs without that service. */
export const WELL_KNOWN_GROUPS: { prefix: string; what: string }[] = [
  { prefix: "K3S", what: "k3s (K3S_DATASTORE_ENDPOINT, K3S_TOKEN, ...)" },
  { prefix: "LOGEXPORT", what: "log export (LOGEXPORT_HOST, LOGEXPORT_PORT)" },
  { prefix: "HEARTBEAT", what: "heartbeat monitoring (HEARTBEAT_URL)" },
  {
    prefix: "NAMECHEAP_DDNS",
    what: "Namecheap dynamic DNS (NAMECHEAP_DDNS_PASS, NAMECHEAP_DDNS_INTERFACE)",
  },
];

/** --secret NAME=VALUE → {name, value}; the error never shows the value. */
export function parseSecretArg(arg: string): { name: string; value: string } {
  const i = arg.indexOf("=");
  // The argument may be a value typed without its name: never repeat it.
  if (i < 0)
    throw new UsageError(
      "--secret: expected NAME=VALUE, and this argument has no '=' (it is not shown, in case it is the value)",
      "for a value from a file use --secrets-dir",
    );
  const name = arg.slice(0, i);
  if (!NAME_RE.test(name))
    throw new UsageError(
      "--secret: the name must be letters, digits, _ . - (it becomes a file name on the volume)",
    );
  return { name, value: arg.slice(i + 1) };
}

/** The default keys: the user's ~/.ssh/id_*.pub. */
export async function defaultSshKeys(home = homedir()): Promise<string[]> {
  const dir = join(home, ".ssh");
  const names = await readdir(dir).catch(() => [] as string[]);
  return names
    .filter((n) => /^id_[a-z0-9_-]+\.pub$/.test(n))
    .sort()
    .map((n) => join(dir, n));
}

/**
 * KEY="value" with the escapes sh and systemd agree on inside double quotes: \ " $ ` get a
 * backslash; everything else, newlines included, stands for itself (neither sh nor
 * systemd's EnvironmentFile= turns \n into a newline). The key must be a shell variable
 * name: it is not quoted, so `A;reboot` or `$(...)` would run when the file is sourced.
 */
export function envLine(key: string, value: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key))
    throw new UsageError(
      `--secrets-env: ${JSON.stringify(key)} is not a shell variable name (letters, digits, _)`,
      "rename or unset that variable",
    );
  if (value.includes("\0"))
    throw new UsageError(`--secrets-env: the value of ${key} contains a NUL byte`);
  return `${key}="${value.replace(/[\\"$`]/g, (c) => `\\${c}`)}"`;
}

function prefixOf(p: string): string {
  const clean = p.replace(/_+$/, "");
  if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(clean))
    throw new UsageError(`--secrets-env ${p}: a prefix is letters, digits and _ (e.g. K3S)`);
  return clean;
}

export async function stageSecrets(input: SecretsInput, dir: string): Promise<StagedSecrets> {
  const files = new Map<string, string>(); // volume path -> where it came from (for clashes)
  const directories: string[] = [];
  const envFiles: StagedSecrets["envFiles"] = [];
  const warnings: string[] = [];
  const claim = (path: string, from: string) => {
    const prev = files.get(path);
    if (prev)
      throw new UsageError(
        `the secrets volume would get ${path} twice: from ${prev} and from ${from}`,
      );
    files.set(path, from);
  };
  const put = async (path: string, data: string | Buffer, from: string) => {
    claim(path, from);
    await writeFile(join(dir, path), data, { mode: 0o600 });
    await chmod(join(dir, path), 0o600);
  };

  // 1. --secrets-dir first: the explicit flags below may not collide with it.
  if (input.secretsDir) await copyTree(input.secretsDir, dir, "", files, directories);

  // 2. SSH keys.
  const keys: string[] = [];
  for (const file of input.sshKeys) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      throw new UsageError(`--ssh-key ${file}: ${describeError(err)}`);
    }
    const lines = text
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    if (lines.length === 0 || lines.some((l) => !/^(ssh-|ecdsa-|sk-)\S+ [A-Za-z0-9+/=]+/.test(l)))
      throw new UsageError(
        `--ssh-key ${file}: not an OpenSSH public key`,
        "pass the .pub file, never the private key",
      );
    keys.push(...lines);
  }
  if (keys.length > 0) {
    if (files.has("authorized_keys"))
      throw new UsageError(
        "the secrets volume would get authorized_keys twice: from --secrets-dir and from --ssh-key",
      );
    await put("authorized_keys", `${keys.join("\n")}\n`, "--ssh-key");
  } else if (!files.has("authorized_keys"))
    warnings.push(
      "no SSH public key (--ssh-key, or ~/.ssh/id_*.pub): only the keys in the hosted Ignition config can log in",
    );

  // 3. --secret NAME=VALUE.
  for (const s of input.secrets) {
    if (RESERVED.has(s.name) || /_env$/.test(s.name))
      throw new UsageError(
        `--secret ${s.name}: that name is the tool's own (authorized_keys, reproduce.sh, *_env)`,
      );
    await put(s.name, s.value, `--secret ${s.name}`);
  }

  // 4. --secrets-env PREFIX.
  const prefixes = [...new Set(input.envPrefixes.map(prefixOf))];
  for (const prefix of prefixes) {
    const vars = Object.keys(input.env)
      .filter((k) => k.startsWith(`${prefix}_`) && input.env[k] !== undefined)
      .sort();
    if (vars.length === 0) {
      warnings.push(`--secrets-env ${prefix}: no ${prefix}_* variables in the environment`);
      continue;
    }
    const file = `${prefix}_env`;
    await put(
      file,
      `${vars.map((k) => envLine(k, input.env[k] ?? "")).join("\n")}\n`,
      `--secrets-env ${prefix}`,
    );
    envFiles.push({ file, variables: vars });
  }

  // 5. The groups ephemeros' services expect, one line each when missing.
  for (const g of WELL_KNOWN_GROUPS) {
    if (!files.has(`${g.prefix}_env`))
      warnings.push(
        `no ${g.prefix}_* secrets (--secrets-env ${g.prefix}): ${g.what} will not be set up on this node`,
      );
  }
  return {
    files: [...files.keys()].sort(),
    directories: directories.sort(),
    envFiles,
    sshKeyCount: keys.length,
    warnings,
  };
}

/** Copy a directory: regular files 0600, directories 0700; anything else is refused. */
async function copyTree(
  src: string,
  dst: string,
  rel: string,
  files: Map<string, string>,
  directories: string[],
): Promise<void> {
  const from = join(src, rel);
  let names: string[];
  try {
    names = await readdir(from);
  } catch (err) {
    throw new UsageError(`--secrets-dir ${src}: ${describeError(err)}`);
  }
  for (const name of names.sort()) {
    const path = rel ? `${rel}/${name}` : name;
    // A reproduce.sh or lost+found from a stick's own volume (rebuilding from it) is not copied.
    if (!rel && (name === "reproduce.sh" || name === "lost+found")) continue;
    const st = await lstat(join(src, path));
    if (st.isDirectory()) {
      await mkdir(join(dst, path), { mode: 0o700 });
      await chmod(join(dst, path), 0o700);
      directories.push(path);
      await copyTree(src, dst, path, files, directories);
    } else if (st.isFile()) {
      files.set(path, `--secrets-dir ${relative(process.cwd(), src) || src}`);
      await copyFile(join(src, path), join(dst, path));
      await chmod(join(dst, path), 0o600);
    } else {
      throw new UsageError(
        `--secrets-dir: ${join(src, path)} is not a regular file or directory (links and devices are not copied)`,
      );
    }
  }
}

/** How much a staged directory holds: bytes of its regular files, and how many there are. */
export async function stagedSize(dir: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    bytes += (await stat(join(e.parentPath, e.name))).size;
    files++;
  }
  return { bytes, files };
}
