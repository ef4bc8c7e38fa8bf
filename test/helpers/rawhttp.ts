// An HTTP server on 127.0.0.1 written on raw TCP, for the ways real servers misbehave that
// node's http module will not produce: HTTP/1.0 with the socket closed after the body, a
// Content-Length that lies, a close in the middle of the body, a stall.

import type { AddressInfo } from "node:net";
import { createServer, type Socket } from "node:net";

export type Behaviour =
  /** HTTP/1.0, Content-Length, `Connection: close`, body, FIN (python3 -m http.server). */
  | { kind: "http10"; body: Buffer; contentType?: string; status?: number }
  /** HTTP/1.0 with no Content-Length: the body ends with the connection. */
  | { kind: "http10-no-length"; body: Buffer }
  /** Announce the whole body, send `after` bytes, then close the socket. */
  | { kind: "close-mid-body"; body: Buffer; after: number }
  /** Announce `claimed` bytes, send the body (shorter), then close. */
  | { kind: "wrong-length"; body: Buffer; claimed: number }
  /** Send the headers (and `after` body bytes), then nothing, keeping the socket open. */
  | { kind: "stall"; body: Buffer; after: number }
  /** Send the body slowly: `chunk` bytes every `everyMs`. */
  | { kind: "trickle"; body: Buffer; chunk: number; everyMs: number };

export interface RawServer {
  url: string;
  /** Requests received (request lines). */
  requests: string[];
  close(): Promise<void>;
}

function head(status: number, headers: Record<string, string | number>): string {
  const lines = [`HTTP/1.0 ${status} ${status === 200 ? "OK" : "Error"}`];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  return `${lines.join("\r\n")}\r\n\r\n`;
}

/** Serve `behaviour(path)` for every request. */
export async function startRawServer(
  behaviour: (path: string) => Behaviour | undefined,
): Promise<RawServer> {
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const requests: string[] = [];
  const server = createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => {});
    let buf = "";
    sock.on("data", (d) => {
      buf += d.toString("latin1");
      if (!buf.includes("\r\n\r\n")) return;
      const line = buf.split("\r\n")[0] ?? "";
      buf = "";
      requests.push(line);
      const path = line.split(" ")[1] ?? "/";
      const b = behaviour(path.split("?")[0] ?? path);
      if (!b) {
        sock.end(head(404, { "Content-Length": 0, Connection: "close" }));
        return;
      }
      switch (b.kind) {
        case "http10":
          sock.write(
            head(b.status ?? 200, {
              "Content-Length": b.body.length,
              "Content-Type": b.contentType ?? "application/octet-stream",
              Connection: "close",
            }),
          );
          sock.end(b.body);
          return;
        case "http10-no-length":
          sock.write(head(200, { "Content-Type": "application/octet-stream" }));
          sock.end(b.body);
          return;
        case "close-mid-body":
          sock.write(head(200, { "Content-Length": b.body.length, Connection: "close" }));
          sock.write(b.body.subarray(0, b.after), () => sock.destroy());
          return;
        case "wrong-length":
          sock.write(head(200, { "Content-Length": b.claimed, Connection: "close" }));
          sock.end(b.body);
          return;
        case "stall":
          sock.write(head(200, { "Content-Length": b.body.length }));
          if (b.after > 0) sock.write(b.body.subarray(0, b.after));
          return;
        case "trickle": {
          sock.write(head(200, { "Content-Length": b.body.length, Connection: "close" }));
          let at = 0;
          const t = setInterval(() => {
            if (sock.destroyed) {
              clearInterval(t);
              return;
            }
            sock.write(b.body.subarray(at, at + b.chunk));
            at += b.chunk;
            if (at >= b.body.length) {
              clearInterval(t);
              sock.end();
            }
          }, b.everyMs);
          timers.add(t);
          return;
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: async () => {
      for (const t of timers) clearInterval(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
