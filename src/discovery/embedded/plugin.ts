/**
 * The `skein://host:port` discovery plugin: a Resolver and a Registrar over the embedded
 * registry's service (api.ts). docs/registry.md describes the protocol.
 *
 * Resolver.watch(service) — one `watch` stream per call:
 *
 *   start ──▶ watch{service} ──▶ snapshot ──▶ added/updated/removed ... (revision r)
 *                 ▲                                     │ stream fails (registry down, cut)
 *                 │ 'compacted': resync                 ▼
 *                 └──────────── watch{service, fromRevision: r+1, epoch} ◀── 'error' event, backoff
 *
 * A resumed watch sends only the changes after r (no snapshot, no duplicate: anything at or
 * below r is dropped); when the registry cannot resume (history compacted, restarted
 * without its data) it says `compacted` and the resolver starts over with a fresh
 * snapshot. While the registry is unreachable the iterator yields an 'error' event per
 * attempt and keeps trying; it only ends when the caller's signal aborts or the resolver
 * is closed.
 *
 * Registration — grant a lease, put the instance, then keep the lease alive on a bidi
 * stream: a ping every ttl/3, each answered with the time left. The lease is lost when
 *  - the registry ends the stream with NOT_FOUND 'lease lost' (it expired or was revoked), or
 *  - no answer came for longer than the TTL (the owner was stopped, or the registry was
 *    out of reach for that long): by then the registry has dropped the instance.
 * Then 'lost' is emitted and the registration starts over (new lease, put again) with
 * backoff until it succeeds, and emits 'registered'. A keepalive stream that fails for
 * another reason (connection cut, registry restarting) is reopened on the same lease: a
 * registry restored from its data gives restored leases a grace period of one TTL.
 */
import { EventEmitter } from 'node:events';
import { createError, ErrorCode, isSkeinError, Status, type SkeinError } from '../../errors.js';
import { connect, type Client, type ClientOptions } from '../../rpc/client.js';
import { ConnectivityState } from '../../session/connectivity.js';
import { Backoff, type BackoffOptions } from '../../util/backoff.js';
import { sleep, systemClock, type Clock } from '../../util/clock.js';
import { pushable, type Pushable } from '../../util/pushable.js';
import { registerDiscovery } from '../registry.js';
import type { AbortOptions, DiscoveryPlugin, Instance, RegisterOptions, Registrar, Registration, Resolver, ResolverEvent } from '../types.js';
import { DEFAULT_REGISTRY_PORT, RegistryService, type KeepAliveRequest, type ListedInstance, type RegistryServiceDef, type WatchRequest } from './api.js';

type RegistryClient = Client<RegistryServiceDef['methods']>;

export interface EmbeddedDiscoveryOptions {
  /** Deadline of each unary call to the registry (grant, put, revoke, list), ms. @default 5000 */
  callTimeoutMs?: number;
  /** Backoff between watch attempts, keepalive stream reopens and re-registrations. @default { initialMs: 100, maxMs: 5000, multiplier: 1.6, jitter: 0.2 } */
  backoff?: BackoffOptions;
  /**
   * Options of the connection to the registry (TLS, session, ...).
   * @default { backoff: { initialMs: 100, maxMs: 2000 } } (reconnect quickly after a registry restart)
   */
  client?: Omit<ClientOptions, 'target'>;
  /** Time source for keepalive pings and lease-loss detection. @default systemClock */
  clock?: Clock;
}

interface Resolved {
  callTimeoutMs: number;
  backoff: BackoffOptions;
  client: Omit<ClientOptions, 'target'>;
  clock: Clock;
}

function resolveOptions(o: EmbeddedDiscoveryOptions): Readonly<Resolved> {
  return Object.freeze({
    callTimeoutMs: o.callTimeoutMs ?? 5000,
    backoff: { initialMs: 100, maxMs: 5000, multiplier: 1.6, jitter: 0.2, ...o.backoff },
    client: { ...o.client, backoff: { initialMs: 100, maxMs: 2000, ...o.client?.backoff } },
    clock: o.clock ?? systemClock,
  });
}

