/**
 * Every default of the server-side resilience interceptors, in one place (STYLE item 10).
 * Each module applies these in its own `resolve*Options()` and freezes the result; change
 * a default here and the docs (docs/resilience.md) with it.
 */

/** Defaults of `rateLimit()`. */
export const RateLimitDefaults = Object.freeze({
  /**
   * How many callers' buckets are remembered; the least recently seen is evicted beyond it
   * (an evicted caller comes back with a full bucket).
   * @default 10000
   */
  maxCallers: 10_000,
});

/** Defaults of `bulkhead()`. */
export const BulkheadDefaults = Object.freeze({
  /** Calls running at once per key. @default 64 */
  maxConcurrent: 64,
  /** Calls waiting (FIFO) per key once `maxConcurrent` run; beyond it calls are refused at once. @default 0 */
  maxQueue: 0,
  /** Longest wait in the queue, ms (the call's deadline and cancellation also end the wait). @default 1000 */
  queueTimeoutMs: 1000,
  /** What shares a limit: each method on its own, or all methods of a service. @default 'method' */
  key: 'method' as 'service' | 'method',
  /** retry-after sent with a refusal before any call has finished (later: the average hold time). @default 100 */
  retryAfterMs: 100,
});

/** Defaults of `shed()` (AIMD adaptive concurrency limit). */
export const ShedDefaults = Object.freeze({
  /**
   * The limit at start. Generous because shedding is on by default: a cold server must not
   * refuse an ordinary burst before it has measured anything (the limit comes down as soon
   * as latency says so). @default 100
   */
  initialLimit: 100,
  /** The limit never goes below this. @default 1 */
  minLimit: 1,
  /** The limit never goes above this. @default 1000 */
  maxLimit: 1000,
  /** On overload the limit is multiplied by this. @default 0.9 */
  backoffRatio: 0.9,
  /**
   * Latency above `tolerance` × the no-load baseline (the smallest latency seen in the last
   * `baselineWindow` calls) counts as overload. Ignored when `targetLatencyMs` is set.
   * @default 2
   */
  tolerance: 2,
  /** Number of calls after which the baseline is re-measured (so it can rise again). @default 1000 */
  baselineWindow: 1000,
  /** A fixed latency target in ms instead of `tolerance` × baseline. @default undefined (adaptive) */
  targetLatencyMs: undefined as number | undefined,
  /**
   * The latency target never goes below this many ms, so a sub-millisecond baseline does not
   * turn scheduler jitter into overload. @default 10
   */
  minTargetLatencyMs: 10,
  /** retry-after sent with a refusal before any latency is known. @default 100 */
  retryAfterMs: 100,
  /**
   * Whether server-streaming and bidi calls take a permit (held until their replies end).
   * Off by default: long-lived streams (watches) would otherwise hold permits for good.
   * @default false
   */
  streams: false,
  /** Services never shed (health checks must answer under overload). @default ['skein.health'] */
  exempt: Object.freeze(['skein.health']) as readonly string[],
});

/** Defaults of `fallback()`. */
export const FallbackDefaults = Object.freeze({
  /** Statuses answered by the fallback. @default ['RESOURCE_EXHAUSTED', 'UNAVAILABLE'] */
  statuses: Object.freeze(['RESOURCE_EXHAUSTED', 'UNAVAILABLE'] as const),
});

/** Which interceptors `serverResilience()` installs when not told otherwise. */
export const ServerResilienceDefaults = Object.freeze({
  /** Adaptive load shedding (safe: it only refuses when the server is past capacity). @default on (ShedDefaults) */
  shed: true,
  /** Rate limits need numbers only the operator knows. @default off */
  rateLimit: false,
  /** Bulkheads need numbers only the operator knows. @default off */
  bulkhead: false,
});

/** Smoothing factor of the moving averages used for retry-after estimates. @default 0.2 */
export const EWMA_ALPHA = 0.2;

/** Defaults of `retryBudget()` (client side). */
export const RetryBudgetDefaults = Object.freeze({
  /** Tokens each call deposits; a retry withdraws 1: retries stay within this share of calls. @default 0.2 */
  ratio: 0.2,
  /** Retries always allowed per second on top of the ratio (a token bucket of this rate and burst). @default 10 */
  minPerSecond: 10,
  /** Most tokens deposits can accumulate (so a long quiet success streak cannot fund a retry storm). @default 100 */
  maxTokens: 100,
});

/** Defaults of `retry()` (client side). */
export const RetryDefaults = Object.freeze({
  /** Attempts in all, the first included. @default 3 */
  maxAttempts: 3,
  /** Statuses retried for idempotent methods. @default ['UNAVAILABLE'] */
  retryableCodes: Object.freeze(['UNAVAILABLE'] as const) as readonly string[],
  /** First backoff cap, ms (full jitter: the delay is uniform in [0, cap]). @default 25 */
  initialMs: 25,
  /** Largest backoff cap, ms. @default 1000 */
  maxMs: 1000,
  /** Growth of the cap per retry. @default 2 */
  multiplier: 2,
});

