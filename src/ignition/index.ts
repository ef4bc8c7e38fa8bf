/**
 * Ignition configs for flash, pxe-stick and qemu-test: load and validate one (file, URL or
 * Butane), add our fragments without overriding the user, write it onto a disk or image
 * (FCOS boot partition / Flatcar OEM partition), and edit the BLS kernel arguments.
 */

export { editKernelArgs, embedIgnition, type TargetOs } from "./embed.js";
export {
  type IgnitionConfig,
  isButane,
  type LoadOptions,
  loadIgnitionConfig,
  parseConfigText,
  parseIgnitionText,
  SUPPORTED_SPEC_VERSIONS,
} from "./load.js";
export { dataUrl, mergeFragments } from "./merge.js";
