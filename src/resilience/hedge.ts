/**
 * Client-side hedging: a `ClientInterceptor` (`(next: Invoke) => Invoke`, STYLE item 9).
 *
 * Opt-in, for idempotent unary methods only (a listed method that is not idempotent is
 * still never hedged). The first attempt is sent at once; when it has not answered after
 * the hedge delay, a second attempt is sent (up to `maxAttempts` in all, one more per
 * delay). The attempts share the call's route hint (ROUTE_HINT, as retry.ts), so through a
 * discovery channel the hedge goes to an instance the call has not tried yet.
 *
 *   attempt 1 ──────────────────────────x (cancelled: its AbortSignal aborts)
 *             ├── delay ──┤ attempt 2 ───✓ wins
 *
 * The first success wins and every other attempt is cancelled. A failure while no other
 * attempt is in flight fails the call at once (so a first attempt that fails before the
 * hedge is sent just fails: retrying is retry()'s job); when every attempt failed, the call
 * fails with the last error. The call's deadline (its `deadline`, or `timeout` counted from
 * the start, the earlier) covers all attempts, and no hedge is sent at or past it, nor once
 * the caller's signal aborted.
 *
 * Delay: a fixed number of ms, or `{ percentile, minMs, maxMs, window }`: that percentile
 * (nearest rank) of the latencies of the method's last `window` successful attempts,
 * clamped to [minMs, maxMs]; `maxMs` until a first latency is observed.
 *
 * Budget: each hedge withdraws one token from a RetryBudget; none left → no hedge. Pass
 * retry()'s `budget` to share it (then retry() deposits per call and hedge() only
 * withdraws); without one, hedge() makes its own and deposits per hedgeable call.
 *
 * Every hedged call is published on `skein:resilience:hedge` (only with subscribers) as
 * `{ service, method, delayMs, winner }` and counted in `.stats()`.
 */
import diagnostics from 'node:diagnostics_channel';
import { createError, ErrorCode } from '../errors.js';
import { MethodKind } from '../rpc/define.js';
import { ROUTE_HINT, RouteHint, type CallOptions, type ClientInterceptor, type Invoke, type OutgoingCall } from '../rpc/types.js';
import { systemClock, type Clock } from '../util/clock.js';
import { HedgeDefaults } from './defaults.js';
import { retryBudget, type RetryBudget } from './retry-budget.js';

/** The diagnostics channel of hedging decisions. */
export const HEDGE_CHANNEL = 'skein:resilience:hedge';

/** Published on `skein:resilience:hedge` when a hedged call (one that sent a hedge) ends. */
export interface HedgeEvent {
  service: string;
  method: string;
  /** The hedge delay used for this call, ms. */
  delayMs: number;
  /** Which attempt answered (1 = the first); 0 when every attempt failed. */
  winner: number;
}

/** A delay from the recent latencies of each method. */
export interface HedgePercentileDelay {
  /** Percentile in (0, 1]. @default 0.95 */
  percentile?: number;
  /** Floor, ms. @default 10 */
  minMs?: number;
  /** Ceiling, and the delay before any latency was observed, ms. @default 1000 */
  maxMs?: number;
  /** Successful attempts per method remembered. @default 100 */
  window?: number;
}

export interface HedgeOptions {
  /** Methods hedged, as 'service.method'. @default every idempotent unary method */
  methods?: readonly string[];
  /** Fixed delay (ms) before a hedge, or a percentile of recent latencies. @default { percentile: 0.95, minMs: 10, maxMs: 1000, window: 100 } */
  delayMs?: number | HedgePercentileDelay;
  /** Attempts in all, the first included (1 turns hedging off). @default 2 */
  maxAttempts?: number;
  /** Budget each hedge withdraws a token from (share retry()'s). @default a new retryBudget() per hedge() interceptor */
  budget?: RetryBudget;
  /** Clock for the hedge delay and latencies. @default systemClock */
  clock?: Clock;
}

export interface HedgeStats {
  /** Hedgeable calls that went through the interceptor. */
  calls: number;
  /** Calls that sent at least one hedge. */
  hedged: number;
  /** Calls answered by a hedge (not the first attempt). */
  hedgeWon: number;
  /** Hedges not sent because the budget was empty. */
  budgetRefused: number;
}

export interface HedgeInterceptor extends ClientInterceptor {
  readonly budget: RetryBudget;
  /** The delay the next call of `service.method` would wait before hedging, ms. */
  delayFor(key: string): number;
  stats(): HedgeStats;
}

