import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BLOCK_SIZE, nonZeroRuns } from "../../src/flash/blocks.js";
import {
  decompressedSize,
  detectFileCompression,
  openDecompressed,
} from "../../src/flash/decompress.js";
import type { BlockReader } from "../../src/flash/reader.js";
import { VerifyMismatchError, verifyTarget } from "../../src/flash/verify.js";
import { writeToAll } from "../../src/flash/write.js";
import { fixture, manifest } from "../helpers/fixtures.js";

/** An image held in memory, as the writer reads one. */
function memory(data: Buffer): BlockReader {
  let at = 0;
  return {
    async fill(buf, len) {
      const n = data.copy(buf, 0, at, Math.min(at + len, data.length));
      at += n;
      return n;
    },
    destroy() {},
  };
}

async function sha256(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest("hex");
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "provision-write-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("nonZeroRuns", () => {
  it("finds the non-zero 4 KiB grains and merges neighbours", () => {
    const b = Buffer.alloc(64 * 1024);
    b[5] = 1; // grain 0
    b[4096 + 7] = 1; // grain 1
    b[10 * 4096] = 9; // grain 10
    expect(nonZeroRuns(b, b.length)).toEqual([
      [0, 8192],
      [40960, 45056],
    ]);
    expect(nonZeroRuns(Buffer.alloc(8192), 8192)).toEqual([]);
    const tail = Buffer.alloc(5000);
    tail[4999] = 1;
    expect(nonZeroRuns(tail, 5000)).toEqual([[4096, 5000]]);
  });
});

