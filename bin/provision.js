#!/usr/bin/env node
// qemu-test is timed against QEMU run by hand: it loads only its own modules (see
// src/qemu/main.ts); every other command loads the whole CLI.
const { main } = await import(
  process.argv[2] === "qemu-test" ? "../dist/qemu/main.js" : "../dist/cli.js"
);

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
