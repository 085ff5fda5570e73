/**
 * Client-side bulkhead: a `ClientInterceptor` (`(next: Invoke) => Invoke`, STYLE item 9)
 * limiting the calls one client has in flight per method (or per service), so one slow
 * dependency cannot take every socket, buffer and pending promise of the process. It is
 * the server's bulkhead (bulkhead.ts) turned around, and reuses its `Compartment`:
 *
 *   call ─► in flight < max? ─yes─► send (slot held until the call is over)
 *                 │no
 *                 ▼
 *           queue < maxQueue? ─no─► fail 'bulkhead-full' (nothing sent)
 *                 │yes
 *                 ▼
 *           wait (FIFO) ─ slot handed over ─► send
 *                 ├─ queueTimeoutMs passed ─► fail 'queue-timeout' (nothing sent)
 *                 └─ the call's deadline passed / its signal aborted ─► DEADLINE / CANCELLED
 *
 * A refusal is raised locally, before anything is sent: SKEIN_ERR_LIMITED, status
 * RESOURCE_EXHAUSTED, `details: { reason, retryAfterMs }` (and the `retry-after-ms`
 * metadata, as a server's refusal has) where `retryAfterMs` is the average time a slot of
 * that key was held. A server's refusal reaches the client as SKEIN_ERR_REMOTE, so
 * SKEIN_ERR_LIMITED on a client always means "this process refused it".
 *
 * How long a slot is held: unary and client-streaming calls until their promise settles;
 * server-streaming and bidi calls until their stream is over — it ended (OK or not), the
 * caller cancelled it (`cancel()`, its signal, or `break`/`return()` out of `for await`),
 * or its deadline passed (`holdResponseStream()` in hold-stream.ts; released exactly once on every
 * path). A stream that is neither read to its end nor cancelled holds its slot until the
 * call ends by itself: give such streams a deadline.
 *
 * A call that waited is sent with its deadline made absolute at arrival (a `timeout`
 * counts the time spent in the queue). In the default chain (client-policy.ts) the bulkhead
 * is outermost: a call waiting for a slot has spent no retry attempt, and its retries and
 * hedges run inside the one slot.
 *
 * Decisions ('queued', 'bulkhead-full', 'queue-timeout', 'cancelled' in the queue) are
 * published on `skein:resilience:client-bulkhead` (only with subscribers) and counted in
 * `.stats()`.
 */
import diagnostics from 'node:diagnostics_channel';
import { createError, ErrorCode, isSkeinError, type SkeinError } from '../errors.js';
import { MethodKind } from '../rpc/define.js';
import type { CallOptions, ClientInterceptor, Invoke, OutgoingCall, ResponseStream } from '../rpc/types.js';
import type { Clock } from '../util/clock.js';
import { Compartment, compartmentStats, resolveCompartmentOptions, type BulkheadStats } from './bulkhead.js';
import { ClientBulkheadDefaults } from './defaults.js';
import { Ewma, RETRY_AFTER_TRAILER } from './events.js';
import { once } from './hold.js';
import { failedStream, holdResponseStream } from './hold-stream.js';

/** The diagnostics channel of client bulkhead decisions. */
export const CLIENT_BULKHEAD_CHANNEL = 'skein:resilience:client-bulkhead';

export interface ClientBulkheadOptions {
  /** Calls in flight at once per key. @default 64 */
  maxConcurrent?: number;
  /** Calls waiting (FIFO) per key once maxConcurrent are in flight. @default 0 */
  maxQueue?: number;
  /** Longest wait in the queue, ms; the call's deadline and AbortSignal also end it. @default 1000 */
  queueTimeoutMs?: number;
  /** 'method': one limit per method; 'service': one for all methods of the service. @default 'method' */
  key?: 'service' | 'method';
  /** Time source of the queue timeout (tests). @default systemClock */
  clock?: Clock;
}

/** Counters of one client bulkhead (summed over its keys); the same fields as the server's. */
export type ClientBulkheadStats = BulkheadStats;

