// Loop devices for tests: only ever attached to files the test created, always detached.
import { execa } from "execa";

export async function attachLoop(file: string): Promise<string> {
  const r = await execa("losetup", ["-f", "--show", file]);
  const dev = r.stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(dev)) throw new Error(`losetup gave ${dev}`);
  return dev;
}

/** Remove partition nodes added with partx (if any) and detach. Never throws. */
export async function detachLoop(dev: string | undefined): Promise<void> {
  if (!dev) return;
  await execa("partx", ["-d", dev], { reject: false });
  await execa("losetup", ["-d", dev], { reject: false });
}
