/**
 * An injectable clock. Code that waits (backoff, breakers, leases, keepalive) takes a
 * `Clock` instead of calling the timer globals, so tests can swap in a fake clock
 * (`test/helpers/clock.ts`) and move time forward by hand instead of sleeping.
 */
import { performance } from 'node:perf_hooks';

export interface Clock {
  /**
   * Milliseconds on a monotonic clock. The origin is arbitrary: only differences between
   * two readings mean anything (do not compare with `Date.now()`).
   */
  now(): number;
  /** Run `fn` once after `ms` milliseconds; returns a handle for `clearTimeout`. Never calls `fn` synchronously. */
  setTimeout(fn: () => void, ms: number): unknown;
  /** Cancel a timer made by this clock's `setTimeout`; unknown or already-fired handles are ignored. */
  clearTimeout(handle: unknown): void;
}

/** The real clock: `performance.now()` and the global timers. */
export const systemClock: Clock = Object.freeze({
  now: (): number => performance.now(),
  setTimeout: (fn: () => void, ms: number): unknown => setTimeout(fn, ms),
  clearTimeout: (handle: unknown): void => clearTimeout(handle as ReturnType<typeof setTimeout> | undefined),
});

/** Sleep `ms` on `clock`, or less if `signal` aborts (never rejects). */
export function sleep(ms: number, signal: AbortSignal, clock: Clock = systemClock): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clock.clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = clock.setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
