/**
 * Load shedding with an adaptive concurrency limit (AIMD), so that overload gives fast
 * refusals instead of a growing queue and collapsing latency.
 *
 * The server admits a call only while fewer than `limit` calls are in flight; beyond that
 * it refuses at once with RESOURCE_EXHAUSTED and a retry-after (the recent average call
 * latency: about when a slot frees). The limit moves with what the server observes:
 *
 *   success, latency <= target, limit was in use (inflight >= limit/2)  → limit += 1
 *   latency > target, or the handler failed RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED,
 *   and the call was admitted after the last decrease
 *                      → limit *= min(backoffRatio, max(0.5, target / latency))
 *   (always within [minLimit, maxLimit]; other errors and cancellations leave it alone)
 *
 *   target = targetLatencyMs, or max(tolerance × baseline, minTargetLatencyMs), where the
 *   baseline is the no-load latency: the smallest latency among the last `baselineWindow`
 *   calls (re-measured every window, so it can rise when the work itself gets slower).
 *
 * This is the AIMD limiter of Netflix's concurrency-limits, chosen over Gradient2 because
 * it has fewer knobs and its behaviour is easy to state; the limit "probes" upward only
 * while it is actually the bottleneck (the inflight >= limit/2 check), so an idle server
 * does not drift to maxLimit. The limit comes down at most once per "generation": only a
 * call admitted after the last decrease can cause the next one — one stall (a GC pause, the
 * process losing the CPU) makes every call in flight slow at once, and is one signal, not
 * one per call (without this, 256 calls in flight through one 20 ms pause would multiply
 * the limit by 0.9^256). Only unary and client-streaming calls give latency samples
 * (a stream's duration is not a service time). Streaming calls pass through unless
 * `streams: true`, then they hold a permit until their replies end; `exempt` services
 * (skein.health by default) are never shed.
 *
 * As a server's default policy the interceptor runs as an admission gate
 * (src/rpc/admission.ts): the same limiter, checked by the server itself before the handler
 * and released when the call's status is sent, so the server keeps its fast path.
 */
import { createError, ErrorCode, Status } from '../errors.js';
import type { SkeinError } from '../errors.js';
import { NOT_GATED, type AdmissionGate } from '../rpc/admission.js';
import { MethodKind, type MethodKindValue } from '../rpc/define.js';
import type { Handle, IncomingCall, ServerInterceptor } from '../rpc/types.js';
import { systemClock, type Clock } from '../util/clock.js';
import { ShedDefaults } from './defaults.js';
import { Ewma, refusal, ResilienceChannel } from './events.js';
import { runHeld } from './hold.js';

export interface ShedOptions {
  /** The limit at start. @default 100 */
  initialLimit?: number;
  /** Lowest limit. @default 1 */
  minLimit?: number;
  /** Highest limit: never more calls than this run at once. @default 1000 */
  maxLimit?: number;
  /** Multiplier on overload, in (0, 1). @default 0.9 */
  backoffRatio?: number;
  /** Overload when latency > tolerance × baseline. @default 2 */
  tolerance?: number;
  /** Calls per baseline re-measurement. @default 1000 */
  baselineWindow?: number;
  /** A fixed latency target (ms) instead of the adaptive one. @default adaptive */
  targetLatencyMs?: number;
  /** Floor of the adaptive target, ms. @default 10 */
  minTargetLatencyMs?: number;
  /** Server-streaming and bidi calls take a permit too (held until their replies end). @default false */
  streams?: boolean;
  /** Services that are never shed. @default ['skein.health'] */
  exempt?: readonly string[];
  /** Time source (tests). @default systemClock */
  clock?: Clock;
}

/** Counters and state of one shed interceptor. */
export interface ShedStats {
  admitted: number;
  refused: number;
  /** The current limit (whole calls). */
  limit: number;
  inflight: number;
  /** The most calls ever in flight at once. */
  peakInflight: number;
  increases: number;
  decreases: number;
  /** The no-load latency estimate, ms (undefined before the first sample). */
  baselineMs: number | undefined;
}

export type ShedInterceptor = ServerInterceptor & { stats(): ShedStats; readonly limiter: AimdLimiter; readonly gate?: AdmissionGate };

type Resolved = Required<Omit<ShedOptions, 'targetLatencyMs' | 'clock' | 'exempt'>> & { targetLatencyMs: number | undefined; exempt: ReadonlySet<string> };

