/**
 * Where the image comes from. Every kind of source (FCOS stream metadata, a Flatcar
 * channel, a URL or local path) resolves to the same ResolvedImage: an artifact to fetch
 * plus a name for messages. Nothing after this cares which kind it was.
 */
import { arch as hostArch } from "node:os";
import type { Artifact } from "../cache/index.js";
import { fetchMetadata } from "../cache/index.js";
import { UsageError } from "../errors.js";
import type { Reporter } from "../progress/index.js";
import { FCOS_STREAMS, FLATCAR_CHANNELS } from "./names.js";

export type OsName = "fcos" | "flatcar";
export type Arch = "x86_64" | "aarch64";

export interface ImageRequest {
  os: OsName;
  arch?: Arch;
  /** FCOS stream: stable | testing | next. */
  stream?: string;
  /** Flatcar channel: stable | beta | alpha. */
  channel?: string;
  /** Flatcar release: "current" or X.Y.Z. */
  release?: string;
  /** An explicit image: http(s) URL or local path. Overrides stream/channel. */
  imageUrl?: string;
  sha256?: string;
  /** FCOS: 4k.raw.xz for disks with 4096-byte sectors. */
  sector4k?: boolean;
  streamBaseUrl?: string;
  flatcarBaseUrl?: string;
}

export interface ResolvedImage extends Artifact {
  /** For messages: "Fedora CoreOS stable 40.20240101.3.0 aarch64". */
  description: string;
  os: OsName;
  arch: Arch;
  release?: string;
  /** sha256 of the decompressed image, when the publisher gives it. */
  uncompressedSha256?: string;
}

export { FCOS_STREAMS, FLATCAR_CHANNELS };

const DEFAULT_STREAM_BASE = "https://builds.coreos.fedoraproject.org";

export function defaultArch(): Arch {
  return hostArch() === "arm64" ? "aarch64" : "x86_64";
}

export async function resolveImage(
  req: ImageRequest,
  opts: { offline?: boolean; reporter?: Reporter; signal?: AbortSignal } = {},
): Promise<ResolvedImage> {
  const arch = req.arch ?? defaultArch();
  if (req.imageUrl) {
    if (req.sha256 && !/^[0-9a-f]{64}$/i.test(req.sha256)) {
      throw new UsageError(`--sha256 must be 64 hex digits, got ${JSON.stringify(req.sha256)}`);
    }
    return { url: req.imageUrl, sha256: req.sha256, description: req.imageUrl, os: req.os, arch };
  }
  if (req.os === "flatcar") return await resolveFlatcar(req, arch, opts);
  return await resolveFcos(req, arch, opts);
}

/** The FCOS stream metadata document (cached like every metadata fetch). */
async function fetchStream(
  req: Pick<ImageRequest, "stream" | "streamBaseUrl">,
  opts: { offline?: boolean; reporter?: Reporter; signal?: AbortSignal },
): Promise<{ stream: string; url: string; doc: unknown }> {
  const stream = req.stream ?? "stable";
  if (!(FCOS_STREAMS as readonly string[]).includes(stream))
    throw new UsageError(
      `unknown FCOS stream ${JSON.stringify(stream)}`,
      `use one of: ${FCOS_STREAMS.join(", ")}`,
    );
  const base = (req.streamBaseUrl ?? DEFAULT_STREAM_BASE).replace(/\/+$/, "");
  const url = `${base}/streams/${stream}.json`;
  const text = await fetchMetadata(url, opts);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new UsageError(`${url} is not valid JSON; is --stream-base-url right?`);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc))
    throw new UsageError(
      `${url} is not FCOS stream metadata (not a JSON object); is --stream-base-url right?`,
    );
  return { stream, url, doc };
}

/** A string field of the stream metadata: undefined when absent, else it must be a string. */
function metaString(v: unknown, what: string, url: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string")
    throw new UsageError(
      `${url}: ${what} is ${Array.isArray(v) ? "an array" : typeof v === "object" ? "an object" : `a ${typeof v}`}, not a string`,
    );
  return v;
}

