/**
 * Client-side retries: a `ClientInterceptor` (`(next: Invoke) => Invoke`, STYLE item 9).
 *
 * A failed attempt is retried when it is safe:
 *   - the failure provably never reached a handler — for ANY method:
 *       SKEIN_ERR_GOAWAY, SKEIN_ERR_STREAM_LIMIT (REFUSED resets), SKEIN_ERR_NOT_READY,
 *       SKEIN_ERR_CONNECT_FAILED, SKEIN_ERR_LIMITED, and a server-side refusal that arrives
 *       as SKEIN_ERR_REMOTE with status RESOURCE_EXHAUSTED and a `retry-after-ms` trailer
 *       (rate limit, bulkhead, shed: no handler ran);                        reason 'refused' / 'pushback'
 *   - or the method is idempotent and the status is in `retryableCodes`.   reason 'status'
 *
 * Between attempts it waits a backoff with FULL jitter (uniform in [0, min(maxMs,
 * initialMs × multiplier^(retry-1))]), at least the server's retry-after when it sent one.
 * Each retry takes a token from the retry budget (retry-budget.ts; one per interceptor,
 * i.e. per client, shared by its methods); with none left the call fails with its last
 * error. The call's deadline covers all attempts: it travels with each attempt as
 * `deadline`, and a retry that could not start before it is not sent (the last error is
 * thrown). The caller's AbortSignal ends a backoff wait at once (CANCELLED).
 *
 * Through a channel (discovery clients) the attempts of one call share a route hint, so a
 * retry goes to an instance not tried yet when there is one; a single-target client
 * retries on its one connection.
 *
 * Unary calls, and client-streaming calls whose request source is an array (replayable);
 * other streaming calls pass through untouched.
 *
 * Every retry and every budget refusal is published on `skein:resilience:retry` (only with
 * subscribers) and counted in `.stats()`.
 */
import diagnostics from 'node:diagnostics_channel';
import { createError, ErrorCode, isSkeinError, type SkeinError } from '../errors.js';
import { MethodKind } from '../rpc/define.js';
import { ROUTE_HINT, RouteHint, type CallOptions, type ClientInterceptor, type Invoke, type OutgoingCall } from '../rpc/types.js';
import { sleep, systemClock, type Clock } from '../util/clock.js';
import { RetryDefaults } from './defaults.js';
import { RETRY_AFTER_TRAILER } from './events.js';
import { retryBudget, type RetryBudget } from './retry-budget.js';

/** The diagnostics channel of retry decisions. */
export const RETRY_CHANNEL = 'skein:resilience:retry';

/** Published on `skein:resilience:retry` for every retry and every budget refusal. */
export interface RetryEvent {
  service: string;
  method: string;
  /** The attempt that failed (1 = the first). */
  attempt: number;
  /** The error code of the failed attempt (SKEIN_ERR_*). */
  code: string;
  /** The wait before the next attempt, ms (0 when refused). */
  delayMs: number;
  /** 'refused' (never reached a handler), 'pushback' (server retry-after), 'status' (idempotent + retryable status), 'budget-exhausted'. */
  reason: 'refused' | 'pushback' | 'status' | 'budget-exhausted';
}

export interface RetryBackoffOptions {
  /** Cap of the first delay, ms. @default 25 */
  initialMs?: number;
  /** Largest cap, ms. @default 1000 */
  maxMs?: number;
  /** Growth of the cap per retry. @default 2 */
  multiplier?: number;
}

export interface RetryOptions {
  /** Attempts in all, the first included (1 turns retries off). @default 3 */
  maxAttempts?: number;
  /** Statuses retried for idempotent methods (names, e.g. 'UNAVAILABLE'). @default ['UNAVAILABLE'] */
  retryableCodes?: readonly string[];
  /** Exponential backoff with full jitter. @default { initialMs: 25, maxMs: 1000, multiplier: 2 } */
  backoff?: RetryBackoffOptions;
  /** The retry budget. @default a new retryBudget() per retry() interceptor (with its clock) */
  budget?: RetryBudget;
  /** Clock for backoff waits. @default systemClock */
  clock?: Clock;
  /** Random source in [0, 1) for the jitter. @default Math.random */
  random?: () => number;
}