function resolveOptions(o: ShedOptions): Readonly<Resolved> {
  const r: Resolved = {
    initialLimit: o.initialLimit ?? ShedDefaults.initialLimit,
    minLimit: o.minLimit ?? ShedDefaults.minLimit,
    maxLimit: o.maxLimit ?? ShedDefaults.maxLimit,
    backoffRatio: o.backoffRatio ?? ShedDefaults.backoffRatio,
    tolerance: o.tolerance ?? ShedDefaults.tolerance,
    baselineWindow: o.baselineWindow ?? ShedDefaults.baselineWindow,
    targetLatencyMs: o.targetLatencyMs ?? ShedDefaults.targetLatencyMs,
    minTargetLatencyMs: o.minTargetLatencyMs ?? ShedDefaults.minTargetLatencyMs,
    streams: o.streams ?? ShedDefaults.streams,
    exempt: new Set(o.exempt ?? ShedDefaults.exempt),
  };
  const bad = (what: string): never => {
    throw createError(ErrorCode.INVALID_OPTIONS, `shed(): ${what}`);
  };
  if (!(Number.isInteger(r.minLimit) && r.minLimit >= 1)) bad(`minLimit must be an integer >= 1, got ${r.minLimit}`);
  if (!(Number.isInteger(r.maxLimit) && r.maxLimit >= r.minLimit)) bad(`maxLimit must be an integer >= minLimit, got ${r.maxLimit}`);
  if (o.initialLimit === undefined) r.initialLimit = Math.min(Math.max(r.initialLimit, r.minLimit), r.maxLimit);
  if (!(r.initialLimit >= r.minLimit && r.initialLimit <= r.maxLimit)) bad(`initialLimit must be within [minLimit, maxLimit], got ${r.initialLimit}`);
  if (!(r.backoffRatio > 0 && r.backoffRatio < 1)) bad(`backoffRatio must be in (0, 1), got ${r.backoffRatio}`);
  if (!(r.tolerance >= 1)) bad(`tolerance must be >= 1, got ${r.tolerance}`);
  if (!(Number.isInteger(r.baselineWindow) && r.baselineWindow >= 1)) bad(`baselineWindow must be an integer >= 1, got ${r.baselineWindow}`);
  if (r.targetLatencyMs !== undefined && !(r.targetLatencyMs > 0)) bad(`targetLatencyMs must be > 0, got ${r.targetLatencyMs}`);
  if (!(r.minTargetLatencyMs >= 0)) bad(`minTargetLatencyMs must be >= 0, got ${r.minTargetLatencyMs}`);
  return Object.freeze(r);
}

/** The AIMD limit itself (no RPC types): acquire / release with samples. */
export class AimdLimiter {
  #limit: number;
  inflight = 0;
  peakInflight = 0;
  increases = 0;
  decreases = 0;
  #baseline: number | undefined;
  /** Clock time of the last decrease: calls admitted before it cannot cause another. */
  #lastDecreaseAt = -Infinity;
  #windowMin = Infinity;
  #windowCount = 0;
  readonly latency = new Ewma();

  constructor(
    private readonly o: Readonly<Resolved>,
    private readonly clock: Clock = systemClock,
  ) {
    this.#limit = o.initialLimit;
  }

