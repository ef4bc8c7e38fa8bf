/**
 * `--host NAME` for flash, qemu-test and pxe-stick: the inventory's host gives the command's
 * defaults (os, stream/channel/release, arch, board, firmware, kernel arguments) and its
 * config, built now from its sources. A flag given on the command line wins, and says so in
 * one line; the config is built for the host as overridden (a --board rpi3 gets the
 * hybrid-MBR repair unit).
 */
import type { Command } from "commander";
import { UsageError } from "../errors.js";
import { type BuiltHost, buildHost } from "./build.js";
import { findInventory, formatPos, loadInventory } from "./inventory.js";
import type { Host, Inventory } from "./types.js";

/** Host fields that are also command options (the option's attribute name). */
const FIELDS = ["os", "stream", "channel", "release", "arch", "board", "firmware"] as const;

export interface UsedHost extends BuiltHost {
  inventory: Inventory;
}

export async function useHost(
  cmd: Command,
  o: Record<string, unknown>,
  opts: {
    /** "values" only where the config goes onto the target and nowhere else (flash). */
    secrets: "values" | "placeholder";
    warn: (line: string) => void;
    /** The option that takes kernel arguments to add (flash: appendKarg). */
    kargsOption?: string;
    signal?: AbortSignal;
  },
): Promise<UsedHost> {
  const inv = await loadInventory(await findInventory({ file: o.inventory as string | undefined }));
  const name = String(o.host);
  const found = inv.hosts.find((h) => h.name === name);
  if (!found)
    throw new UsageError(
      `--host ${name}: no such host in ${inv.file}`,
      `its hosts: ${inv.hosts.map((h) => h.name).join(", ") || "none"}`,
    );
  const host: Host = { ...found };
  const has = (k: string) => cmd.options.some((x) => x.attributeName() === k);
  for (const f of FIELDS) {
    if (!has(f)) continue;
    const mine = host[f];
    if (cmd.getOptionValueSource(f) === "cli") {
      if (mine !== undefined && o[f] !== mine)
        opts.warn(
          `--${f} ${String(o[f])} overrides ${name}'s ${f} ${mine} (${formatPos(host.fieldAt[f] ?? host.at)})`,
        );
      (host as unknown as Record<string, unknown>)[f] = o[f];
    } else if (mine !== undefined) {
      o[f] = mine;
    }
  }
  if (opts.kargsOption && host.kargs.length > 0)
    o[opts.kargsOption] = [...host.kargs, ...((o[opts.kargsOption] as string[] | undefined) ?? [])];
  const built = await buildHost(inv, host, { secrets: opts.secrets, signal: opts.signal });
  return { ...built, inventory: inv };
}
