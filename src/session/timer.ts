/**
 * Timers for deadlines and grace periods of any length.
 *
 * Node's setTimeout fires any delay above 2^31-1 ms (~24.8 days) after 1 ms instead (with a
 * TimeoutOverflowWarning). Deadlines can legitimately be that far away: the CALL timeout is
 * a u32 of milliseconds (~49.7 days), and callers pass any `timeout` or grace period. So a
 * long delay is chained — the timer re-arms itself until the full delay has passed — and
 * Infinity (or NaN) never fires. Short delays are one plain setTimeout, so timers of equal
 * delay still run in the order they were armed.
 */

/** The longest delay setTimeout honours. */
export const MAX_TIMER_MS = 0x7fffffff;

/** Cancels a timer from `armTimer`; safe to call more than once. */
export type CancelTimer = () => void;

const noop: CancelTimer = () => {};

/** Run `fn` once after `ms` milliseconds (negative = as soon as possible; Infinity/NaN = never). */
export function armTimer(ms: number, fn: () => void, options: { unref?: boolean } = {}): CancelTimer {
  if (!(ms < Infinity)) return noop;
  const due = Date.now() + Math.max(0, ms);
  let timer: NodeJS.Timeout | undefined;
  const arm = (delay: number): void => {
    timer = delay > MAX_TIMER_MS ? setTimeout(() => arm(due - Date.now()), MAX_TIMER_MS) : setTimeout(fn, Math.max(0, delay));
    if (options.unref === true) timer.unref?.();
  };
  arm(ms);
  return () => clearTimeout(timer);
}

/**
 * A timer handle for hot paths: a plain Node Timeout for ordinary delays (no closure
 * allocated when the callback is a module-level function taking `arg`), a chained timer
 * for delays beyond MAX_TIMER_MS, undefined for "never".
 */
export type TimerHandle = NodeJS.Timeout | CancelTimer | undefined;

/** Call `fn(arg)` after `ms` (Infinity/NaN: never). Stop it with `stopTimer`. */
export function startTimer<A>(ms: number, fn: (arg: A) => void, arg: A): TimerHandle {
  if (!(ms < Infinity)) return undefined;
  if (ms <= MAX_TIMER_MS) return setTimeout(fn, Math.max(0, ms), arg);
  return armTimer(ms, () => fn(arg));
}

export function stopTimer(h: TimerHandle): void {
  if (h === undefined) return;
  if (typeof h === 'function') h();
  else clearTimeout(h);
}
