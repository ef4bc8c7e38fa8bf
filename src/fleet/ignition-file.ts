/**
 * Small builders shared by the generated fragments (./generate.ts, ./network.ts, ./wifi.ts):
 * an Ignition `storage.files` entry with its contents as a base64 data URL (the form butane
 * writes and src/ignition/merge.ts uses), and `file:line:col` for messages.
 */
import { dataUrl } from "../ignition/merge.js";
import type { Pos } from "./types.js";

export interface IgnitionFile {
  path: string;
  mode: number;
  overwrite: true;
  contents: { source: string };
}

/** A file Ignition writes whole (overwrite: an existing file is replaced, not an error). */
export function ignitionFile(path: string, mode: number, text: string): IgnitionFile {
  return { path, mode, overwrite: true, contents: { source: dataUrl(text) } };
}

export const where = (at: Pos): string => `${at.file}:${at.line}:${at.col}`;
