/**
 * A retry budget (client side), in the style of Finagle's RetryBudget and grpc-js's
 * RetryThrottler: each call deposits `ratio` tokens, each retry withdraws one, and on top
 * of that `minPerSecond` retries per second are always allowed (a token bucket of that rate
 * and burst, so a client with little traffic can still retry). When both are empty a retry
 * is refused and the call fails with its last error: retries cannot multiply an outage —
 * over any interval, retries ≤ ratio × calls + minPerSecond × (seconds + 1).
 *
 * The clock is injectable (`src/util/clock.ts`) so tests move time by hand.
 */
import { createError, ErrorCode } from '../errors.js';
import { systemClock, type Clock } from '../util/clock.js';
import { RetryBudgetDefaults } from './defaults.js';
import { TokenBucket } from './token-bucket.js';

export interface RetryBudgetOptions {
  /** Tokens deposited per call (0..1 is the useful range; 0 leaves only `minPerSecond`). @default 0.2 */
  ratio?: number;
  /** Retries per second always allowed (rate and burst of a token bucket; 0: none). @default 10 */
  minPerSecond?: number;
  /** Cap of the deposited tokens. @default 100 */
  maxTokens?: number;
  /** Clock for the per-second allowance. @default systemClock */
  clock?: Clock;
}

export interface RetryBudgetStats {
  /** Calls that deposited. */
  deposits: number;
  /** Retries allowed (from deposits or the per-second allowance). */
  withdrawn: number;
  /** Retries refused. */
  refused: number;
  /** Deposited tokens available now. */
  balance: number;
}

export interface RetryBudget {
  readonly ratio: number;
  readonly minPerSecond: number;
  /** A call starts: deposit `ratio` tokens. */
  deposit(): void;
  /** A retry wants to go: take one token; false when the budget is spent. */
  tryWithdraw(): boolean;
  stats(): RetryBudgetStats;
}

function check(name: string, v: number, min: number): void {
  if (!(Number.isFinite(v) && v >= min)) throw createError(ErrorCode.INVALID_OPTIONS, `retryBudget(): ${name} must be a number >= ${min}, got ${v}`);
}

/** A retry budget; see the module comment. Share one per client (retry() makes one by default). */
export function retryBudget(options: RetryBudgetOptions = {}): RetryBudget {
  const ratio = options.ratio ?? RetryBudgetDefaults.ratio;
  const minPerSecond = options.minPerSecond ?? RetryBudgetDefaults.minPerSecond;
  const maxTokens = options.maxTokens ?? RetryBudgetDefaults.maxTokens;
  check('ratio', ratio, 0);
  check('minPerSecond', minPerSecond, 0);
  check('maxTokens', maxTokens, 1);
  const reserve = minPerSecond > 0 ? new TokenBucket({ rate: minPerSecond, burst: Math.max(1, minPerSecond) }, options.clock ?? systemClock) : undefined;
  let balance = 0;
  let deposits = 0;
  let withdrawn = 0;
  let refused = 0;
  return Object.freeze({
    ratio,
    minPerSecond,
    deposit(): void {
      deposits++;
      balance = Math.min(maxTokens, balance + ratio);
    },
    tryWithdraw(): boolean {
      // 1e-9: deposits of 0.2 summing to a whole token count as one.
      if (balance + 1e-9 >= 1) {
        balance = Math.max(0, balance - 1);
        withdrawn++;
        return true;
      }
      if (reserve?.tryTake(1) === true) {
        withdrawn++;
        return true;
      }
      refused++;
      return false;
    },
    stats(): RetryBudgetStats {
      return { deposits, withdrawn, refused, balance };
    },
  });
}
