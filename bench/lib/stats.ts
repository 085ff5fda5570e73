/** Small statistics helpers: nearest-rank percentiles over raw samples, medians across runs. */

/** Nearest-rank percentile of an ascending-sorted array (p in 0..100). NaN when empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const rank = Math.ceil((p / 100) * n);
  return sorted[Math.min(n - 1, Math.max(0, rank - 1))]!;
}

export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** (max - min) / median, as a fraction: how noisy the runs were. */
export function spread(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length < 2) return NaN;
  const m = median(v);
  return m === 0 ? NaN : (Math.max(...v) - Math.min(...v)) / m;
}

/** Medians across runs of a closed-loop unary measurement: req/s (and its spread), p50 and p99 latency. */
export function unaryMedians(runs: readonly { rps: number; p50_us: number; p99_us: number }[]): { n: number; rps: number; rps_spread: number; p50_us: number; p99_us: number } {
  const rps = runs.map((r) => r.rps);
  return {
    n: runs.length,
    rps: median(rps),
    rps_spread: spread(rps),
    p50_us: median(runs.map((r) => r.p50_us)),
    p99_us: median(runs.map((r) => r.p99_us)),
  };
}

/** Growable Float64 sample buffer (avoids a boxed-number array of ~10^6 entries). */
export class Samples {
  private buf = new Float64Array(1 << 16);
  length = 0;

  push(x: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = x;
  }

  sorted(): Float64Array {
    return this.buf.slice(0, this.length).sort();
  }
}
