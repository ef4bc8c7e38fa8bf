/**
 * qemu-test: boot an image in QEMU with its Ignition config passed through fw_cfg, watch the
 * serial console and decide pass / fail / timeout. Used by `provision qemu-test` and by
 * `provision flash --then-test`.
 */
export { type AccelChoice, chooseAccel, hostArch } from "./accel.js";
export {
  type BootOptions,
  type BootResult,
  bootTest,
  DEFAULT_TIMEOUT_MS,
  describeInput,
  killRunningQemu,
  QEMU_EXIT,
  type Verdict,
} from "./boot.js";
export { type Accel, FW_CFG_NAME, qemuArgs } from "./command.js";
export { BUILTIN_FAILURES, ConsoleWatcher, cleanLine, DEFAULT_EXPECT } from "./console.js";
export { type Firmware, findFirmware } from "./firmware.js";
export { type BootInput, inspectImage } from "./image.js";
export { cdata, escapeXml, junitXml } from "./junit.js";
export { sshKeyFragment } from "./ssh.js";

/** "600", "90s", "10m", "1h", "1500ms" → milliseconds; undefined when it is not a duration. */
export function parseDuration(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(text);
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = (m[2] ?? "s").toLowerCase();
  const ms =
    unit === "ms" ? n : unit === "s" ? n * 1000 : unit === "m" ? n * 60_000 : n * 3_600_000;
  return ms > 0 ? Math.round(ms) : undefined;
}