  /** The current limit in whole calls. */
  get limit(): number {
    return Math.max(this.o.minLimit, Math.floor(this.#limit));
  }

  get baselineMs(): number | undefined {
    return this.#baseline;
  }

  /** The latency above which a call counts as overload (undefined: not known yet). */
  get targetMs(): number | undefined {
    if (this.o.targetLatencyMs !== undefined) return this.o.targetLatencyMs;
    return this.#baseline === undefined ? undefined : Math.max(this.#baseline * this.o.tolerance, this.o.minTargetLatencyMs);
  }

  /** Take a permit; returns the inflight count before it (for the sample), or -1 when refused. */
  tryAcquire(): number {
    if (this.inflight >= this.limit) return -1;
    const before = this.inflight++;
    if (this.inflight > this.peakInflight) this.peakInflight = this.inflight;
    return before;
  }

  /**
   * Give a permit back, with what was observed: `latencyMs` of a finished call (undefined
   * for no sample), whether it ended in an overload status, and when (clock time) it was
   * admitted — for the once-per-generation decrease.
   */
  release(inflightAtStart: number, latencyMs: number | undefined, overloadStatus: boolean, admittedAt: number): void {
    this.inflight--;
    if (overloadStatus) {
      this.#decrease(admittedAt);
      return;
    }
    if (latencyMs === undefined) return;
    this.latency.add(latencyMs);
    const target = this.targetMs;
    this.#sampleBaseline(latencyMs);
    if (target !== undefined && latencyMs > target) this.#decrease(admittedAt, target / latencyMs);
    else if ((inflightAtStart + 1) * 2 >= this.#limit && this.#limit < this.o.maxLimit) {
      this.#limit = Math.min(this.o.maxLimit, this.#limit + 1);
      this.increases++;
    }
  }

  /**
   * One cut per generation: by backoffRatio, or deeper when the latency overshoots the
   * target by more (× target/latency, never below × 0.5) — once per generation is slow to
   * come down from a deep overload with backoffRatio alone.
   */
  #decrease(admittedAt: number, overshoot = 1): void {
    if (admittedAt < this.#lastDecreaseAt) return; // this generation already paid
    const ratio = Math.min(this.o.backoffRatio, Math.max(MIN_CUT, overshoot));
    const next = Math.max(this.o.minLimit, this.#limit * ratio);
    if (next < this.#limit) this.decreases++;
    this.#limit = next;
    this.#lastDecreaseAt = this.clock.now();
  }

  #sampleBaseline(latencyMs: number): void {
    if (latencyMs < this.#windowMin) this.#windowMin = latencyMs;
    if (this.#baseline === undefined || latencyMs < this.#baseline) this.#baseline = latencyMs;
    if (++this.#windowCount >= this.o.baselineWindow) {
      this.#baseline = this.#windowMin;
      this.#windowMin = Infinity;
      this.#windowCount = 0;
    }
  }
}

/** The deepest single cut of the limit (for a latency far above the target). */
const MIN_CUT = 0.5;

function isOverloadStatus(err: unknown): boolean {
  const s = (err as { status?: unknown } | null)?.status;
  return s === Status.RESOURCE_EXHAUSTED || s === Status.DEADLINE_EXCEEDED;
}

/** Adaptive concurrency limit for the whole server (one limit for every method it wraps). */
export function shed(options: ShedOptions = {}): ShedInterceptor {
  const o = resolveOptions(options);
  const clock = options.clock ?? systemClock;
  const limiter = new AimdLimiter(o, clock);
  const counters = { admitted: 0, refused: 0 };
  const refuse = (service: string, method: string): SkeinError => {
    counters.refused++;
    return refusal(ResilienceChannel.SHED, service, method, 'concurrency-limit', limiter.latency.value ?? ShedDefaults.retryAfterMs, `server overloaded (concurrency limit ${limiter.limit})`);
  };
  const isSampled = (kind: MethodKindValue): boolean => kind === MethodKind.UNARY || kind === MethodKind.CLIENT_STREAM;

  // The same decisions as the interceptor below, run by the server around its fast path
  // (src/rpc/admission.ts). The ticket is the inflight count at admission. Only with the
  // real clock: the server measures the elapsed time itself (performance.now, as
  // systemClock); a test clock keeps the interceptor path, which measures with it.
  const gate: AdmissionGate | undefined =
    options.clock === undefined
      ? {
          admit(service, method, kind) {
            if ((!isSampled(kind) && !o.streams) || o.exempt.has(service)) return NOT_GATED;
            const before = limiter.tryAcquire();
            if (before < 0) return refuse(service, method);
            counters.admitted++;
            return before;
          },
          release(ticket, kind, elapsedMs, err, cancelled) {
            const measured = isSampled(kind) && err === undefined && !cancelled;
            limiter.release(ticket, measured ? elapsedMs : undefined, err !== undefined && !cancelled && isOverloadStatus(err), clock.now() - elapsedMs);
          },
        }
      : undefined;

  const interceptor = ((next: Handle): Handle =>
    (call: IncomingCall) => {
      const sampled = isSampled(call.kind);
      if ((!sampled && !o.streams) || o.exempt.has(call.service)) return next(call);
      const before = limiter.tryAcquire();
      if (before < 0) throw refuse(call.service, call.method);
      counters.admitted++;
      const start = clock.now();
      return runHeld(next, call, (err) => {
        limiter.release(before, sampled && err === undefined ? clock.now() - start : undefined, err !== undefined && isOverloadStatus(err), start);
      });
    }) as ShedInterceptor;
  if (gate !== undefined) Object.defineProperty(interceptor, 'gate', { value: gate, enumerable: true });
  interceptor.stats = () => ({ ...counters, limit: limiter.limit, inflight: limiter.inflight, peakInflight: limiter.peakInflight, increases: limiter.increases, decreases: limiter.decreases, baselineMs: limiter.baselineMs });
  Object.defineProperty(interceptor, 'limiter', { value: limiter, enumerable: true });
  return interceptor;
}
