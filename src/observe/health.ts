/**
 * Health: the standard `skein.health` service (docs/channels.md §Health).
 *
 *   skein.health.check({ service })  → { status }          unary
 *   skein.health.watch({ service })  → { status }, ...     server stream: the current status,
 *                                                           then one message per change
 *   skein.health.watch({ service, loadReportMs })          the same, and every loadReportMs
 *                                    → ..., { status, load }  the same status with the server's
 *                                                           load (src/observe/load.ts)
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
 * Load reports: a watch that asks for them (`loadReportMs`, clamped to 100..3600000 ms) gets,
 * besides the status changes, one `{ status, load: { cpu, mem, inflight, latencyMs } }` every
 * interval, the first one interval after the watch opened. The service samples the load
 * (`LoadSampler.sample()`, given by the server) on one unref'd timer, armed only while such
 * a watch is open: one sample per tick, shared by every watch due. A watch whose stream is
 * slow gets the latest report only (never a backlog). Older clients do not send the field
 * and get status messages only; older servers ignore it (the client then has no reports).
 * On shutdown the watches send their last status (NOT_SERVING) and end, as without reports;
 * the timer stops.
 *
 * This module only uses the service definition helpers of the RPC layer (no client, no
 * server), so the server can import it.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { createError, ErrorCode } from '../errors.js';
import { serverStream, service, unary } from '../rpc/define.js';
import type { CallContext, ImplementedService } from '../rpc/types.js';
import { reportInterval, type LoadSample } from './load.js';

export const HealthStatus = {
  SERVING: 'SERVING',
  NOT_SERVING: 'NOT_SERVING',
  SERVICE_UNKNOWN: 'SERVICE_UNKNOWN',
} as const;
export type HealthStatusValue = (typeof HealthStatus)[keyof typeof HealthStatus];

export interface HealthRequest {
  /** Service name; '' (or absent) for the whole server. */
  service?: string;
  /**
   * `watch` only: also send the server's load every this many ms (clamped to 100..3600000;
   * absent, 0 or not a number: no load reports). Servers that predate load reports ignore it.
   * @default none (status changes only)
   */
  loadReportMs?: number;
}
export interface HealthReply {
  status: HealthStatusValue;
  /** On a watch with `loadReportMs`: the server's load, in the periodic reports only. */
  load?: LoadSample;
}

/** Something that samples a server's load (a `LoadSampler`). */
export interface LoadSampleSource {
  sample(): LoadSample;
}

export interface HealthServiceOptions {
  /**
   * Where load reports come from; without one, `loadReportMs` is ignored (status only).
   * The server gives its own. @default none
   */
  load?: LoadSampleSource;
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
  /** Load reports: the sampler, the watches that asked for reports, and the one timer. */
  private loadSource: LoadSampleSource | undefined;
  private readonly loadWatchers = new Set<Watcher>();
  private loadTimer: NodeJS.Timeout | undefined;
  /** When `loadTimer` fires (performance.now() ms). */
  private loadTimerAt = Infinity;
  /** The implementation to add to a server. */
  readonly impl: ImplementedService<typeof Health.methods>;

  constructor(options: HealthServiceOptions = {}) {
    super();
    this.loadSource = options.load;
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

  /** Open watch streams that receive load reports. */
  get loadWatcherCount(): number {
    return this.loadWatchers.size;
  }

  /** Is the load report timer armed (only while a watch receives reports)? */
  get loadTimerActive(): boolean {
    return this.loadTimer !== undefined;
  }

  /**
   * Where load reports come from (the server sets its own); undefined stops reports (open
   * watches keep their status messages).
   */
  setLoadSource(source: LoadSampleSource | undefined): void {
    this.loadSource = source;
    if (source === undefined) {
      for (const w of this.loadWatchers) w.loadEveryMs = undefined;
      this.loadWatchers.clear();
      this.armLoadTimer();
    }
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
    this.loadWatchers.clear();
    this.armLoadTimer();
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
    const every = this.loadSource !== undefined && !this.ended ? reportInterval(req?.loadReportMs) : undefined;
    if (every !== undefined) {
      // The first watch after none: sample once so the first report's CPU window starts now.
      if (this.loadWatchers.size === 0) safeSample(this.loadSource!);
      w.loadEveryMs = every;
      w.loadDue = performance.now() + every;
      this.loadWatchers.add(w);
      this.armLoadTimer();
    }
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
        const load = w.pendingLoad;
        if (load !== undefined && w.sent !== undefined) {
          w.pendingLoad = undefined;
          yield { status: w.sent, load };
          w.markFlushed();
          continue;
        }
        await w.changed();
      }
    } finally {
      ctx.signal.removeEventListener('abort', onAbort);
      this.watchers.delete(w);
      if (this.loadWatchers.delete(w)) this.armLoadTimer();
      w.pendingLoad = undefined;
      w.markFlushed();
    }
  }

  /** (Re)arm the one load timer for the earliest watch due; clear it when none asks for reports. */
  private armLoadTimer(): void {
    let due = Infinity;
    for (const w of this.loadWatchers) if (w.loadDue < due) due = w.loadDue;
    if (due === this.loadTimerAt && this.loadTimer !== undefined) return;
    clearTimeout(this.loadTimer);
    this.loadTimer = undefined;
    this.loadTimerAt = due;
    if (due === Infinity) return;
    this.loadTimer = setTimeout(this.onLoadTimer, Math.max(0, Math.ceil(due - performance.now())));
    this.loadTimer.unref?.();
  }

  /** One sample for every watch due now (or within LOAD_SLACK_MS), then the next timer. */
  private readonly onLoadTimer = (): void => {
    this.loadTimer = undefined;
    this.loadTimerAt = Infinity;
    const source = this.loadSource;
    if (source === undefined || this.ended) return;
    const now = performance.now();
    let sample: LoadSample | undefined;
    let sampled = false;
    for (const w of this.loadWatchers) {
      if (w.loadDue > now + LOAD_SLACK_MS) continue;
      if (!sampled) {
        sampled = true;
        sample = safeSample(source);
      }
      // Next report one interval from now (a late timer does not make reports bunch up).
      w.loadDue = now + w.loadEveryMs!;
      if (sample === undefined) continue;
      w.pendingLoad = sample;
      w.wake();
    }
    this.armLoadTimer();
  };
}

/** Watches due within this long of a timer tick get that tick's sample (one timer for all). */
const LOAD_SLACK_MS = 5;

function safeSample(source: LoadSampleSource): LoadSample | undefined {
  try {
    return source.sample();
  } catch {
    return undefined;
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
  /** Load reports: the interval (undefined: none asked), when the next is due, the one to send. */
  loadEveryMs: number | undefined;
  loadDue = Infinity;
  pendingLoad: LoadSample | undefined;

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
export function createHealthService(options: HealthServiceOptions = {}): HealthService {
  return new HealthService(options);
}
