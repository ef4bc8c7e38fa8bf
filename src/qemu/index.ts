/**
 * qemu-test: boot an image in QEMU with its Ignition config passed through fw_cfg, watch the
 * serial console and decide pass / fail / timeout. Used by `provision qemu-test` and by
 * `provision flash --then-test`.
 */

export { parseDuration } from "../options.js";
export { type AccelChoice, chooseAccel, hostArch } from "./accel.js";
export {
  type BootOptions,
  type BootResult,
  bootTest,
  DEFAULT_TIMEOUT_MS,
  describeInput,
  QEMU_EXIT,
  type Verdict,
} from "./boot.js";
export { type Accel, FW_CFG_NAME, qemuArgs } from "./command.js";
export { BUILTIN_FAILURES, ConsoleWatcher, cleanLine, DEFAULT_EXPECT } from "./console.js";
export { type Firmware, findFirmware } from "./firmware.js";
export { type BootInput, inspectImage } from "./image.js";
export { cdata, escapeXml, junitXml } from "./junit.js";
export { sshKeyFragment } from "./ssh.js";
