// Property tests for the secrets env writer (src/ipxe/secrets.ts envLine, stageSecrets'
// PREFIX_env files, parseSecretArg): whatever the values, /bin/sh sourcing the written
// lines gives back exactly those values; names that are not shell variables are UsageErrors.
// One sh process checks a whole batch of generated values.
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import { envLine, parseSecretArg, stageSecrets } from "../../src/ipxe/secrets.js";
import { outcomeSync, params, timeoutFor } from "./support.js";

const run = promisify(execFile);

let dir: string;
let n = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "prop-secrets-"));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const SH_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Stands for a secret value in the "never shown" checks: in no message template. */
const MARK = "S3CR3T\u00a7";

/** Values as the environment can hold them: any Unicode text without NUL. */
const valueArb = fc
  .oneof(
    fc.string({ unit: "binary" }),
    fc
      .array(
        fc.oneof(
          fc.constantFrom(
            "$",
            '"',
            "\\",
            "`",
            "\n",
            "\r",
            "\t",
            "'",
            "$(id)",
            "${HOME}",
            "$1",
            "\\n",
            "\\\n",
            " ",
            "!",
            "#",
            "~",
            "*",
            "?",
            "[a]",
            ";",
            "&",
            "|",
            "\u00e9",
            "\u2713",
            "\u{1f600}",
            "\u2028",
            "\u0081",
            "\u0088",
            "\u00ff",
            "\x01",
            "\x7f",
            "=",
            "%s",
            "-",
          ),
          fc.string({ unit: "binary", maxLength: 3 }),
        ),
        { maxLength: 16 },
      )
      .map((parts) => parts.join("")),
  )
  // No lone surrogates: UTF-8 cannot carry them (and an environment cannot either).
  .filter((v) => !v.includes("\u0000") && Buffer.from(v, "utf8").toString("utf8") === v);

/** `. file; printf '%s\0' "$K1" "$K2" ...` in one /bin/sh: the values it reads back. */
async function sourceWithSh(file: string, keys: readonly string[]): Promise<string[]> {
  const script = `. "${file}" && printf '%s\\0' ${keys.map((k) => `"$${k}"`).join(" ")}`;
  const { stdout } = await run("/bin/sh", ["-c", script], {
    env: { PATH: "/usr/bin:/bin", LC_ALL: "C" },
    encoding: "buffer",
    maxBuffer: 64 * 1024 * 1024,
  });
  const parts = (stdout as Buffer).toString("utf8").split("\u0000");
  expect(parts.pop()).toBe("");
  return parts;
}

