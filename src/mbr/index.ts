/**
 * The MBR of GPT disks and the hybrid MBR a Raspberry Pi 2/3 boots from: read, build, check
 * and write it (./mbr.ts), `provision mbr show` and `fix` (./show.ts, ./fix.ts), and the
 * first-boot repair unit that flash merges into the Ignition config (./repair-unit.ts).
 */
export { type FixOptions, type FixResult, fixMbr } from "./fix.js";
export {
  buildHybridMbr,
  checkHybridForPi,
  describeMbrType,
  encodeMbrEntries,
  type HybridOptions,
  hybridPartition,
  type Mbr,
  type MbrEntries,
  type MbrEntry,
  mbrEquals,
  readMbr,
  writeHybridMbr,
} from "./mbr.js";
export {
  REPAIR_SCRIPT,
  REPAIR_SCRIPT_PATH,
  REPAIR_UNIT,
  REPAIR_UNIT_NAME,
  repairUnitButane,
  repairUnitFragment,
} from "./repair-unit.js";
export { formatTables, type ShowResult, showMbr, VERDICT_OK } from "./show.js";
