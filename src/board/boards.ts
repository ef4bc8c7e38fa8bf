/**
 * The boards `provision flash --board` knows, and what each implies.
 * Facts: ../shared/README.md, "Raspberry Pi 2/3 and the hybrid MBR".
 */
import { UsageError } from "../errors.js";

export const BOARDS = ["rpi2", "rpi3", "rpi4", "generic"] as const;
export type Board = (typeof BOARDS)[number];
/** The boards that need Raspberry Pi firmware on the ESP. */
export type PiBoard = Exclude<Board, "generic">;

export interface BoardInfo {
  /** Human name for messages. */
  name: string;
  /** The architecture the board implies (`--arch`), undefined when it implies none. */
  arch: "aarch64" | undefined;
  /** The boot ROM reads only an MBR: write the hybrid MBR (src/mbr) after the image. */
  needsHybridMbr: boolean;
  /** One line to show the user when this board is chosen. */
  note?: string;
}

const INFO: Record<Board, BoardInfo> = {
  rpi2: {
    name: "Raspberry Pi 2",
    arch: "aarch64",
    needsHybridMbr: true,
    note:
      "FCOS and Flatcar are 64-bit only: a Pi 2 Model B v1.1 or older (BCM2836) cannot run them; " +
      "only the Pi 2 v1.2 (BCM2837) can",
  },
  rpi3: { name: "Raspberry Pi 3", arch: "aarch64", needsHybridMbr: true },
  rpi4: {
    name: "Raspberry Pi 4",
    arch: "aarch64",
    needsHybridMbr: false,
    note: "some Pi 4 EEPROMs do not boot from a FAT16 ESP: if it does not boot, flash again with --esp-fat32",
  },
  generic: { name: "generic UEFI machine", arch: undefined, needsHybridMbr: false },
};

export function isBoard(s: string): s is Board {
  return (BOARDS as readonly string[]).includes(s);
}

/** Parse a `--board` value; UsageError naming the valid ones. */
export function parseBoard(s: string): Board {
  const v = s.trim().toLowerCase();
  if (isBoard(v)) return v;
  throw new UsageError(`unknown board '${s}'`, `use one of: ${BOARDS.join(", ")}`);
}

export function boardInfo(board: Board): BoardInfo {
  return { ...INFO[board] };
}

export function isPiBoard(board: Board): board is PiBoard {
  return board !== "generic";
}