/** The registry's 'host:port' from `skein://host[:port]` (port 7700 when omitted). */
export function registryTarget(url: URL | string): string {
  const u = typeof url === 'string' ? new URL(url) : url;
  if (u.protocol !== 'skein:') throw createError(ErrorCode.INVALID_OPTIONS, `not a skein:// URL: ${u.href}`);
  if (u.hostname === '') throw createError(ErrorCode.INVALID_OPTIONS, `skein:// URL without a host: ${u.href} (expected skein://host:port)`);
  if (u.pathname !== '' && u.pathname !== '/') throw createError(ErrorCode.INVALID_OPTIONS, `skein:// URL with a path: ${u.href} (expected skein://host:port)`);
  return `${u.hostname}:${u.port === '' ? DEFAULT_REGISTRY_PORT : u.port}`;
}

function toSkeinError(err: unknown): SkeinError {
  return isSkeinError(err) ? err : createError(ErrorCode.INTERNAL, (err as Error)?.message ?? String(err), { cause: err });
}


function plainInstance(i: Instance | ListedInstance): Instance {
  return { service: i.service, id: i.id, address: i.address, metadata: { ...(i.metadata ?? {}) } };
}

// ------------------------------------------------------------------ resolver

/** Follows services in an embedded registry. */
export class EmbeddedResolver implements Resolver {
  readonly target: string;
  private readonly client: RegistryClient;
  private readonly o: Readonly<Resolved>;
  private readonly closing = new AbortController();

  constructor(target: string, options: EmbeddedDiscoveryOptions = {}) {
    this.target = target;
    this.o = resolveOptions(options);
    this.client = connect(RegistryService, { ...this.o.client, target, eager: false });
  }

  watch(service: string, options: AbortOptions = {}): AsyncIterable<ResolverEvent> {
    const signal = options.signal === undefined ? this.closing.signal : AbortSignal.any([this.closing.signal, options.signal]);
    return { [Symbol.asyncIterator]: () => this.run(service, signal) };
  }

  /**
   * Watch every service at once (`skein watch` without a service): the same events, with
   * snapshots holding all instances.
   */
  watchAll(options: AbortOptions = {}): AsyncIterable<ResolverEvent> {
    const signal = options.signal === undefined ? this.closing.signal : AbortSignal.any([this.closing.signal, options.signal]);
    return { [Symbol.asyncIterator]: () => this.run(undefined, signal) };
  }

  async list(service?: string, options: AbortOptions = {}): Promise<Instance[]> {
    return (await this.listDetailed(service, options)).instances.map(plainInstance);
  }

  /** `list` with each instance's lease, time left and revision (for `skein ls`). */
  listDetailed(service?: string, options: AbortOptions = {}): Promise<{ epoch: string; revision: number; instances: ListedInstance[] }> {
    const req = service === undefined ? {} : { service };
    return this.client.list(req, { waitForReady: true, timeout: this.o.callTimeoutMs, ...(options.signal ? { signal: options.signal } : {}) });
  }

  async close(): Promise<void> {
    this.closing.abort(createError(ErrorCode.CLOSED, 'resolver closed'));
    await this.client.close();
  }

  private async *run(service: string | undefined, signal: AbortSignal): AsyncGenerator<ResolverEvent> {
    const backoff = new Backoff(this.o.backoff);
    let revision: number | undefined;
    let epoch: string | undefined;
    while (!signal.aborted) {
      let resync = false;
      try {
        const req: WatchRequest = {};
        if (service !== undefined) req.service = service;
        if (revision !== undefined && epoch !== undefined) {
          req.fromRevision = revision + 1;
          req.epoch = epoch;
        }
        const call = this.client.watch(req, { signal });
        for await (const m of call) {
          switch (m.type) {
            case 'snapshot':
              revision = m.revision;
              epoch = m.epoch;
              backoff.reset();
              yield { type: 'snapshot', instances: m.instances.map(plainInstance), revision: m.revision };
              break;
            case 'added':
            case 'updated':
            case 'removed':
              if (revision !== undefined && m.revision <= revision) break; // already seen
              revision = m.revision;
              backoff.reset();
              yield { type: m.type, instance: plainInstance(m.instance), revision: m.revision };
              break;
            case 'compacted':
              revision = undefined;
              epoch = undefined;
              resync = true;
              break;
          }
          if (resync) break;
        }
      } catch (err) {
        if (signal.aborted) return;
        yield { type: 'error', error: toSkeinError(err) };
      }
      if (signal.aborted) return;
      if (resync) continue; // at once: a fresh snapshot
      // The stream failed or the registry ended it (shutting down): wait, resume from `revision`.
      const delay = backoff.next();
      if (this.client.state === ConnectivityState.READY) await sleep(delay, signal);
      else await this.client.ready({ signal, timeout: delay }).catch(() => {});
    }
  }
}

