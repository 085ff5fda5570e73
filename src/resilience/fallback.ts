/**
 * Fallback: answer a unary call with a substitute reply when the handler — or a limiter
 * inside this interceptor (rate limit, bulkhead, shed) — fails with one of the chosen
 * statuses (by default RESOURCE_EXHAUSTED and UNAVAILABLE). Put it *outside* the limiters
 * in the interceptor list to answer their refusals:
 *
 *   interceptors: [fallback({ 'catalog.list': () => cachedList }), shed(), bulkhead(...)]
 *
 * Unary only: a streaming reply may already have been partly sent when it fails, and a
 * client-streaming request may have been partly consumed, so substituting would be wrong;
 * other kinds pass through untouched. A fallback that throws fails the call with what it
 * threw. Keys are 'service.method' or 'service' (the exact method wins).
 */
import { createError, ErrorCode, isSkeinError, toStatus, type StatusName } from '../errors.js';
import { MethodKind } from '../rpc/define.js';
import type { Handle, IncomingCall, ServerInterceptor } from '../rpc/types.js';
import { FallbackDefaults } from './defaults.js';
import { publish, ResilienceChannel } from './events.js';

/** Makes the substitute reply. `err` is the failure (a SkeinError). */
export type FallbackFn = (err: unknown, call: IncomingCall) => unknown;

export interface FallbackOptions {
  /** Statuses answered by the fallback. @default ['RESOURCE_EXHAUSTED', 'UNAVAILABLE'] */
  statuses?: ReadonlyArray<StatusName | number>;
}

/** Counters of one fallback interceptor. */
export interface FallbackStats {
  /** Calls answered by a fallback. */
  served: number;
  /** Fallbacks that threw (the call failed with what they threw). */
  failed: number;
}

export type FallbackInterceptor = ServerInterceptor & { stats(): FallbackStats };

/** Per-method fallbacks for unary calls; see the module comment. */
export function fallback(fallbacks: Record<string, FallbackFn>, options: FallbackOptions = {}): FallbackInterceptor {
  const table = new Map<string, FallbackFn>();
  for (const [k, fn] of Object.entries(fallbacks)) {
    if (typeof fn !== 'function') throw createError(ErrorCode.INVALID_OPTIONS, `fallback(): '${k}' must be a function`);
    table.set(k, fn);
  }
  const statuses = new Set<number>((options.statuses ?? FallbackDefaults.statuses).map((s) => toStatus(s)));
  const counters = { served: 0, failed: 0 };

  const interceptor = ((next: Handle): Handle =>
    (call: IncomingCall) => {
      if (call.kind !== MethodKind.UNARY) return next(call);
      const fn = table.get(`${call.service}.${call.method}`) ?? table.get(call.service);
      if (fn === undefined) return next(call);
      const answer = async (err: unknown): Promise<unknown> => {
        if (!isSkeinError(err) || !statuses.has(err.status) || call.ctx.signal.aborted) throw err;
        try {
          const reply = await fn(err, call);
          counters.served++;
          publish(ResilienceChannel.FALLBACK, call.service, call.method, 'fallback', 0);
          return reply;
        } catch (e) {
          counters.failed++;
          throw e;
        }
      };
      let result: unknown;
      try {
        result = next(call);
      } catch (err) {
        return answer(err);
      }
      return result instanceof Promise ? result.catch(answer) : result;
    }) as FallbackInterceptor;
  interceptor.stats = () => ({ ...counters });
  return interceptor;
}
