/**
 * Add our own Ignition fragments (e.g. a unit that restores the hybrid MBR, an autologin for
 * qemu-test) to the user's config without changing what the user's config means.
 *
 * Ignition's merge semantics (coreos/ignition docs/operator-notes.md "Config Merging", and
 * internal/exec/config_fetcher.go RenderConfig):
 *   - each `ignition.config.merge` entry is a *child*; children are fetched, rendered (their own
 *     merge/replace first, depth first) and merged into the parent in array order:
 *     `merged = Merge(merged, child)` for each child;
 *   - "when a child config is merged with a parent, generally the child config's values
 *     override the parent config's values"; list entries with the same key (file path, unit
 *     name, user name…) are merged field by field, the child's fields winning.
 * So a fragment added to the user's own merge list would override the user. Instead we wrap:
 *
 *   { "ignition": { "version": <user's version>,
 *                   "config": { "merge": [ fragment 1, …, fragment N, <user's config> ] } } }
 *
 * every entry a `data:;base64,` URL (the form butane emits; Ignition also accepts
 * `data:,<percent-encoded>`). The user's config comes last, so on any conflict the user's value
 * wins; its bytes are embedded unchanged, so its own `merge`/`replace` entries, timeouts, CAs
 * and proxy settings keep working exactly as before (Ignition applies the merged settings
 * before rendering each child).
 */
import { ProvisionError } from "../errors.js";
import { checkShapes, type IgnitionConfig, isObject } from "./load.js";

export function mergeFragments(user: IgnitionConfig, fragments: object[]): IgnitionConfig {
  if (fragments.length === 0) return user;
  const sources = fragments.map((f, i) =>
    dataUrl(JSON.stringify(fragmentWithVersion(f, i, user.version))),
  );
  sources.push(dataUrl(user.text));
  const json = {
    ignition: {
      version: user.version,
      config: { merge: sources.map((source) => ({ source })) },
    },
  };
  return {
    text: `${JSON.stringify(json)}\n`,
    json,
    version: user.version,
    origin: user.origin,
    warnings: user.warnings,
  };
}

/** `data:;base64,...`: a data URL with the default media type, as butane writes them. */
export function dataUrl(text: string): string {
  return `data:;base64,${Buffer.from(text, "utf8").toString("base64")}`;
}

/** A copy of the fragment with `ignition.version` set to the user's unless it has its own. */
function fragmentWithVersion(
  fragment: object,
  i: number,
  version: string,
): Record<string, unknown> {
  if (!isObject(fragment))
    throw new ProvisionError(`internal error: Ignition fragment ${i + 1} is not an object`);
  const copy: Record<string, unknown> = structuredClone(fragment);
  const ign = copy.ignition;
  if (ign === undefined) copy.ignition = { version };
  else if (isObject(ign)) {
    if (ign.version === undefined) ign.version = version;
  } else
    throw new ProvisionError(
      `internal error: Ignition fragment ${i + 1} has a non-object "ignition"`,
    );
  checkShapes(copy, `built-in Ignition fragment ${i + 1}`);
  return copy;
}
