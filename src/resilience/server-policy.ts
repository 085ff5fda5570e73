/**
 * The default server-side policy chain, in the order that makes each piece useful:
 *
 *   fallback → rateLimit → shed → bulkhead → (validation) → handler
 *
 * - fallback outermost, so it can answer the limiters' refusals as well as the handler's;
 * - rate limits before anything that holds a slot: an abusive caller costs one bucket lookup;
 * - shed (whole-server capacity) before bulkheads (per-method partitions).
 *
 * Only shed is on by default (ServerResilienceDefaults): it refuses nothing until the
 * server is past capacity. Rate limits and bulkheads need numbers only the operator knows.
 */
import type { ServerInterceptor } from '../rpc/types.js';
import { bulkhead, type BulkheadOptions } from './bulkhead.js';
import { ServerResilienceDefaults } from './defaults.js';
import { fallback, type FallbackFn, type FallbackOptions } from './fallback.js';
import { rateLimit, type RateLimitOptions } from './rate-limit.js';
import { shed, type ShedOptions } from './shed.js';

export interface ServerResilienceOptions {
  /** Per-method fallbacks for unary calls ('service.method' or 'service'). @default none */
  fallback?: Record<string, FallbackFn> | false;
  /** Options of the fallback interceptor (statuses). @default FallbackDefaults */
  fallbackOptions?: FallbackOptions;
  /** Token-bucket limits per caller / per method. @default off */
  rateLimit?: RateLimitOptions | false;
  /** Adaptive load shedding; `false` turns it off. @default on, with ShedDefaults */
  shed?: ShedOptions | boolean;
  /** Concurrency limit with a bounded queue per method or service. @default off */
  bulkhead?: BulkheadOptions | false;
}

/** The interceptors for `createServer({ interceptors })`, outermost first. */
export function serverResilience(options: ServerResilienceOptions = {}): ServerInterceptor[] {
  const out: ServerInterceptor[] = [];
  if (options.fallback) out.push(fallback(options.fallback, options.fallbackOptions));
  const rl = options.rateLimit ?? (ServerResilienceDefaults.rateLimit ? {} : false);
  if (rl !== false) out.push(rateLimit(rl));
  const sh = options.shed ?? ServerResilienceDefaults.shed;
  if (sh !== false) out.push(shed(sh === true ? {} : sh));
  const bh = options.bulkhead ?? (ServerResilienceDefaults.bulkhead ? {} : false);
  if (bh !== false) out.push(bulkhead(bh));
  return out;
}
