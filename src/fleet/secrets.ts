/**
 * Secret values, read from their sources only when a command needs them: `env:VAR`,
 * `file:PATH` and `cmd:COMMAND` (run without a shell, e.g. `pass show k3s/token`). A value is
 * never printed: errors name the secret and its source, and a failing command's message
 * comes from its stderr only (its stdout would be the value).
 */
import { readFile } from "node:fs/promises";
import { describeError, UsageError } from "../errors.js";
import { lastLine, run } from "../exec/index.js";
import { formatPos } from "./inventory.js";
import type { Host, SecretSource } from "./types.js";

function describeSource(src: SecretSource): string {
  if (src.kind === "env") return `env:${src.name}`;
  if (src.kind === "file") return `file:${src.path}`;
  return `cmd:${src.argv.join(" ")}`;
}

/** One trailing newline is not part of a value (`pass show`, `echo x > file`). */
function chomp(s: string): string {
  return s.replace(/\r?\n$/, "");
}

export async function readSecret(
  name: string,
  src: SecretSource,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  const fail = (why: string) =>
    new UsageError(`${formatPos(src.at)}: secret ${name} (${describeSource(src)}): ${why}`);
  let value: string;
  if (src.kind === "env") {
    const v = env[src.name];
    if (v === undefined) throw fail(`the environment variable ${src.name} is not set`);
    value = v;
  } else if (src.kind === "file") {
    try {
      value = chomp(await readFile(src.path, "utf8"));
    } catch (err) {
      throw fail(`cannot read it: ${describeError(err)}`);
    }
  } else {
    const [cmd, ...args] = src.argv;
    if (!cmd) throw fail("no command");
    // allowFailure: the message is built here from stderr alone (stdout is the value).
    const r = await run(cmd, args, {
      allowFailure: true,
      env: env as Record<string, string>,
    }).catch((err: unknown) => {
      throw fail(describeError(err));
    });
    if (r.exitCode !== 0)
      throw fail(
        `the command failed (exit ${r.exitCode}): ${lastLine(r.stderr) || "no message on stderr"}`,
      );
    value = chomp(r.stdout);
  }
  if (value === "") throw fail("the value is empty");
  return value;
}

/** A reader of a host's secrets by name, each read at most once per run. */
export function secretReader(host: Host, env: NodeJS.ProcessEnv = process.env) {
  const cache = new Map<string, Promise<string>>();
  return (name: string): Promise<string> => {
    const src = host.secrets[name];
    if (!src)
      return Promise.reject(
        new UsageError(
          `${formatPos(host.at)}: host ${host.name} uses secret ${name}, which is not in its secrets`,
        ),
      );
    let p = cache.get(name);
    if (!p) {
      p = readSecret(name, src, env);
      cache.set(name, p);
    }
    return p;
  };
}
