/** Disk sizes the way vendors print them on the label: decimal units, one decimal. */
export function formatSize(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** Two sizes that differ, written so that they read differently. */
export function formatSizes(a: number, b: number): [string, string] {
  const fa = formatSize(a);
  const fb = formatSize(b);
  return fa === fb ? [`${a} bytes`, `${b} bytes`] : [fa, fb];
}
