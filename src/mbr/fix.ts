/**
 * `provision mbr fix`: write the hybrid MBR to a disk or image file, behind the same safety
 * checks as flash (not the running system's disk, whole disks only, nothing mounted, not in
 * use, not read-only) and, for block devices, the same confirmation (--yes without a TTY).
 */
import { checkTargetSafe, confirmWrite, inspectTarget, type Target } from "../disk/index.js";
import { UsageError } from "../errors.js";
import { type Gpt, readGpt } from "../gpt/index.js";
import {
  buildHybridMbr,
  checkHybridForPi,
  type HybridOptions,
  hybridPartition,
  mbrEquals,
  printableName,
  readMbr,
  writeHybridMbr,
} from "./mbr.js";
import type { ShowResult } from "./show.js";

export interface FixOptions extends HybridOptions {
  /** --yes: do not ask before writing a block device. */
  yes?: boolean;
  /** Whether there is a terminal to ask on. */
  isTTY: boolean;
  /** Ask the question (tests); default: @inquirer/prompts confirm on stderr, default "no". */
  prompt?: (message: string) => Promise<boolean>;
}

export interface FixResult extends ShowResult {
  /** False when the MBR was already exactly right: nothing was written. */
  written: boolean;
}

export async function fixMbr(path: string, opts: FixOptions): Promise<FixResult> {
  const target = await inspectTarget(path);
  if (target.kind === "file" && !target.exists)
    throw new UsageError(`${path}: no such file or device`);
  await checkTargetSafe(target, { wholeDiskOnly: true, noUnmountFlag: true });
  const gpt = await readGpt(target.path);
  const entries = buildHybridMbr(gpt, opts);
  const current = await readMbr(target.path);
  let mbr = current;
  let written = false;
  if (!mbrEquals(current, entries)) {
    await confirmWrite(target, {
      yes: opts.yes,
      isTTY: opts.isTTY,
      // confirmWrite's own question is about erasing the disk; this write changes 66 bytes.
      prompt: () => ask(question(target, gpt, opts), opts.prompt),
    });
    mbr = await writeHybridMbr(target.path, entries);
    written = true;
  }
  return { path: target.path, gpt, mbr, problems: checkHybridForPi(mbr, gpt, opts), written };
}

function question(t: Target, gpt: Gpt, o: HybridOptions): string {
  const p = hybridPartition(gpt, o);
  const what = p ? `GPT partition ${p.index} ${printableName(p.name)}` : "the ESP";
  return `Write a hybrid MBR to ${t.path} (slot 1 = ${what}, type 0x0C)? Only bytes 446–511 of sector 0 change; the GPT and the data stay as they are.`;
}

async function ask(message: string, prompt?: (m: string) => Promise<boolean>): Promise<boolean> {
  if (prompt) return prompt(message);
  // A Ctrl-C in the prompt is turned into InterruptedError by confirmWrite.
  const { confirm } = await import("@inquirer/prompts");
  return confirm({ message, default: false }, { output: process.stderr });
}