describe("property: envLine / PREFIX_env files sourced by sh", () => {
  it(
    'a batch of arbitrary values ($ " \\ ` newlines, CR, unicode) reads back exactly in one sh',
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.record({ suffix: fc.stringMatching(/^[A-Za-z0-9_]{0,12}$/), value: valueArb }),
            { minLength: 1, maxLength: 60 },
          ),
          async (batch) => {
            // P<i>_: unique, and never a variable sh itself uses (PATH, IFS, PS1...).
            const keys = batch.map((b, i) => `P${i}_${b.suffix}`);
            const lines = batch.map((b, i) => envLine(keys[i] as string, b.value));
            lines.forEach((l, i) => expect(l.startsWith(`${keys[i]}="`)).toBe(true));
            const file = join(dir, `batch-${n++ % 4}_env`);
            await writeFile(file, `${lines.join("\n")}\n`);
            expect(await sourceWithSh(file, keys)).toEqual(batch.map((b) => b.value));
          },
        ),
        params(0.3),
      );
    },
    timeoutFor(0.3, 200),
  );

  it(
    'names: a shell variable name gives KEY="...", anything else a UsageError that does not show the value',
    () => {
      const keyArb = fc.oneof(
        fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,10}$/),
        fc.constantFrom(
          "",
          "1A",
          "A-B",
          "A B",
          "A;reboot",
          "$(id)",
          "A=B",
          "K3S_\n",
          "Ä",
          "A.B",
          "`x`",
        ),
        fc.string({ unit: "binary", maxLength: 12 }),
      );
      fc.assert(
        fc.property(keyArb, valueArb, (key, v) => {
          const value = `${MARK}${v}`;
          const r = outcomeSync(() => envLine(key, value), UsageError);
          expect(r.ok).toBe(SH_NAME.test(key));
          if (r.ok) expect(r.value.startsWith(`${key}="`)).toBe(true);
          else expect(`${r.error.message} ${r.error.hint ?? ""}`).not.toContain(MARK);
        }),
        params(5),
      );
    },
    timeoutFor(5, 5),
  );

  it(
    "stageSecrets --secrets-env: the PREFIX_env file sources back to the environment, or a UsageError for a bad name",
    async () => {
      const prefixArb = fc.constantFrom("K3S", "K3S_", "HEARTBEAT", "A");
      await fc.assert(
        fc.asyncProperty(
          prefixArb,
          fc.array(
            fc.record({
              suffix: fc.oneof(
                { weight: 4, arbitrary: fc.stringMatching(/^[A-Za-z0-9_]{1,10}$/) },
                fc
                  .string({ unit: "binary", minLength: 1, maxLength: 6 })
                  .filter((s) => !s.includes("=") && !s.includes("\u0000")),
              ),
              value: valueArb,
            }),
            { minLength: 1, maxLength: 12 },
          ),
          async (prefix, vars) => {
            const clean = prefix.replace(/_+$/, "");
            const env: NodeJS.ProcessEnv = { PATH: "/bin", OTHER_X: "no" };
            for (const v of vars) env[`${clean}_${v.suffix}`] = v.value;
            const out = join(dir, `stage-${n++}`);
            await mkdir(out, { mode: 0o700 });
            const input = { sshKeys: [], secrets: [], envPrefixes: [prefix], env };
            const names = Object.keys(env)
              .filter((k) => k.startsWith(`${clean}_`))
              .sort();
            const allValid = names.every((k) => SH_NAME.test(k));
            try {
              const staged = await stageSecrets(input, out);
              expect(allValid).toBe(true);
              expect(staged.envFiles).toEqual([{ file: `${clean}_env`, variables: names }]);
              const file = join(out, `${clean}_env`);
              const text = await readFile(file, "utf8");
              expect(text.endsWith("\n")).toBe(true);
              expect(await sourceWithSh(file, names)).toEqual(names.map((k) => env[k]));
            } catch (err) {
              if (!(err instanceof UsageError)) throw err;
              expect(allValid).toBe(false);
              expect(err.message).not.toContain("\n");
            } finally {
              await rm(out, { recursive: true, force: true });
            }
          },
        ),
        params(0.3),
      );
    },
    timeoutFor(0.3, 200),
  );

  it(
    "parseSecretArg: NAME=VALUE splits at the first '=', a bad name or no '=' is a UsageError that never shows the value",
    () => {
      // MARK stands for a value: it may be in a rejected argument, never in the error.
      const argArb = fc.oneof(
        fc.string({ unit: "binary" }).map((v) => `${MARK}${v.replaceAll("=", "")}`),
        fc
          .tuple(fc.string({ unit: "binary" }), fc.string({ unit: "binary" }))
          .map(([k, v]) => `${k.replaceAll(MARK, "")}=${MARK}${v}`),
        fc
          .tuple(
            fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,10}$/),
            fc.string({ unit: "binary" }),
          )
          .map(([k, v]) => `${k}=${v}`),
        fc.string({ unit: "binary" }),
      );
      fc.assert(
        fc.property(argArb, (arg) => {
          const r = outcomeSync(() => parseSecretArg(arg), UsageError);
          if (r.ok) {
            expect(`${r.value.name}=${r.value.value}`).toBe(arg);
            expect(r.value.name).toMatch(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/);
          } else if (arg.includes(MARK)) {
            expect(`${r.error.message} ${r.error.hint ?? ""}`).not.toContain(MARK);
          }
        }),
        params(5),
      );
    },
    timeoutFor(5, 5),
  );
});
