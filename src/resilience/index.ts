/**
 * Resilience: composable interceptors (`(next) => next`) with their defaults in one place
 * (`defaults.ts`). Server side: rate limits, bulkheads, load shedding, fallbacks.
 * See docs/resilience.md.
 */
export { TokenBucket, type BucketSpec } from './token-bucket.js';
export { rateLimit, defaultCallerKey, peerHost, type RateLimitOptions, type RateLimitStats, type RateLimitInterceptor } from './rate-limit.js';
export { bulkhead, Compartment, type BulkheadOptions, type BulkheadStats, type BulkheadInterceptor } from './bulkhead.js';
export { shed, AimdLimiter, type ShedOptions, type ShedStats, type ShedInterceptor } from './shed.js';
export { fallback, type FallbackFn, type FallbackOptions, type FallbackStats, type FallbackInterceptor } from './fallback.js';
export { ResilienceChannel, RETRY_AFTER_TRAILER, type ResilienceChannelName, type ResilienceEvent } from './events.js';
export { RateLimitDefaults, BulkheadDefaults, ShedDefaults, FallbackDefaults } from './defaults.js';
export { serverResilience, type ServerResilienceOptions } from './server-policy.js';
export { retryBudget, type RetryBudget, type RetryBudgetOptions, type RetryBudgetStats } from './retry-budget.js';
export { retry, retryReason, pushbackOf, RETRY_CHANNEL, type RetryOptions, type RetryBackoffOptions, type RetryStats, type RetryEvent, type RetryInterceptor } from './retry.js';
export { RetryDefaults, RetryBudgetDefaults } from './defaults.js';
export { breaker, CircuitBreaker, BreakerState, BREAKER_CHANNEL, type BreakerOptions, type CircuitBreakerOptions, type BreakerStats, type BreakerEvent, type BreakerInterceptor, type BreakerStateValue } from './breaker.js';
export { BreakerDefaults, OutlierDefaults } from './defaults.js';
export { hedge, LatencyWindow, HEDGE_CHANNEL, type HedgeOptions, type HedgePercentileDelay, type HedgeStats, type HedgeEvent, type HedgeInterceptor } from './hedge.js';
export { HedgeDefaults } from './defaults.js';
export { clientResilience, type ClientResilienceOptions, type ClientMethodResilience, type ClientPolicySet } from './client-policy.js';
export { ClientResilienceDefaults, ServerResilienceDefaults, ClientBulkheadDefaults } from './defaults.js';
export { clientBulkhead, CLIENT_BULKHEAD_CHANNEL, type ClientBulkheadOptions, type ClientBulkheadStats, type ClientBulkheadEvent, type ClientBulkheadInterceptor } from './client-bulkhead.js';
export { setupResilience } from './setup.js';