// ------------------------------------------------------------------ registrar

function isLeaseLost(err: SkeinError): boolean {
  return err.status === Status.NOT_FOUND;
}

/** A transient failure worth retrying (the registry is unreachable, busy, out of disk, or the lease vanished mid-way). */
function retryable(err: SkeinError): boolean {
  return err.status === Status.UNAVAILABLE || err.status === Status.DEADLINE_EXCEEDED || err.status === Status.RESOURCE_EXHAUSTED || err.status === Status.NOT_FOUND || err.status === Status.ABORTED;
}

type RegState = 'registering' | 'registered' | 'recovering' | 'closed';

/** One instance kept registered (see the module comment). */
export class EmbeddedRegistration extends EventEmitter implements Registration {
  readonly instance: Instance;
  readonly ttlMs: number;
  /** The lease holding the instance now; undefined while lost or deregistered. */
  leaseId: number | undefined;
  private state: RegState = 'registering';
  private lastAck = 0;
  private ka: { ac: AbortController; pings: Pushable<KeepAliveRequest> } | undefined;
  private kaGen = 0;
  private tickTimer: unknown;
  private reopenTimer: unknown;
  private readonly life = new AbortController();
  private readonly kaBackoff: Backoff;
  private deregistering: Promise<void> | undefined;

  /** @internal use EmbeddedRegistrar.register() */
  constructor(
    private readonly client: RegistryClient,
    instance: Instance,
    ttlMs: number,
    private readonly o: Readonly<Resolved>,
    private readonly onClosed: (r: EmbeddedRegistration) => void,
  ) {
    super();
    this.instance = instance;
    this.ttlMs = ttlMs;
    this.kaBackoff = new Backoff({ ...o.backoff, maxMs: Math.max(50, Math.min(o.backoff.maxMs ?? 5000, Math.floor(ttlMs / 3))) });
  }

  /** True while the instance is registered under a live lease (as far as this side knows). */
  get registered(): boolean {
    return this.state === 'registered';
  }

  /** @internal First registration: retried on transient failures until it succeeds or `signal` aborts. */
  async start(signal: AbortSignal | undefined): Promise<void> {
    const backoff = new Backoff(this.o.backoff);
    const stop = signal === undefined ? this.life.signal : AbortSignal.any([signal, this.life.signal]);
    const aborted = (): SkeinError => {
      this.close();
      return isSkeinError(stop.reason) ? stop.reason : createError(ErrorCode.CANCELLED, 'register() cancelled', { cause: stop.reason });
    };
    for (;;) {
      if (stop.aborted) throw aborted();
      try {
        const leaseId = await this.attempt(stop);
        this.activate(leaseId);
        setImmediate(() => {
          if (this.state === 'registered' && this.leaseId === leaseId) this.emit('registered', this.instance);
        });
        return;
      } catch (err) {
        if (stop.aborted) throw aborted();
        const e = toSkeinError(err);
        if (!retryable(e)) {
          this.close();
          throw e;
        }
        await sleep(backoff.next(), stop, this.o.clock);
      }
    }
  }

  deregister(options: AbortOptions = {}): Promise<void> {
    if (this.deregistering !== undefined) return this.deregistering;
    const leaseId = this.leaseId;
    this.close();
    this.deregistering =
      leaseId === undefined
        ? Promise.resolve()
        : this.client.revoke({ leaseId }, { waitForReady: true, timeout: this.o.callTimeoutMs, ...(options.signal ? { signal: options.signal } : {}) }).then(() => {});
    return this.deregistering;
  }

