// A big download's memory stays flat: body chunks are freed as the body goes by, not when the
// garbage collector gets around to them (src/http collects after every 8 MiB of body). Real
// HTTP on 127.0.0.1; the server sends one reused buffer, so every new buffer is the client's.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { httpGet } from "../../src/http/index.js";

const SIZE = 384 << 20;
const CHUNK = Buffer.alloc(1 << 20, 0x5a);
let server: http.Server;
let url: string;

beforeAll(async () => {
  server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-length": SIZE });
    let sent = 0;
    const pump = () => {
      while (sent < SIZE) {
        sent += CHUNK.length;
        if (!res.write(CHUNK)) return void res.once("drain", pump);
      }
      res.end();
    };
    pump();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/image.raw`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe("httpGet memory", () => {
  it("a 384 MiB body holds at most a few MiB of chunks at any time", async () => {
    const base = process.memoryUsage().arrayBuffers;
    let peak = 0;
    let chunks = 0;
    let got = 0;
    const head = await httpGet(url, () => (chunk) => {
      got += chunk.length;
      if (++chunks % 16 === 0) peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
    });
    expect(head.status).toBe(200);
    expect(got).toBe(SIZE);
    expect(chunks).toBeGreaterThan(SIZE / (1 << 20)); // many chunks went by, not one
    // Without the collections this is 35-50 MiB (V8 starts a collection for memory outside
    // its heap only after ~64 MiB of it).
    expect(peak).toBeLessThan(20 << 20);
  });
});
