/**
 * JUnit XML for CI: one testsuite with one testcase per run; a failed boot is a <failure>
 * with the line that decided it, a timeout a <failure type="timeout">, a run that could not
 * start an <error>; the console log goes into <system-out>.
 *
 * Console output is not XML-safe: escapes and other control characters are not allowed in
 * XML 1.0 even inside CDATA, and "]]>" would end a CDATA section early.
 */
import type { BootResult } from "./boot.js";

const NOT_XML =
  /[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** Text safe for XML 1.0: forbidden characters become U+FFFD. */
export function xmlSafe(s: string): string {
  return s.replace(NOT_XML, "\ufffd");
}

export function escapeXml(s: string): string {
  return xmlSafe(s)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;");
}

/** A CDATA section holding `s` exactly (split where `s` contains "]]>"). */
export function cdata(s: string): string {
  return `<![CDATA[${xmlSafe(s).replace(/]]>/g, "]]]]><![CDATA[>")}]]>`;
}

export function junitXml(
  r: BootResult,
  consoleText: string,
  opts: { suite?: string; name?: string } = {},
): string {
  const suite = opts.suite ?? "provision qemu-test";
  const name = opts.name ?? `boot ${r.image}`;
  const time = r.seconds.toFixed(3);
  const failures = r.verdict === "fail" || r.verdict === "timeout" ? 1 : 0;
  const errors = r.verdict === "error" ? 1 : 0;
  const a = (s: string) => escapeXml(s);
  const lines = [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<testsuites name="${a(suite)}" tests="1" failures="${failures}" errors="${errors}" time="${time}">`,
    `  <testsuite name="${a(suite)}" tests="1" failures="${failures}" errors="${errors}" skipped="0" time="${time}" timestamp="${a(r.startedAt)}">`,
    `    <properties>`,
    ...Object.entries({
      image: r.image,
      arch: r.arch ?? "",
      accel: r.accel ?? "",
      firmware: r.firmware ?? "",
      verdict: r.verdict,
      exitCode: String(r.exitCode),
    }).map(([k, v]) => `      <property name="${a(k)}" value="${a(v)}"/>`),
    `    </properties>`,
    `    <testcase classname="${a(`provision.qemu-test.${r.arch ?? "unknown"}`)}" name="${a(name)}" time="${time}">`,
  ];
  const body = [r.matchedLine, ...(r.verdict === "pass" ? [] : r.consoleTail.slice(-10))]
    .filter((l): l is string => Boolean(l))
    .join("\n");
  if (r.verdict === "fail" || r.verdict === "timeout") {
    lines.push(
      `      <failure type="${r.verdict === "timeout" ? "timeout" : "boot-failed"}" message="${a(r.reason)}">${a(body)}</failure>`,
    );
  } else if (r.verdict === "error") {
    lines.push(
      `      <error type="${r.exitCode === 130 ? "interrupted" : "could-not-start"}" message="${a(r.reason)}">${a(r.hint ?? "")}</error>`,
    );
  }
  lines.push(`      <system-out>${cdata(consoleText)}</system-out>`);
  lines.push(`    </testcase>`, `  </testsuite>`, `</testsuites>`, "");
  return lines.join("\n");
}