describe("decompression", () => {
  const expected = () => manifest().artifacts["fcos.img"].sha256 as string;

  it.each(["fcos.img.xz", "fcos.img.gz", "fcos.img.zst", "fcos.img.bz2", "fcos.img"])(
    "%s decompresses to the original image, detected by magic bytes",
    async (name) => {
      const fmt = await detectFileCompression(fixture(name));
      expect(fmt).toBe(
        { xz: "xz", gz: "gzip", zst: "zstd", bz2: "bzip2", img: "raw" }[
          name.split(".").pop() as string
        ],
      );
      const out = join(dir, `${name}.out`);
      const d = await openDecompressed(fixture(name));
      const r = await writeToAll(d.reader, [{ path: out, kind: "file", sparse: true }], {
        digests: false,
      });
      await d.done;
      expect(r.results[0]?.ok).toBe(true);
      expect(await sha256(out)).toBe(expected());
      await rm(out);
    },
  );

  it("loses no bytes when the consumer starts reading late (the decompressor is held)", async () => {
    const d = await openDecompressed(fixture("fcos.img.gz"));
    await new Promise((r) => setTimeout(r, 500));
    const h = createHash("sha256");
    let n = 0;
    // Fills of odd sizes, smaller and bigger than a pipe read: bytes parked between fills
    // (the decompressor writes while nobody waits) come out in order.
    const sizes = [1, 4096, 65_537, 3 << 20, 100_000];
    for (let i = 0; ; i++) {
      const len = sizes[i % sizes.length] as number;
      const buf = Buffer.alloc(len);
      const got = await d.reader.fill(buf, len);
      h.update(buf.subarray(0, got));
      n += got;
      if (got < len) break;
      if (i % 7 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    await d.done;
    expect(n).toBe(manifest().artifacts["fcos.img"].size);
    expect(h.digest("hex")).toBe(expected());
  });

  it("knows the decompressed size of xz and raw images without decompressing", async () => {
    const size = manifest().artifacts["fcos.img"].size as number;
    expect(await decompressedSize(fixture("fcos.img.xz"), "xz", 0)).toBe(size);
    expect(await decompressedSize(fixture("fcos.img"), "raw", size)).toBe(size);
  });

  it("a corrupt xz file is an error, not a short image", async () => {
    const d = await openDecompressed(fixture("corrupt.img.xz"));
    const out = join(dir, "corrupt.out");
    await writeToAll(d.reader, [{ path: out, kind: "file", sparse: true }], { digests: false });
    await expect(d.done).rejects.toThrow(/is corrupt: xz failed/);
  });
});

describe("writeToAll + verifyTarget", () => {
  it("writes one stream to several files, sparse, and a failing target does not stop the others", async () => {
    const a = join(dir, "a.img");
    const b = join(dir, "b.img");
    const bad = join(dir, "no-such-dir", "c.img");
    const d = await openDecompressed(fixture("fcos.img.xz"));
    const r = await writeToAll(
      d.reader,
      [
        { path: a, kind: "file", sparse: true },
        { path: bad, kind: "file", sparse: true },
        { path: b, kind: "file", sparse: true },
      ],
      { digests: true },
    );
    await d.done;
    expect(r.results.map((x) => x.ok)).toEqual([true, false, true]);
    expect(r.results[1]?.error?.message).toMatch(/cannot open .*c\.img/);
    const want = manifest().artifacts["fcos.img"].sha256;
    expect(await sha256(a)).toBe(want);
    expect(await sha256(b)).toBe(want);
    // Sparse: far fewer blocks allocated than the image size.
    const st = await stat(a);
    expect(st.size).toBe(manifest().artifacts["fcos.img"].size);
    expect(st.blocks * 512).toBeLessThan(st.size / 4);
    await verifyTarget(a, r.imageSize, r.digests as Buffer[]);
  });

  it("read-back verify detects a flipped byte and names its block", async () => {
    const a = join(dir, "flip.img");
    const d = await openDecompressed(fixture("fcos.img.xz"));
    const r = await writeToAll(d.reader, [{ path: a, kind: "file", sparse: true }], {
      digests: true,
    });
    await d.done;
    const at = 40 * 1024 * 1024 + 123; // inside the boot partition
    const fh = await open(a, "r+");
    const one = Buffer.alloc(1);
    await fh.read(one, 0, 1, at);
    one[0] = (one[0] as number) ^ 0xff;
    await fh.write(one, 0, 1, at);
    await fh.close();
    const err = await verifyTarget(a, r.imageSize, r.digests as Buffer[]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerifyMismatchError);
    expect((err as VerifyMismatchError).offset).toBe(Math.floor(at / BLOCK_SIZE) * BLOCK_SIZE);
    expect((err as Error).message).toMatch(/flip\.img differs from the image/);
  });

  it("verify also catches a target that is shorter than the image", async () => {
    const a = join(dir, "short.img");
    const data = Buffer.alloc(3 * BLOCK_SIZE, 7);
    const r = await writeToAll(memory(data), [{ path: a, kind: "file", sparse: true }], {
      digests: true,
    });
    const fh = await open(a, "r+");
    await fh.truncate(2 * BLOCK_SIZE);
    await fh.close();
    await expect(verifyTarget(a, r.imageSize, r.digests as Buffer[])).rejects.toThrow(
      /ended at byte 8388608/,
    );
  });

  it("verify of a sparse target checks what was written: blocks with data, a flipped byte, a short file", async () => {
    // Block 0 data, blocks 1-2 zeros (holes in the file), block 3 data.
    const a = join(dir, "holes.img");
    const data = Buffer.alloc(4 * BLOCK_SIZE);
    data.fill(5, 0, 4096);
    data.fill(9, 3 * BLOCK_SIZE + 8192, 3 * BLOCK_SIZE + 12288);
    const r = await writeToAll(memory(data), [{ path: a, kind: "file", sparse: true }], {
      digests: true,
    });
    const sparse = { written: r.runs, file: true };
    await verifyTarget(a, r.imageSize, r.digests as Buffer[], sparse);
    // A byte where nothing was written (a hole here; old data on a --sparse disk) is not
    // judged: unseen with the written runs, caught without them.
    const fh = await open(a, "r+");
    await fh.write(Buffer.from([1]), 0, 1, BLOCK_SIZE + 77);
    await verifyTarget(a, r.imageSize, r.digests as Buffer[], sparse);
    await expect(verifyTarget(a, r.imageSize, r.digests as Buffer[])).rejects.toThrow(
      VerifyMismatchError,
    );
    // A byte in a data block is caught either way.
    await fh.write(Buffer.from([0]), 0, 1, 3 * BLOCK_SIZE + 9000);
    const err = await verifyTarget(a, r.imageSize, r.digests as Buffer[], sparse).catch(
      (e: unknown) => e,
    );
    expect((err as VerifyMismatchError).offset).toBe(3 * BLOCK_SIZE);
    // A file cut short in its trailing holes is caught by its size.
    await fh.write(Buffer.from([9]), 0, 1, 3 * BLOCK_SIZE + 9000);
    await fh.truncate(3 * BLOCK_SIZE + 12288);
    await fh.close();
    await expect(verifyTarget(a, r.imageSize, r.digests as Buffer[], sparse)).rejects.toThrow(
      /shorter than the image/,
    );
  });

  it("refuses to write past a block device's capacity (checked per block)", async () => {
    const a = join(dir, "cap.img");
    await writeFile(a, "");
    const data = Buffer.alloc(3 * BLOCK_SIZE, 1);
    const r = await writeToAll(
      memory(data),
      [{ path: a, kind: "file", sparse: false, capacity: 2 * BLOCK_SIZE }],
      {
        digests: false,
      },
    );
    expect(r.results[0]?.ok).toBe(false);
    expect(r.results[0]?.error?.message).toMatch(/bigger than .*cap\.img/);
    expect((await readFile(a)).length).toBe(2 * BLOCK_SIZE);
  });
});