async function resolveFcos(
  req: ImageRequest,
  arch: Arch,
  opts: { offline?: boolean; reporter?: Reporter; signal?: AbortSignal },
): Promise<ResolvedImage> {
  const { stream, url, doc } = await fetchStream(req, opts);
  const format = req.sector4k ? "4k.raw.xz" : "raw.xz";
  // .architectures[arch].artifacts.metal.formats["raw.xz"].disk
  const archs = (doc as { architectures?: Record<string, unknown> }).architectures;
  const a = archs?.[arch] as
    | {
        artifacts?: {
          metal?: { release?: string; formats?: Record<string, { disk?: Record<string, string> }> };
        };
      }
    | undefined;
  if (!a) {
    const have = Object.keys(archs ?? {}).join(", ") || "none";
    throw new UsageError(`FCOS ${stream} has no ${arch} images (architectures: ${have})`);
  }
  const disk = a.artifacts?.metal?.formats?.[format]?.disk;
  const at = `${arch} metal ${format} disk`;
  const location = metaString(disk?.location, `${at} location`, url);
  if (!location)
    throw new UsageError(`FCOS ${stream} ${arch} has no metal ${format} image in ${url}`);
  const release = metaString(a.artifacts?.metal?.release, `${arch} metal release`, url);
  return {
    url: location,
    sha256: metaString(disk?.sha256, `${at} sha256`, url),
    signatureUrl: metaString(disk?.signature, `${at} signature`, url) ?? `${location}.sig`,
    uncompressedSha256: metaString(disk?.["uncompressed-sha256"], `${at} uncompressed-sha256`, url),
    description: `Fedora CoreOS ${stream} ${release ?? ""} ${arch}`.replace(/\s+/g, " "),
    os: "fcos",
    arch,
    release,
  };
}

async function resolveFlatcar(
  req: ImageRequest,
  arch: Arch,
  opts: { offline?: boolean; reporter?: Reporter; signal?: AbortSignal },
): Promise<ResolvedImage> {
  const channel = req.channel ?? "stable";
  if (!(FLATCAR_CHANNELS as readonly string[]).includes(channel)) {
    throw new UsageError(
      `unknown Flatcar channel ${JSON.stringify(channel)}`,
      `use one of: ${FLATCAR_CHANNELS.join(", ")}`,
    );
  }
  const board = arch === "aarch64" ? "arm64-usr" : "amd64-usr";
  const base = (req.flatcarBaseUrl ?? `https://${channel}.release.flatcar-linux.net`).replace(
    /\/+$/,
    "",
  );
  let version = req.release ?? "current";
  if (version !== "current" && !/^\d+\.\d+\.\d+$/.test(version)) {
    throw new UsageError(`--release must be "current" or X.Y.Z, got ${JSON.stringify(version)}`);
  }
  if (version === "current") {
    const url = `${base}/${board}/current/version.txt`;
    const text = await fetchMetadata(url, opts);
    const m = /^FLATCAR_VERSION=(\S+?)\r?$/m.exec(text);
    if (!m?.[1]) throw new UsageError(`${url} has no FLATCAR_VERSION= line`);
    // It becomes a directory of the download URL: one path segment, nothing else.
    if (!/^[0-9A-Za-z][0-9A-Za-z._+-]*$/.test(m[1]))
      throw new UsageError(`${url}: FLATCAR_VERSION=${JSON.stringify(m[1])} is not a version`);
    version = m[1];
  }
  const location = `${base}/${board}/${version}/flatcar_production_image.bin.bz2`;
  return {
    url: location,
    signatureUrl: `${location}.sig`,
    description: `Flatcar ${channel} ${version} ${arch}`,
    os: "flatcar",
    arch,
    release: version,
  };
}

/** What an iPXE script fetches and boots: a kernel, its initrds and the OS's own kernel args. */
export interface PxeBoot {
  kernel: string;
  initrds: { url: string; name?: string }[];
  /** Without ignition.config.url (the caller adds it). */
  kernelArgs: string[];
  description: string;
  os: OsName;
  arch: Arch;
}