  /** @internal Stop everything locally (no call to the registry): the lease is left to expire. */
  close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.leaseId = undefined;
    this.life.abort(createError(ErrorCode.CLOSED, 'registration closed'));
    this.stopKeepAlive();
    this.onClosed(this);
  }

  /** grant + put; resolves with the lease id. */
  private async attempt(signal: AbortSignal): Promise<number> {
    const opts = { waitForReady: true, timeout: this.o.callTimeoutMs, signal };
    const { leaseId } = await this.client.grant({ ttlMs: this.ttlMs }, opts);
    try {
      await this.client.put({ leaseId, instance: this.instance }, opts);
    } catch (err) {
      this.bestEffortRevoke(leaseId);
      throw err;
    }
    if (this.state === 'closed') {
      this.bestEffortRevoke(leaseId);
      throw this.life.signal.reason;
    }
    return leaseId;
  }

  private bestEffortRevoke(leaseId: number): void {
    this.client.revoke({ leaseId }, { timeout: this.o.callTimeoutMs }).catch(() => {});
  }

  private activate(leaseId: number): void {
    this.leaseId = leaseId;
    this.state = 'registered';
    this.lastAck = this.o.clock.now();
    this.kaBackoff.reset();
    this.openKeepAlive();
    this.armTick();
  }

  private get interval(): number {
    return Math.max(20, Math.floor(this.ttlMs / 3));
  }

  private armTick(): void {
    this.o.clock.clearTimeout(this.tickTimer);
    this.tickTimer = this.o.clock.setTimeout(() => this.tick(), this.interval);
  }

  /** Every ttl/3: give up on the lease if nothing was heard for a TTL, else ping. */
  private tick(): void {
    this.tickTimer = undefined;
    if (this.state !== 'registered') return;
    const age = this.o.clock.now() - this.lastAck;
    if (age > this.ttlMs) {
      this.lost(createError(ErrorCode.LEASE_LOST, `lease lost: no keepalive answer for ${Math.round(age)} ms (TTL ${this.ttlMs} ms)`));
      return;
    }
    if (this.ka !== undefined) this.ka.pings.push({ leaseId: this.leaseId! }).catch(() => {});
    this.armTick();
  }

  private openKeepAlive(): void {
    this.stopKeepAlive();
    const gen = ++this.kaGen;
    const leaseId = this.leaseId!;
    const ac = new AbortController();
    const pings = pushable<KeepAliveRequest>({ highWaterMark: 4 });
    this.ka = { ac, pings };
    const replies = this.client.keepAlive(pings, { signal: ac.signal });
    pings.push({ leaseId }).catch(() => {});
    void (async () => {
      let end: SkeinError;
      try {
        for await (const _reply of replies) {
          if (gen !== this.kaGen) return;
          this.lastAck = this.o.clock.now();
          this.kaBackoff.reset();
        }
        end = createError(ErrorCode.CLOSED, 'the registry ended the keepalive stream');
      } catch (err) {
        end = toSkeinError(err);
      }
      if (gen !== this.kaGen || this.state !== 'registered') return;
      this.ka = undefined;
      if (isLeaseLost(end)) {
        this.lost(end);
        return;
      }
      // Connection cut or registry restarting: reopen on the same lease; the tick gives up
      // on it after a TTL without an answer.
      this.o.clock.clearTimeout(this.reopenTimer);
      this.reopenTimer = this.o.clock.setTimeout(() => {
        this.reopenTimer = undefined;
        if (gen === this.kaGen && this.state === 'registered') this.openKeepAlive();
      }, this.kaBackoff.next());
    })();
  }

  private stopKeepAlive(): void {
    this.kaGen++;
    this.o.clock.clearTimeout(this.reopenTimer);
    this.reopenTimer = undefined;
    this.o.clock.clearTimeout(this.tickTimer);
    this.tickTimer = undefined;
    const ka = this.ka;
    this.ka = undefined;
    if (ka !== undefined) {
      ka.pings.end();
      ka.ac.abort(createError(ErrorCode.CANCELLED, 'keepalive stopped'));
    }
  }

  private lost(err: SkeinError): void {
    if (this.state !== 'registered') return;
    this.state = 'recovering';
    const old = this.leaseId;
    this.leaseId = undefined;
    this.stopKeepAlive();
    this.emit('lost', err);
    void this.recover(old);
  }

  /** Register again (new lease) with backoff until it works or the registration is closed. */
  private async recover(oldLease: number | undefined): Promise<void> {
    const backoff = new Backoff(this.o.backoff);
    const signal = this.life.signal;
    while (this.state === 'recovering') {
      try {
        const leaseId = await this.attempt(signal);
        if (this.state !== 'recovering') return;
        this.activate(leaseId);
        if (oldLease !== undefined) this.bestEffortRevoke(oldLease); // holds nothing now; may already be gone
        this.emit('registered', this.instance);
        return;
      } catch {
        if (this.state !== 'recovering') return;
        await sleep(backoff.next(), signal, this.o.clock);
      }
    }
  }
}

