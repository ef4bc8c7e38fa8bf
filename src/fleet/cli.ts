/**
 * `provision fleet`: its subcommands and flags. The runs are in ./run.ts (loaded when a
 * subcommand runs).
 */
import type { Command } from "commander";

export function registerFleet(program: Command): Command {
  const fleet = program
    .command("fleet")
    .description("the machines in provision.yaml and the Ignition configs built from it");
  const inventoryOption = (c: Command) =>
    c.option(
      "--inventory <file>",
      "the inventory (default: $PROVISION_INVENTORY, else provision.yaml here or in a parent)",
    );

  inventoryOption(fleet.command("list"))
    .description("hosts, board/os/arch, boot mode, MACs and the fingerprint of each config")
    .option("--json", "machine-readable output")
    .action(async (o: { inventory?: string; json?: boolean }) => {
      const { fleetList } = await import("./run.js");
      await fleetList(o);
    });

  inventoryOption(fleet.command("check"))
    .description(
      "build and validate every config and read every secret source (values discarded); report all problems",
    )
    .argument("[hosts...]", "only these hosts")
    .option("--json", "machine-readable output")
    .action(async (names: string[], o: { inventory?: string; json?: boolean }) => {
      const { fleetCheck } = await import("./run.js");
      await fleetCheck(names, o);
    });

  inventoryOption(fleet.command("show"))
    .description("print a host's built Ignition config (secret values masked)")
    .argument("<host>", "host name")
    .option("--flatten", "merge the parts into one plain config, to read what the machine applies")
    .option("--json", "with the fingerprint and its sources: {host, fingerprint, config}")
    .action(async (name: string, o: { inventory?: string; flatten?: boolean; json?: boolean }) => {
      const { fleetShow } = await import("./run.js");
      await fleetShow(name, o);
    });

  inventoryOption(fleet.command("build"))
    .description(
      "write HOST.ign for every host into DIR, rewriting only what changed, and say which sources changed",
    )
    .requiredOption("--out <dir>", "directory to write the configs into")
    .option("--json", "machine-readable output")
    .action(async (o: { inventory?: string; out: string; json?: boolean }) => {
      const { fleetBuild } = await import("./run.js");
      await fleetBuild(o);
    });

  inventoryOption(fleet.command("diff"))
    .description("is this published or embedded config the current one? exit 0 identical, 1 not")
    .argument("<host>", "host name")
    .requiredOption("--against <file|url>", "the config to compare (a file, or an http(s) URL)")
    .action(async (name: string, o: { inventory?: string; against: string }) => {
      const { fleetDiff } = await import("./run.js");
      await fleetDiff(name, o);
    });
  return fleet;
}