export interface RetryStats {
  /** Calls that went through the interceptor (retryable kinds only). */
  calls: number;
  /** Attempts sent, first attempts included. */
  attempts: number;
  /** Retries made (second and later attempts scheduled). */
  retries: number;
  /** Calls that succeeded after at least one retry. */
  recovered: number;
  /** Retries refused by the budget. */
  budgetRefused: number;
  /** Calls that failed with a retryable error after `maxAttempts`. */
  exhausted: number;
  /** Retries not made because the deadline would pass first. */
  deadlineStopped: number;
}

/** A retry interceptor; `stats()` counts its decisions, `budget` is the one it draws from. */
export interface RetryInterceptor extends ClientInterceptor {
  readonly budget: RetryBudget;
  stats(): RetryStats;
}

/** Codes that mean the call never reached a handler (docs/errors.md, retry table). */
// Not SKEIN_ERR_CIRCUIT_OPEN, though no handler saw it either: an open circuit answers
// every attempt the same until it half-opens (seconds, far beyond a backoff), so retrying
// it would only drain the budget the recovery needs.
const NEVER_HANDLED: ReadonlySet<string> = new Set([ErrorCode.GOAWAY, ErrorCode.STREAM_LIMIT, ErrorCode.NOT_READY, ErrorCode.CONNECT_FAILED, ErrorCode.LIMITED]);

const retryChannel = diagnostics.channel(RETRY_CHANNEL);

/** The server's retry-after (ms) on a RESOURCE_EXHAUSTED refusal, or undefined. */
export function pushbackOf(err: SkeinError): number | undefined {
  if (err.statusName !== 'RESOURCE_EXHAUSTED') return undefined;
  const v = err.metadata?.[RETRY_AFTER_TRAILER];
  if (v === undefined) return undefined;
  const ms = Number(typeof v === 'string' ? v : v.toString('utf8'));
  return Number.isFinite(ms) && ms >= 0 ? ms : undefined;
}

/** Why `err` may be retried for `call`, or undefined when it may not. */
export function retryReason(err: unknown, call: Pick<OutgoingCall, 'idempotent'>, retryable: ReadonlySet<string>): RetryEvent['reason'] | undefined {
  if (!isSkeinError(err)) return undefined;
  if (err.code === ErrorCode.REMOTE && pushbackOf(err) !== undefined) return 'pushback';
  if (NEVER_HANDLED.has(err.code)) return pushbackOf(err) !== undefined ? 'pushback' : 'refused';
  if (call.idempotent && err.code !== ErrorCode.CANCELLED && retryable.has(err.statusName)) return 'status';
  return undefined;
}

function positive(name: string, v: number, min: number): number {
  if (!(Number.isFinite(v) && v >= min)) throw createError(ErrorCode.INVALID_OPTIONS, `retry(): ${name} must be a number >= ${min}, got ${v}`);
  return v;
}