/** Defaults of `CircuitBreaker` / `breaker()` (client side). */
export const BreakerDefaults = Object.freeze({
  /** Consecutive failures that open the circuit. @default 5 */
  consecutiveFailures: 5,
  /** Failure rate (0..1) over the window that opens the circuit. @default 0.5 */
  failureRate: 0.5,
  /** Calls the window must hold before the failure rate is judged. @default 20 */
  minimumCalls: 20,
  /** Length of the sliding window of the failure rate, ms. @default 10000 */
  windowMs: 10_000,
  /** How long the circuit stays open the first time, ms. @default 5000 */
  openMs: 5000,
  /** Longest open time: each re-opening without a close in between doubles it, up to this. @default 60000 */
  maxOpenMs: 60_000,
  /** Calls let through at once while half-open. @default 1 */
  probes: 1,
  /**
   * Statuses that count as failures (others, e.g. INVALID_ARGUMENT or NOT_FOUND, count as
   * successes). Not RESOURCE_EXHAUSTED: that is a server asking for less traffic (its
   * limiters, with a retry-after the client honours), not a broken one.
   * @default ['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'INTERNAL']
   */
  failureCodes: Object.freeze(['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'INTERNAL'] as const) as readonly string[],
  /** One breaker per service, or one per method. @default 'service' */
  scope: 'service' as 'service' | 'method',
  /**
   * Whether server-streaming and bidi calls are guarded too (judged by how their stream
   * ends). Off by default: a long-lived stream (a watch) admitted as the half-open probe
   * keeps the circuit half-open, failing every other call fast, until it ends; and one
   * dropped connection fails every stream on it at once, which can open the circuit just as
   * the connection comes back. Turn it on per client or per method.
   * @default false
   */
  streams: false,
});

/** Defaults of a channel's outlier detection (src/channel/outlier.ts). */
export const OutlierDefaults = Object.freeze({
  /** Consecutive failures that eject an instance. @default 5 */
  consecutiveFailures: 5,
  /** Interval of the success-rate check, ms (also the window of its counts). @default 10000 */
  intervalMs: 10_000,
  /** Success-rate ejection: below mean − this × stddev of the instances' success rates. @default 1.9 */
  stdevFactor: 1.9,
  /** Instances with at least `minimumCalls` in the interval needed for the success-rate check. @default 3 */
  minimumHosts: 3,
  /** Calls an instance needs in the interval to take part in the success-rate check. @default 20 */
  minimumCalls: 20,
  /** Ejection time = this × times ejected, ms. @default 30000 */
  baseEjectionMs: 30_000,
  /** Longest ejection, ms. @default 300000 */
  maxEjectionMs: 300_000,
  /** Most instances ejected at once, percent (at least one instance always stays). @default 50 */
  maxEjectionPercent: 50,
  /** Statuses that count as failures. @default ['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'INTERNAL'] */
  failureCodes: Object.freeze(['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'INTERNAL'] as const) as readonly string[],
});

/** Defaults of `hedge()` (client side). */
export const HedgeDefaults = Object.freeze({
  /** Attempts in all, the first included (2: one hedge). @default 2 */
  maxAttempts: 2,
  /** Percentile of the method's recent latencies used as the hedge delay. @default 0.95 */
  percentile: 0.95,
  /** Floor of a percentile delay, ms. @default 10 */
  minMs: 10,
  /** Ceiling of a percentile delay (and the delay before any latency was observed), ms. @default 1000 */
  maxMs: 1000,
  /** Recent successful attempts per method the percentile is taken over. @default 100 */
  window: 100,
});

/** Which policies a client gets when `connect()` is not told otherwise (src/resilience/client-policy.ts). */
export const ClientResilienceDefaults = Object.freeze({
  /** Retries: safe by construction (idempotent methods, or calls no handler saw), within a budget. @default on */
  retry: true,
  /** A circuit breaker per service. @default on */
  breaker: true,
  /** Hedging sends extra work by design: opt-in per client or method. @default off */
  hedge: false,
  /** A client-side bulkhead needs numbers only the operator knows: opt-in per client or method. @default off */
  bulkhead: false,
});

/** Defaults of `clientBulkhead()` (client side; not installed unless asked for, see `ClientResilienceDefaults.bulkhead`). */
export const ClientBulkheadDefaults = Object.freeze({
  /** Calls in flight at once per key (a streaming call holds its slot until its stream ends). @default 64 */
  maxConcurrent: 64,
  /** Calls waiting (FIFO) per key once `maxConcurrent` are in flight; beyond it calls fail at once. @default 0 */
  maxQueue: 0,
  /** Longest wait in the queue, ms (the call's deadline and AbortSignal also end the wait). @default 1000 */
  queueTimeoutMs: 1000,
  /** What shares a limit: each method on its own, or all methods of a service (of one client). @default 'method' */
  key: 'method' as 'service' | 'method',
  /** retryAfterMs given with a refusal before any call has finished (later: the average time a slot is held). @default 100 */
  retryAfterMs: 100,
});
