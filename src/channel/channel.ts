/**
 * Channel: a client's view of one service found through discovery (docs/channels.md).
 *
 *            Resolver.watch(service)  snapshot / added / updated / removed / error
 *   registry ───────────────────────────────────────────────┐
 *                                                           ▼
 *                                                       Channel ── state: aggregated over subchannels
 *                                         ┌─────────────────┼─────────────────┐
 *                                         ▼                 ▼                 ▼
 *                                    Subchannel        Subchannel        Subchannel    one per instance:
 *                                   (connection +     (connection +     (connection +  a ClientConnection
 *                                    health watch)     health watch)     health watch) and a health watch
 *                                         └──────── READY ones ───────────────┘
 *                                                       ▼
 *                                            Picker (round-robin, ...)  ◀── each call: pick()
 *
 * The channel keeps one subchannel per instance, created and removed as the resolver's
 * watch says. Its state is READY if any subchannel is READY (connected and SERVING),
 * else CONNECTING if any is connecting (or the first answer of the resolver is awaited),
 * else TRANSIENT_FAILURE (no instances, all failed or NOT_SERVING, or the resolver failed
 * before its first answer); IDLE before it starts (`eager: false`), SHUTDOWN after close().
 *
 * A call picks a READY subchannel through the picker. With none READY it waits (bounded by
 * its deadline and signal) while the channel is CONNECTING, and fails fast with
 * UNAVAILABLE (SKEIN_ERR_NOT_READY) in TRANSIENT_FAILURE unless it asked `waitForReady`.
 *
 * The registry going away must not break traffic between services that already know each
 * other: a resolver 'error' changes nothing but `lastResolverError` — the subchannels
 * stay, and the watch is restarted (with backoff) if it ever ends.
 */
import { EventEmitter } from 'node:events';
import { createError, ErrorCode, isSkeinError, type SkeinError } from '../errors.js';
import { pickerFor, type CallOutcome, type Picker, type PickerBuilder, type PickInfo, type PickResult } from '../balance/picker.js';
import { loadReportMsOf } from '../balance/picker-load.js';
import { parseDiscoveryUrl, resolverFor } from '../discovery/registry.js';
import type { Instance, Resolver, ResolverEvent } from '../discovery/types.js';
import { setChannelFactory, type CallRouter, type DiscoveryClientOptions, type Route } from '../rpc/client.js';
import { ROUTE_HINT, type CallOptions, type RouteHint } from '../rpc/types.js';
import type { GetSessionOptions } from '../session/client-connection.js';
import { ConnectivityState, stateChanges, type ConnectivityStateValue, type StateChange } from '../session/connectivity.js';
import { armTimer, type CancelTimer } from '../session/timer.js';
import { Backoff } from '../util/backoff.js';
import { Subchannel, type SubchannelOptions } from './subchannel.js';
import { OutlierDetector, type OutlierOptions, type OutlierStats } from './outlier.js';

export interface ChannelEvents {
  /** The aggregated state changed. */
  state: [StateChange];
  /** A subchannel was created for a new instance. */
  add: [Subchannel];
  /** An instance left: its subchannel is closing (in-flight calls get `removeGraceMs`). */
  remove: [Subchannel];
  /** An instance's metadata changed. */
  update: [Subchannel];
  /** The resolver reported a failure; the channel keeps its instances. */
  resolverError: [SkeinError];
  /** The resolver delivered a full list (first answer, or a resync). */
  resolved: [Instance[]];
}

interface Waiter {
  method: string;
  options: CallOptions;
  waitForReady: boolean;
  resolve(r: Route): void;
  reject(e: SkeinError): void;
}

/** Retry integration: how many extra picks a retry makes to avoid an instance it already tried. */
const AVOID_REPICKS = 2;

/** Backoff for restarting a watch that ended or threw (resolvers normally retry by themselves). */
const WATCH_BACKOFF = { initialMs: 250, maxMs: 10000, multiplier: 2, jitter: 0.2 };

