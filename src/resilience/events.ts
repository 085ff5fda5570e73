/**
 * Visible decisions: every refusal made by a resilience interceptor is published on a
 * `node:diagnostics_channel` channel (STYLE item 11), and every refusal is a SkeinError
 * built here, so the retry-after contract is the same everywhere:
 *
 *   status  RESOURCE_EXHAUSTED
 *   trailer retry-after-ms: '<ms>'          (error.metadata: crosses the wire as a trailer)
 *   details { reason, retryAfterMs }
 *
 * Publishing checks `channel.hasSubscribers` first: with nobody listening a refusal costs
 * no event object.
 */
import diagnostics from 'node:diagnostics_channel';
import { ErrorCode, expectedError, type SkeinError } from '../errors.js';
import { EWMA_ALPHA } from './defaults.js';

/** Channel names, `skein:<layer>:<event>`. */
export const ResilienceChannel = {
  SHED: 'skein:resilience:shed',
  RATE_LIMIT: 'skein:resilience:rate-limit',
  BULKHEAD: 'skein:resilience:bulkhead',
  FALLBACK: 'skein:resilience:fallback',
} as const;
export type ResilienceChannelName = (typeof ResilienceChannel)[keyof typeof ResilienceChannel];

/** The message published on each channel. */
export interface ResilienceEvent {
  service: string;
  method: string;
  /** Why: 'caller-limit', 'method-limit', 'bulkhead-full', 'queue-timeout', 'concurrency-limit', 'fallback'. */
  reason: string;
  /** The retry-after sent to the caller (0 for a fallback answer). */
  retryAfterMs: number;
}

/** The trailer carrying the retry-after, in whole milliseconds as a decimal string. */
export const RETRY_AFTER_TRAILER = 'retry-after-ms';

const channels = new Map<string, diagnostics.Channel>();
function channelOf(name: ResilienceChannelName): diagnostics.Channel {
  let c = channels.get(name);
  if (c === undefined) channels.set(name, (c = diagnostics.channel(name)));
  return c;
}

/** Publish an event; builds nothing when the channel has no subscriber. */
export function publish(name: ResilienceChannelName, service: string, method: string, reason: string, retryAfterMs: number): void {
  const c = channelOf(name);
  if (!c.hasSubscribers) return;
  const event: ResilienceEvent = { service, method, reason, retryAfterMs };
  c.publish(event);
}

/** A RESOURCE_EXHAUSTED refusal with the retry-after trailer and details, published on `name`. */
export function refusal(name: ResilienceChannelName, service: string, method: string, reason: string, retryAfterMs: number, message: string): SkeinError {
  const ms = Number.isFinite(retryAfterMs) ? Math.max(0, Math.ceil(retryAfterMs)) : 0;
  publish(name, service, method, reason, ms);
  return expectedError(ErrorCode.LIMITED, `${message} (retry after ${ms}ms)`, { details: { reason, retryAfterMs: ms }, metadata: { [RETRY_AFTER_TRAILER]: String(ms) } });
}

/** An exponentially weighted moving average (undefined until the first sample). */
export class Ewma {
  #value: number | undefined;
  constructor(private readonly alpha = EWMA_ALPHA) {}
  add(sample: number): void {
    this.#value = this.#value === undefined ? sample : this.#value + this.alpha * (sample - this.#value);
  }
  get value(): number | undefined {
    return this.#value;
  }
}
