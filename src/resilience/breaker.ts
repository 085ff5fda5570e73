/**
 * Circuit breakers: a `ClientInterceptor` (`(next: Invoke) => Invoke`, STYLE item 9) over a
 * small state machine with an injectable clock.
 *
 *             N consecutive failures, or failure rate ≥ R over ≥ M calls in the window
 *   CLOSED ─────────────────────────────────────────────────────────────────────────▶ OPEN
 *     ▲                                                                               │
 *     │ a probe succeeds                            openMs passed (×2 per re-opening, │
 *     │                                             up to maxOpenMs)                  ▼
 *     └──────────────────────────────────── HALF_OPEN ◀───────────────────────────────┘
 *                                               │ a probe fails: OPEN again, for twice as long
 *                                               └──────────────────────────────────────────▶
 *
 * While OPEN every call fails at once with UNAVAILABLE (SKEIN_ERR_CIRCUIT_OPEN: no handler
 * ran, so `retry()` may send it again later) and a message saying the circuit is open and when
 * it will probe. HALF_OPEN lets `probes` calls through at once; the rest fail fast.
 *
 * What counts as a failure: a SkeinError whose status is in `failureCodes` (default
 * UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL). Other statuses (INVALID_ARGUMENT, NOT_FOUND,
 * RESOURCE_EXHAUSTED: a server's limiter asking for less traffic, ...) are the server
 * answering, so they count as successes; the caller's own cancellation (CANCELLED) and the
 * transport's events (no connection, a lost or dead connection, GOAWAY: see NEUTRAL) count
 * as neither.
 *
 * The failure-rate window is 10 buckets of `windowMs / 10`: memory is constant whatever
 * the call rate, and the window slides in steps of a tenth.
 *
 * Unary and client-streaming calls are guarded: the outcome is their promise. Server-
 * streaming and bidi calls pass through untouched unless `streams: true` (off by default:
 * see BreakerDefaults.streams). Then an open circuit returns a stream that sends
 * nothing and fails its first read with SKEIN_ERR_CIRCUIT_OPEN; an admitted stream's
 * outcome is how it ends — ended OK: success; failed: judged by its status as above;
 * given up by the caller (`cancel()`, its signal, `break` out of `for await`): ignored —
 * and a half-open probe slot taken by a stream is released however it ends (the stream is
 * wrapped: `holdResponseStream()` in client-bulkhead.ts). A long-lived stream admitted as
 * the probe keeps the circuit half-open until it ends.
 *
 * Every state change is published on `skein:resilience:breaker` (only with subscribers)
 * and counted in `.stats()`.
 */
import diagnostics from 'node:diagnostics_channel';
import { createError, ErrorCode, isSkeinError, type SkeinError } from '../errors.js';
import { MethodKind } from '../rpc/define.js';
import type { ClientInterceptor, Invoke, OutgoingCall, ResponseStream } from '../rpc/types.js';
import { systemClock, type Clock } from '../util/clock.js';
import { failedStream, holdResponseStream, type StreamOutcome } from './hold-stream.js';
import { BreakerDefaults } from './defaults.js';

/** The diagnostics channel of breaker state changes. */
export const BREAKER_CHANNEL = 'skein:resilience:breaker';

/** States of a breaker (`as const`, STYLE item 10). */
export const BreakerState = { CLOSED: 'closed', OPEN: 'open', HALF_OPEN: 'half-open' } as const;
export type BreakerStateValue = (typeof BreakerState)[keyof typeof BreakerState];

/** Published on `skein:resilience:breaker` for every state change. */
export interface BreakerEvent {
  /** The breaker: the service name, or 'service.method' with `scope: 'method'`. */
  key: string;
  from: BreakerStateValue;
  to: BreakerStateValue;
  /** 'consecutive-failures', 'failure-rate', 'probe-failed', 'open-elapsed', 'probe-succeeded'. */
  reason: string;
  /** How long the circuit stays open (0 unless `to` is 'open'), ms. */
  openMs: number;
}

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit. @default 5 */
  consecutiveFailures?: number;
  /** Failure rate (0..1) over the window that opens the circuit. @default 0.5 */
  failureRate?: number;
  /** Calls the window must hold before the failure rate is judged. @default 20 */
  minimumCalls?: number;
  /** Sliding window of the failure rate, ms. @default 10000 */
  windowMs?: number;
  /** First open time, ms. @default 5000 */
  openMs?: number;
  /** Longest open time (doubling per re-opening), ms. @default 60000 */
  maxOpenMs?: number;
  /** Calls let through at once while half-open. @default 1 */
  probes?: number;
  /** Clock (tests use a fake one). @default systemClock */
  clock?: Clock;
  /** Called on each state change (the interceptor publishes from here). */
  onStateChange?: (from: BreakerStateValue, to: BreakerStateValue, reason: string, openMs: number) => void;
}

