// Helpers shared by the test/mbr files: run tools, hash byte ranges, copy the FCOS fixture.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { execa } from "execa";
import { fixture, partition } from "../helpers/fixtures.js";

export const isRoot = process.getuid?.() === 0;
const PATH = `${process.env.PATH}:/usr/sbin:/sbin`;

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a program (never throws on a non-zero exit; the test checks `code`). */
export async function tool(
  cmd: string,
  args: string[],
  opts: { input?: string; env?: Record<string, string> } = {},
): Promise<ToolResult> {
  const r = await execa(cmd, args, {
    reject: false,
    input: opts.input,
    stdin: opts.input === undefined ? "ignore" : undefined,
    env: { ...process.env, PATH, LC_ALL: "C", ...opts.env },
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Like tool(), but throws unless it exits 0; returns stdout. */
export async function ok(cmd: string, args: string[], input?: string): Promise<string> {
  const r = await tool(cmd, args, { input });
  if (r.code !== 0)
    throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** sha256 of bytes [start, end) of a file or device (end: to the end). */
export async function sha256(path: string, start = 0, end?: number): Promise<string> {
  const h = createHash("sha256");
  const stream = createReadStream(path, { start, end: end === undefined ? undefined : end - 1 });
  for await (const c of stream) h.update(c as Buffer);
  return h.digest("hex");
}

/** A sparse copy of fixture('fcos.img') (GPT: reserved, EFI-SYSTEM, boot, root; protective MBR). */
export async function copyFcos(dest: string): Promise<string> {
  await ok("cp", ["--sparse=always", fixture("fcos.img"), dest]);
  return dest;
}

/** The MBR entry lines of `sfdisk -d -Y dos` (the nested MBR of a GPT disk), device names cut. */
export async function mbrDump(path: string): Promise<string[]> {
  const out = await ok("sfdisk", ["-d", "-Y", "dos", path]);
  return out
    .split("\n")
    .filter((l) => l.includes(" : start="))
    .map((l) => l.replace(/^\S+ : /, "").replace(/\s+/g, " "));
}

/** The partition lines of `sfdisk -d` (the GPT), device names cut. */
export async function gptDump(path: string): Promise<string[]> {
  const out = await ok("sfdisk", ["-d", path]);
  return out
    .split("\n")
    .filter((l) => l.includes(" : start="))
    .map((l) => l.replace(/^\S+ : /, "").replace(/\s+/g, " "));
}

/** What `sfdisk -d -Y dos` shows for the hybrid MBR of fcos.img (ESP from the manifest). */
export function hybridDump(): string[] {
  const esp = partition("EFI-SYSTEM");
  return [
    `start= ${esp.start}, size= ${esp.sectors}, type=c, bootable`,
    `start= 1, size= ${esp.start - 1}, type=ee`,
  ];
}
