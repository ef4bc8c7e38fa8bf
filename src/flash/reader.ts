/**
 * The image's bytes, read straight into the caller's block buffers. The writer fills one
 * reused 4 MiB buffer after another; nothing here allocates a buffer per chunk or copies a
 * chunk into a block (a readable stream does both, and on a 2-core machine where the
 * decompressor takes both cores, that CPU is wall time).
 *
 * - A decompressor writes into a FIFO that is read as a socket with `onread`: the kernel
 *   copies each read into the block buffer at its fill offset.
 * - A raw image is read with positioned reads into the block buffer.
 */
import { closeSync, constants, openSync } from "node:fs";
import { type FileHandle, mkdtemp, open, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "../exec/index.js";

export interface BlockReader {
  /** Fill buf[0..len); resolves with the bytes read, fewer than len only at the end. */
  fill(buf: Buffer, len: number): Promise<number>;
  /** Stop reading; pending and later fills end. */
  destroy(): void;
}

/**
 * A FIFO for a child's stdout: `writeFd` goes to the child (and is closed here once it has
 * it, by `release`), the read end is returned as a BlockReader. The FIFO's name is removed
 * at once; the open ends keep it alive.
 */
export async function fifoReader(): Promise<{
  writeFd: number;
  release(): void;
  reader: BlockReader;
}> {
  const dir = await mkdtemp(join(tmpdir(), "provision-pipe-"));
  try {
    const path = join(dir, "image");
    await run("mkfifo", ["-m", "600", path]);
    // Non-blocking read end first (it opens at once), then the write end (it has a reader).
    const readFd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const writeFd = openSync(path, constants.O_WRONLY);
    return {
      writeFd,
      release: () => closeSync(writeFd),
      reader: new PipeReader(readFd),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Reads land in the current fill's buffer; bytes that come with no fill pending are parked. */
class PipeReader implements BlockReader {
  private readonly socket: net.Socket;
  private cur?: {
    buf: Buffer;
    len: number;
    got: number;
    resolve(n: number): void;
    reject(e: Error): void;
  };
  /** Where a read lands when no fill is waiting (one read, at most a pipe's 64 KiB). */
  private readonly parking = Buffer.allocUnsafe(256 << 10);
  private parked = 0;
  private ended = false;
  private error?: Error;

  constructor(fd: number) {
    // `onread` (node >= 12) is missing from @types/node 20's constructor options.
    this.socket = new net.Socket({
      fd,
      readable: true,
      writable: false,
      onread: {
        buffer: () => this.nextBuffer(),
        callback: (n: number, buf: Uint8Array) => this.onRead(n, buf),
      },
    } as net.SocketConstructorOpts);
    this.socket.on("end", () => {
      this.ended = true;
      this.settle();
    });
    this.socket.on("error", (err) => {
      this.error = err;
      this.settle();
    });
  }

  private nextBuffer(): Uint8Array {
    const c = this.cur;
    if (c && c.got < c.len) return c.buf.subarray(c.got, c.len);
    return this.parking.subarray(this.parked);
  }

  private onRead(n: number, buf: Uint8Array): boolean {
    const c = this.cur;
    if (buf.buffer === this.parking.buffer) {
      // It landed where parking ended when the read was set up; unpark may have moved the
      // parked bytes since, so put it right after them.
      const at = buf.byteOffset - this.parking.byteOffset;
      if (at !== this.parked) this.parking.copyWithin(this.parked, at, at + n);
      this.parked += n;
      if (c) this.unpark(c);
    } else if (c) {
      c.got += n;
    }
    if (c && c.got === c.len) {
      this.cur = undefined;
      c.resolve(c.len);
    }
    // Pause while no fill waits: at most one read (<= 64 KiB, a pipe's size) is parked.
    return this.cur !== undefined;
  }

  private unpark(c: NonNullable<PipeReader["cur"]>): void {
    const n = Math.min(this.parked, c.len - c.got);
    if (n === 0) return;
    this.parking.copy(c.buf, c.got, 0, n);
    this.parking.copyWithin(0, n, this.parked);
    this.parked -= n;
    c.got += n;
  }

  /** The stream ended or failed: the pending fill resolves with what it has (or rejects). */
  private settle(): void {
    const c = this.cur;
    if (!c) return;
    this.cur = undefined;
    if (this.error) c.reject(this.error);
    else c.resolve(c.got);
  }

  fill(buf: Buffer, len: number): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const c = { buf, len, got: 0, resolve, reject };
      this.unpark(c);
      if (c.got === len) return resolve(len);
      if (this.error) return reject(this.error);
      if (this.ended || this.socket.destroyed) return resolve(c.got);
      this.cur = c;
      this.socket.resume();
    });
  }

  destroy(): void {
    this.ended = true;
    this.settle();
    this.socket.destroy();
  }
}

/** A raw image file, read with positioned reads. */
export async function fileReader(path: string): Promise<BlockReader> {
  const fh: FileHandle = await open(path, "r");
  let pos = 0;
  let closed = false;
  return {
    async fill(buf, len) {
      let got = 0;
      while (got < len && !closed) {
        const { bytesRead } = await fh.read(buf, got, len - got, pos);
        if (bytesRead === 0) break;
        got += bytesRead;
        pos += bytesRead;
      }
      if (got < len && !closed) {
        closed = true;
        await fh.close();
      }
      return got;
    },
    destroy() {
      if (closed) return;
      closed = true;
      fh.close().catch(() => {});
    },
  };
}
