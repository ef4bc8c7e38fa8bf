/**
 * `provision serve` and `provision fleet status`: flags, the start-up lines, a clean stop on
 * SIGINT/SIGTERM (stop accepting, let running responses finish, save the state, exit 0).
 */
import { randomBytes } from "node:crypto";
import { homedir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { UsageError } from "../errors.js";
import { interruptSignal } from "../lifecycle.js";
import { collect } from "../options.js";

export function stateFile(): string {
  const base = process.env.XDG_STATE_HOME || join(homedir(), ".local", "state");
  return join(base, "provision", "serve.json");
}

function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s.trim());
  const port = Number(m?.[3]);
  if (!m || port < 0 || port > 65535)
    throw new UsageError(
      `--listen ${s}: expected ADDRESS:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080`,
    );
  return { host: (m[1] ?? m[2]) as string, port };
}

export function registerServe(program: Command): void {
  program
    .command("serve")
    .description(
      "netboot the machines of provision.yaml: iPXE scripts, configs built on each request, assets from the verified cache",
    )
    .option(
      "--listen <addr:port>",
      "where to listen; 0.0.0.0:8080 to serve the LAN",
      "127.0.0.1:8080",
    )
    .option(
      "--token <token>",
      "the access token every URL carries (default: a new random one, printed)",
    )
    .option(
      "--inventory <file>",
      "the inventory (default: $PROVISION_INVENTORY, else provision.yaml here or above)",
    )
    .option("--json", "log requests as JSON lines")
    .option("--offline", "assets and metadata from the cache only")
    .option("--prefetch", "download and verify every pxe host's boot files before listening")
    .option("--keyring <file>", "GPG keyring to check asset signatures (repeatable)", collect)
    .option("--flatcar-base-url <url>", "replaces https://<channel>.release.flatcar-linux.net")
    .option(
      "--stream-base-url <url>",
      "FCOS stream metadata host",
      "https://builds.coreos.fedoraproject.org",
    )
    .addHelpText(
      "after",
      `
Point iPXE at http://ADDRESS:PORT/boot.ipxe?token=TOKEN (provision pxe-stick --fleet URL
writes a stick that does). Each machine is matched by MAC or SMBIOS UUID; an unknown one is
told so, retried every 30 s and listed by \`provision fleet status\`. Configs are built on
each request from the sources as they are, and never hold secret values.`,
    )
    .action(async (o: Record<string, unknown>) => {
      const { host, port } = parseListen(String(o.listen));
      const { findInventory, loadInventory } = await import("../fleet/inventory.js");
      const { startServe } = await import("./index.js");
      const file = await findInventory({ file: o.inventory as string | undefined });
      const inv = await loadInventory(file); // bad input fails now, not on the first boot
      const token = (o.token as string | undefined) ?? randomBytes(12).toString("base64url");
      if (!/^[A-Za-z0-9._~-]{8,}$/.test(token))
        throw new UsageError("--token: at least 8 characters of A-Z a-z 0-9 . _ ~ -");
      const log = (l: string) => process.stdout.write(`${l}\n`);
      const server = await startServe({
        inventoryFile: file,
        host,
        port,
        token,
        stateFile: stateFile(),
        json: Boolean(o.json),
        log,
        prefetch: Boolean(o.prefetch),
        info: (l) => process.stderr.write(`provision serve: ${l}\n`),
        source: {
          flatcarBaseUrl: o.flatcarBaseUrl as string | undefined,
          streamBaseUrl: o.streamBaseUrl as string,
          offline: Boolean(o.offline),
          keyrings: o.keyring as string[] | undefined,
        },
      });
      process.stderr.write(
        `provision serve: ${inv.hosts.length} host(s) from ${file} on ${server.url}\n` +
          `  iPXE: chain ${server.url}/boot.ipxe?token=${o.token ? "<your token>" : token}\n` +
          `  status: ${server.url}/status?token=... (or provision fleet status)\n`,
      );
      const signal = interruptSignal({
        onFirst: (sig) => process.stderr.write(`provision serve: ${sig}: stopping\n`),
      });
      await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
      await server.close();
      process.stderr.write("provision serve: stopped; state saved\n");
      process.exitCode = 0;
    });
}

/** `provision fleet status`: what each machine last fetched, from serve's saved state. */
export function registerFleetStatus(fleet: Command): void {
  fleet
    .command("status")
    .description(
      "what each machine last fetched from provision serve, whether it is stale, and unknown MACs",
    )
    .option("--inventory <file>", "the inventory (default: provision.yaml here or above)")
    .option("--json", "machine-readable output")
    .action(async (o: { inventory?: string; json?: boolean }) => {
      const { findInventory, loadInventory } = await import("../fleet/inventory.js");
      const { buildHost } = await import("../fleet/build.js");
      const { printTable } = await import("../fleet/run.js");
      const { loadState, statusOf } = await import("./index.js");
      const inv = await loadInventory(await findInventory({ file: o.inventory }));
      const state = await loadState(stateFile());
      const st = await statusOf(inv, state, (i, h) => buildHost(i, h));
      if (o.json) {
        process.stdout.write(`${JSON.stringify(st, null, 2)}\n`);
        return;
      }
      const short = (s: string | null) => (s ? s.slice(0, 12) : "-");
      printTable(
        ["HOST", "LAST-IGNITION", "CLIENT", "SERVED", "CURRENT", "STALE"],
        Object.entries(st.hosts).map(([name, r]) => [
          name,
          r.lastIgnition ?? "never",
          r.client ?? "-",
          short(r.servedFingerprint),
          short(r.currentFingerprint),
          r.stale ? "yes" : "no",
        ]),
      );
      for (const u of state.unknown) {
        process.stdout.write(
          `\nunknown machine ${u.mac ?? u.uuid} (seen ${u.requests}x, last ${u.lastSeen} from ${u.client}); to add it:\n` +
            `  ${(u.hostname || "new-host").toLowerCase().replace(/[^a-z0-9-]/g, "-")}:\n` +
            `    boot: pxe\n` +
            (u.arch
              ? `    arch: ${u.arch === "arm64" ? "aarch64" : u.arch === "x86_64" || u.arch === "i386" ? "x86_64" : u.arch}\n`
              : "") +
            (u.mac ? `    macs: ["${u.mac}"]\n` : "") +
            (u.uuid ? `    uuid: ${u.uuid}\n` : ""),
        );
      }
    });
}
