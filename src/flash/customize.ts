/**
 * What flash changes on a target after the image is written and verified: the Ignition
 * config, kernel arguments, and for Raspberry Pi boards the boot files on the ESP,
 * config.txt, a FAT32 ESP (rpi4, on request) and the hybrid MBR (rpi2/rpi3).
 */
import {
  type Board,
  boardInfo,
  installBootFiles,
  reformatEspFat32,
  type StagedFirmware,
} from "../board/index.js";
import { readGpt } from "../gpt/index.js";
import { editKernelArgs, embedIgnition, type IgnitionConfig } from "../ignition/index.js";
import { buildHybridMbr, writeHybridMbr } from "../mbr/index.js";
import type { Reporter } from "../progress/index.js";
import type { OsName } from "../source/index.js";

export interface Customization {
  os: OsName;
  ignition?: IgnitionConfig;
  appendKargs: string[];
  deleteKargs: string[];
  board: Board;
  firmware?: StagedFirmware;
  configTxt?: string;
  espFat32: boolean;
}

export interface CustomizeResult {
  ignition?: string;
  kernelArgs?: string[];
  bootFiles?: { written: string[]; skipped: string[] };
  hybridMbr?: string;
}

export function hasCustomization(c: Customization): boolean {
  return Boolean(
    c.ignition || c.appendKargs.length || c.deleteKargs.length || c.firmware || c.espFat32,
  );
}

export async function customizeTarget(
  path: string,
  c: Customization,
  reporter: Reporter,
): Promise<CustomizeResult> {
  const out: CustomizeResult = {};
  if (c.ignition) {
    const where = await embedIgnition(path, c.ignition, { os: c.os });
    out.ignition = `${where.partition}:${where.path}`;
    reporter.info(`${path}: Ignition config written to ${out.ignition}`);
  }
  if (c.appendKargs.length || c.deleteKargs.length) {
    out.kernelArgs = await editKernelArgs(path, { append: c.appendKargs, delete: c.deleteKargs });
    reporter.info(`${path}: kernel arguments now: ${out.kernelArgs[0] ?? ""}`);
  }
  if (c.espFat32) {
    const r = await reformatEspFat32(path);
    reporter.info(
      r.changed
        ? `${path}: ESP reformatted from FAT${r.before} to FAT32 (label ${r.label}, volume id ${r.volumeId}, ${r.files} files kept)`
        : `${path}: ESP is already FAT32`,
    );
  }
  if (c.firmware && c.configTxt !== undefined) {
    const r = await installBootFiles(path, c.firmware, { configTxt: c.configTxt });
    out.bootFiles = { written: r.written, skipped: r.skipped };
    reporter.info(
      `${path}: ${r.written.length} boot files copied to the ESP${r.configTxtWritten ? " with config.txt" : ""}`,
    );
    if (r.skipped.length)
      reporter.warn(
        `${path}: the image already has ${r.skipped.join(", ")}; kept the image's copies`,
      );
  }
  if (boardInfo(c.board).needsHybridMbr) {
    const gpt = await readGpt(path);
    const mbr = await writeHybridMbr(path, buildHybridMbr(gpt));
    const e = mbr.entries[0];
    out.hybridMbr = `slot 1: type 0x0c bootable, LBA ${e.lbaStart} + ${e.sectors}; slot 2: 0xee from LBA 1`;
    reporter.info(`${path}: hybrid MBR written (${out.hybridMbr})`);
  }
  return out;
}
