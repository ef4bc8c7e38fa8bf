// Shared by the bench's node scripts.

/** The median of the numbers in `a` (undefined and NaN left out); undefined when there are none. */
export const median = (a) => {
  const s = a.filter((x) => x !== undefined && !Number.isNaN(x)).sort((x, y) => x - y);
  const n = s.length;
  if (n === 0) return undefined;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};
