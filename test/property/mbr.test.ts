// Property tests for the MBR reader (src/mbr/mbr.ts readMbr, and what reads its result:
// checkHybridForPi, mbrEquals, buildHybridMbr, showMbr/formatTables): arbitrary sectors and
// mutated hybrid MBRs give a result or a ProvisionError, never a TypeError/RangeError.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import type { Gpt, GptPartition } from "../../src/gpt/index.js";
import {
  buildHybridMbr,
  checkHybridForPi,
  encodeMbrEntries,
  type Mbr,
  mbrEquals,
  readMbr,
} from "../../src/mbr/mbr.js";
import { formatTables, showMbr } from "../../src/mbr/show.js";
import { buildImage, ESP_TYPE, type GenGpt, gptArb, guidString } from "./gpt-image.js";
import { expectOneLine, outcome, outcomeSync, params, timeoutFor } from "./support.js";

let dir: string;
let n = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "prop-mbr-"));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function imageFile(bytes: Uint8Array): Promise<string> {
  const path = join(dir, `disk-${n++ % 4}.img`);
  await writeFile(path, bytes);
  return path;
}

const ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/** A Gpt as readGpt returns it, with arbitrary (but self-consistent) partitions. */
const partitionArb: fc.Arbitrary<GptPartition> = fc
  .record({
    index: fc.integer({ min: 1, max: 128 }),
    name: fc.oneof(
      fc.constantFrom("EFI-SYSTEM", "efi-system", "boot", "", "a\nb"),
      fc.string({ unit: "binary", maxLength: 36 }),
    ),
    typeGuid: fc.constantFrom(ESP_GUID, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
    firstLba: fc.oneof(
      fc.nat(4096),
      fc.constantFrom(0, 1, 2, 0xfffffffe, 0xffffffff, 2 ** 32),
      fc.integer({ min: 0, max: 2 ** 44 }),
    ),
    length: fc.oneof(fc.integer({ min: 1, max: 4096 }), fc.constantFrom(2 ** 32, 2 ** 33)),
  })
  .map((p) => ({
    index: p.index,
    name: p.name,
    typeGuid: p.typeGuid,
    guid: "00000000-0000-0000-0000-000000000001",
    firstLba: p.firstLba,
    lastLba: p.firstLba + p.length - 1,
    offsetBytes: p.firstLba * 512,
    sizeBytes: p.length * 512,
  }));

const gptObjectArb: fc.Arbitrary<Gpt> = fc
  .record({
    sectorSize: fc.constantFrom(512 as const, 4096 as const),
    partitions: fc.array(partitionArb, { maxLength: 5 }),
  })
  .map(({ sectorSize, partitions }) => ({
    sectorSize,
    diskGuid: "00000000-0000-0000-0000-000000000000",
    firstUsableLba: 34,
    lastUsableLba: 2 ** 40,
    backupLba: 2 ** 40 + 33,
    backupValid: true,
    partitions,
  }));

const optsArb = fc.oneof(
  fc.constant({}),
  fc.record({
    partition: fc.oneof(
      fc.constantFrom("EFI-SYSTEM", "boot", "", "efi\nsystem"),
      fc.string({ unit: "binary" }),
    ),
  }),
);

/** Decoded independently of src/mbr, from the MBR layout. */
function expectDecoded(mbr: Mbr, s: Buffer): void {
  expect(mbr.signatureOk).toBe(s[510] === 0x55 && s[511] === 0xaa);
  expect(mbr.diskSignature).toBe(s.readUInt32LE(440));
  mbr.entries.forEach((e, i) => {
    const o = 446 + i * 16;
    expect(e).toEqual({
      slot: i + 1,
      status: s[o],
      chsFirst: [s[o + 1], s[o + 2], s[o + 3]],
      type: s[o + 4],
      chsLast: [s[o + 5], s[o + 6], s[o + 7]],
      lbaStart: s.readUInt32LE(o + 8),
      sectors: s.readUInt32LE(o + 12),
    });
  });
  // Encoding the entries back gives the same 64 bytes (plus 0x55AA).
  expect(encodeMbrEntries(mbr.entries)).toEqual(
    Buffer.concat([s.subarray(446, 510), Buffer.from([0x55, 0xaa])]),
  );
}

function expectLines(lines: unknown): void {
  expect(Array.isArray(lines)).toBe(true);
  for (const l of lines as unknown[]) {
    expect(typeof l).toBe("string");
    expectOneLine(l as string);
  }
}

/** A valid 512-byte-sector GPT whose first partition is the only one named EFI-SYSTEM. */
const espGptArb: fc.Arbitrary<GenGpt> = gptArb
  .filter((g) => g.sectorSize === 512 && g.partitions.length > 0)
  .chain((g) =>
    fc.boolean().map((byType) => {
      const partitions = g.partitions.map((p, i) => ({
        ...p,
        name: i === 0 ? (byType ? "" : "EFI-SYSTEM") : p.name.replace(/^efi-system$/i, "x"),
        type: i === 0 && byType ? ESP_TYPE : p.type,
      }));
      // With byType, the ESP is found by type: no earlier slot may have that type.
      const esp = partitions[0] as (typeof partitions)[number];
      for (const p of partitions.slice(1))
        if (byType && p.slot < esp.slot && guidString(p.type) === ESP_GUID)
          p.type = new Uint8Array(16).fill(7);
      return { ...g, partitions };
    }),
  );

/** Sector-0 mutations: flips and overwrites, mostly in the partition table (440–511). */
const sector0MutationArb = fc.array(
  fc.oneof(
    fc.record({ at: fc.integer({ min: 440, max: 511 }), bit: fc.nat(7), set: fc.constant(-1) }),
    fc.record({ at: fc.integer({ min: 0, max: 511 }), bit: fc.nat(7), set: fc.constant(-1) }),
    fc.record({ at: fc.integer({ min: 446, max: 511 }), bit: fc.constant(0), set: fc.nat(255) }),
  ),
  { minLength: 1, maxLength: 6 },
);

describe("property: readMbr and the hybrid-MBR checks", () => {
  it(
    "arbitrary sector 0: decoded field by field, encodes back, and every check returns one-line strings",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.uint8Array({ minLength: 512, maxLength: 512 }),
          fc.nat(1024),
          fc.boolean(),
          gptObjectArb,
          optsArb,
          async (bytes, extra, signed, gpt, opts) => {
            const s = Buffer.concat([Buffer.from(bytes), Buffer.alloc(extra)]);
            if (signed) s.set([0x55, 0xaa], 510);
            const r = await outcome(async () => readMbr(await imageFile(s)));
            if (!r.ok) throw new Error(`a 512-byte sector 0 was refused: ${r.error.message}`);
            expectDecoded(r.value, s);
            const problems = outcomeSync(() => checkHybridForPi(r.value, gpt, opts));
            if (!problems.ok) throw new Error(`checkHybridForPi threw ${problems.error.message}`);
            expectLines(problems.value);
            const shown = { path: "disk.img", gpt, mbr: r.value, problems: problems.value };
            const lines = outcomeSync(() => formatTables(shown, opts));
            if (lines.ok) expectLines(lines.value);
            // buildHybridMbr: entries that encode, or a UsageError.
            const built = outcomeSync(() => buildHybridMbr(gpt, opts), UsageError);
            if (built.ok) {
              expect(() => encodeMbrEntries(built.value)).not.toThrow();
              expect(typeof mbrEquals(r.value, built.value)).toBe("boolean");
            }
          },
        ),
        params(2),
      );
    },
    timeoutFor(2),
  );

  it(
    "files shorter than one sector: a UsageError",
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ maxLength: 511 }), async (bytes) => {
          const r = await outcome(async () => readMbr(await imageFile(bytes)), UsageError);
          expect(r.ok).toBe(false);
        }),
        params(0.5),
      );
    },
    timeoutFor(0.5),
  );

  it(
    "a hybrid MBR built for a random GPT reads back as correct; mutated, showMbr still answers",
    async () => {
      await fc.assert(
        fc.asyncProperty(espGptArb, sector0MutationArb, async (g, muts) => {
          const img = buildImage(g);
          const esp = g.partitions[0] as (typeof g.partitions)[number];
          const shown0 = await outcome(async () => showMbr(await imageFile(img)));
          if (!shown0.ok) throw new Error(`valid image refused: ${shown0.error.message}`);
          const entries = buildHybridMbr(shown0.value.gpt);
          expect(entries[0].lbaStart).toBe(esp.firstLba);
          expect(entries[0].sectors).toBe(esp.lastLba - esp.firstLba + 1);
          img.set(encodeMbrEntries(entries), 446);

          const good = await outcome(async () => showMbr(await imageFile(img)));
          if (!good.ok) throw new Error(`hybrid image refused: ${good.error.message}`);
          expect(good.value.problems).toEqual([]);
          expect(mbrEquals(good.value.mbr, entries)).toBe(true);
          expectLines(formatTables(good.value));

          for (const m of muts) {
            if (m.set >= 0) img[m.at] = m.set;
            else img[m.at] = (img[m.at] as number) ^ (1 << m.bit);
          }
          const bad = await outcome(async () => showMbr(await imageFile(img)));
          if (!bad.ok) throw new Error(`sector-0 mutation broke showMbr: ${bad.error.message}`);
          expectLines(bad.value.problems);
          expectLines(formatTables(bad.value));
          if (bad.value.problems.length === 0) {
            // No problem reported: the parts the Pi and Linux read are right.
            const [s1, s2, s3, s4] = bad.value.mbr.entries;
            expect(bad.value.mbr.signatureOk).toBe(true);
            expect([0x0b, 0x0c, 0x0e]).toContain(s1.type);
            expect(s1.status).toBe(0x80);
            expect([s1.lbaStart, s1.sectors]).toEqual([entries[0].lbaStart, entries[0].sectors]);
            expect([s2.type, s2.lbaStart, s2.sectors]).toEqual([0xee, 1, esp.firstLba - 1]);
            expect([s3.type, s4.type]).toEqual([0, 0]);
          }
        }),
        params(1),
      );
    },
    timeoutFor(1),
  );
});
