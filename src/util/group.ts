/** Grouping helper shared by the batched KV and attention ops. */

/** `items` grouped by `key` (first-seen order), each group cut into batches of at most `max`. */
export function batchesBy<T, K>(items: T[], key: (t: T) => K, max: number = Infinity): T[][] {
  const groups = new Map<K, T[]>();
  for (const t of items) {
    const k = key(t);
    const g = groups.get(k);
    if (g) g.push(t);
    else groups.set(k, [t]);
  }
  const out: T[][] = [];
  for (const g of groups.values()) for (let i = 0; i < g.length; i += max) out.push(g.slice(i, i + max));
  return out;
}