export interface BreakerOptions extends Omit<CircuitBreakerOptions, 'onStateChange'> {
  /** Statuses counted as failures. @default ['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'INTERNAL'] */
  failureCodes?: readonly string[];
  /** One breaker per service, or per method. @default 'service' */
  scope?: 'service' | 'method';
  /**
   * Guard server-streaming and bidi calls too: an open circuit fails them at once, and how
   * a stream ends is its outcome. Off by default (BreakerDefaults.streams says why). @default false
   */
  streams?: boolean;
}

export interface BreakerStats {
  /** Calls let through (probes included). */
  admitted: number;
  /** Calls failed fast because a circuit was open (or half-open with its probes in flight). */
  rejected: number;
  /** Times a circuit opened. */
  opened: number;
  /** Times a circuit went half-open. */
  halfOpened: number;
  /** Times a circuit closed again. */
  closed: number;
  /** State of each breaker, by key. */
  states: Record<string, BreakerStateValue>;
}

/** A breaker interceptor; `stats()` counts its decisions, `breakerFor(key)` gives a breaker. */
export interface BreakerInterceptor extends ClientInterceptor {
  stats(): BreakerStats;
  /** The breaker of `key` (a service name, or 'service.method' with scope 'method'), if it exists. */
  breakerFor(key: string): CircuitBreaker | undefined;
}

const BUCKETS = 10;

function num(name: string, v: number, min: number, max = Infinity): number {
  if (!(typeof v === 'number' && v >= min && v <= max)) throw createError(ErrorCode.INVALID_OPTIONS, `breaker(): ${name} must be a number in [${min}, ${max}], got ${String(v)}`);
  return v;
}

/** The state machine (no RPC types in it): ask `tryAcquire()`, then report `onSuccess()` / `onFailure()` / `onIgnored()`. */
export class CircuitBreaker {
  #state: BreakerStateValue = BreakerState.CLOSED;
  readonly #consecutive: number;
  readonly #rate: number;
  readonly #minimumCalls: number;
  readonly #bucketMs: number;
  readonly #openMs: number;
  readonly #maxOpenMs: number;
  readonly #probes: number;
  readonly #clock: Clock;
  readonly #onChange: CircuitBreakerOptions['onStateChange'];
  #failuresInARow = 0;
  /** Openings since the last close (the open time doubles with each). */
  #openings = 0;
  #openUntil = 0;
  #probesInFlight = 0;
  // Sliding window: BUCKETS buckets of bucketMs; bucket i covers epoch #epochs[i].
  readonly #calls = new Array<number>(BUCKETS).fill(0);
  readonly #fails = new Array<number>(BUCKETS).fill(0);
  readonly #epochs = new Array<number>(BUCKETS).fill(-1);

  constructor(options: CircuitBreakerOptions = {}) {
    this.#consecutive = Math.floor(num('consecutiveFailures', options.consecutiveFailures ?? BreakerDefaults.consecutiveFailures, 1));
    this.#rate = num('failureRate', options.failureRate ?? BreakerDefaults.failureRate, 0, 1);
    this.#minimumCalls = Math.floor(num('minimumCalls', options.minimumCalls ?? BreakerDefaults.minimumCalls, 1));
    this.#bucketMs = num('windowMs', options.windowMs ?? BreakerDefaults.windowMs, BUCKETS) / BUCKETS;
    this.#openMs = num('openMs', options.openMs ?? BreakerDefaults.openMs, 0);
    this.#maxOpenMs = Math.max(this.#openMs, num('maxOpenMs', options.maxOpenMs ?? BreakerDefaults.maxOpenMs, 0));
    this.#probes = Math.floor(num('probes', options.probes ?? BreakerDefaults.probes, 1));
    this.#clock = options.clock ?? systemClock;
    this.#onChange = options.onStateChange;
  }

  /** The state now (an OPEN breaker whose time is up reads as HALF_OPEN). */
  get state(): BreakerStateValue {
    this.#tick();
    return this.#state;
  }

  /** Ms until an open circuit lets a probe through (0 when not open). */
  get probeInMs(): number {
    this.#tick();
    return this.#state === BreakerState.OPEN ? Math.max(0, Math.ceil(this.#openUntil - this.#clock.now())) : 0;
  }

