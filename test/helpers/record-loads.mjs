// node --import this file: every module URL the process loads (node: builtins aside) is
// appended to the file named by $RECORD_LOADS. test/cli.test.ts uses it to see what start-up loads.
import { register } from "node:module";

register(
  `data:text/javascript,${encodeURIComponent(`
import { appendFileSync } from "node:fs";
export async function load(url, context, next) {
  if (!url.startsWith("node:")) appendFileSync(process.env.RECORD_LOADS, url + "\\n");
  return next(url, context);
}`)}`,
);
