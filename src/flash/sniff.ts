/**
 * Does this look like a disk image? Checked on the decompressed head before anything is
 * written, so a web page (a broken mirror, a captive portal), a JSON error or a truncated
 * file is named for what it is instead of being flashed and reported "ready".
 */
import { formatBytes } from "../progress/index.js";

/** How much of the decompressed image the check reads. */
export const SNIFF_BYTES = 1 << 20;

/**
 * Undefined when `head` (the first SNIFF_BYTES of the decompressed image, or all of it when
 * shorter) starts like a whole-disk image: at least 1 MiB, with an MBR boot signature or a
 * GPT header (512- or 4096-byte sectors). Otherwise what it looks like, for one line.
 */
export function notADiskImage(head: Buffer): string | undefined {
  const gpt =
    head.subarray(512, 520).toString("latin1") === "EFI PART" ||
    head.subarray(4096, 4104).toString("latin1") === "EFI PART";
  const mbr = head.length >= 512 && head[510] === 0x55 && head[511] === 0xaa;
  if (head.length >= SNIFF_BYTES && (gpt || mbr)) return undefined;
  const text = head.subarray(0, 4096).toString("utf8").trimStart().toLowerCase();
  if (/^<!doctype html|^<html|^<head|^<body/.test(text))
    return "looks like HTML (a web page: a broken mirror or a captive portal?)";
  if (text.startsWith("<?xml")) return "looks like XML (an error page from a storage server?)";
  if (/^[{[]/.test(text)) return "looks like JSON (an error answer from a server?)";
  if (head.length > 0 && isText(head.subarray(0, 4096))) return "looks like text";
  if (head.length < SNIFF_BYTES)
    return `is only ${formatBytes(head.length)} long; a disk image is at least 1 MiB`;
  if (head.every((b) => b === 0)) return "starts with 1 MiB of zeros (no partition table)";
  return "has no partition table (no MBR boot signature, no GPT header)";
}

function isText(b: Buffer): boolean {
  let printable = 0;
  for (const c of b)
    if (c === 9 || c === 10 || c === 13 || (c >= 32 && c < 127) || c >= 0xc2) printable++;
  return printable / b.length > 0.95;
}
