#!/usr/bin/env node
// Start-up time is measured: dist/cli.js loads commander and the flag definitions only;
// each command loads its own modules when it runs.
const { main } = await import("../dist/cli.js");

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    // Only a failure to load the CLI gets here; main() reports everything else itself.
    console.error(`provision: internal error: ${err?.message ?? err}; report it with --debug`);
    if (process.env.PROVISION_DEBUG || process.argv.includes("--debug")) console.error(err?.stack);
    process.exitCode = 70;
  },
);
