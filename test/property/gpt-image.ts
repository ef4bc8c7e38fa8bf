/**
 * Generators for small GPT disk images (valid ones, with random partitions) and for
 * mutations of them. Written from the UEFI spec (2.10, section 5.3), independent of
 * src/gpt: protective MBR in LBA 0, header in LBA 1, entry array from LBA 2, the backup
 * entry array after the last usable LBA and the backup header in the last LBA.
 */
import fc from "fast-check";
import { crc32 } from "../../src/gpt/index.js";

export interface GenPartition {
  slot: number; // 1-based
  type: Uint8Array; // 16 bytes, not all zero
  guid: Uint8Array;
  name: string;
  firstLba: number;
  lastLba: number;
}

export interface GenGpt {
  sectorSize: 512 | 4096;
  numEntries: number;
  entrySize: number;
  diskGuid: Uint8Array;
  firstUsableLba: number;
  lastUsableLba: number;
  entrySectors: number;
  totalSectors: number;
  partitions: GenPartition[];
}

export const ESP_TYPE = guidBytes("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");

/** "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" → the 16 mixed-endian bytes stored on disk. */
export function guidBytes(s: string): Uint8Array {
  const h = s.replace(/-/g, "");
  const b = Buffer.from(h, "hex");
  return Uint8Array.from([
    b[3] as number,
    b[2] as number,
    b[1] as number,
    b[0] as number,
    b[5] as number,
    b[4] as number,
    b[7] as number,
    b[6] as number,
    ...b.subarray(8),
  ]);
}

/** Inverse of guidBytes (upper case, as sgdisk prints). */
export function guidString(b: Uint8Array): string {
  const hex = (idx: number[]) => idx.map((i) => (b[i] ?? 0).toString(16).padStart(2, "0")).join("");
  return [hex([3, 2, 1, 0]), hex([5, 4]), hex([7, 6]), hex([8, 9]), hex([10, 11, 12, 13, 14, 15])]
    .join("-")
    .toUpperCase();
}

const guidArb = fc.uint8Array({ minLength: 16, maxLength: 16 });
const typeArb = fc.oneof(
  fc.constant(ESP_TYPE),
  guidArb.filter((b) => b.some((x) => x !== 0)),
);
/** Up to 36 UTF-16 code units, no NUL (the name ends at the first NUL). */
const nameArb = fc.oneof(
  fc.constantFrom("EFI-SYSTEM", "boot", "root", "BIOS-BOOT", "OEM", "", "ümlaut ✓"),
  fc
    .string({ unit: "binary", maxLength: 18 })
    .filter((s) => !s.includes("\u0000") && s.length <= 36),
);

/** A valid GPT with 0–8 partitions that do not overlap, in random slots. */
export const gptArb: fc.Arbitrary<GenGpt> = fc
  .record({
    sectorSize: fc.constantFrom(512 as const, 4096 as const),
    numEntries: fc.oneof(fc.constant(128), fc.integer({ min: 1, max: 160 })),
    entrySize: fc.oneof({ weight: 5, arbitrary: fc.constant(128) }, fc.constant(256)),
    diskGuid: guidArb,
    extents: fc.array(
      fc.record({
        gap: fc.nat(4),
        length: fc.integer({ min: 1, max: 12 }),
        type: typeArb,
        guid: guidArb,
        name: nameArb,
      }),
      { maxLength: 8 },
    ),
    tail: fc.nat(8),
    slotSeed: fc.array(fc.nat(), { minLength: 8, maxLength: 8 }),
  })
  .map((r) => {
    const entrySectors = Math.ceil((r.numEntries * r.entrySize) / r.sectorSize);
    const firstUsableLba = 2 + entrySectors;
    const extents = r.extents.slice(0, r.numEntries);
    // Distinct slots: a shuffle of 1..numEntries by the seeds.
    const slots = Array.from({ length: r.numEntries }, (_, i) => i + 1);
    for (let i = 0; i < extents.length; i++) {
      const j = i + ((r.slotSeed[i] ?? 0) % (slots.length - i));
      [slots[i], slots[j]] = [slots[j] as number, slots[i] as number];
    }
    let lba = firstUsableLba;
    const partitions: GenPartition[] = extents.map((e, i) => {
      const firstLba = lba + e.gap;
      const lastLba = firstLba + e.length - 1;
      lba = lastLba + 1;
      return {
        slot: slots[i] as number,
        type: e.type,
        guid: e.guid,
        name: e.name,
        firstLba,
        lastLba,
      };
    });
    const lastUsableLba = Math.max(lba + r.tail, firstUsableLba);
    return {
      sectorSize: r.sectorSize,
      numEntries: r.numEntries,
      entrySize: r.entrySize,
      diskGuid: r.diskGuid,
      firstUsableLba,
      lastUsableLba,
      entrySectors,
      totalSectors: lastUsableLba + entrySectors + 2,
      partitions,
    };
  });