declare module '../rpc/client.js' {
  /** A discovery client's `channel` is this layer's Channel (see ChannelTypes in rpc/client.ts). */
  interface ChannelTypes {
    channel: Channel;
  }
  interface DiscoveryClientOptions {
    /**
     * Eject instances that keep failing from picking (docs/resilience.md, "Outlier
     * ejection"); false turns it off. @default on, with OutlierDefaults
     */
    outlierDetection?: false | OutlierOptions;
  }
}

export class Channel extends EventEmitter<ChannelEvents> implements CallRouter {
  /** The service this channel reaches. */
  readonly service: string;
  /** The discovery URL (parsed: a host list is one percent-encoded host, see discovery/registry.ts). */
  readonly discovery: URL;
  /** The discovery URL as given, without credentials: for messages. */
  readonly where: string;
  state: ConnectivityStateValue = ConnectivityState.IDLE;
  /** The last failure of the resolver, until its next successful answer. */
  lastResolverError: SkeinError | undefined;
  private readonly subs = new Map<string, Subchannel>();
  private readonly resolver: Resolver;
  private readonly builder: PickerBuilder;
  private picker: Picker | undefined;
  private pickable: Subchannel[] = [];
  private readonly waiters = new Set<Waiter>();
  private readonly watchAbort = new AbortController();
  private readonly subOptions: SubchannelOptions;
  private readonly removeGraceMs: number;
  private readonly config: Readonly<Record<string, unknown>>;
  private started = false;
  private resolved = false;
  private closing: Promise<void> | undefined;
  private lastSubError: SkeinError | undefined;
  /** Rebuild even if the pickable set looks the same (an instance's metadata changed). */
  private forceRebuild = false;
  /** While applying one resolver event: rebuild once at the end, not per subchannel. */
  private applying = false;
  /** Outlier ejection (src/channel/outlier.ts): undefined with `outlierDetection: false`. */
  private readonly outlier: OutlierDetector | undefined;

  constructor(service: string, options: DiscoveryClientOptions) {
    super();
    this.service = service;
    this.discovery = parseDiscoveryUrl(options.discovery);
    this.where = redact(typeof options.discovery === 'string' ? options.discovery : options.discovery.href);
    this.builder = pickerFor(options.balancer ?? 'p2c-ewma');
    this.config = Object.freeze({ ...options.balancerConfig });
    this.builder.validate?.({ config: this.config });
    this.removeGraceMs = options.removeGraceMs ?? 10000;
    const sub: SubchannelOptions = {};
    if (options.session !== undefined) sub.session = options.session;
    if (options.tls !== undefined) sub.tls = options.tls;
    if (options.connectTimeoutMs !== undefined) sub.connectTimeoutMs = options.connectTimeoutMs;
    if (options.backoff !== undefined) sub.backoff = options.backoff;
    if (options.healthCheck !== false) sub.healthService = service;
    // Load reports (docs/balancing.md §load): only for a picker that reads them.
    if (this.builder.usesLoad === true) sub.loadReportMs = loadReportMsOf({ config: this.config });
    this.subOptions = sub;
    // Outlier ejection: on by default.
    const od = options.outlierDetection;
    if (od !== false) {
      this.outlier = new OutlierDetector(service, od ?? {}, () => this.subs.size, () => {
        this.forceRebuild = true;
        this.rebuild();
      });
    }
    this.resolver = resolverFor(this.discovery);
    if (options.eager !== false) this.start();
  }

  // ------------------------------------------------------------------ public view

  /** The subchannels, one per instance, in the order they were added. */
  get subchannels(): Subchannel[] {
    return [...this.subs.values()];
  }

  /** The instances currently known. */
  get instances(): Instance[] {
    return [...this.subs.values()].map((s) => s.instance);
  }

  /** The subchannels the picker chooses from now (READY and SERVING). */
  get readySubchannels(): readonly Subchannel[] {
    return this.pickable;
  }

