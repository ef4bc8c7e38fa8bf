import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 600_000,
    // Tests share loop devices and a 2-core machine: run files one at a time.
    fileParallelism: false,
    globalSetup: ["test/global-setup.ts"],
  },
});
