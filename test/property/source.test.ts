// Property tests for the image-source parsers (src/source/index.ts): FCOS stream metadata
// (resolveImage / resolvePxe with os fcos) and Flatcar's version.txt and channel/release
// options. The metadata fetch is replaced by an in-memory body, so no network is used.
import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import { UsageError } from "../../src/errors.js";
import { type Arch, resolveImage, resolvePxe } from "../../src/source/index.js";
import { expectOneLine, outcome, params, timeoutFor } from "./support.js";

const meta = vi.hoisted(() => ({ body: "" as string, urls: [] as string[] }));
vi.mock("../../src/cache/index.js", () => ({
  fetchMetadata: async (url: string) => {
    meta.urls.push(url);
    return meta.body;
  },
}));

const BASE = "https://streams.example";
const archArb = fc.constantFrom<Arch>("x86_64", "aarch64");
const streamArb = fc.constantFrom("stable", "testing", "next");
const hex64 = fc.stringMatching(/^[0-9a-f]{64}$/);
const urlArb = fc.webUrl();

interface Disk {
  location: string;
  signature: string;
  sha256: string;
  "uncompressed-sha256": string;
}

const diskArb: fc.Arbitrary<Disk> = fc.record({
  location: urlArb,
  signature: urlArb,
  sha256: hex64,
  "uncompressed-sha256": hex64,
});

/** A stream document shaped like builds.coreos.fedoraproject.org/streams/<stream>.json. */
const streamDocArb = fc
  .record({
    stream: streamArb,
    arch: archArb,
    otherArch: fc.boolean(),
    release: fc.stringMatching(/^[0-9]{2}\.[0-9]{8}\.[0-3]\.[0-9]$/),
    raw: diskArb,
    raw4k: diskArb,
    kernel: urlArb,
    initramfs: urlArb,
    rootfs: urlArb,
  })
  .map((r) => {
    const metal = {
      release: r.release,
      formats: {
        "raw.xz": { disk: r.raw },
        "4k.raw.xz": { disk: r.raw4k },
        pxe: {
          kernel: { location: r.kernel, sha256: "0".repeat(64) },
          initramfs: { location: r.initramfs, sha256: "0".repeat(64) },
          rootfs: { location: r.rootfs, sha256: "0".repeat(64) },
        },
      },
    };
    const architectures: Record<string, unknown> = {
      [r.arch]: { artifacts: { metal, qemu: { release: r.release } }, images: {} },
    };
    if (r.otherArch)
      architectures[r.arch === "x86_64" ? "aarch64" : "x86_64"] = { artifacts: { metal } };
    return {
      gen: r,
      doc: {
        stream: r.stream,
        metadata: { "last-modified": "2026-01-01T00:00:00Z" },
        architectures,
      },
    };
  });

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every path (list of keys) of a JSON value, the root included. */
function paths(v: Json, at: (string | number)[] = []): (string | number)[][] {
  const out = [at];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...at, i])));
  else if (v !== null && typeof v === "object")
    for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, k]));
  return out;
}

type DocMutation = { pick: number; op: "delete" } | { pick: number; op: "set"; value: Json };

const oddValueArb: fc.Arbitrary<Json> = fc.oneof(
  fc.constantFrom<Json>(null, "", 0, 1, true, false, [], {}, "raw.xz", [null], { location: 7 }),
  fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>,
);

const docMutationArb: fc.Arbitrary<DocMutation> = fc.oneof(
  fc.record({ pick: fc.nat(), op: fc.constant("delete" as const) }),
  fc.record({ pick: fc.nat(), op: fc.constant("set" as const), value: oddValueArb }),
);

function mutateDoc(doc: Json, muts: readonly DocMutation[]): Json {
  let root = structuredClone(doc);
  for (const m of muts) {
    const all = paths(root);
    const path = all[m.pick % all.length] as (string | number)[];
    if (path.length === 0) {
      root = m.op === "set" ? m.value : null;
      continue;
    }
    let parent = root as Record<string | number, Json>;
    for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, Json>;
    const last = path[path.length - 1] as string | number;
    if (m.op === "delete") {
      if (Array.isArray(parent)) parent.splice(last as number, 1);
      else delete parent[last];
    } else parent[last] = structuredClone(m.value);
  }
  return root;
}

const optional = (v: unknown) => v === undefined || typeof v === "string";

function checkImage(r: Awaited<ReturnType<typeof resolveImage>>): void {
  expect(typeof r.url).toBe("string");
  expect(r.url).not.toBe("");
  for (const v of [r.sha256, r.signatureUrl, r.uncompressedSha256, r.release])
    expect(optional(v), `${JSON.stringify(v)} is not a string`).toBe(true);
  expect(typeof r.description).toBe("string");
  expectOneLine(r.description);
}