  /** Outlier ejection counters and the ids ejected now (undefined with `outlierDetection: false`). */
  outlierStats(): OutlierStats | undefined {
    return this.outlier?.stats();
  }

  /** Is this instance ejected from picking by outlier detection now? */
  isEjected(sub: Subchannel | string): boolean {
    return this.outlier?.isEjected(typeof sub === 'string' ? sub : sub.id) === true;
  }

  /** Why calls fail fast now, for messages. */
  get lastError(): SkeinError | undefined {
    return this.lastResolverError ?? this.lastSubError;
  }

  /** Start watching the resolver (at construction unless `eager: false`, else on the first call). */
  start(): void {
    if (this.started || this.closing) return;
    this.started = true;
    this.updateState();
    void this.runWatch();
  }

  /** Every state change from now on, until SHUTDOWN (the last item). */
  status(): AsyncIterableIterator<StateChange> {
    return stateChanges(this);
  }

  /** Resolve once READY (waiting through failures); bounded by `signal`/`timeout`. */
  ready(options: { signal?: AbortSignal; timeout?: number } = {}): Promise<void> {
    if (this.state === ConnectivityState.READY) return Promise.resolve();
    if (this.state === ConnectivityState.SHUTDOWN) return Promise.reject(this.closedError());
    try {
      options.signal?.throwIfAborted();
    } catch (err) {
      return Promise.reject(toSkein(err, 'cancelled while waiting for the channel'));
    }
    this.start();
    return new Promise<void>((resolve, reject) => {
      let cancel: CancelTimer | undefined;
      const done = (): void => {
        this.off('state', onState);
        cancel?.();
        options.signal?.removeEventListener('abort', onAbort);
      };
      const onState = (c: StateChange): void => {
        if (c.state === ConnectivityState.READY) {
          done();
          resolve();
        } else if (c.state === ConnectivityState.SHUTDOWN) {
          done();
          reject(this.closedError());
        }
      };
      const onAbort = (): void => {
        done();
        reject(toSkein(options.signal!.reason, 'cancelled while waiting for the channel'));
      };
      this.on('state', onState);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (options.timeout !== undefined) {
        cancel = armTimer(options.timeout, () => {
          done();
          reject(createError(ErrorCode.DEADLINE, `no instance of ${this.service} ready within ${options.timeout} ms${this.describeFailure()}`));
        });
      }
    });
  }

  /**
   * Close: stop watching, close every subchannel (in-flight calls get `graceMs`), fail
   * waiting calls with SKEIN_ERR_CLOSED. Idempotent.
   */
  close(graceMs = 0): Promise<void> {
    this.closing ??= (async () => {
      this.watchAbort.abort(createError(ErrorCode.CLOSED, 'channel closed'));
      this.outlier?.close(); // outlier ejection: stop its timers
      this.picker = undefined;
      this.pickable = [];
      this.setState(ConnectivityState.SHUTDOWN);
      const err = this.closedError();
      for (const w of [...this.waiters]) w.reject(err);
      const subs = [...this.subs.values()];
      this.subs.clear();
      await Promise.all([...subs.map((s) => s.close(graceMs)), this.resolver.close().catch(() => {})]);
    })();
    return this.closing;
  }

  // ------------------------------------------------------------------ CallRouter (rpc/client.ts)

  /** @internal A route for a call now, or undefined. */
  route(method: string, options: CallOptions): Route | undefined {
    const picker = this.picker;
    if (picker === undefined) return undefined;
    // Retry integration: a call carrying a route hint (a retry) avoids instances it tried.
    const hint = options[ROUTE_HINT];
    if (hint !== undefined) return this.routeHinted(picker, method, options, hint);
    const r = picker.pick(pickInfo(this.service, method, options));
    if (r.type !== 'pick') return undefined;
    return this.routeTo(r.subchannel as Subchannel, r.onDone);
  }