export function entryArray(g: GenGpt): Buffer {
  const buf = Buffer.alloc(g.entrySectors * g.sectorSize);
  for (const p of g.partitions) {
    const o = (p.slot - 1) * g.entrySize;
    buf.set(p.type, o);
    buf.set(p.guid, o + 16);
    buf.writeBigUInt64LE(BigInt(p.firstLba), o + 32);
    buf.writeBigUInt64LE(BigInt(p.lastLba), o + 40);
    buf.write(p.name, o + 56, 72, "utf16le");
  }
  return buf;
}

/** Where the header of each copy lives. */
export function headerLbas(g: GenGpt): { primary: number; backup: number } {
  return { primary: 1, backup: g.totalSectors - 1 };
}

/** The whole disk image. */
export function buildImage(g: GenGpt): Buffer {
  const ss = g.sectorSize;
  const img = Buffer.alloc(g.totalSectors * ss);
  // Protective MBR: one 0xEE entry over the disk.
  img[446 + 4] = 0xee;
  img.writeUInt32LE(1, 446 + 8);
  img.writeUInt32LE(Math.min(g.totalSectors - 1, 0xffffffff), 446 + 12);
  img[510] = 0x55;
  img[511] = 0xaa;
  const entries = entryArray(g);
  const entriesBytes = entries.subarray(0, g.numEntries * g.entrySize);
  const entriesCrc = crc32(entriesBytes);
  const backupLba = g.totalSectors - 1;
  const backupEntriesLba = g.lastUsableLba + 1;
  img.set(entries, 2 * ss);
  img.set(entries, backupEntriesLba * ss);
  for (const [my, alt, entLba] of [
    [1, backupLba, 2],
    [backupLba, 1, backupEntriesLba],
  ] as const) {
    const h = img.subarray(my * ss, my * ss + ss);
    h.write("EFI PART", 0, "latin1");
    h.writeUInt32LE(0x00010000, 8);
    h.writeUInt32LE(92, 12);
    h.writeBigUInt64LE(BigInt(my), 24);
    h.writeBigUInt64LE(BigInt(alt), 32);
    h.writeBigUInt64LE(BigInt(g.firstUsableLba), 40);
    h.writeBigUInt64LE(BigInt(g.lastUsableLba), 48);
    h.set(g.diskGuid, 56);
    h.writeBigUInt64LE(BigInt(entLba), 72);
    h.writeUInt32LE(g.numEntries, 80);
    h.writeUInt32LE(g.entrySize, 84);
    h.writeUInt32LE(entriesCrc, 88);
    fixHeaderCrc(h);
  }
  return img;
}

/** Recompute the header CRC of the header sector `h` (over its own header size, capped). */
export function fixHeaderCrc(h: Buffer): void {
  const size = Math.max(16, Math.min(h.readUInt32LE(12), h.length));
  h.writeUInt32LE(0, 16);
  h.writeUInt32LE(crc32(h.subarray(0, size)), 16);
}

/** Recompute the entry array CRC in a header from the array it points to (when in the image). */
export function fixEntriesCrc(img: Buffer, headerOffset: number, ss: number): void {
  const h = img.subarray(headerOffset, headerOffset + ss);
  if (h.length < 92) return;
  const lba = Number(h.readBigUInt64LE(72));
  const bytes = h.readUInt32LE(80) * h.readUInt32LE(84);
  if (!Number.isSafeInteger(lba * ss) || bytes > 8 * 1024 * 1024) return;
  const arr = img.subarray(lba * ss, lba * ss + bytes);
  h.writeUInt32LE(crc32(arr), 88);
}

// ---------------------------------------------------------------------------------------------
// Mutations

const HEADER_FIELDS = [
  { name: "headerSize", off: 12, bits: 32 },
  { name: "myLba", off: 24, bits: 64 },
  { name: "alternateLba", off: 32, bits: 64 },
  { name: "firstUsableLba", off: 40, bits: 64 },
  { name: "lastUsableLba", off: 48, bits: 64 },
  { name: "entriesLba", off: 72, bits: 64 },
  { name: "numEntries", off: 80, bits: 32 },
  { name: "entrySize", off: 84, bits: 32 },
  { name: "entriesCrc", off: 88, bits: 32 },
] as const;

const ENTRY_FIELDS = [
  { name: "firstLba", off: 32 },
  { name: "lastLba", off: 40 },
] as const;

/** Values that break parsers: 0, off-by-one, 2^31, 2^32, 2^53 and 2^64 neighbours. */
const interestingU64 = fc.oneof(
  fc.constantFrom(
    0n,
    1n,
    2n,
    3n,
    33n,
    34n,
    127n,
    128n,
    129n,
    136n,
    256n,
    4096n,
    0x7fffffffn,
    0x80000000n,
    0xffffffffn,
    0x100000000n,
    2n ** 41n,
    2n ** 44n,
    2n ** 53n - 1n,
    2n ** 53n,
    2n ** 62n,
    2n ** 63n,
    2n ** 64n - 1n,
  ),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  fc.bigInt({ min: 0n, max: 4096n }),
);

