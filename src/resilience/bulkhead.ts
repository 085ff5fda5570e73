/**
 * Bulkhead: at most `maxConcurrent` calls run at once per key (a method, or a whole
 * service), up to `maxQueue` more wait in FIFO order, and the rest are refused at once
 * with RESOURCE_EXHAUSTED and a retry-after. One slow method thus cannot take every
 * resource of the process, and a full server answers fast instead of piling up work.
 *
 *   arrive ─► running < max? ─yes─► run (slot held until the call is over, see hold.ts)
 *                  │no
 *                  ▼
 *             queue < maxQueue? ─no─► refuse 'bulkhead-full'
 *                  │yes
 *                  ▼
 *             wait (FIFO) ─ slot handed over ─► run
 *                  ├─ queueTimeoutMs passed ─► refuse 'queue-timeout'
 *                  └─ call cancelled / deadline passed ─► fail with the signal's reason
 *
 * A finishing call hands its slot straight to the first waiter, so a waiter can never be
 * overtaken by a new arrival. `Compartment` is the limit itself, independent of the RPC
 * types, so a client-side bulkhead can reuse it.
 */
import { createError, ErrorCode } from '../errors.js';
import type { Handle, IncomingCall, ServerInterceptor } from '../rpc/types.js';
import { systemClock, type Clock } from '../util/clock.js';
import { BulkheadDefaults } from './defaults.js';
import { Ewma, refusal, ResilienceChannel } from './events.js';
import { runHeld } from './hold.js';

export interface BulkheadOptions {
  /** Calls running at once per key. @default 64 */
  maxConcurrent?: number;
  /** Calls waiting per key once maxConcurrent run. @default 0 */
  maxQueue?: number;
  /** Longest wait in the queue, ms; also bounded by the call's deadline and cancellation. @default 1000 */
  queueTimeoutMs?: number;
  /** 'method': one limit per method; 'service': one per service. @default 'method' */
  key?: 'service' | 'method';
  /** Time source (tests). @default systemClock */
  clock?: Clock;
}

/** Counters of one bulkhead (summed over its keys). */
export interface BulkheadStats {
  /** Calls that got a slot (at once or after waiting). */
  admitted: number;
  /** Calls that had to wait. */
  queued: number;
  /** Refused because the queue was full. */
  refusedFull: number;
  /** Refused after waiting queueTimeoutMs. */
  refusedTimeout: number;
  /** Cancelled (or past their deadline) while waiting. */
  cancelledInQueue: number;
  /** Calls holding a slot now. */
  running: number;
  /** Calls waiting now. */
  waiting: number;
}

export type BulkheadInterceptor = ServerInterceptor & { stats(): BulkheadStats };

/** A bulkhead's options (server or client) with the defaults applied and checked. */
export interface CompartmentOptions {
  maxConcurrent: number;
  maxQueue: number;
  queueTimeoutMs: number;
  key: 'service' | 'method';
  clock: Clock;
}

/**
 * Apply `defaults` to `o` and check the result, for bulkhead() and clientBulkhead() (not
 * exported from the package). `fn` names the caller in the messages of the
 * INVALID_OPTIONS errors, e.g. 'bulkhead()'.
 */
export function resolveCompartmentOptions(fn: string, o: BulkheadOptions, defaults: Readonly<Omit<CompartmentOptions, 'clock'>>): Readonly<CompartmentOptions> {
  const r: CompartmentOptions = {
    maxConcurrent: o.maxConcurrent ?? defaults.maxConcurrent,
    maxQueue: o.maxQueue ?? defaults.maxQueue,
    queueTimeoutMs: o.queueTimeoutMs ?? defaults.queueTimeoutMs,
    key: o.key ?? defaults.key,
    clock: o.clock ?? systemClock,
  };
  if (!(Number.isInteger(r.maxConcurrent) && r.maxConcurrent >= 1)) throw createError(ErrorCode.INVALID_OPTIONS, `${fn}: maxConcurrent must be an integer >= 1, got ${r.maxConcurrent}`);
  if (!(Number.isInteger(r.maxQueue) && r.maxQueue >= 0)) throw createError(ErrorCode.INVALID_OPTIONS, `${fn}: maxQueue must be an integer >= 0, got ${r.maxQueue}`);
  if (!(r.queueTimeoutMs > 0)) throw createError(ErrorCode.INVALID_OPTIONS, `${fn}: queueTimeoutMs must be > 0, got ${r.queueTimeoutMs}`);
  if (r.key !== 'service' && r.key !== 'method') throw createError(ErrorCode.INVALID_OPTIONS, `${fn}: key must be 'service' or 'method', got ${String(r.key)}`);
  return Object.freeze(r);
}

interface Waiter {
  grant: () => void;
}

