/**
 * The commands `provision doctor` checks, in the order it shows them. No imports: the
 * doctor's command definition loads this at start-up.
 */
export const DOCTOR_COMMANDS = [
  "flash",
  "pxe-stick",
  "qemu-test",
  "mbr",
  "serve",
  "fleet",
  "cache",
] as const;

export type DoctorCommand = (typeof DOCTOR_COMMANDS)[number];