  /** Calls and failures in the window now. */
  window(): { calls: number; failures: number } {
    const epoch = Math.floor(this.#clock.now() / this.#bucketMs);
    let calls = 0;
    let failures = 0;
    for (let i = 0; i < BUCKETS; i++) {
      if (this.#epochs[i]! > epoch - BUCKETS) {
        calls += this.#calls[i]!;
        failures += this.#fails[i]!;
      }
    }
    return { calls, failures };
  }

  /** May a call go out now? True takes a probe slot while half-open: report the outcome. */
  tryAcquire(): boolean {
    this.#tick();
    if (this.#state === BreakerState.CLOSED) return true;
    if (this.#state === BreakerState.OPEN || this.#probesInFlight >= this.#probes) return false;
    this.#probesInFlight++;
    return true;
  }

  onSuccess(): void {
    this.#failuresInARow = 0;
    if (this.#state === BreakerState.HALF_OPEN) {
      this.#probesInFlight = Math.max(0, this.#probesInFlight - 1);
      this.#resetWindow();
      this.#openings = 0;
      this.#set(BreakerState.CLOSED, 'probe-succeeded', 0);
      return;
    }
    if (this.#state === BreakerState.CLOSED) this.#record(false);
  }

  onFailure(): void {
    if (this.#state === BreakerState.HALF_OPEN) {
      this.#probesInFlight = Math.max(0, this.#probesInFlight - 1);
      this.#open('probe-failed');
      return;
    }
    if (this.#state !== BreakerState.CLOSED) return; // a call admitted before the circuit opened
    this.#failuresInARow++;
    this.#record(true);
    if (this.#failuresInARow >= this.#consecutive) return this.#open('consecutive-failures');
    const w = this.window();
    if (w.calls >= this.#minimumCalls && w.failures / w.calls >= this.#rate) this.#open('failure-rate');
  }

  /** The call ended without a verdict (cancelled by the caller): frees a probe slot. */
  onIgnored(): void {
    if (this.#state === BreakerState.HALF_OPEN) this.#probesInFlight = Math.max(0, this.#probesInFlight - 1);
  }

  #open(reason: string): void {
    this.#openings++;
    const ms = Math.min(this.#maxOpenMs, this.#openMs * Math.pow(2, this.#openings - 1));
    this.#openUntil = this.#clock.now() + ms;
    this.#failuresInARow = 0;
    this.#probesInFlight = 0;
    this.#set(BreakerState.OPEN, reason, ms);
  }

  #tick(): void {
    if (this.#state === BreakerState.OPEN && this.#clock.now() >= this.#openUntil) {
      this.#probesInFlight = 0;
      this.#set(BreakerState.HALF_OPEN, 'open-elapsed', 0);
    }
  }

  #set(to: BreakerStateValue, reason: string, openMs: number): void {
    const from = this.#state;
    if (from === to) return;
    this.#state = to;
    this.#onChange?.(from, to, reason, openMs);
  }

  #record(failed: boolean): void {
    const epoch = Math.floor(this.#clock.now() / this.#bucketMs);
    const i = ((epoch % BUCKETS) + BUCKETS) % BUCKETS;
    if (this.#epochs[i] !== epoch) {
      this.#epochs[i] = epoch;
      this.#calls[i] = 0;
      this.#fails[i] = 0;
    }
    this.#calls[i]!++;
    if (failed) this.#fails[i]!++;
  }

  #resetWindow(): void {
    this.#epochs.fill(-1);
    this.#calls.fill(0);
    this.#fails.fill(0);
  }
}

const breakerChannel = diagnostics.channel(BREAKER_CHANNEL);

/**
 * Errors that say nothing about how the service answers, so they count as neither success
 * nor failure: the caller's own cancellation, and the transport's events — no connection
 * (NOT_READY, CONNECT_FAILED), a connection lost or declared dead (CONNECTION_LOST,
 * KEEPALIVE_TIMEOUT), a server going away (GOAWAY). The connection (and a channel's outlier
 * ejection, per instance) owns those: it fails fast while it has no connection and recovers
 * the moment it has one again, which an open circuit would only delay — and one cut fails
 * every call in flight at once, which is one event, not N failures of the service.
 */
const NEUTRAL: ReadonlySet<string> = new Set([ErrorCode.CANCELLED, ErrorCode.NOT_READY, ErrorCode.CONNECT_FAILED, ErrorCode.CONNECTION_LOST, ErrorCode.KEEPALIVE_TIMEOUT, ErrorCode.GOAWAY]);

/** A breaker with the two reactions a unary call's promise gets, made once (hot path: no closure per call). */
interface Guard {
  readonly b: CircuitBreaker;
  readonly ok: (reply: unknown) => unknown;
  readonly fail: (err: unknown) => never;
}

/** The breaker interceptor: see the module comment and docs/resilience.md. */
export function breaker(options: BreakerOptions = {}): BreakerInterceptor {
  const failureCodes: ReadonlySet<string> = new Set(options.failureCodes ?? BreakerDefaults.failureCodes);
  const scope = options.scope ?? BreakerDefaults.scope;
  if (scope !== 'service' && scope !== 'method') throw createError(ErrorCode.INVALID_OPTIONS, `breaker(): scope must be 'service' or 'method', got ${String(scope)}`);
  const guardStreams = options.streams ?? BreakerDefaults.streams;
  const { failureCodes: _f, scope: _s, streams: _t, ...machine } = options;
  new CircuitBreaker(machine); // validate the options now, not on the first call
  const breakers = new Map<string, Guard>();
  const stats = { admitted: 0, rejected: 0, opened: 0, halfOpened: 0, closed: 0 };
  // The last key asked for and its guard: a client calls one service, so with the default
  // scope this skips the map lookup on every call.
  let lastKey = '';
  let lastGuard: Guard | undefined;

  const guardOf = (key: string): Guard => {
    if (key === lastKey && lastGuard !== undefined) return lastGuard;
    let g = breakers.get(key);
    if (g === undefined) {
      const b = new CircuitBreaker({
        ...machine,
        onStateChange: (from, to, reason, openMs) => {
          if (to === BreakerState.OPEN) stats.opened++;
          else if (to === BreakerState.HALF_OPEN) stats.halfOpened++;
          else stats.closed++;
          if (!breakerChannel.hasSubscribers) return;
          const event: BreakerEvent = { key, from, to, reason, openMs };
          breakerChannel.publish(event);
        },
      });
      g = {
        b,
        ok: (reply) => {
          b.onSuccess();
          return reply;
        },
        fail: (err) => {
          judge(b, err);
          throw err;
        },
      };
      breakers.set(key, g);
    }
    lastKey = key;
    lastGuard = g;
    return g;
  };

  const isFailure = (err: unknown): boolean | undefined => {
    if (!isSkeinError(err)) return true;
    if (NEUTRAL.has(err.code)) return undefined;
    return failureCodes.has(err.statusName);
  };

  const judge = (b: CircuitBreaker, err: unknown): void => {
    const f = isFailure(err);
    if (f === true) b.onFailure();
    else if (f === false) b.onSuccess();
    else b.onIgnored();
  };

  /** A unary or client-streaming call: judged when its promise settles. */
  function run(next: Invoke, call: OutgoingCall, g: Guard): Promise<unknown> {
    let out: Promise<unknown>;
    try {
      out = next(call) as Promise<unknown>;
    } catch (err) {
      out = Promise.reject(err);
    }
    return out.then(g.ok, g.fail);
  }

  /** A server-streaming or bidi call: judged (and its probe slot freed) when its stream is over. */
  function runStream(next: Invoke, call: OutgoingCall, b: CircuitBreaker): ResponseStream<unknown> {
    let out: ResponseStream<unknown> | Promise<unknown>;
    try {
      out = next(call);
    } catch (err) {
      judge(b, err);
      return failedStream(err);
    }
    return holdResponseStream(out as ResponseStream<unknown> | Promise<ResponseStream<unknown>>, (o: StreamOutcome) => {
      if (o.kind === 'ok') b.onSuccess();
      else if (o.kind === 'error') judge(b, o.error);
      else b.onIgnored();
    });
  }

  const openError = (key: string, b: CircuitBreaker): SkeinError => {
    const ms = b.probeInMs;
    const when = b.state === BreakerState.OPEN ? `next probe in ${ms}ms` : 'a probe is in flight';
    return createError(ErrorCode.CIRCUIT_OPEN, `circuit open for ${key}: failing fast (${when})`, { details: { reason: 'circuit-open', retryAfterMs: ms } });
  };

  const interceptor = ((next: Invoke): Invoke =>
    (call) => {
      const streaming = call.kind === MethodKind.SERVER_STREAM || call.kind === MethodKind.BIDI;
      if (streaming && !guardStreams) return next(call);
      const key = scope === 'method' ? `${call.service}.${call.method}` : call.service;
      const g = guardOf(key);
      if (!g.b.tryAcquire()) {
        stats.rejected++;
        const err = openError(key, g.b);
        return streaming ? failedStream(err) : Promise.reject(err);
      }
      stats.admitted++;
      return streaming ? runStream(next, call, g.b) : run(next, call, g);
    }) as BreakerInterceptor;
  Object.defineProperties(interceptor, {
    stats: {
      value: (): BreakerStats => {
        const states: Record<string, BreakerStateValue> = {};
        for (const [k, g] of breakers) states[k] = g.b.state;
        return { ...stats, states };
      },
    },
    breakerFor: { value: (key: string): CircuitBreaker | undefined => breakers.get(key)?.b },
  });
  return interceptor;
}
