/**
 * The image-source flags every command that takes an OS image shares (flash, qemu-test),
 * defined once, and the ImageRequest fields they map to.
 */
import { type Command, Option } from "commander";
import { completeWith } from "../completion/hints.js";
import { collect, durationOption } from "../options.js";
import type { ImageRequest } from "./index.js";
import { FCOS_STREAMS, FLATCAR_CHANNELS } from "./names.js";

export { collect };

/** Which release: FCOS stream, Flatcar channel and release, and the hosts they come from. */
export function addReleaseOptions(cmd: Command): Command {
  // Suggested to shell completion, not enforced here: the resolver checks the value and
  // names the ones there are (src/source/index.ts).
  const suggest = (flags: string, description: string, value: string, values: readonly string[]) =>
    completeWith(new Option(flags, description).default(value), values);
  return cmd
    .addOption(
      suggest("--stream <stream>", "FCOS stream: stable, testing, next", "stable", FCOS_STREAMS),
    )
    .addOption(
      suggest(
        "--channel <channel>",
        "Flatcar channel: stable, beta, alpha",
        "stable",
        FLATCAR_CHANNELS,
      ),
    )
    .addOption(
      suggest("--release <release>", "Flatcar release: current or X.Y.Z", "current", ["current"]),
    )
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

const FLAG: Record<string, string> = {
  stream: "--stream",
  channel: "--channel",
  release: "--release",
  streamBaseUrl: "--stream-base-url",
  flatcarBaseUrl: "--flatcar-base-url",
  imageUrl: "--image-url",
  sha256: "--sha256",
};

/**
 * Flags of the image source that cannot go together are an error naming both, never
 * silently ignored: a Flatcar run given an FCOS stream, an --image-url given a stream, a
 * --sha256 pin with stream metadata (the metadata's own checksum would win).
 */
export function checkSourceFlags(cmd: Command): void {
  const given = (k: string) => cmd.getOptionValueSource(k) === "cli";
  const has = (k: string) => cmd.options.some((o) => o.attributeName() === k);
  const clash = (a: string, b: string, why: string) =>
    cmd.error(`error: ${a} and ${b} cannot go together: ${why}`, {
      code: "commander.conflictingOption",
    });
  const os = cmd.opts().os as string | undefined;
  const osGiven = given("os") ? `--os ${os}` : `--os ${os} (the default)`;
  if (has("imageUrl") && given("imageUrl")) {
    for (const k of ["stream", "channel", "release", "streamBaseUrl", "flatcarBaseUrl"])
      if (given(k)) clash("--image-url", FLAG[k] as string, "the URL is the image; drop one");
  }
  if (has("sha256") && given("sha256") && !given("imageUrl"))
    clash(
      "--sha256",
      os === "flatcar" ? "--channel/--release" : "--stream",
      "--sha256 pins an --image-url; stream and channel images are checked against their own published checksum and signature",
    );
  if (os === "flatcar") {
    for (const k of ["stream", "streamBaseUrl"])
      if (given(k))
        clash(osGiven, FLAG[k] as string, "Flatcar has channels: use --channel and --release");
  } else if (os === "fcos") {
    for (const k of ["channel", "release", "flatcarBaseUrl"])
      if (given(k))
        clash(osGiven, FLAG[k] as string, "FCOS has streams: use --stream (or pass --os flatcar)");
  }
}

/**
 * For a program whose commands take the release flags: check them (checkSourceFlags) and
 * apply --net-timeout before the action runs (the HTTP module is loaded only when the value
 * is not the default).
 */
export function applySourceOptions(program: Command): void {
  program.hook("preAction", async (_root, cmd) => {
    if (cmd.options.some((o) => o.attributeName() === "stream")) checkSourceFlags(cmd);
    const ms = durationOption(cmd.opts().netTimeout, "--net-timeout");
    if (ms !== undefined && ms !== 30_000) (await import("../http/index.js")).setNetTimeout(ms);
  });
}
