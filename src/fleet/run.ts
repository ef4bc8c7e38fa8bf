/**
 * `provision fleet list|check|show|build|diff`: the inventory (provision.yaml) and the configs
 * built from it. Nothing here prints a secret value: configs are built with placeholders,
 * `check` reads every secret source and discards the value.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { describeError, EXIT, ProvisionError, UsageError } from "../errors.js";
import { type BuiltHost, buildHost, type SourceFile } from "./build.js";
import { flattenConfig } from "./flatten.js";
import { displayPath, findInventory, loadInventory } from "./inventory.js";
import { readSecret } from "./secrets.js";
import type { Host, Inventory } from "./types.js";

const MANIFEST = ".provision-fleet.json";

interface Manifest {
  version: 1;
  hosts: Record<string, { sha256: string; sources: SourceFile[] }>;
}

async function inventory(o: { inventory?: string }): Promise<Inventory> {
  return await loadInventory(await findInventory({ file: o.inventory }));
}

function pick(inv: Inventory, names: string[]): Host[] {
  if (names.length === 0) return inv.hosts;
  return names.map((n) => {
    const h = inv.hosts.find((x) => x.name === n);
    if (!h)
      throw new UsageError(
        `no host ${n} in ${inv.file}`,
        `its hosts: ${inv.hosts.map((x) => x.name).join(", ") || "none"}`,
      );
    return h;
  });
}

/** Which sources differ between two fingerprints (added, removed or changed). */
export function changedSources(before: SourceFile[], now: SourceFile[]): string[] {
  const old = new Map(before.map((s) => [s.path, s.sha256]));
  const cur = new Map(now.map((s) => [s.path, s.sha256]));
  const out: string[] = [];
  for (const [p, h] of cur) if (old.get(p) !== h) out.push(p);
  for (const p of old.keys()) if (!cur.has(p)) out.push(p);
  return out.sort();
}

async function readManifest(dir: string): Promise<Manifest | undefined> {
  try {
    const m = JSON.parse(await readFile(join(dir, MANIFEST), "utf8")) as Manifest;
    return m?.version === 1 && m.hosts ? m : undefined;
  } catch {
    return undefined;
  }
}

/** Build every host; a host that does not build is a problem line, the others go on. */
async function buildAll(inv: Inventory, hosts: Host[]) {
  const built: BuiltHost[] = [];
  const problems: { host: string; message: string; hint?: string }[] = [];
  for (const h of hosts) {
    try {
      built.push(await buildHost(inv, h));
    } catch (err) {
      if (!(err instanceof ProvisionError)) throw err;
      problems.push({ host: h.name, message: err.message, hint: err.hint });
    }
  }
  return { built, problems };
}

const out = (s: string) => process.stdout.write(`${s}\n`);

/** Columns padded to their widest cell, two spaces apart, on stdout. */
export function printTable(head: string[], rows: string[][]): void {
  const widths = head.map((_, i) => Math.max(...[head, ...rows].map((r) => (r[i] ?? "").length)));
  for (const r of [head, ...rows])
    out(
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    );
}
const err = (s: string) => process.stderr.write(`${s}\n`);

export async function fleetList(o: { inventory?: string; json?: boolean }): Promise<void> {
  const inv = await inventory(o);
  const { built, problems } = await buildAll(inv, inv.hosts);
  const fp = new Map(built.map((b) => [b.host.name, b.fingerprint]));
  if (o.json) {
    out(
      JSON.stringify(
        {
          inventory: inv.file,
          hosts: inv.hosts.map((h) => ({
            name: h.name,
            os: h.os,
            arch: h.arch ?? null,
            board: h.board,
            boot: h.boot,
            macs: h.macs,
            fingerprint: fp.get(h.name)?.sha256 ?? null,
            error: problems.find((p) => p.host === h.name)?.message,
          })),
        },
        null,
        2,
      ),
    );
  } else {
    const rows = inv.hosts.map((h) => [
      h.name,
      `${h.os}/${h.arch ?? "host-arch"}`,
      h.board,
      h.boot,
      h.macs.join(",") || "-",
      fp.get(h.name)?.sha256.slice(0, 12) ?? "does-not-build",
    ]);
    printTable(["HOST", "OS/ARCH", "BOARD", "BOOT", "MACS", "FINGERPRINT"], rows);
    for (const p of problems) err(`✖ ${p.host}: ${p.message}`);
  }
  process.exitCode = problems.length > 0 ? EXIT.FAILED : EXIT.OK;
}

export async function fleetCheck(
  names: string[],
  o: { inventory?: string; json?: boolean },
): Promise<void> {
  const inv = await inventory(o);
  const hosts = pick(inv, names);
  const { built, problems } = await buildAll(inv, hosts);
  for (const h of hosts) {
    for (const [name, src] of Object.entries(h.secrets)) {
      try {
        await readSecret(name, src); // the value is dropped here
      } catch (e) {
        problems.push({ host: h.name, message: describeError(e) });
      }
    }
  }
  if (o.json) {
    out(
      JSON.stringify(
        {
          ok: problems.length === 0,
          hosts: hosts.map((h) => ({
            name: h.name,
            fingerprint: built.find((b) => b.host === h)?.fingerprint.sha256 ?? null,
            problems: problems.filter((p) => p.host === h.name).map((p) => p.message),
          })),
        },
        null,
        2,
      ),
    );
  }
  for (const h of hosts) {
    const mine = problems.filter((p) => p.host === h.name);
    const b = built.find((x) => x.host === h);
    if (mine.length === 0)
      err(
        `✔ ${h.name}: config builds and validates (${b?.fingerprint.sha256.slice(0, 12)}), ${Object.keys(h.secrets).length} secret(s) readable`,
      );
    for (const p of mine) err(`✖ ${h.name}: ${p.message}`);
  }
  process.exitCode = problems.length > 0 ? EXIT.FAILED : EXIT.OK;
}