export type Mutation =
  | { kind: "flip"; region: number; at: number; bit: number }
  | { kind: "truncate"; keep: number }
  | {
      kind: "header";
      backup: boolean;
      field: number;
      value: bigint;
      fix: "none" | "header" | "all";
    }
  | { kind: "entry"; slot: number; field: number; value: bigint; fixCrcs: boolean }
  | { kind: "noise"; region: number; at: number; bytes: Uint8Array; fixCrcs: boolean };

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    kind: fc.constant("flip" as const),
    region: fc.nat(4),
    at: fc.nat(),
    bit: fc.nat(7),
  }),
  fc.record({ kind: fc.constant("truncate" as const), keep: fc.nat() }),
  fc.record({
    kind: fc.constant("header" as const),
    backup: fc.boolean(),
    field: fc.nat(HEADER_FIELDS.length - 1),
    value: interestingU64,
    fix: fc.constantFrom("none" as const, "header" as const, "all" as const),
  }),
  fc.record({
    kind: fc.constant("entry" as const),
    slot: fc.nat(),
    field: fc.nat(ENTRY_FIELDS.length - 1),
    value: interestingU64,
    fixCrcs: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant("noise" as const),
    region: fc.nat(4),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
    fixCrcs: fc.boolean(),
  }),
);

/** Regions: 0 protective MBR, 1 primary header, 2 primary entries, 3 backup header, 4 anywhere. */
function region(g: GenGpt, len: number, r: number): [number, number] {
  const ss = g.sectorSize;
  const backup = (g.totalSectors - 1) * ss;
  const regions: [number, number][] = [
    [0, 512],
    [ss, ss + 92],
    [2 * ss, 2 * ss + g.numEntries * g.entrySize],
    [backup, backup + 92],
    [0, len],
  ];
  const [a, b] = regions[r] ?? [0, len];
  return [Math.min(a, len), Math.min(b, len)];
}

function writeField(h: Buffer, off: number, bits: number, value: bigint): void {
  if (bits === 32) h.writeUInt32LE(Number(value & 0xffffffffn), off);
  else h.writeBigUInt64LE(value & 0xffffffffffffffffn, off);
}

function fixAllCrcs(img: Buffer, g: GenGpt): void {
  const ss = g.sectorSize;
  for (const off of [ss, (g.totalSectors - 1) * ss]) {
    if (off + ss > img.length) continue;
    fixEntriesCrc(img, off, ss);
    fixHeaderCrc(img.subarray(off, off + ss));
  }
}

/** Apply mutations in order; returns the (possibly shorter) image. */
export function mutate(image: Buffer, g: GenGpt, mutations: readonly Mutation[]): Buffer {
  let img = Buffer.from(image);
  const ss = g.sectorSize;
  for (const m of mutations) {
    if (img.length === 0) break;
    switch (m.kind) {
      case "flip": {
        const [a, b] = region(g, img.length, m.region);
        if (b <= a) break;
        const i = a + (m.at % (b - a));
        img[i] = (img[i] as number) ^ (1 << m.bit);
        break;
      }
      case "truncate":
        img = img.subarray(0, m.keep % (img.length + 1));
        break;
      case "header": {
        const off = m.backup ? (g.totalSectors - 1) * ss : ss;
        if (off + ss > img.length) break;
        const h = img.subarray(off, off + ss);
        const f = HEADER_FIELDS[m.field] ?? HEADER_FIELDS[0];
        writeField(h, f.off, f.bits, m.value);
        if (m.fix === "all") fixEntriesCrc(img, off, ss);
        if (m.fix !== "none") fixHeaderCrc(h);
        break;
      }
      case "entry": {
        const slot = m.slot % g.numEntries;
        const f = ENTRY_FIELDS[m.field] ?? ENTRY_FIELDS[0];
        for (const base of [2 * ss, (g.lastUsableLba + 1) * ss]) {
          const o = base + slot * g.entrySize;
          if (o + g.entrySize > img.length) continue;
          // Make the slot used, so the parser looks at its extent.
          if (img.subarray(o, o + 16).every((x) => x === 0)) img[o] = 1;
          writeField(img, o + f.off, 64, m.value);
        }
        if (m.fixCrcs) fixAllCrcs(img, g);
        break;
      }
      case "noise": {
        const [a, b] = region(g, img.length, m.region);
        if (b <= a) break;
        const i = a + (m.at % (b - a));
        img.set(m.bytes.subarray(0, img.length - i), i);
        if (m.fixCrcs) fixAllCrcs(img, g);
        break;
      }
    }
  }
  return img;
}
