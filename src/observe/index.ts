/**
 * Observability: public names of the observe layer. Every name is listed explicitly.
 */
export { Health, HealthStatus, HealthService, HEALTH_SERVICE, createHealthService } from './health.js';
export type { HealthStatusValue, HealthRequest, HealthReply } from './health.js';