/** The last `size` latencies, with a nearest-rank percentile. */
export class LatencyWindow {
  readonly #samples: number[] = [];
  #next = 0;
  constructor(readonly size: number) {}
  add(ms: number): void {
    if (this.#samples.length < this.size) this.#samples.push(ms);
    else this.#samples[this.#next] = ms;
    this.#next = (this.#next + 1) % this.size;
  }
  get count(): number {
    return this.#samples.length;
  }
  /** Nearest-rank percentile (p in (0, 1]); undefined when empty. */
  percentile(p: number): number | undefined {
    if (this.#samples.length === 0) return undefined;
    const sorted = [...this.#samples].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
  }
}

const hedgeChannel = diagnostics.channel(HEDGE_CHANNEL);

function check(name: string, v: number, min: number, max = Infinity): number {
  if (!(Number.isFinite(v) && v >= min && v <= max)) throw createError(ErrorCode.INVALID_OPTIONS, `hedge(): ${name} must be a number in [${min}, ${max}], got ${v}`);
  return v;
}

/** The hedging interceptor: see the module comment and docs/resilience.md. */
export function hedge(options: HedgeOptions = {}): HedgeInterceptor {
  const maxAttempts = Math.floor(check('maxAttempts', options.maxAttempts ?? HedgeDefaults.maxAttempts, 1));
  const methods = options.methods === undefined ? undefined : new Set(options.methods);
  const clock = options.clock ?? systemClock;
  const ownBudget = options.budget === undefined;
  const budget = options.budget ?? retryBudget({ clock });
  const d = options.delayMs ?? {};
  const fixed = typeof d === 'number' ? check('delayMs', d, 0) : undefined;
  const pd = typeof d === 'number' ? {} : d;
  const percentile = check('delayMs.percentile', pd.percentile ?? HedgeDefaults.percentile, 0, 1);
  const minMs = check('delayMs.minMs', pd.minMs ?? HedgeDefaults.minMs, 0);
  const maxMs = check('delayMs.maxMs', pd.maxMs ?? HedgeDefaults.maxMs, minMs);
  const windowSize = Math.floor(check('delayMs.window', pd.window ?? HedgeDefaults.window, 1));
  const windows = new Map<string, LatencyWindow>();
  const stats: HedgeStats = { calls: 0, hedged: 0, hedgeWon: 0, budgetRefused: 0 };

  const delayFor = (key: string): number => {
    if (fixed !== undefined) return fixed;
    const p = windows.get(key)?.percentile(percentile);
    return p === undefined ? maxMs : Math.min(maxMs, Math.max(minMs, p));
  };
  const record = (key: string, ms: number): void => {
    if (fixed !== undefined) return;
    let w = windows.get(key);
    if (w === undefined) windows.set(key, (w = new LatencyWindow(windowSize)));
    w.add(ms);
  };

  function run(next: Invoke, call: OutgoingCall, key: string): Promise<unknown> {
    stats.calls++;
    if (ownBudget) budget.deposit();
    const o = call.options;
    let deadline = o.deadline;
    if (o.timeout !== undefined && Number.isFinite(o.timeout)) {
      const dl = Date.now() + o.timeout;
      if (deadline === undefined || dl < deadline) deadline = dl;
    }
    const hint: RouteHint = o[ROUTE_HINT] ?? new RouteHint();
    const delayMs = delayFor(key);
    return new Promise<unknown>((resolve, reject) => {
      const controllers: AbortController[] = [];
      let settled = false;
      let inFlight = 0;
      let timer: unknown;
      const finish = (winner: number): void => {
        settled = true;
        if (timer !== undefined) clock.clearTimeout(timer);
        timer = undefined;
        const reason = createError(ErrorCode.CANCELLED, `hedged call to ${key}: another attempt answered`);
        controllers.forEach((ac, i) => {
          if (i + 1 !== winner) ac.abort(reason);
        });
        if (controllers.length > 1) {
          stats.hedged++;
          if (winner > 1) stats.hedgeWon++;
          if (hedgeChannel.hasSubscribers) {
            const event: HedgeEvent = { service: call.service, method: call.method, delayMs, winner };
            hedgeChannel.publish(event);
          }
        }
      };
      const launch = (): void => {
        const n = controllers.length + 1;
        const ac = new AbortController();
        controllers.push(ac);
        const attemptOptions: CallOptions = { ...o, signal: o.signal === undefined ? ac.signal : AbortSignal.any([o.signal, ac.signal]), [ROUTE_HINT]: hint };
        if (deadline !== undefined) {
          delete attemptOptions.timeout;
          attemptOptions.deadline = deadline;
        }
        const started = clock.now();
        inFlight++;
        Promise.resolve()
          .then(() => next({ ...call, options: attemptOptions }))
          .then(
            (reply) => {
              inFlight--;
              if (settled) return;
              record(key, clock.now() - started);
              finish(n);
              resolve(reply);
            },
            (err: unknown) => {
              inFlight--;
              if (settled) return;
              // Wait for the others; fail when none is left in flight (the last error).
              if (inFlight > 0) return;
              finish(0);
              reject(err);
            },
          );
        if (n < maxAttempts) timer = clock.setTimeout(onDelay, delayMs);
      };
      const onDelay = (): void => {
        timer = undefined;
        if (settled || o.signal?.aborted === true) return;
        if (deadline !== undefined && deadline - Date.now() <= 0) return;
        if (!budget.tryWithdraw()) {
          stats.budgetRefused++;
          return;
        }
        launch();
      };
      launch();
    });
  }

  const interceptor = ((next: Invoke): Invoke =>
    (call) => {
      if (maxAttempts < 2 || call.kind !== MethodKind.UNARY || !call.idempotent) return next(call);
      const key = `${call.service}.${call.method}`;
      if (methods !== undefined && !methods.has(key)) return next(call);
      return run(next, call, key);
    }) as HedgeInterceptor;
  Object.defineProperties(interceptor, {
    budget: { value: budget },
    delayFor: { value: delayFor },
    stats: { value: (): HedgeStats => ({ ...stats }) },
  });
  return interceptor;
}

