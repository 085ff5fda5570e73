/**
 * Exponential backoff with jitter, bounded. Used for reconnects.
 *
 *   delay(n) = min(maxMs, initialMs × multiplier^n) × (1 + jitter × u),  u uniform in [-1, 1]
 */
export interface BackoffOptions {
  /** First delay in ms. @default 250 */
  initialMs?: number;
  /** Upper bound for a delay in ms. @default 30000 */
  maxMs?: number;
  /** Growth per attempt. @default 1.6 */
  multiplier?: number;
  /** Relative spread, 0..1. @default 0.2 */
  jitter?: number;
}

export const backoffDefaults = Object.freeze({ initialMs: 250, maxMs: 30000, multiplier: 1.6, jitter: 0.2 });

export class Backoff {
  private attempt = 0;
  private readonly o: Required<BackoffOptions>;

  constructor(options: BackoffOptions = {}, private readonly random: () => number = Math.random) {
    this.o = { ...backoffDefaults, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) };
  }

  /** The next delay (ms), advancing the attempt counter. */
  next(): number {
    const base = Math.min(this.o.maxMs, this.o.initialMs * Math.pow(this.o.multiplier, this.attempt));
    this.attempt++;
    const spread = this.o.jitter * (this.random() * 2 - 1);
    return Math.max(0, Math.min(this.o.maxMs, Math.round(base * (1 + spread))));
  }

  /** Start over (after a success). */
  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}