/**
 * A counting semaphore with a bounded FIFO queue. `tryAcquire()` takes a slot if one is
 * free; `wait()` queues (when there is room) and resolves once a `release()` hands the
 * slot over. Every granted slot must be released exactly once.
 */
export class Compartment {
  running = 0;
  readonly #queue: Waiter[] = [];
  constructor(
    readonly maxConcurrent: number,
    readonly maxQueue: number,
  ) {}

  get waiting(): number {
    return this.#queue.length;
  }

  /** Take a free slot; false when all are taken (or someone is already waiting: FIFO). */
  tryAcquire(): boolean {
    if (this.running >= this.maxConcurrent || this.#queue.length > 0) return false;
    this.running++;
    return true;
  }

  /** Whether a caller may queue now. */
  canQueue(): boolean {
    return this.#queue.length < this.maxQueue;
  }

  /**
   * Queue for a slot. Resolves with the slot granted; rejects with `onTimeout()` after
   * `timeoutMs`, or with the signal's reason when it aborts (the waiter then leaves the queue).
   */
  wait(timeoutMs: number, clock: Clock, signal: AbortSignal | undefined, onTimeout: () => unknown): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const leave = (): void => {
        const i = this.#queue.indexOf(waiter);
        if (i >= 0) this.#queue.splice(i, 1);
        clock.clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        grant: () => {
          clock.clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        leave();
        reject(signal!.reason);
      };
      const timer = clock.setTimeout(() => {
        leave();
        reject(onTimeout());
      }, timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#queue.push(waiter);
    });
  }

  /** Give a slot back: straight to the first waiter, or to the pool. */
  release(): void {
    const w = this.#queue.shift();
    if (w !== undefined) w.grant();
    else this.running--;
  }
}

/**
 * A bulkhead's `stats()`: its decision `counters` plus the calls running and waiting now in
 * its `compartments` (one per key). Shared with clientBulkhead().
 */
export function compartmentStats(counters: Omit<BulkheadStats, 'running' | 'waiting'>, compartments: Iterable<{ readonly c: Compartment }>): BulkheadStats {
  let running = 0;
  let waiting = 0;
  for (const { c } of compartments) {
    running += c.running;
    waiting += c.waiting;
  }
  return { ...counters, running, waiting };
}

/** A bulkhead per method (or service); see the module comment. */
export function bulkhead(options: BulkheadOptions = {}): BulkheadInterceptor {
  const o = resolveCompartmentOptions('bulkhead()', options, BulkheadDefaults);
  const compartments = new Map<string, { c: Compartment; hold: Ewma }>();
  const counters = { admitted: 0, queued: 0, refusedFull: 0, refusedTimeout: 0, cancelledInQueue: 0 };

  const compartmentOf = (call: IncomingCall): { c: Compartment; hold: Ewma } => {
    const key = o.key === 'service' ? call.service : `${call.service}.${call.method}`;
    let entry = compartments.get(key);
    if (entry === undefined) compartments.set(key, (entry = { c: new Compartment(o.maxConcurrent, o.maxQueue), hold: new Ewma() }));
    return entry;
  };

  const retryAfter = (hold: Ewma): number => hold.value ?? BulkheadDefaults.retryAfterMs;

  const interceptor = ((next: Handle): Handle => {
    const run = (call: IncomingCall, entry: { c: Compartment; hold: Ewma }): unknown => {
      counters.admitted++;
      const start = o.clock.now();
      return runHeld(next, call, () => {
        entry.hold.add(o.clock.now() - start);
        entry.c.release();
      });
    };
    return (call: IncomingCall) => {
      const entry = compartmentOf(call);
      const c = entry.c;
      if (c.tryAcquire()) return run(call, entry);
      if (!c.canQueue()) {
        counters.refusedFull++;
        throw refusal(ResilienceChannel.BULKHEAD, call.service, call.method, 'bulkhead-full', retryAfter(entry.hold), 'bulkhead full');
      }
      counters.queued++;
      const signal = call.ctx.signal;
      if (signal.aborted) throw signal.reason;
      const wait = c.wait(o.queueTimeoutMs, o.clock, signal, () => {
        counters.refusedTimeout++;
        return refusal(ResilienceChannel.BULKHEAD, call.service, call.method, 'queue-timeout', retryAfter(entry.hold), `bulkhead queue timeout after ${o.queueTimeoutMs}ms`);
      });
      return wait.then(
        () => run(call, entry),
        (err: unknown) => {
          if (!isRefusal(err)) counters.cancelledInQueue++;
          throw err;
        },
      );
    };
  }) as BulkheadInterceptor;
  interceptor.stats = () => compartmentStats(counters, compartments.values());
  return interceptor;
}

function isRefusal(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { details?: { reason?: unknown } }).details?.reason === 'queue-timeout';
}
