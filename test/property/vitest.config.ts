// Config for the property tests alone (scripts/fuzz.sh): no fixture build (globalSetup),
// which these tests do not use. `npm test` runs them with the main config like any other test.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    root: fileURLToPath(new URL("../..", import.meta.url)),
    include: ["test/property/**/*.test.ts"],
    // One file at a time: the per-case time bound (FC_CASE_MS) assumes a core to itself.
    fileParallelism: false,
  },
});