export interface PxeRequest
  extends Pick<
    ImageRequest,
    "stream" | "channel" | "release" | "streamBaseUrl" | "flatcarBaseUrl"
  > {
  os: OsName;
  arch: Arch;
  /**
   * A mirror: the directory the kernel, initramfs (and FCOS rootfs) files are in, by the
   * same file names as upstream.
   */
  baseUrl?: string;
}

/**
 * The PXE artifacts. Flatcar: `<base>/<board>/<release>/flatcar_production_pxe.vmlinuz`
 * and `..._pxe_image.cpio.gz`, with release "current" left as is so every boot gets the
 * newest (nothing is fetched now). FCOS: the live PXE kernel, initramfs and rootfs of the
 * stream's current release, from the stream metadata (so the stick pins that release).
 */
export async function resolvePxe(
  req: PxeRequest,
  opts: { offline?: boolean; reporter?: Reporter; signal?: AbortSignal } = {},
): Promise<PxeBoot> {
  const mirror = req.baseUrl?.replace(/\/+$/, "");
  if (req.os === "flatcar") {
    const channel = req.channel ?? "stable";
    if (!(FLATCAR_CHANNELS as readonly string[]).includes(channel))
      throw new UsageError(
        `unknown Flatcar channel ${JSON.stringify(channel)}`,
        `use one of: ${FLATCAR_CHANNELS.join(", ")}`,
      );
    const release = req.release ?? "current";
    if (release !== "current" && !/^\d+\.\d+\.\d+$/.test(release))
      throw new UsageError(`--release must be "current" or X.Y.Z, got ${JSON.stringify(release)}`);
    const board = req.arch === "aarch64" ? "arm64-usr" : "amd64-usr";
    // Flatcar's own iPXE examples use http: iPXE's https needs trust roots built in.
    const base =
      mirror ??
      `${(req.flatcarBaseUrl ?? `http://${channel}.release.flatcar-linux.net`).replace(/\/+$/, "")}/${board}/${release}`;
    return {
      kernel: `${base}/flatcar_production_pxe.vmlinuz`,
      initrds: [{ url: `${base}/flatcar_production_pxe_image.cpio.gz` }],
      kernelArgs: ["initrd=flatcar_production_pxe_image.cpio.gz", "flatcar.first_boot=1"],
      description: `Flatcar ${channel} ${release} ${req.arch}`,
      os: "flatcar",
      arch: req.arch,
    };
  }
  const { stream, url, doc } = await fetchStream(req, opts);
  type Loc = { location?: string };
  const metal = (
    doc as {
      architectures?: Record<
        string,
        { artifacts?: { metal?: { release?: string; formats?: { pxe?: Record<string, Loc> } } } }
      >;
    }
  ).architectures?.[req.arch]?.artifacts?.metal;
  const pxe = metal?.formats?.pxe;
  const kernel = metaString(pxe?.kernel?.location, `${req.arch} pxe kernel location`, url);
  const initramfs = metaString(pxe?.initramfs?.location, `${req.arch} pxe initramfs location`, url);
  const rootfs = metaString(pxe?.rootfs?.location, `${req.arch} pxe rootfs location`, url);
  if (!kernel || !initramfs || !rootfs)
    throw new UsageError(
      `FCOS ${stream} ${req.arch} has no PXE kernel, initramfs and rootfs in ${url}`,
    );
  const release = metaString(metal?.release, `${req.arch} metal release`, url);
  const at = (u: string) => (mirror ? `${mirror}/${u.slice(u.lastIndexOf("/") + 1)}` : u);
  return {
    kernel: at(kernel),
    initrds: [{ url: at(initramfs), name: "main" }],
    kernelArgs: [
      "initrd=main",
      `coreos.live.rootfs_url=${at(rootfs)}`,
      "ignition.firstboot",
      "ignition.platform.id=metal",
    ],
    description: `Fedora CoreOS ${stream} ${release ?? ""} ${req.arch}`.replace(/\s+/g, " "),
    os: "fcos",
    arch: req.arch,
  };
}