export async function fleetShow(
  name: string,
  o: { inventory?: string; flatten?: boolean; json?: boolean },
): Promise<void> {
  const inv = await inventory(o);
  const [h] = pick(inv, [name]);
  const b = await buildHost(inv, h as Host);
  const config = o.flatten ? flattenConfig(b.config.json) : b.config.json;
  if (o.json) out(JSON.stringify({ host: name, fingerprint: b.fingerprint, config }, null, 2));
  else out(JSON.stringify(config, null, 2));
  err(
    `${name}: fingerprint ${b.fingerprint.sha256}; ${b.fingerprint.sources.length} source file(s)`,
  );
}

export async function fleetBuild(o: {
  inventory?: string;
  out: string;
  json?: boolean;
}): Promise<void> {
  const inv = await inventory(o);
  const { built, problems } = await buildAll(inv, inv.hosts);
  await mkdir(o.out, { recursive: true });
  const before = (await readManifest(o.out)) ?? { version: 1 as const, hosts: {} };
  const manifest: Manifest = { version: 1, hosts: { ...before.hosts } };
  const report: Record<
    string,
    { file: string; written: boolean; sha256: string; changed: string[] }
  > = {};
  for (const b of built) {
    const name = b.host.name;
    if (b.secretsInConfig.length > 0) {
      problems.push({
        host: name,
        message: `its config holds secret values (${b.secretsInConfig.join(", ")}); fleet build writes configs to publish, which never hold secrets`,
        hint: `flash it with provision flash --host ${name}, which embeds them on the card only`,
      });
      continue;
    }
    const file = join(o.out, `${name}.ign`);
    const current = await readFile(file, "utf8").catch(() => undefined);
    const written = current !== b.config.text;
    if (written) {
      await writeFile(`${file}.tmp`, b.config.text, { mode: 0o644 });
      await rename(`${file}.tmp`, file);
    }
    const prev = before.hosts[name];
    const changed =
      current === undefined ? [] : prev ? changedSources(prev.sources, b.fingerprint.sources) : [];
    manifest.hosts[name] = { sha256: b.fingerprint.sha256, sources: b.fingerprint.sources };
    report[name] = { file, written, sha256: b.fingerprint.sha256, changed };
    if (!o.json) {
      if (current === undefined) err(`✔ ${name}: wrote ${displayPath(file)} (new)`);
      else if (written)
        err(
          `✔ ${name}: rewrote ${displayPath(file)}${changed.length ? ` (changed: ${changed.map((p) => displayPath(p)).join(", ")})` : ""}`,
        );
      else err(`  ${name}: ${displayPath(file)} is up to date`);
    }
  }
  await writeFile(join(o.out, `${MANIFEST}.tmp`), `${JSON.stringify(manifest, null, 2)}\n`);
  await rename(join(o.out, `${MANIFEST}.tmp`), join(o.out, MANIFEST));
  if (o.json) out(JSON.stringify({ out: o.out, hosts: report, problems }, null, 2));
  for (const p of problems) {
    err(`✖ ${p.host}: ${p.message}`);
    if (p.hint) err(`  hint: ${p.hint}`);
  }
  process.exitCode = problems.length > 0 ? EXIT.FAILED : EXIT.OK;
}

export async function fleetDiff(
  name: string,
  o: { inventory?: string; against: string },
): Promise<void> {
  const inv = await inventory(o);
  const [h] = pick(inv, [name]);
  const b = await buildHost(inv, h as Host);
  const remote = /^https?:\/\//i.test(o.against);
  let text: string;
  try {
    text = remote
      ? (await (await import("../http/index.js")).getBytes(o.against)).toString("utf8")
      : await readFile(o.against, "utf8");
  } catch (e) {
    if (e instanceof ProvisionError) throw e;
    throw new UsageError(`cannot read ${o.against}: ${describeError(e)}`);
  }
  if (text === b.config.text) {
    err(`✔ ${o.against} is the current config of ${name} (${b.fingerprint.sha256.slice(0, 12)})`);
    process.exitCode = EXIT.OK;
    return;
  }
  err(`✖ ${o.against} is not the current config of ${name}`);
  const m = remote ? undefined : await readManifest(dirname(o.against));
  const rec = m?.hosts[basename(o.against, ".ign")];
  if (rec) {
    const changed = changedSources(rec.sources, b.fingerprint.sources);
    err(
      changed.length
        ? `  changed since it was built: ${changed.map((p) => displayPath(p)).join(", ")}`
        : "  its sources are unchanged: the file itself was edited",
    );
  }
  process.exitCode = EXIT.FAILED;
}
