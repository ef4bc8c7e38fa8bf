/**
 * The image-source flags every command that takes an OS image shares (flash, qemu-test),
 * defined once, and the ImageRequest fields they map to.
 */
import type { Command } from "commander";
import { collect, durationOption } from "../options.js";
import type { ImageRequest } from "./index.js";

export { collect };

/** Which release: FCOS stream, Flatcar channel and release, and the hosts they come from. */
export function addReleaseOptions(cmd: Command): Command {
  return cmd
    .option("--stream <stream>", "FCOS stream: stable, testing, next", "stable")
    .option("--channel <channel>", "Flatcar channel: stable, beta, alpha", "stable")
    .option("--release <release>", "Flatcar release: current or X.Y.Z", "current")
    .option(
      "--stream-base-url <url>",
      "FCOS stream metadata host",
      "https://builds.coreos.fedoraproject.org",
    )
    .option("--flatcar-base-url <url>", "replaces https://<channel>.release.flatcar-linux.net")
    .option("--offline", "use only the cache; never touch the network")
    .option(
      "--net-timeout <duration>",
      "give up on a server that sends nothing for this long (30, 90s, 2m)",
      "30s",
    );
}

export function addImageSourceOptions(cmd: Command, imageUrlHelp: string): Command {
  return addReleaseOptions(cmd)
    .option("--image-url <url|path>", imageUrlHelp)
    .option("--sha256 <hex>", "expected sha256 of the --image-url file")
    .option(
      "--keyring <file>",
      "GPG keyring/public key to check the image signature (repeatable)",
      collect,
    )
    .option("--require-signature", "fail unless the image signature was verified");
}

export interface ImageSourceOptions {
  request: Omit<ImageRequest, "os" | "arch" | "sector4k">;
  offline: boolean;
  keyrings?: string[];
  requireSignature: boolean;
}

export function imageSourceFrom(o: Record<string, unknown>): ImageSourceOptions {
  return {
    request: {
      stream: o.stream as string,
      channel: o.channel as string,
      release: o.release as string,
      imageUrl: o.imageUrl as string | undefined,
      sha256: o.sha256 as string | undefined,
      streamBaseUrl: o.streamBaseUrl as string,
      flatcarBaseUrl: o.flatcarBaseUrl as string | undefined,
    },
    offline: Boolean(o.offline),
    keyrings: o.keyring as string[] | undefined,
    requireSignature: Boolean(o.requireSignature),
  };
}

/**
 * For a program whose commands take --net-timeout: apply it before the action runs (the
 * HTTP module is loaded only when the value is not the default).
 */
export function applyNetTimeout(program: Command): void {
  program.hook("preAction", async (_root, cmd) => {
    const ms = durationOption(cmd.opts().netTimeout, "--net-timeout");
    if (ms !== undefined && ms !== 30_000) (await import("../http/index.js")).setNetTimeout(ms);
  });
}
