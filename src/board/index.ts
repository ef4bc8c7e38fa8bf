/**
 * Board support for `provision flash --board`: what each board implies, the Raspberry Pi boot
 * files (firmware, device trees, overlays, U-Boot or EDK2) and their config.txt, copied onto
 * the ESP of the written target with mtools by byte offset, and the Pi 4's FAT32 ESP.
 *
 * Typical use after the image is written (the hybrid MBR for rpi2/rpi3 is src/mbr's):
 *
 *   const fw = await loadFirmware({ firmware, uboot }, board);
 *   try {
 *     const text = configTxt(board, { kernel: fw.loader.path, loader: fw.loader.kind,
 *       upstreamDtbs: fw.upstreamDtbs, userAdditions });
 *     if (espFat32) await reformatEspFat32(target);          // rpi4 only
 *     const { written, skipped } = await installBootFiles(target, fw, { configTxt: text });
 *   } finally {
 *     await fw.dispose();
 *   }
 */
export {
  BOARDS,
  type Board,
  type BoardInfo,
  boardInfo,
  isBoard,
  isPiBoard,
  type PiBoard,
  parseBoard,
} from "./boards.js";
export { type ConfigTxtOptions, configTxt, USER_MARKER } from "./config-txt.js";
export { ESP_NAME, ESP_TYPE_GUID, type Esp, locateEsp } from "./esp.js";
export {
  checkFat32Fits,
  FAT32_MIN_CLUSTERS,
  fat32MkfsArgs,
  minFat32Sectors,
  type ReformatResult,
  reformatEspFat32,
} from "./fat32.js";
export {
  EDK2_ESP_NAME,
  type FirmwareSource,
  loadFirmware,
  type StagedFile,
  type StagedFirmware,
  UBOOT_ESP_NAME,
} from "./firmware.js";
export { type InstallResult, installBootFiles } from "./install.js";
