/**
 * Server-side token-bucket rate limits, per caller and per method.
 *
 *   call ──► caller bucket (one per caller key, LRU-bounded) ──► method bucket ──► handler
 *                 │ empty                                           │ empty
 *                 ▼                                                 ▼
 *        RESOURCE_EXHAUSTED + retry-after-ms          (caller token refunded) RESOURCE_EXHAUSTED
 *
 * A refused call never reaches the handler. The caller key is, by default, the
 * authenticated identity (a string, or an object's `id`) and otherwise the peer's host
 * (its address without the port), so all connections from one host share a bucket.
 * Per-method buckets are shared by all callers; a key is 'service.method' or 'service'
 * (the exact method wins).
 */
import { createError, ErrorCode } from '../errors.js';
import type { CallContext, Handle, IncomingCall, ServerInterceptor } from '../rpc/types.js';
import { systemClock, type Clock } from '../util/clock.js';
import { RateLimitDefaults } from './defaults.js';
import { refusal, ResilienceChannel } from './events.js';
import { checkSpec, TokenBucket, type BucketSpec } from './token-bucket.js';

export interface RateLimitOptions {
  /** One bucket per caller (see `callerKey`), for all methods. @default none (no per-caller limit) */
  perCaller?: BucketSpec;
  /** Buckets shared by all callers, keyed 'service.method' or 'service'. @default none */
  perMethod?: Record<string, BucketSpec>;
  /**
   * Who the caller is. @default the identity from the server's authenticate hook when it is
   * a string or has an `id`, else the peer host (address without port)
   */
  callerKey?: (ctx: CallContext) => string;
  /** Callers remembered (least recently seen evicted). @default 10000 */
  maxCallers?: number;
  /** Time source (tests). @default systemClock */
  clock?: Clock;
}

/** Counters of one rateLimit interceptor. */
export interface RateLimitStats {
  /** Calls let through. */
  admitted: number;
  /** Calls refused by a caller's bucket. */
  refusedCaller: number;
  /** Calls refused by a method's bucket. */
  refusedMethod: number;
  /** Callers currently remembered. */
  callers: number;
  /** Callers forgotten to stay within maxCallers. */
  evicted: number;
}

export type RateLimitInterceptor = ServerInterceptor & { stats(): RateLimitStats };

interface Resolved {
  perCaller: BucketSpec | undefined;
  perMethod: ReadonlyMap<string, BucketSpec>;
  callerKey: (ctx: CallContext) => string;
  maxCallers: number;
  clock: Clock;
}

function resolveOptions(o: RateLimitOptions): Readonly<Resolved> {
  if (o.perCaller !== undefined) checkSpec(o.perCaller, 'rateLimit() perCaller');
  const perMethod = new Map<string, BucketSpec>();
  for (const [k, spec] of Object.entries(o.perMethod ?? {})) {
    checkSpec(spec, `rateLimit() perMethod['${k}']`);
    perMethod.set(k, { rate: spec.rate, burst: spec.burst });
  }
  const maxCallers = o.maxCallers ?? RateLimitDefaults.maxCallers;
  if (!(Number.isInteger(maxCallers) && maxCallers >= 1)) throw createError(ErrorCode.INVALID_OPTIONS, `rateLimit(): maxCallers must be an integer >= 1, got ${maxCallers}`);
  return Object.freeze({
    perCaller: o.perCaller === undefined ? undefined : { rate: o.perCaller.rate, burst: o.perCaller.burst },
    perMethod,
    callerKey: o.callerKey ?? defaultCallerKey,
    maxCallers,
    clock: o.clock ?? systemClock,
  });
}

/** The identity (a string, or an object's `id`), else the peer host. */
export function defaultCallerKey(ctx: CallContext): string {
  const id = ctx.identity;
  if (typeof id === 'string') return `id:${id}`;
  if (id !== null && typeof id === 'object') {
    const v = (id as { id?: unknown }).id;
    if (typeof v === 'string' || typeof v === 'number') return `id:${v}`;
  }
  return peerHost(ctx.peer.address);
}

/** 'host:port' → 'host', '[::1]:80' → '::1'; unix:/memory: addresses are returned as they are. */
export function peerHost(address: string): string {
  if (address.startsWith('unix:') || address.startsWith('memory:')) return address;
  if (address.startsWith('[')) {
    const end = address.indexOf(']');
    return end > 0 ? address.slice(1, end) : address;
  }
  const colon = address.lastIndexOf(':');
  return colon > 0 && address.indexOf(':') === colon ? address.slice(0, colon) : address;
}

/** Token-bucket limits per caller and per method; see the module comment. */
export function rateLimit(options: RateLimitOptions = {}): RateLimitInterceptor {
  const o = resolveOptions(options);
  const callers = new Map<string, TokenBucket>();
  const methodBuckets = new Map<string, TokenBucket | null>();
  const counters = { admitted: 0, refusedCaller: 0, refusedMethod: 0, evicted: 0 };

  const methodBucket = (service: string, method: string): TokenBucket | undefined => {
    const full = `${service}.${method}`;
    let b = methodBuckets.get(full);
    if (b === undefined) {
      // Exact method first, then the service: a 'service' key is one bucket for all its methods.
      const exact = o.perMethod.get(full);
      if (exact !== undefined) b = new TokenBucket(exact, o.clock);
      else if (o.perMethod.has(service)) {
        b = methodBuckets.get(`${service}.*`) ?? null;
        if (b === null) methodBuckets.set(`${service}.*`, (b = new TokenBucket(o.perMethod.get(service)!, o.clock)));
      } else b = null;
      methodBuckets.set(full, b);
    }
    return b ?? undefined;
  };

  const callerBucket = (key: string): TokenBucket => {
    let b = callers.get(key);
    if (b !== undefined) {
      // Move to the most recent end (Map keeps insertion order: the first key is the LRU).
      callers.delete(key);
      callers.set(key, b);
      return b;
    }
    b = new TokenBucket(o.perCaller!, o.clock);
    callers.set(key, b);
    if (callers.size > o.maxCallers) {
      callers.delete(callers.keys().next().value!);
      counters.evicted++;
    }
    return b;
  };

  const interceptor = ((next: Handle): Handle =>
    (call: IncomingCall) => {
      let caller: TokenBucket | undefined;
      if (o.perCaller !== undefined) {
        caller = callerBucket(o.callerKey(call.ctx));
        if (!caller.tryTake(1)) {
          counters.refusedCaller++;
          throw refusal(ResilienceChannel.RATE_LIMIT, call.service, call.method, 'caller-limit', caller.retryAfterMs(1), 'rate limit exceeded for this caller');
        }
      }
      const m = methodBucket(call.service, call.method);
      if (m !== undefined && !m.tryTake(1)) {
        caller?.refund(1);
        counters.refusedMethod++;
        throw refusal(ResilienceChannel.RATE_LIMIT, call.service, call.method, 'method-limit', m.retryAfterMs(1), `rate limit exceeded for ${call.service}.${call.method}`);
      }
      counters.admitted++;
      return next(call);
    }) as RateLimitInterceptor;
  interceptor.stats = () => ({ ...counters, callers: callers.size });
  return interceptor;
}
