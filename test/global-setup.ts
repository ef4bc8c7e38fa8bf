// vitest globalSetup: build (or reuse) the fixtures and tell the test workers where they are.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export default async function setup(): Promise<void> {
  const dir = process.env.PROVISION_FIXTURES
    ? path.resolve(process.env.PROVISION_FIXTURES)
    : path.join(repoRoot, ".cache", "fixtures");
  const script = path.join(repoRoot, "fixtures", "build-all.sh");
  const r = spawnSync("bash", [script, dir], { cwd: repoRoot, stdio: "inherit" });
  if (r.error) throw new Error(`fixtures: could not run ${script}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(
      `fixtures: ${script} ${dir} failed (${r.signal ? `signal ${r.signal}` : `exit ${r.status}`})`,
    );
  }
  // Workers inherit the environment of the main process.
  process.env.PROVISION_FIXTURES = dir;
}
