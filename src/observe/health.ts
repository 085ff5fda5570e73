/**
 * Health: the standard `skein.health` service (docs/channels.md §Health).
 *
 *   skein.health.check({ service })  → { status }          unary
 *   skein.health.watch({ service })  → { status }, ...     server stream: the current status,
 *                                                           then one message per change
 *
 * Statuses are per service name, '' being the whole server: SERVING, NOT_SERVING, and
 * SERVICE_UNKNOWN for a name the server does not serve (`check` answers that with
 * NOT_FOUND instead, as gRPC's health service does; `watch` keeps the stream open, as the
 * service may be added later).
 *
 * Every server created with `createServer()` serves it (unless `health: false`): services
 * report SERVING once the server listens; `server.close()` first sets NOT_SERVING for all,
 * waits (bounded) until every open watch has been sent that, and only then ends the watch
 * streams and drains — so a channel watching the instance stops picking it before the
 * GOAWAY arrives. Applications may set statuses themselves (`server.health.set('shop',
 * 'NOT_SERVING')` when a dependency is down).
 *
 * This module only uses the service definition helpers of the RPC layer (no client, no
 * server), so the server can import it.
 */
import { EventEmitter } from 'node:events';
import { createError, ErrorCode } from '../errors.js';
import { serverStream, service, unary } from '../rpc/define.js';
import type { CallContext, ImplementedService } from '../rpc/types.js';

export const HealthStatus = {
  SERVING: 'SERVING',
  NOT_SERVING: 'NOT_SERVING',
  SERVICE_UNKNOWN: 'SERVICE_UNKNOWN',
} as const;
export type HealthStatusValue = (typeof HealthStatus)[keyof typeof HealthStatus];

export interface HealthRequest {
  /** Service name; '' (or absent) for the whole server. */
  service?: string;
}
export interface HealthReply {
  status: HealthStatusValue;
}

/** The name the health service is served under. */
export const HEALTH_SERVICE = 'skein.health';

/** The service definition, for clients: `connect(Health, { target })`. */
export const Health = service(HEALTH_SERVICE, {
  check: unary<HealthRequest, HealthReply>({ idempotent: true }),
  watch: serverStream<HealthRequest, HealthReply>(),
});

function nameOf(req: HealthRequest | undefined): string {
  const s = req?.service;
  if (s === undefined || s === null) return '';
  if (typeof s !== 'string') throw createError(ErrorCode.VALIDATION, 'skein.health: "service" must be a string');
  return s;
}

/**
 * The statuses of one server and the `skein.health` implementation over them.
 * Events: 'change' (service, status) after every change.
 */
export class HealthService extends EventEmitter<{ change: [string, HealthStatusValue] }> {
  private readonly statuses = new Map<string, HealthStatusValue>();
  /** Open watch streams: each knows the last status it sent per its service. */
  private readonly watchers = new Set<Watcher>();
  private ended = false;
  /** The implementation to add to a server. */
  readonly impl: ImplementedService<typeof Health.methods>;

  constructor() {
    super();
    // Built without implement() (rpc/server.ts imports this module, not the reverse).
    this.impl = Object.freeze({
      def: Health,
      handlers: {
        check: (req: HealthRequest) => this.check(req),
        watch: (req: HealthRequest, ctx: CallContext) => this.watch(req, ctx),
      },
    });
  }

  /** Set the status of `service` ('' = the whole server). Watchers get it at once. */
  set(service: string, status: Exclude<HealthStatusValue, 'SERVICE_UNKNOWN'>): void {
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    for (const w of this.watchers) if (w.service === service) w.wake();
    this.emit('change', service, status);
  }

  /** Set every known service (and '') to `status`. */
  setAll(status: Exclude<HealthStatusValue, 'SERVICE_UNKNOWN'>): void {
    for (const name of [...this.statuses.keys()]) this.set(name, status);
    this.set('', status);
  }

  /** Forget a service: watchers see SERVICE_UNKNOWN. */
  remove(service: string): void {
    if (!this.statuses.delete(service)) return;
    for (const w of this.watchers) if (w.service === service) w.wake();
  }

  /** The status of `service`: SERVICE_UNKNOWN when it was never set. */
  get(service: string): HealthStatusValue {
    return this.statuses.get(service) ?? HealthStatus.SERVICE_UNKNOWN;
  }

  /** Every service with a status ('' included once set). */
  get services(): ReadonlyMap<string, HealthStatusValue> {
    return this.statuses;
  }

  /** Open watch streams. */
  get watcherCount(): number {
    return this.watchers.size;
  }

  /**
   * Going down: NOT_SERVING for all; resolves once every open watch has handed its last
   * status to the connection (or after `timeoutMs`), then ends the watch streams (OK).
   * New watches after this get NOT_SERVING and end at once.
   */
  async shutdown(timeoutMs = 1000): Promise<void> {
    this.setAll(HealthStatus.NOT_SERVING);
    const pending = [...this.watchers].filter((w) => w.delivered !== this.get(w.service)).map((w) => w.flushed());
    if (pending.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(pending), new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
    }
    this.ended = true;
    for (const w of this.watchers) w.wake();
  }

  private async check(req: HealthRequest): Promise<HealthReply> {
    const name = nameOf(req);
    const status = this.statuses.get(name);
    if (status === undefined) throw createError(ErrorCode.STATUS, `unknown service ${JSON.stringify(name)}`, { status: 'NOT_FOUND' });
    return { status };
  }

  private async *watch(req: HealthRequest, ctx: CallContext): AsyncGenerator<HealthReply> {
    const w = new Watcher(nameOf(req));
    this.watchers.add(w);
    const onAbort = (): void => w.wake();
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    try {
      for (;;) {
        const status = this.get(w.service);
        if (status !== w.sent) {
          w.sent = status;
          yield { status };
          // The stream's pump asks for the next item only after sending this one.
          w.markFlushed();
        }
        if (this.ended || ctx.signal.aborted) return;
        await w.changed();
      }
    } finally {
      ctx.signal.removeEventListener('abort', onAbort);
      this.watchers.delete(w);
      w.markFlushed();
    }
  }
}

class Watcher {
  /** The last status yielded to the stream. */
  sent: HealthStatusValue | undefined;
  /** The last status the stream has taken (sent on the connection). */
  delivered: HealthStatusValue | undefined;
  private wakeUp: (() => void) | undefined;
  private flushWaiters: Array<() => void> = [];
  private dirty = true;

  constructor(readonly service: string) {}

  wake(): void {
    this.dirty = true;
    const w = this.wakeUp;
    this.wakeUp = undefined;
    w?.();
  }

  changed(): Promise<void> {
    if (this.dirty) {
      this.dirty = false;
      return Promise.resolve();
    }
    return new Promise<void>((r) => (this.wakeUp = r));
  }

  /** Resolves once the current status has been sent (or the watch ended). */
  flushed(): Promise<void> {
    return new Promise<void>((r) => this.flushWaiters.push(r));
  }

  markFlushed(): void {
    this.delivered = this.sent;
    const ws = this.flushWaiters;
    this.flushWaiters = [];
    for (const r of ws) r();
  }
}

/** A health registry with its `skein.health` implementation. */
export function createHealthService(): HealthService {
  return new HealthService();
}