function checkPxe(r: Awaited<ReturnType<typeof resolvePxe>>): void {
  expect(typeof r.kernel).toBe("string");
  for (const i of r.initrds) expect(typeof i.url).toBe("string");
  for (const a of r.kernelArgs) expect(typeof a).toBe("string");
  expectOneLine(r.description);
}

describe("property: FCOS stream metadata", () => {
  it(
    "valid stream documents give exactly the artifact generated (raw.xz, 4k.raw.xz, pxe, mirror)",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          streamDocArb,
          fc.boolean(),
          fc.boolean(),
          async ({ gen, doc }, k4, mirror) => {
            meta.body = JSON.stringify(doc);
            meta.urls = [];
            const r = await outcome(
              () =>
                resolveImage(
                  {
                    os: "fcos",
                    arch: gen.arch,
                    stream: gen.stream,
                    sector4k: k4,
                    streamBaseUrl: BASE,
                  },
                  {},
                ),
              UsageError,
            );
            if (!r.ok) throw new Error(`valid stream refused: ${r.error.message}`);
            const disk = k4 ? gen.raw4k : gen.raw;
            expect(r.value).toEqual({
              url: disk.location,
              sha256: disk.sha256,
              signatureUrl: disk.signature,
              uncompressedSha256: disk["uncompressed-sha256"],
              description: `Fedora CoreOS ${gen.stream} ${gen.release} ${gen.arch}`,
              os: "fcos",
              arch: gen.arch,
              release: gen.release,
            });
            expect(meta.urls).toEqual([`${BASE}/streams/${gen.stream}.json`]);

            const p = await outcome(
              () =>
                resolvePxe({
                  os: "fcos",
                  arch: gen.arch,
                  stream: gen.stream,
                  streamBaseUrl: BASE,
                  baseUrl: mirror ? "http://mirror.lan/fcos/" : undefined,
                }),
              UsageError,
            );
            if (!p.ok) throw new Error(`valid stream refused for PXE: ${p.error.message}`);
            const at = (u: string) =>
              mirror ? `http://mirror.lan/fcos/${u.slice(u.lastIndexOf("/") + 1)}` : u;
            expect(p.value.kernel).toBe(at(gen.kernel));
            expect(p.value.initrds).toEqual([{ url: at(gen.initramfs), name: "main" }]);
            expect(p.value.kernelArgs).toContain(`coreos.live.rootfs_url=${at(gen.rootfs)}`);
          },
        ),
        params(1),
      );
    },
    timeoutFor(1),
  );

  it(
    "mutated stream documents (fields deleted or replaced by any JSON value): a result or a UsageError",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          streamDocArb,
          fc.array(docMutationArb, { minLength: 1, maxLength: 4 }),
          fc.boolean(),
          fc.boolean(),
          async ({ gen, doc }, muts, k4, mirror) => {
            meta.body = JSON.stringify(mutateDoc(doc as Json, muts));
            const req = { arch: gen.arch, stream: gen.stream, streamBaseUrl: BASE };
            const r = await outcome(
              () => resolveImage({ os: "fcos", ...req, sector4k: k4 }),
              UsageError,
            );
            if (r.ok) checkImage(r.value);
            const p = await outcome(
              () =>
                resolvePxe({ os: "fcos", ...req, baseUrl: mirror ? "http://m.lan" : undefined }),
              UsageError,
            );
            if (p.ok) checkPxe(p.value);
          },
        ),
        params(3),
      );
    },
    timeoutFor(3),
  );

  it(
    "arbitrary JSON values and arbitrary text as the stream body: a result or a UsageError",
    async () => {
      const bodyArb = fc.oneof(
        fc.jsonValue().map((v) => JSON.stringify(v)),
        fc.constantFrom("null", "[]", "{}", '"x"', "0", '{"architectures":null}', ""),
        fc.string({ unit: "binary" }),
      );
      await fc.assert(
        fc.asyncProperty(bodyArb, archArb, fc.boolean(), async (body, arch, mirror) => {
          meta.body = body;
          const r = await outcome(() => resolveImage({ os: "fcos", arch }), UsageError);
          if (r.ok) checkImage(r.value);
          const p = await outcome(
            () => resolvePxe({ os: "fcos", arch, baseUrl: mirror ? "http://m.lan" : undefined }),
            UsageError,
          );
          if (p.ok) checkPxe(p.value);
        }),
        params(2),
      );
    },
    timeoutFor(2),
  );
});

