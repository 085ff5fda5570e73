/**
 * Observability: public names of the observe layer. Every name is listed explicitly.
 */
export { Health, HealthStatus, HealthService, HEALTH_SERVICE, createHealthService } from './health.js';
export type { HealthStatusValue, HealthRequest, HealthReply, HealthServiceOptions, LoadSampleSource } from './health.js';
export { CallLoad, LoadSampler, processLoadSource, reportInterval, LATENCY_EWMA_ALPHA, DEFAULT_LOAD_REPORT_MS, MIN_LOAD_REPORT_MS, MAX_LOAD_REPORT_MS } from './load.js';
export type { LoadSample, LoadSource, LoadSamplerOptions } from './load.js';