  /** @internal Wait for a route, as the state and `wait` say (see the module comment). */
  waitRoute(method: string, options: CallOptions, wait: GetSessionOptions): Promise<Route> {
    if (this.closing) return Promise.reject(this.closedError());
    try {
      wait.signal?.throwIfAborted();
    } catch (err) {
      return Promise.reject(toSkein(err, 'call cancelled while waiting for an instance'));
    }
    this.start();
    return new Promise<Route>((resolve, reject) => {
      let cancel: CancelTimer | undefined;
      const finish = (): void => {
        this.waiters.delete(w);
        cancel?.();
        wait.signal?.removeEventListener('abort', onAbort);
      };
      const w: Waiter = {
        method,
        options,
        waitForReady: wait.waitForReady === true,
        resolve: (r) => {
          finish();
          resolve(r);
        },
        reject: (e) => {
          finish();
          reject(e);
        },
      };
      const onAbort = (): void => w.reject(toSkein(wait.signal!.reason, 'call cancelled while waiting for an instance'));
      wait.signal?.addEventListener('abort', onAbort, { once: true });
      if (wait.deadline !== undefined && Number.isFinite(wait.deadline)) {
        cancel = armTimer(Math.max(0, wait.deadline - Date.now()), () =>
          w.reject(createError(ErrorCode.DEADLINE, `deadline exceeded while waiting for an instance of ${this.service}${this.describeFailure()}`)),
        );
      }
      this.waiters.add(w);
      this.serve(w);
    });
  }

  // ------------------------------------------------------------------ internals

  /**
   * Retry integration (src/resilience/retry.ts): route a call whose earlier attempts went to
   * the route hint, preferring an instance it has not tried, and record the one picked.
   */
  private routeHinted(picker: Picker, method: string, options: CallOptions, hint: RouteHint): Route | undefined {
    const r = this.pickAvoiding(picker, method, options, hint);
    if (r.type !== 'pick') return undefined;
    const route = this.routeTo(r.subchannel as Subchannel, r.onDone);
    if (route !== undefined) hint.add((r.subchannel as Subchannel).id);
    return route;
  }

  /**
   * Retry integration: the picker's choice, re-picked at most AVOID_REPICKS times while it
   * is an instance the hint holds; then the first READY instance not tried (a picker that
   * always answers the same, like ring-hash); else (all tried) the picker's choice.
   * A discarded pick's `onDone` is simply not called (pickers only observe through it).
   */
  private pickAvoiding(picker: Picker, method: string, options: CallOptions, hint: RouteHint): PickResult {
    const info = pickInfo(this.service, method, options);
    let r = picker.pick(info);
    if (r.type !== 'pick' || hint.size === 0) return r;
    for (let i = 0; i < AVOID_REPICKS && hint.has((r.subchannel as Subchannel).id); i++) {
      const again = picker.pick(info);
      if (again.type !== 'pick') break;
      r = again;
    }
    if (!hint.has((r.subchannel as Subchannel).id)) return r;
    const other = this.pickable.find((s) => !hint.has(s.id));
    return other !== undefined ? { type: 'pick', subchannel: other } : r;
  }

  private routeTo(sub: Subchannel, onDone: ((o: CallOutcome) => void) | undefined): Route | undefined {
    const session = sub.connection.session;
    if (session === undefined || !session.isReady) return undefined;
    sub.inflight++;
    sub.calls.started++;
    const t0 = Date.now();
    sub.calls.lastCallAt = t0;
    return {
      session,
      done: (error) => {
        sub.inflight--;
        if (error === undefined) sub.calls.succeeded++;
        else sub.calls.failed++;
        if (this.subs.get(sub.id) === sub) this.outlier?.record(sub.id, sub.address, error); // outlier ejection (not for a removed instance)
        onDone?.({ error, latencyMs: Date.now() - t0 });
      },
    };
  }

