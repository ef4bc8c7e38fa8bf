// Reading built Ignition configs in tests: provision's merge wrapper keeps its parts in
// base64 data: URLs, nested (a fragment's files inside a merged child).

/** Every base64 data: URL in the text, decoded, and those inside them, all joined. */
export function decodedDeep(text: string): string {
  const found: string[] = [];
  const walk = (t: string) => {
    for (const m of t.matchAll(/data:[^,"]*;base64,([A-Za-z0-9+/=]+)/g)) {
      const inner = Buffer.from(m[1] as string, "base64").toString("utf8");
      found.push(inner);
      walk(inner);
    }
  };
  walk(text);
  return found.join("\n");
}
