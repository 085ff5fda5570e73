/**
 * A token bucket: `burst` tokens at most, refilled continuously at `rate` tokens per second.
 * Refill is lazy (computed from the clock on each use), so an idle bucket costs no timer.
 * The clock is injectable (`src/util/clock.ts`) so tests move time by hand.
 */
import { createError, ErrorCode } from '../errors.js';
import { systemClock, type Clock } from '../util/clock.js';

/** Rate and burst of one bucket. */
export interface BucketSpec {
  /** Tokens added per second; > 0. */
  rate: number;
  /** Capacity (and the initial fill); >= 1. */
  burst: number;
}

/** Floating-point slack so that refills summing to a whole token count as one. */
const EPSILON = 1e-9;

export class TokenBucket {
  readonly rate: number;
  readonly burst: number;
  #tokens: number;
  #last: number;
  readonly #clock: Clock;

  constructor(spec: BucketSpec, clock: Clock = systemClock) {
    checkSpec(spec, 'TokenBucket');
    this.rate = spec.rate;
    this.burst = spec.burst;
    this.#clock = clock;
    this.#tokens = spec.burst;
    this.#last = clock.now();
  }

  /** Tokens available now (fractional). */
  get tokens(): number {
    this.#refill();
    return this.#tokens;
  }

  /** Take `n` tokens if there are that many; returns whether it did. Takes nothing on false. */
  tryTake(n = 1): boolean {
    this.#refill();
    if (this.#tokens + EPSILON < n) return false;
    this.#tokens = Math.max(0, this.#tokens - n);
    return true;
  }

  /** Give back `n` tokens (capped at `burst`): undo a `tryTake` whose call was refused elsewhere. */
  refund(n = 1): void {
    this.#tokens = Math.min(this.burst, this.#tokens + n);
  }

  /** Milliseconds until `n` tokens are available (0 when they are now; Infinity when n > burst). */
  retryAfterMs(n = 1): number {
    if (n > this.burst) return Infinity;
    this.#refill();
    const deficit = n - this.#tokens;
    return deficit <= EPSILON ? 0 : Math.ceil((deficit * 1000) / this.rate);
  }

  #refill(): void {
    const now = this.#clock.now();
    const elapsed = now - this.#last;
    this.#last = now;
    if (elapsed > 0) this.#tokens = Math.min(this.burst, this.#tokens + (elapsed * this.rate) / 1000);
  }
}

/** Throws INVALID_OPTIONS unless rate > 0 and burst >= 1 (both finite). */
export function checkSpec(spec: BucketSpec, where: string): void {
  if (!(Number.isFinite(spec?.rate) && spec.rate > 0)) throw createError(ErrorCode.INVALID_OPTIONS, `${where}: rate must be a positive number of tokens per second, got ${spec?.rate}`);
  if (!(Number.isFinite(spec.burst) && spec.burst >= 1)) throw createError(ErrorCode.INVALID_OPTIONS, `${where}: burst must be a number >= 1, got ${spec.burst}`);
}