/** The retry interceptor: see the module comment and docs/resilience.md. */
export function retry(options: RetryOptions = {}): RetryInterceptor {
  const maxAttempts = Math.floor(positive('maxAttempts', options.maxAttempts ?? RetryDefaults.maxAttempts, 1));
  const retryable: ReadonlySet<string> = new Set(options.retryableCodes ?? RetryDefaults.retryableCodes);
  const initialMs = positive('backoff.initialMs', options.backoff?.initialMs ?? RetryDefaults.initialMs, 0);
  const maxMs = positive('backoff.maxMs', options.backoff?.maxMs ?? RetryDefaults.maxMs, 0);
  const multiplier = positive('backoff.multiplier', options.backoff?.multiplier ?? RetryDefaults.multiplier, 1);
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const budget = options.budget ?? retryBudget({ clock });
  const stats: RetryStats = { calls: 0, attempts: 0, retries: 0, recovered: 0, budgetRefused: 0, exhausted: 0, deadlineStopped: 0 };

  /** Full jitter: uniform in [0, cap] where cap grows per retry (retry = 1 for the first). */
  const backoffMs = (retryNo: number): number => Math.round(random() * Math.min(maxMs, initialMs * Math.pow(multiplier, retryNo - 1)));

  const publish = (call: OutgoingCall, attempt: number, err: SkeinError, delayMs: number, reason: RetryEvent['reason']): void => {
    if (!retryChannel.hasSubscribers) return;
    const event: RetryEvent = { service: call.service, method: call.method, attempt, code: err.code, delayMs, reason };
    retryChannel.publish(event);
  };

  /**
   * The first attempt, on the hot path: most calls have only this one, so it takes no async
   * function, copies nothing it need not, and allocates the route hint's set only if a
   * second instance is ever tried (RouteHint). A failure goes to `retryAfter`.
   */
  function run(next: Invoke, call: OutgoingCall): Promise<unknown> {
    stats.calls++;
    stats.attempts++;
    budget.deposit();
    const o = call.options;
    // The deadline of the whole call (Date.now() scale, as CallOptions), fixed at the start.
    let deadline = o.deadline;
    if (o.timeout !== undefined && Number.isFinite(o.timeout)) {
      const d = Date.now() + o.timeout;
      if (deadline === undefined || d < deadline) deadline = d;
    }
    const hint = o[ROUTE_HINT] ?? new RouteHint();
    const first = attemptOf(call, hint, deadline);
    let out: Promise<unknown>;
    try {
      out = next(first) as Promise<unknown>;
    } catch (err) {
      out = Promise.reject(err);
    }
    return out.then(undefined, (err: unknown) => retryAfter(next, call, hint, deadline, err));
  }

  /** Attempts 2..maxAttempts, after attempt 1 failed with `firstError`. */
  async function retryAfter(next: Invoke, call: OutgoingCall, hint: RouteHint, deadline: number | undefined, firstError: unknown): Promise<unknown> {
    const o = call.options;
    let err = firstError;
    for (let attempt = 1; ; attempt++) {
      const reason = retryReason(err, call, retryable);
      if (reason === undefined || aborted(o.signal)) throw err;
      const e = err as SkeinError;
      if (attempt >= maxAttempts) {
        stats.exhausted++;
        throw e;
      }
      let delayMs = backoffMs(attempt);
      const pushback = pushbackOf(e);
      if (pushback !== undefined && pushback > delayMs) delayMs = Math.ceil(pushback);
      // Never past the deadline: an attempt that could not start before it is not sent.
      if (deadline !== undefined && deadline - Date.now() - delayMs <= 0) {
        stats.deadlineStopped++;
        throw e;
      }
      if (!budget.tryWithdraw()) {
        stats.budgetRefused++;
        publish(call, attempt, e, 0, 'budget-exhausted');
        throw e;
      }
      stats.retries++;
      publish(call, attempt, e, delayMs, reason);
      if (delayMs > 0) {
        await sleep(delayMs, o.signal ?? new AbortController().signal, clock);
        if (o.signal !== undefined && aborted(o.signal)) throw abortReason(o.signal);
      }
      stats.attempts++;
      try {
        const reply = await next(attemptOf(call, hint, deadline));
        stats.recovered++;
        return reply;
      } catch (failure) {
        err = failure;
      }
    }
  }

  const interceptor = ((next: Invoke): Invoke =>
    (call) => {
      if (call.kind === MethodKind.UNARY || (call.kind === MethodKind.CLIENT_STREAM && Array.isArray(call.request))) return run(next, call);
      return next(call);
    }) as RetryInterceptor;
  Object.defineProperties(interceptor, {
    budget: { value: budget },
    stats: { value: (): RetryStats => ({ ...stats }) },
  });
  return interceptor;
}

/** One attempt of `call`: its options with the shared route hint and the call's fixed deadline. */
function attemptOf(call: OutgoingCall, hint: RouteHint, deadline: number | undefined): OutgoingCall {
  const options: CallOptions = { ...call.options, [ROUTE_HINT]: hint };
  if (deadline !== undefined) {
    delete options.timeout;
    options.deadline = deadline;
  }
  return { service: call.service, method: call.method, kind: call.kind, idempotent: call.idempotent, request: call.request, options };
}

/** Read through a call so TypeScript does not narrow `signal.aborted` across an await. */
function aborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

function abortReason(signal: AbortSignal): SkeinError {
  const r: unknown = signal.reason;
  return isSkeinError(r) ? r : createError(ErrorCode.CANCELLED, 'call cancelled while waiting to retry', { cause: r });
}
