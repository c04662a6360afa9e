// Latency percentiles from two polls of GET /stats: each service's histogram is
// cumulative since the start, so the requests of the interval are the difference.

/**
 * The q-quantile (0..1) of the requests counted between two cumulative histograms
 * (`[{leSeconds, count}]`, the last bucket's bound null for +Inf), as Prometheus'
 * histogram_quantile computes it: linear within the bucket that holds the rank; in the
 * +Inf bucket, the highest finite bound. Seconds, or null without requests.
 */
export function quantile(q, before, after) {
  if (!before || !after || after.length === 0) return null;
  const delta = after.map((b, i) => b.count - (before[i] ? before[i].count : 0));
  const total = delta[delta.length - 1];
  if (!(total > 0)) return null;
  const rank = q * total;
  for (let i = 0; i < delta.length; i++) {
    if (delta[i] >= rank) {
      const upper = after[i].leSeconds;
      const lower = i === 0 ? 0 : after[i - 1].leSeconds;
      if (upper === null) return lower;
      const below = i === 0 ? 0 : delta[i - 1];
      const inBucket = delta[i] - below;
      return lower + (upper - lower) * (inBucket > 0 ? (rank - below) / inBucket : 1);
    }
  }
  return null;
}
