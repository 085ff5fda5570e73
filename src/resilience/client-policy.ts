/**
 * The default client-side policy chain of one client, per method:
 *
 *   [bulkhead] → retry → hedge → breaker → (the user's interceptors) → send
 *
 * - the bulkhead (off by default: its numbers are the operator's) outermost: a call waiting
 *   for a slot has spent no attempt, and its retries and hedges run inside its one slot;
 * - retry next (outermost of the three below), so it sees every attempt's outcome, the breaker's fail-fast refusals
 *   included (those are "never sent" errors: retried within the budget, elsewhere);
 * - hedge inside retry: a hedged call that fails as a whole may still be retried;
 * - the breaker innermost of the three, so it judges every attempt (and every hedge).
 *
 * On by default: retries (only what is safe: idempotent methods, or calls no handler saw)
 * and a circuit breaker per service. Hedging is opt-in (it sends extra work by design).
 * One retry budget per client, shared by its retries and hedges, so neither can multiply
 * an outage. Per-method settings (`methods: { name: {...} }`) replace the client's for
 * that method; a method's own retry/hedge still draws from the client's budget unless
 * given one.
 */
import { createError, ErrorCode } from '../errors.js';
import type { MethodDef } from '../rpc/define.js';
import type { ClientPolicyChains } from '../rpc/policies.js';
import type { ClientInterceptor } from '../rpc/types.js';
import { breaker, type BreakerInterceptor, type BreakerOptions } from './breaker.js';
import { clientBulkhead, type ClientBulkheadInterceptor, type ClientBulkheadOptions } from './client-bulkhead.js';
import { ClientResilienceDefaults } from './defaults.js';
import { hedge, type HedgeInterceptor, type HedgeOptions } from './hedge.js';
import { retry, type RetryInterceptor, type RetryOptions } from './retry.js';
import { retryBudget, type RetryBudget } from './retry-budget.js';

/** The policies of one method (or the client's, for every method). */
export interface ClientMethodResilience {
  /** Retries; `false` for none. @default on, RetryDefaults (idempotent methods, and calls no handler saw) */
  retry?: RetryOptions | false;
  /** Circuit breaker; `false` for none. @default on, BreakerDefaults (one per service) */
  breaker?: BreakerOptions | false;
  /** Hedging (idempotent unary methods); `true` for the defaults. @default off */
  hedge?: HedgeOptions | boolean;
  /**
   * Client-side bulkhead (a concurrency limit with a bounded queue, outermost); `false` for
   * none. A method's own bulkhead is a limit of its own. @default off (ClientBulkheadDefaults once given)
   */
  bulkhead?: ClientBulkheadOptions | false;
}

export interface ClientResilienceOptions extends ClientMethodResilience {
  /**
   * Per-method settings, by method name (not 'service.method': a client serves one
   * service). A key given here replaces the client's setting for that method. @default {}
   */
  methods?: Record<string, ClientMethodResilience>;
}

/** The policies a client built, for its stats and tests. */
export interface ClientPolicySet {
  readonly budget: RetryBudget;
  readonly retry: RetryInterceptor | undefined;
  readonly breaker: BreakerInterceptor | undefined;
  readonly hedge: HedgeInterceptor | undefined;
  readonly bulkhead: ClientBulkheadInterceptor | undefined;
}

/** Build the chains of one client (see the module comment). */
export function clientResilience(options: ClientResilienceOptions = {}): ClientPolicyChains & { readonly policies: ClientPolicySet } {
  const retryOpt = options.retry ?? (ClientResilienceDefaults.retry ? {} : false);
  const breakerOpt = options.breaker ?? (ClientResilienceDefaults.breaker ? {} : false);
  const hedgeOpt = normalHedge(options.hedge ?? ClientResilienceDefaults.hedge);
  const bulkheadOpt = options.bulkhead ?? (ClientResilienceDefaults.bulkhead ? {} : false);
  const budget = (retryOpt !== false ? retryOpt.budget : undefined) ?? (hedgeOpt !== false ? hedgeOpt.budget : undefined) ?? retryBudget();
  const shared: ClientPolicySet = {
    budget,
    retry: retryOpt === false ? undefined : retry({ ...retryOpt, budget: retryOpt.budget ?? budget }),
    breaker: breakerOpt === false ? undefined : breaker(breakerOpt),
    hedge: hedgeOpt === false ? undefined : hedge({ ...hedgeOpt, budget: hedgeOpt.budget ?? budget }),
    bulkhead: bulkheadOpt === false ? undefined : clientBulkhead(bulkheadOpt),
  };
  const methods = options.methods ?? {};
  for (const name of Object.keys(methods)) {
    if (methods[name] === null || typeof methods[name] !== 'object') throw createError(ErrorCode.INVALID_OPTIONS, `resilience.methods.${name} must be an object`);
  }

  const chains = (method: string, _def: MethodDef): ClientInterceptor[] => {
    const own = Object.hasOwn(methods, method) ? methods[method]! : undefined;
    const r = own?.retry === undefined ? shared.retry : own.retry === false ? undefined : retry({ ...own.retry, budget: own.retry.budget ?? budget });
    const h0 = own?.hedge === undefined ? undefined : normalHedge(own.hedge);
    const h = own?.hedge === undefined ? shared.hedge : h0 === false || h0 === undefined ? undefined : hedge({ ...h0, budget: h0.budget ?? budget });
    const b = own?.breaker === undefined ? shared.breaker : own.breaker === false ? undefined : breaker({ scope: 'method', ...own.breaker });
    const bh = own?.bulkhead === undefined ? shared.bulkhead : own.bulkhead === false ? undefined : clientBulkhead(own.bulkhead);
    const out: ClientInterceptor[] = [];
    if (bh !== undefined) out.push(bh);
    if (r !== undefined) out.push(r);
    if (h !== undefined) out.push(h);
    if (b !== undefined) out.push(b);
    return out;
  };
  return Object.assign(chains, { policies: shared });
}

function normalHedge(h: HedgeOptions | boolean): HedgeOptions | false {
  return h === true ? {} : h === false ? false : h;
}