describe("property: Flatcar version.txt and channel/release options", () => {
  const versionArb = fc
    .tuple(fc.nat(9999), fc.nat(99), fc.nat(99))
    .map(([a, b, c]) => `${a}.${b}.${c}`);

  it(
    "a version.txt with FLATCAR_VERSION=X.Y.Z among other lines gives that release",
    async () => {
      const otherLine = fc.oneof(
        fc.constantFrom(
          "FLATCAR_BUILD=3975",
          "FLATCAR_BRANCH=2",
          "FLATCAR_SDK_VERSION=3975.0.0",
          "",
        ),
        fc
          .stringMatching(/^[A-Z_]{1,20}=[0-9.]{0,12}$/)
          .filter((l) => !l.startsWith("FLATCAR_VERSION=")),
      );
      await fc.assert(
        fc.asyncProperty(
          versionArb,
          fc.array(otherLine, { maxLength: 5 }),
          fc.array(otherLine, { maxLength: 5 }),
          archArb,
          fc.constantFrom("stable", "beta", "alpha"),
          async (version, before, after, arch, channel) => {
            meta.body = [...before, `FLATCAR_VERSION=${version}`, ...after, ""].join("\n");
            meta.urls = [];
            const r = await outcome(
              () => resolveImage({ os: "flatcar", arch, channel }),
              UsageError,
            );
            if (!r.ok) throw new Error(`valid version.txt refused: ${r.error.message}`);
            const board = arch === "aarch64" ? "arm64-usr" : "amd64-usr";
            expect(r.value.release).toBe(version);
            expect(r.value.url).toBe(
              `https://${channel}.release.flatcar-linux.net/${board}/${version}/flatcar_production_image.bin.bz2`,
            );
            expect(meta.urls).toEqual([
              `https://${channel}.release.flatcar-linux.net/${board}/current/version.txt`,
            ]);
          },
        ),
        params(1),
      );
    },
    timeoutFor(1),
  );

  it(
    "arbitrary version.txt text: a release that stays one URL path segment, or a UsageError",
    async () => {
      const textArb = fc.oneof(
        fc.string({ unit: "binary" }),
        fc.string({ unit: "binary" }).map((s) => `FLATCAR_VERSION=${s}`),
        fc
          .array(
            fc.oneof(
              fc.constantFrom(
                "FLATCAR_VERSION=",
                "=",
                "\n",
                "\r\n",
                " ",
                "/",
                "..",
                "?",
                "#",
                "%2e",
              ),
              fc.string({ unit: "binary", maxLength: 4 }),
            ),
            { maxLength: 12 },
          )
          .map((parts) => parts.join("")),
      );
      await fc.assert(
        fc.asyncProperty(textArb, archArb, async (text, arch) => {
          meta.body = text;
          const r = await outcome(() => resolveImage({ os: "flatcar", arch }), UsageError);
          if (r.ok) {
            checkImage(r.value);
            const release = r.value.release ?? "";
            // The release is spliced into the download URL: it must stay one path segment.
            expect(release).toMatch(/^[0-9A-Za-z][0-9A-Za-z._+-]*$/);
            expect(new URL(r.value.url).pathname.split("/")).toContain(release);
          }
        }),
        params(2),
      );
    },
    timeoutFor(2),
  );

  it(
    "arbitrary stream/channel/release/sha256 options: a result or a UsageError, before any fetch when invalid",
    async () => {
      const word = fc.oneof(
        fc.constantFrom("stable", "testing", "next", "beta", "alpha", "current", "1.2.3", "lts"),
        fc.string({ unit: "binary", maxLength: 12 }),
      );
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom("fcos" as const, "flatcar" as const),
          archArb,
          fc.option(word, { nil: undefined }),
          fc.option(word, { nil: undefined }),
          fc.option(word, { nil: undefined }),
          fc.option(fc.oneof(hex64, fc.string()), { nil: undefined }),
          fc.boolean(),
          async (os, arch, stream, channel, release, sha256, explicit) => {
            meta.body = '{"architectures":{}}\nFLATCAR_VERSION=1.2.3\n';
            meta.urls = [];
            const req = { os, arch, stream, channel, release, sha256 };
            const r = await outcome(
              () => resolveImage(explicit ? { ...req, imageUrl: "/tmp/x.img" } : req),
              UsageError,
            );
            if (r.ok) checkImage(r.value);
            else if (/^(unknown |--release |--sha256 )/.test(r.error.message))
              expect(meta.urls).toEqual([]);
            const p = await outcome(
              () => resolvePxe({ os, arch, stream, channel, release }),
              UsageError,
            );
            if (p.ok) checkPxe(p.value);
          },
        ),
        params(2),
      );
    },
    timeoutFor(2),
  );
});