  /** Try to settle one waiting call with the current picker and state. */
  private serve(w: Waiter): void {
    const picker = this.picker;
    if (picker !== undefined) {
      // Retry integration: a hinted call (a retry) avoids instances it already tried.
      const hint = w.options[ROUTE_HINT];
      const r = hint === undefined ? picker.pick(pickInfo(this.service, w.method, w.options)) : this.pickAvoiding(picker, w.method, w.options, hint);
      if (r.type === 'fail') return w.reject(r.error);
      if (r.type === 'pick') {
        const route = this.routeTo(r.subchannel as Subchannel, r.onDone);
        if (route !== undefined) {
          hint?.add((r.subchannel as Subchannel).id);
          return w.resolve(route);
        }
      }
    }
    if (this.state === ConnectivityState.TRANSIENT_FAILURE && !w.waitForReady) w.reject(this.notReady());
  }

  private serveAll(): void {
    for (const w of [...this.waiters]) this.serve(w);
  }

  private async runWatch(): Promise<void> {
    const backoff = new Backoff(WATCH_BACKOFF);
    const signal = this.watchAbort.signal;
    while (!signal.aborted) {
      try {
        for await (const ev of this.resolver.watch(this.service, { signal })) {
          if (signal.aborted) return;
          this.apply(ev);
          if (ev.type !== 'error') backoff.reset();
        }
        if (signal.aborted) return;
        this.resolverFailed(createError(ErrorCode.CONNECTION_LOST, `the discovery watch of ${this.service} at ${this.where} ended; restarting it`));
      } catch (err) {
        if (signal.aborted) return;
        this.resolverFailed(toSkein(err, `the discovery watch of ${this.service} failed`, ErrorCode.CONNECT_FAILED));
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, backoff.next());
        t.unref?.();
        signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
      });
    }
  }

  private apply(ev: ResolverEvent): void {
    if (ev.type === 'error') return this.resolverFailed(ev.error);
    this.applying = true;
    try {
      this.applyChange(ev);
    } finally {
      this.applying = false;
    }
    this.rebuild();
  }

  private applyChange(ev: Exclude<ResolverEvent, { type: 'error' }>): void {
    switch (ev.type) {
      case 'snapshot': {
        this.lastResolverError = undefined;
        const keep = new Set<string>();
        for (const inst of ev.instances) {
          keep.add(inst.id);
          this.upsert(inst);
        }
        for (const [id, sub] of this.subs) if (!keep.has(id)) this.removeSub(sub);
        this.resolved = true;
        this.emit('resolved', ev.instances);
        break;
      }
      case 'added':
      case 'updated':
        this.lastResolverError = undefined;
        this.upsert(ev.instance);
        break;
      case 'removed': {
        this.lastResolverError = undefined;
        const sub = this.subs.get(ev.instance.id);
        if (sub !== undefined) this.removeSub(sub);
        break;
      }
    }
  }

  private resolverFailed(err: SkeinError): void {
    this.lastResolverError = err;
    this.emit('resolverError', err);
    // Known instances stay; only a channel that never resolved fails (fast) because of it.
    if (!this.resolved) {
      this.updateState();
      this.serveAll();
    }
  }

  private upsert(inst: Instance): void {
    const cur = this.subs.get(inst.id);
    if (cur !== undefined && cur.address === inst.address) {
      if (!sameMetadata(cur.instance.metadata, inst.metadata)) {
        cur.update(inst);
        this.emit('update', cur);
        this.forceRebuild = true;
      }
      return;
    }
    if (cur !== undefined) this.removeSub(cur);
    const sub = new Subchannel(inst, this.subOptions);
    this.subs.set(inst.id, sub);
    sub.on('state', (c) => {
      if (c.error !== undefined) this.lastSubError = c.error;
      if (this.subs.get(sub.id) === sub) this.rebuild();
    });
    this.emit('add', sub);
    sub.connect();
  }

  private removeSub(sub: Subchannel): void {
    if (this.subs.get(sub.id) !== sub) return;
    this.subs.delete(sub.id);
    this.emit('remove', sub);
    this.outlier?.forget(sub.id); // outlier ejection
    void sub.close(sub.inflight > 0 ? this.removeGraceMs : 0);
  }

  /** A new picker if the pickable set changed; then the state and the waiting calls. */
  private rebuild(): void {
    if (this.closing || this.applying) return;
    const ready: Subchannel[] = [];
    for (const s of this.subs.values()) if (s.pickable) ready.push(s);
    // Outlier ejection: ejected instances are not picked, unless that would leave none.
    if (this.outlier !== undefined && ready.some((s) => this.outlier!.isEjected(s.id))) {
      const kept = ready.filter((s) => !this.outlier!.isEjected(s.id));
      if (kept.length > 0) ready.splice(0, ready.length, ...kept);
    }
    const prev = this.pickable;
    const same = !this.forceRebuild && ready.length === prev.length && ready.every((s, i) => s === prev[i]);
    this.forceRebuild = false;
    if (!same) {
      this.pickable = ready;
      this.picker = ready.length === 0 ? undefined : this.builder.build(ready, { config: this.config }, this.picker);
    }
    this.updateState();
    if (this.waiters.size > 0) this.serveAll();
  }

  private updateState(): void {
    if (this.closing) return;
    this.setState(this.computeState());
  }

  private computeState(): ConnectivityStateValue {
    if (!this.started) return ConnectivityState.IDLE;
    if (this.pickable.length > 0) return ConnectivityState.READY;
    if (!this.resolved) return this.lastResolverError !== undefined ? ConnectivityState.TRANSIENT_FAILURE : ConnectivityState.CONNECTING;
    for (const s of this.subs.values()) if (s.state === ConnectivityState.CONNECTING || s.state === ConnectivityState.IDLE) return ConnectivityState.CONNECTING;
    return ConnectivityState.TRANSIENT_FAILURE;
  }

  private setState(state: ConnectivityStateValue): void {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    const change: StateChange = { state, previous };
    if (state === ConnectivityState.TRANSIENT_FAILURE) {
      const e = this.lastError;
      if (e !== undefined) change.error = e;
    }
    this.emit('state', change);
  }

  private closedError(): SkeinError {
    return createError(ErrorCode.CLOSED, `channel to ${this.service} is closed`);
  }

  /** Fail-fast error (UNAVAILABLE): what is wrong, in one message. */
  private notReady(): SkeinError {
    return createError(ErrorCode.NOT_READY, `no instance of ${this.service} is ready${this.describeFailure()}`, { cause: this.lastError });
  }

  private describeFailure(): string {
    if (!this.resolved) return this.lastResolverError !== undefined ? `: cannot resolve it at ${this.where}: ${this.lastResolverError.message}` : ` (waiting for ${this.where})`;
    if (this.subs.size === 0) return `: ${this.where} lists no instances`;
    const parts = [...this.subs.values()].map((s) => `${s.address} ${s.health === 'NOT_SERVING' || s.health === 'SERVICE_UNKNOWN' ? s.health : s.state}${s.lastError !== undefined && s.connection.state !== ConnectivityState.READY ? ` (${s.lastError.message})` : ''}`);
    return `: ${parts.join(', ')}`;
  }
}

function pickInfo(service: string, method: string, options: CallOptions): PickInfo {
  return { service, method, metadata: options.metadata, hashKey: options.hashKey };
}

function sameMetadata(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a ?? {});
  const kb = Object.keys(b ?? {});
  return ka.length === kb.length && ka.every((k) => a[k] === b[k]);
}

/** A URL without its user info (passwords must not reach messages). */
export function redact(url: string): string {
  return url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#]*@/, '$1***@');
}

function toSkein(err: unknown, message: string, code: (typeof ErrorCode)[keyof typeof ErrorCode] = ErrorCode.CANCELLED): SkeinError {
  return isSkeinError(err) ? err : createError(code, `${message}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/** Let `connect(Def, { discovery })` build channels (called once by the package index). */
export function setup(): void {
  setChannelFactory((service, options) => new Channel(service, options));
}
