/**
 * Everything about target disks: one model of a drive (`Target`) that the picker, the
 * confirmation prompt and the safety checks all read.
 *
 * Whether something is mounted is decided from /proc/self/mountinfo alone, by device
 * numbers (the disk's and each partition's MAJ:MIN from /sys/class/block), following
 * device-mapper/md devices down through `slaves` and loop devices to what they read from.
 * That works without udev and without partition device nodes. (node-disk-info, which
 * parses `df`, is not used: it misses mounts whose source path is not a /dev node.)
 */

export { claimTargets } from "./claim.js";
export { formatSize } from "./format.js";
export type { ConfirmOptions, PickChoice, PickOptions } from "./prompt.js";
export { confirmWrite, describeTarget, pickDisk } from "./prompt.js";
export type { SafetyOptions } from "./safety.js";
export { checkTargetSafe, dropPageCache, ensureWholeDisk, unmountPartitions } from "./safety.js";
export type { BlockTarget, FileTarget, Target, TargetPartition } from "./target.js";
export { inspectTarget, listCandidateDisks } from "./target.js";
export { wipeOnUrgentExit, zeroSync } from "./wipe.js";