/** Registers instances in an embedded registry, one lease per instance. */
export class EmbeddedRegistrar implements Registrar {
  readonly target: string;
  private readonly client: RegistryClient;
  private readonly o: Readonly<Resolved>;
  private readonly registrations = new Set<EmbeddedRegistration>();
  private closed = false;

  constructor(target: string, options: EmbeddedDiscoveryOptions = {}) {
    this.target = target;
    this.o = resolveOptions(options);
    this.client = connect(RegistryService, { ...this.o.client, target, eager: false });
  }

  /**
   * Register `instance` (id defaults to the address). Resolves once it is registered;
   * transient failures (registry unreachable) are retried with backoff until `signal`
   * aborts. The first 'registered' event fires on a later turn, so listeners attached
   * right after `await register()` see it.
   */
  async register(instance: Omit<Instance, 'id' | 'metadata'> & { id?: string; metadata?: Record<string, string> }, options: RegisterOptions = {}): Promise<EmbeddedRegistration> {
    if (this.closed) throw createError(ErrorCode.CLOSED, 'registrar closed');
    options.signal?.throwIfAborted();
    const ttlMs = options.ttlMs ?? 10000;
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw createError(ErrorCode.INVALID_OPTIONS, `ttlMs must be a positive number, got ${ttlMs}`);
    if (typeof instance?.service !== 'string' || typeof instance.address !== 'string' || instance.address === '') throw createError(ErrorCode.INVALID_OPTIONS, 'register(): instance needs a service name and an address');
    const full: Instance = { service: instance.service, id: instance.id ?? instance.address, address: instance.address, metadata: { ...instance.metadata } };
    const reg = new EmbeddedRegistration(this.client, full, ttlMs, this.o, (r) => this.registrations.delete(r));
    this.registrations.add(reg);
    await reg.start(options.signal);
    return reg;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.registrations].map((r) => r.deregister()));
    await this.client.close();
  }

  /**
   * Stop as a killed process would: keepalives stop and the connection drops, nothing is
   * deregistered, so the registry expires the leases after their TTL (tests, and owners
   * that must not take their instances down on their way out).
   */
  async abandon(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const r of [...this.registrations]) r.close();
    await this.client.close();
  }
}

// ------------------------------------------------------------------ plugin

/** The `skein://` plugin, with its concrete resolver and registrar types. */
export interface EmbeddedDiscoveryPlugin extends DiscoveryPlugin {
  readonly scheme: 'skein';
  resolver(url: URL): EmbeddedResolver;
  registrar(url: URL): EmbeddedRegistrar;
}

/** Make the `skein://` plugin with options (timeouts, backoff, TLS to the registry). */
export function createEmbeddedDiscovery(options: EmbeddedDiscoveryOptions = {}): EmbeddedDiscoveryPlugin {
  return Object.freeze({
    scheme: 'skein',
    resolver: (url: URL) => new EmbeddedResolver(registryTarget(url), options),
    registrar: (url: URL) => new EmbeddedRegistrar(registryTarget(url), options),
  });
}

/** The `skein://host:port` discovery plugin with default options. */
export const embeddedDiscovery: EmbeddedDiscoveryPlugin = createEmbeddedDiscovery();

/** Register the `skein://` plugin with the discovery plugin lookup (src/discovery/registry.ts). Idempotent. */
export function setup(): void {
  registerDiscovery(embeddedDiscovery);
}
