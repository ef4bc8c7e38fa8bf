/**
 * `provision mbr show`: the GPT and the MBR of a target in one aligned table, and whether
 * the MBR is the hybrid a Raspberry Pi 2/3 boots from.
 */
import type { Gpt } from "../gpt/index.js";
import { readGpt } from "../gpt/index.js";
import {
  checkHybridForPi,
  describeMbrType,
  type HybridOptions,
  hybridPartition,
  type Mbr,
  printableName,
  readMbr,
} from "./mbr.js";

export interface ShowResult {
  path: string;
  gpt: Gpt;
  mbr: Mbr;
  /** What is wrong for a Pi 2/3; empty when the hybrid MBR is correct. */
  problems: string[];
}

export const VERDICT_OK = "hybrid MBR is correct for a Raspberry Pi 2/3";

/** Read both tables of a file or block device and check the MBR. Reads only. */
export async function showMbr(path: string, opts: HybridOptions = {}): Promise<ShowResult> {
  const gpt = await readGpt(path);
  const mbr = await readMbr(path);
  return { path, gpt, mbr, problems: checkHybridForPi(mbr, gpt, opts) };
}

const GPT_TYPE_NAMES: Record<string, string> = {
  "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
  "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
  "8DA63339-0007-60C0-C436-083AC8230908": "Linux reserved",
  "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
  "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
  "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
  "B921B045-1DF0-41C3-AF44-4C6F280D3FAE": "Linux root (ARM-64)",
  "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
};

/**
 * One table, GPT rows then MBR rows, with shared start/end/sectors columns so the ESP and
 * MBR slot 1 line up; then the verdict (or the problems, one per line).
 */
export function formatTables(r: ShowResult, opts: HybridOptions = {}): string[] {
  const { gpt, mbr } = r;
  const esp = hybridPartition(gpt, opts);
  const rows: string[][] = [["table", "#", "start", "end", "sectors", "type", "name / flags"]];
  for (const p of gpt.partitions) {
    rows.push([
      "GPT",
      String(p.index),
      String(p.firstLba),
      String(p.lastLba),
      String(p.lastLba - p.firstLba + 1),
      GPT_TYPE_NAMES[p.typeGuid] ?? p.typeGuid,
      printableName(p.name),
    ]);
  }
  if (gpt.partitions.length === 0) rows.push(["GPT", "-", "", "", "", "no partitions", ""]);
  for (const e of mbr.entries) {
    if (e.type === 0 && e.sectors === 0 && e.lbaStart === 0) {
      rows.push(["MBR", String(e.slot), "-", "-", "-", "empty", ""]);
      continue;
    }
    const flags: string[] = [];
    if (e.status === 0x80) flags.push("bootable");
    else if (e.status !== 0) flags.push(`status 0x${e.status.toString(16)}`);
    const same = gpt.partitions.find(
      (p) => p.firstLba === e.lbaStart && p.lastLba - p.firstLba + 1 === e.sectors,
    );
    if (same) flags.push(`= GPT ${same.index}${same.name ? ` ${printableName(same.name)}` : ""}`);
    else if (e.type === 0xee && e.lbaStart === 1 && esp && e.sectors === esp.firstLba - 1)
      flags.push(`up to GPT ${esp.index}`);
    rows.push([
      "MBR",
      String(e.slot),
      String(e.lbaStart),
      e.sectors === 0 ? "-" : String(e.lbaStart + e.sectors - 1),
      String(e.sectors),
      describeMbrType(e.type),
      flags.join("  "),
    ]);
  }
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? "").length)));
  const right = new Set([1, 2, 3, 4]);
  const lines = [
    `${r.path}: GPT with ${gpt.partitions.length} partition${gpt.partitions.length === 1 ? "" : "s"}, ${gpt.sectorSize}-byte sectors; MBR disk signature 0x${mbr.diskSignature.toString(16).padStart(8, "0")}${mbr.signatureOk ? "" : ", no 0x55AA signature"}`,
  ];
  for (const row of rows) {
    const cells = row.map((c, i) => {
      const w = widths?.[i] ?? c.length;
      return right.has(i) ? c.padStart(w) : c.padEnd(w);
    });
    lines.push(cells.join("  ").trimEnd());
  }
  if (r.problems.length === 0) {
    lines.push(VERDICT_OK);
  } else {
    lines.push("hybrid MBR is NOT correct for a Raspberry Pi 2/3:");
    for (const p of r.problems) lines.push(`  - ${p}`);
  }
  return lines;
}