/** Published on `skein:resilience:client-bulkhead` for every decision but an immediate admission. */
export interface ClientBulkheadEvent {
  service: string;
  method: string;
  /** The limit's key: 'service.method', or the service with `key: 'service'`. */
  key: string;
  /**
   * 'queued' (waits for a slot), 'bulkhead-full' / 'queue-timeout' (refused: nothing was
   * sent), 'cancelled' (left the queue: its deadline passed or its signal aborted).
   */
  reason: 'queued' | 'bulkhead-full' | 'queue-timeout' | 'cancelled';
  /** The retry-after given with a refusal, ms (0 for the other reasons). */
  retryAfterMs: number;
  /** Calls holding a slot of this key now. */
  running: number;
  /** Calls waiting for a slot of this key now. */
  waiting: number;
}

/** A client bulkhead; `stats()` counts its decisions. */
export interface ClientBulkheadInterceptor extends ClientInterceptor {
  stats(): ClientBulkheadStats;
}

interface Entry {
  readonly key: string;
  readonly c: Compartment;
  /** How long a slot is held, ms (the retry-after estimate). */
  readonly hold: Ewma;
}

/** Longest delay setTimeout takes (a longer deadline cannot matter to a queue wait). */
const MAX_TIMER_MS = 2 ** 31 - 1;

const channel = diagnostics.channel(CLIENT_BULKHEAD_CHANNEL);

function isStreamingKind(call: OutgoingCall): boolean {
  return call.kind === MethodKind.SERVER_STREAM || call.kind === MethodKind.BIDI;
}

/** The call's absolute deadline (Date.now() scale) from its options, or undefined for none. */
function deadlineOf(o: CallOptions): number | undefined {
  let deadline = o.deadline;
  if (o.timeout !== undefined && Number.isFinite(o.timeout)) {
    const d = Date.now() + o.timeout;
    if (deadline === undefined || d < deadline) deadline = d;
  }
  return deadline;
}

function abortReason(signal: AbortSignal): SkeinError {
  const r: unknown = signal.reason;
  return isSkeinError(r) ? r : createError(ErrorCode.CANCELLED, 'call cancelled while waiting for a bulkhead slot', { cause: r });
}

