// Property tests for the GPT reader (src/gpt/index.ts readGpt): valid tables round-trip the
// partitions they were built with; damaged ones give a Gpt or a ProvisionError, nothing else.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Gpt, readGpt } from "../../src/gpt/index.js";
import { buildImage, type GenGpt, gptArb, guidString, mutate, mutationArb } from "./gpt-image.js";
import { expectOneLine, outcome, params, timeoutFor } from "./support.js";

let dir: string;
let n = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "prop-gpt-"));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function imageFile(bytes: Uint8Array): Promise<string> {
  const path = join(dir, `disk-${n++ % 4}.img`);
  await writeFile(path, bytes);
  return path;
}

function expected(g: GenGpt) {
  return [...g.partitions]
    .sort((a, b) => a.slot - b.slot)
    .map((p) => ({
      index: p.slot,
      name: p.name,
      typeGuid: guidString(p.type),
      guid: guidString(p.guid),
      firstLba: p.firstLba,
      lastLba: p.lastLba,
      offsetBytes: p.firstLba * g.sectorSize,
      sizeBytes: (p.lastLba - p.firstLba + 1) * g.sectorSize,
    }));
}

const GUID_RE = /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/;

/** What every Gpt readGpt returns must satisfy, whatever the bytes were. */
function checkInvariants(gpt: Gpt): void {
  expect([512, 4096]).toContain(gpt.sectorSize);
  expect(gpt.diskGuid).toMatch(GUID_RE);
  for (const v of [gpt.firstUsableLba, gpt.lastUsableLba, gpt.backupLba])
    expect(Number.isSafeInteger(v) && v >= 0).toBe(true);
  expect(typeof gpt.backupValid).toBe("boolean");
  if (gpt.backupValid) expect(gpt.backupProblem).toBeUndefined();
  else expectOneLine(gpt.backupProblem ?? "");
  let prev = 0;
  for (const p of gpt.partitions) {
    expect(p.index).toBeGreaterThan(prev);
    prev = p.index;
    expect(p.typeGuid).toMatch(GUID_RE);
    expect(p.typeGuid).not.toBe("00000000-0000-0000-0000-000000000000");
    expect(p.guid).toMatch(GUID_RE);
    expect(p.name).not.toContain("\u0000");
    expect(p.lastLba).toBeGreaterThanOrEqual(p.firstLba);
    // Offsets are used as byte positions (debugfs ?offset=, mcopy @@): they must be exact.
    for (const v of [
      p.firstLba,
      p.lastLba,
      p.offsetBytes,
      p.sizeBytes,
      p.offsetBytes + p.sizeBytes,
    ])
      expect(Number.isSafeInteger(v), `${v} is not a safe integer`).toBe(true);
    expect(p.offsetBytes).toBe(p.firstLba * gpt.sectorSize);
    expect(p.sizeBytes).toBe((p.lastLba - p.firstLba + 1) * gpt.sectorSize);
  }
}

describe("property: readGpt", () => {
  it(
    "valid GPTs (512/4096-byte sectors, random partitions, slots, names) round-trip",
    async () => {
      await fc.assert(
        fc.asyncProperty(gptArb, async (g) => {
          const r = await outcome(async () => readGpt(await imageFile(buildImage(g))));
          if (!r.ok) throw new Error(`valid GPT rejected: ${r.error.message}`);
          checkInvariants(r.value);
          expect(r.value.sectorSize).toBe(g.sectorSize);
          expect(r.value.diskGuid).toBe(guidString(g.diskGuid));
          expect(r.value.firstUsableLba).toBe(g.firstUsableLba);
          expect(r.value.lastUsableLba).toBe(g.lastUsableLba);
          expect(r.value.backupLba).toBe(g.totalSectors - 1);
          expect(r.value.backupProblem).toBeUndefined();
          expect(r.value.backupValid).toBe(true);
          expect(r.value.partitions).toEqual(expected(g));
        }),
        params(1),
      );
    },
    timeoutFor(1),
  );

  it(
    "a valid GPT cut anywhere after its primary entry array keeps its partitions, backup reported",
    async () => {
      await fc.assert(
        fc.asyncProperty(gptArb, fc.nat(), async (g, cut) => {
          const img = buildImage(g);
          const min = (2 + g.entrySectors) * g.sectorSize;
          const len = min + (cut % (img.length - min)); // always shorter than the image
          const r = await outcome(async () => readGpt(await imageFile(img.subarray(0, len))));
          if (!r.ok) throw new Error(`truncated GPT rejected: ${r.error.message}`);
          checkInvariants(r.value);
          expect(r.value.backupValid).toBe(false);
          expect(r.value.partitions).toEqual(expected(g));
        }),
        params(0.5),
      );
    },
    timeoutFor(0.5),
  );

  it(
    "mutated GPTs (bit flips, truncation, bad CRCs, huge counts/sizes/LBAs, extents past the end): a Gpt or a ProvisionError",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          gptArb,
          fc.array(mutationArb, { minLength: 1, maxLength: 4 }),
          async (g, muts) => {
            const img = mutate(buildImage(g), g, muts);
            const r = await outcome(async () => readGpt(await imageFile(img)));
            if (r.ok) checkInvariants(r.value);
          },
        ),
        params(4),
      );
    },
    timeoutFor(4),
  );

  it(
    "arbitrary bytes with an 'EFI PART' signature at LBA 1: a Gpt or a ProvisionError",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(512, 4096),
          fc.uint8Array({ minLength: 0, maxLength: 2048 }),
          fc.nat(16384),
          async (ss, noise, extra) => {
            const img = Buffer.alloc(ss + Math.max(noise.length, 92) + extra);
            img.set(noise, ss);
            img.write("EFI PART", ss, "latin1");
            const r = await outcome(async () => readGpt(await imageFile(img)));
            if (r.ok) checkInvariants(r.value);
          },
        ),
        params(1),
      );
    },
    timeoutFor(1),
  );
});