/** The client bulkhead: see the module comment and docs/resilience.md. */
export function clientBulkhead(options: ClientBulkheadOptions = {}): ClientBulkheadInterceptor {
  const o = resolveCompartmentOptions('clientBulkhead()', options, ClientBulkheadDefaults);
  const entries = new Map<string, Entry>();
  const counters = { admitted: 0, queued: 0, refusedFull: 0, refusedTimeout: 0, cancelledInQueue: 0 };

  const entryOf = (call: OutgoingCall): Entry => {
    const key = o.key === 'service' ? call.service : `${call.service}.${call.method}`;
    let e = entries.get(key);
    if (e === undefined) entries.set(key, (e = { key, c: new Compartment(o.maxConcurrent, o.maxQueue), hold: new Ewma() }));
    return e;
  };

  const publish = (call: OutgoingCall, e: Entry, reason: ClientBulkheadEvent['reason'], retryAfterMs: number): void => {
    if (!channel.hasSubscribers) return;
    const event: ClientBulkheadEvent = { service: call.service, method: call.method, key: e.key, reason, retryAfterMs, running: e.c.running, waiting: e.c.waiting };
    channel.publish(event);
  };

  const refuse = (call: OutgoingCall, e: Entry, reason: 'bulkhead-full' | 'queue-timeout', what: string): SkeinError => {
    const ms = Math.max(0, Math.ceil(e.hold.value ?? ClientBulkheadDefaults.retryAfterMs));
    publish(call, e, reason, ms);
    return createError(ErrorCode.LIMITED, `client bulkhead ${what} for ${e.key}: the call was not sent (retry after ${ms}ms)`, {
      details: { reason, retryAfterMs: ms },
      metadata: { [RETRY_AFTER_TRAILER]: String(ms) },
    });
  };

  /** A slot was taken: count it, and return its release (once; feeds the hold-time average). */
  const take = (e: Entry): (() => void) => {
    counters.admitted++;
    const start = o.clock.now();
    return once(() => {
      e.hold.add(o.clock.now() - start);
      e.c.release();
    });
  };

  /**
   * Queue `call` for a slot of `e`. Resolves, with the call to send, once the slot is handed
   * over (the caller then holds it); rejects with the refusal, DEADLINE or CANCELLED.
   * `ac` aborts the wait (a stream cancelled before it started).
   */
  const enqueue = (call: OutgoingCall, e: Entry, ac: AbortController): Promise<OutgoingCall> => {
    const signal = call.options.signal;
    if (signal?.aborted === true) return Promise.reject(abortReason(signal));
    const deadline = deadlineOf(call.options);
    if (deadline !== undefined && deadline <= Date.now()) return Promise.reject(createError(ErrorCode.DEADLINE, `deadline exceeded before ${call.service}.${call.method} got a bulkhead slot`));
    counters.queued++;
    const onSignal = (): void => ac.abort(abortReason(signal!));
    signal?.addEventListener('abort', onSignal, { once: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (deadline !== undefined && deadline - Date.now() <= MAX_TIMER_MS) {
      timer = setTimeout(() => ac.abort(createError(ErrorCode.DEADLINE, `deadline exceeded waiting for a bulkhead slot for ${e.key}`)), deadline - Date.now());
    }
    let timedOut = false;
    const cleanup = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onSignal);
    };
    const waited = e.c.wait(o.queueTimeoutMs, o.clock, ac.signal, () => {
      timedOut = true;
      counters.refusedTimeout++;
      return refuse(call, e, 'queue-timeout', `queue timeout after ${o.queueTimeoutMs}ms`);
    });
    publish(call, e, 'queued', 0); // after joining the queue: `waiting` counts this call
    return waited.then(
      () => {
        cleanup();
        // The wait counts against the call's timeout: send it with the deadline fixed at arrival.
        if (deadline === undefined || call.options.timeout === undefined) return call;
        const sent: CallOptions = { ...call.options, deadline };
        delete sent.timeout;
        return { ...call, options: sent };
      },
      (err: unknown) => {
        cleanup();
        if (!timedOut) {
          counters.cancelledInQueue++;
          publish(call, e, 'cancelled', 0);
        }
        throw err;
      },
    );
  };

  const single = (next: Invoke, call: OutgoingCall, e: Entry): Promise<unknown> => {
    const send = (c: OutgoingCall): Promise<unknown> => {
      const release = take(e);
      let out: Promise<unknown>;
      try {
        out = Promise.resolve(next(c));
      } catch (err) {
        release();
        return Promise.reject(err);
      }
      return out.then(
        (v) => {
          release();
          return v;
        },
        (err: unknown) => {
          release();
          throw err;
        },
      );
    };
    if (e.c.tryAcquire()) return send(call);
    if (!e.c.canQueue()) {
      counters.refusedFull++;
      return Promise.reject(refuse(call, e, 'bulkhead-full', 'full'));
    }
    return enqueue(call, e, new AbortController()).then(send);
  };

  const stream = (next: Invoke, call: OutgoingCall, e: Entry): ResponseStream<unknown> => {
    if (e.c.tryAcquire()) {
      const release = take(e);
      let out: ResponseStream<unknown> | Promise<unknown>;
      try {
        out = next(call);
      } catch (err) {
        release();
        return failedStream(err);
      }
      return holdResponseStream(out as ResponseStream<unknown> | Promise<ResponseStream<unknown>>, release);
    }
    if (!e.c.canQueue()) {
      counters.refusedFull++;
      return failedStream(refuse(call, e, 'bulkhead-full', 'full'));
    }
    const ac = new AbortController();
    let release: (() => void) | undefined;
    const source = enqueue(call, e, ac).then((c) => {
      release = take(e); // from here on, `source` settling (or the stream ending) releases it
      if (ac.signal.aborted) throw ac.signal.reason; // cancelled as the slot came: not sent
      return next(c) as ResponseStream<unknown> | Promise<ResponseStream<unknown>>;
    });
    return holdResponseStream(source, () => release?.(), (err) => ac.abort(err));
  };

  const interceptor = ((next: Invoke): Invoke =>
    (call) => {
      const e = entryOf(call);
      return isStreamingKind(call) ? stream(next, call, e) : single(next, call, e);
    }) as ClientBulkheadInterceptor;
  Object.defineProperty(interceptor, 'stats', {
    value: (): ClientBulkheadStats => compartmentStats(counters, entries.values()),
  });
  return interceptor;
}
