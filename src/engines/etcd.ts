/**
 * The `etcd://host:port[,host:port...][?prefix=/skein/]` discovery plugin: a Resolver and a
 * Registrar over etcd v3 (≥ 3.4), using the `etcd3` package's connection pool and raw RPCs.
 * docs/etcd.md describes the key layout and the failure handling in prose.
 *
 * Keys. One key per instance, `<prefix><service>/<id>` → the Instance as JSON, attached to
 * the lease of the registration that owns it. Service names hold no '/'; ids may.
 *
 * Why raw RPCs and not the package's Lease and Watcher. The package's `Lease` reports a lost
 * lease only after 2×TTL without contact (or never, when the keepalive stream hangs), and
 * its `Watcher` can go quiet after a reconnect. Both are replaced here by loops whose every
 * step has a deadline:
 *
 *   Registration — grant ─▶ put(key, lease) ─▶ keepalive every TTL/3 ─┐
 *                    ▲                          │ ok: loss timer = now + TTL
 *                    │ backoff until it works   │ TTL ≤ 0 ("gone") or loss timer fires
 *                    └──── 'lost' ◀─────────────┘
 *     Each keepalive is one LeaseKeepAlive request on a fresh stream with a deadline, so a
 *     stalled connection cannot hold the loop. The loss timer fires one TTL after the last
 *     successful keepalive was *received*: by then etcd has expired the lease (it refreshed
 *     it before answering), so 'lost' is never early, and it is at most one TTL late.
 *     Once per TTL the registration also reads its key back and puts it again if it has
 *     vanished (deleted by hand) or sits on one of its own older leases (a put from an
 *     attempt that timed out here but reached etcd late); a key on a foreign lease — another
 *     live owner of the same id — is left alone.
 *
 *   Watch — range(prefix) = snapshot at revision R ─▶ watch from R+1 ─▶ events (rev r)
 *                ▲                                        │ stream error, silence, cut
 *                │ "compacted": resync                    ▼
 *                └─────────── watch from r+1 ◀── 'error' event, backoff
 *     A resumed watch sends exactly the events after the last one delivered (no gap, no
 *     duplicate). When etcd has compacted that revision away it cancels the watch with a
 *     compact revision; the resolver then emits a fresh 'snapshot' and goes on from there.
 *     A stream that says nothing for `watchCheckMs` is probed with a progress request; no
 *     answer within `callTimeoutMs` and it is torn down and rebuilt from the last revision.
 *
 * Nothing outside src/engines/ imports 'etcd3': the rest of skein sees only the interfaces
 * of src/discovery/types.ts.
 */
import { EventEmitter } from 'node:events';
import {
  ClientClosedError,
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  GRPCDeadlineExceededError,
  GRPCInvalidArgumentError,
  GRPCUnauthenticatedError,
  GRPCUnavailableError,
  isRecoverableError,
} from 'etcd3';
import type { IDuplexStream, IEvent, IKeyValue, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse, IOptions, IWatchRequest, IWatchResponse } from 'etcd3';
import { createError, ErrorCode, isSkeinError, Status, type SkeinError } from '../errors.js';
import { discoveryHosts, registerDiscovery } from '../discovery/registry.js';
import type { AbortOptions, DiscoveryPlugin, Instance, RegisterOptions, Registrar, Registration, Resolver, ResolverEvent } from '../discovery/types.js';
import { checkParams, copyInstance, sameInstance, WatchFeed } from '../discovery/watch-feed.js';
import { Backoff, type BackoffOptions } from '../util/backoff.js';
import { sleep, systemClock, type Clock } from '../util/clock.js';

/** The client port etcd listens on when a URL names none. */
export const DEFAULT_ETCD_PORT = 2379;
/** Where instances live unless the URL says `?prefix=`. */
export const DEFAULT_ETCD_PREFIX = '/skein/';

export interface EtcdDiscoveryOptions {
  /** Key prefix when the URL has no `?prefix=`; a trailing '/' is added if missing. @default '/skein/' */
  prefix?: string;
  /** Deadline of every unary request to etcd (range, put, grant, revoke, keepalive) and of creating a watch, ms. @default 5000 */
  callTimeoutMs?: number;
  /**
   * A watch stream silent for this long is probed with a progress request, and rebuilt from
   * its last revision when the probe is not answered within `callTimeoutMs`, ms.
   * @default 5000
   */
  watchCheckMs?: number;
  /** Backoff between watch attempts and between registration attempts. @default { initialMs: 100, maxMs: 1000, multiplier: 2, jitter: 0.2 } */
  backoff?: BackoffOptions;
  /**
   * Passed to the etcd3 client: TLS (`credentials`), user/password (`auth`), gRPC channel
   * options (merged over skein's: reconnect backoff 100 ms..1 s, keepalive pings every 10 s
   * with a 5 s timeout). `hosts` come from the URL.
   * @default {}
   */
  client?: Pick<IOptions, 'credentials' | 'auth' | 'grpcOptions' | 'dialTimeout'>;
  /** Time source for keepalives, loss detection and watch probes. @default systemClock */
  clock?: Clock;
}

interface Resolved {
  prefix: string;
  callTimeoutMs: number;
  watchCheckMs: number;
  backoff: BackoffOptions;
  client: Pick<IOptions, 'credentials' | 'auth' | 'grpcOptions' | 'dialTimeout'>;
  clock: Clock;
}

function positive(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (!Number.isFinite(v) || v <= 0) throw createError(ErrorCode.INVALID_OPTIONS, `etcd discovery: ${name} must be a positive number of ms, got ${String(v)}`);
  return v;
}

function withSlash(prefix: string): string {
  return prefix.endsWith('/') ? prefix : `${prefix}/`;
}

function resolveOptions(o: EtcdDiscoveryOptions): Readonly<Resolved> {
  return Object.freeze({
    prefix: withSlash(o.prefix ?? DEFAULT_ETCD_PREFIX),
    callTimeoutMs: positive('callTimeoutMs', o.callTimeoutMs, 5000),
    watchCheckMs: positive('watchCheckMs', o.watchCheckMs, 5000),
    backoff: { initialMs: 100, maxMs: 1000, multiplier: 2, jitter: 0.2, ...o.backoff },
    client: { ...o.client },
    clock: o.clock ?? systemClock,
  });
}

// ------------------------------------------------------------------ URL

export interface EtcdTarget {
  /** 'host:port' of each etcd member, in the URL's order. */
  endpoints: string[];
  /** Key prefix, ending in '/'. */
  prefix: string;
}

/**
 * Read an `etcd://` URL: its hosts (a comma-separated list once through
 * `parseDiscoveryUrl`; port 2379 when a host names none) and `?prefix=` (else
 * `defaultPrefix`). Throws SKEIN_ERR_INVALID_OPTIONS for anything else.
 */
export function parseEtcdUrl(url: URL, defaultPrefix: string = DEFAULT_ETCD_PREFIX): EtcdTarget {
  const invalid = (why: string): never => {
    throw createError(ErrorCode.INVALID_OPTIONS, `invalid etcd URL ${JSON.stringify(url.href.replace(/\/\/[^/?#]*@/, '//***@'))}: ${why} (expected etcd://host:port[,host:port...][?prefix=/skein/])`);
  };
  if (url.protocol !== 'etcd:') invalid('not an etcd: URL');
  if (url.pathname !== '' && url.pathname !== '/') invalid('a path is not allowed (the key prefix goes in ?prefix=)');
  checkParams(url.searchParams, ['prefix'], invalid);
  const hosts = discoveryHosts(url);
  if (hosts.length === 0) invalid('no host');
  const endpoints = hosts.map((h) => {
    const m = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(h);
    if (m === null) return invalid(`bad host ${JSON.stringify(h)}`);
    const port = m[2] === undefined ? DEFAULT_ETCD_PORT : Number(m[2]);
    if (port < 1 || port > 65535) invalid(`bad port in ${JSON.stringify(h)}`);
    return `${m[1]}:${port}`;
  });
  const prefix = url.searchParams.get('prefix');
  if (prefix === '') invalid('?prefix= is empty');
  return { endpoints, prefix: withSlash(prefix ?? defaultPrefix) };
}

// ------------------------------------------------------------------ keys and values

const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');

/** The end of the range holding every key that starts with `prefix` (etcd's `--prefix`). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // all 0xff: to the end of the keyspace
}

function checkService(service: string): void {
  if (typeof service !== 'string' || service === '' || service.includes('/')) {
    throw createError(ErrorCode.INVALID_OPTIONS, `etcd discovery: bad service name ${JSON.stringify(service)} (non-empty, no '/')`);
  }
}

/** An instance from a key and its JSON value; undefined for anything that is not one. */
function decodeInstance(prefix: string, kv: IKeyValue): Instance | undefined {
  const key = kv.key.toString('utf8');
  if (!key.startsWith(prefix)) return undefined;
  const rest = key.slice(prefix.length);
  const slash = rest.indexOf('/');
  if (slash <= 0 || slash === rest.length - 1) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(kv.value.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as { address?: unknown; metadata?: unknown };
  if (typeof v.address !== 'string' || v.address === '') return undefined;
  const metadata: Record<string, string> = {};
  if (typeof v.metadata === 'object' && v.metadata !== null) {
    for (const [k, m] of Object.entries(v.metadata)) if (typeof m === 'string') metadata[k] = m;
  }
  return { service: rest.slice(0, slash), id: rest.slice(slash + 1), address: v.address, metadata };
}

function encodeInstance(instance: Instance): Buffer {
  return utf8(JSON.stringify({ service: instance.service, id: instance.id, address: instance.address, metadata: instance.metadata }));
}

// ------------------------------------------------------------------ errors

/** A lease that is gone: etcd said so, or nothing answered for a whole TTL. (Same shape as the embedded registry's.) */
function leaseLost(message: string, cause?: unknown): SkeinError {
  return createError(ErrorCode.LEASE_LOST, message, cause === undefined ? {} : { cause });
}

/** Any failure from the etcd3 client as a SkeinError. */
function toSkeinError(err: unknown, what: string): SkeinError {
  if (isSkeinError(err)) return err;
  const msg = `etcd ${what}: ${err instanceof Error ? err.message : String(err)}`;
  if (err instanceof GRPCDeadlineExceededError) return createError(ErrorCode.DEADLINE, msg, { cause: err });
  if (err instanceof GRPCUnavailableError) return createError(ErrorCode.CONNECT_FAILED, msg, { cause: err });
  // etcd answers InvalidArgument for requests it will never take (too large, bad range): no retry.
  if (err instanceof GRPCInvalidArgumentError) return createError(ErrorCode.INVALID_OPTIONS, msg, { cause: err });
  if (err instanceof ClientClosedError) return createError(ErrorCode.CLOSED, msg, { cause: err });
  if (err instanceof EtcdLeaseInvalidError) return leaseLost(msg, err);
  if (err instanceof EtcdPermissionDeniedError) return createError(ErrorCode.AUTH_REFUSED, msg, { cause: err, status: 'PERMISSION_DENIED' });
  if (err instanceof EtcdAuthenticationFailedError || err instanceof EtcdInvalidAuthTokenError || err instanceof GRPCUnauthenticatedError) {
    return createError(ErrorCode.AUTH_REFUSED, msg, { cause: err });
  }
  return createError(ErrorCode.CONNECTION_LOST, msg, { cause: err });
}

/** Worth retrying: etcd out of reach, slow, restarting. Not: bad credentials, a closed client. */
function retryable(err: SkeinError): boolean {
  return err.status === Status.UNAVAILABLE || err.status === Status.DEADLINE_EXCEEDED || err.status === Status.NOT_FOUND || err.status === Status.RESOURCE_EXHAUSTED || err.status === Status.ABORTED;
}

function cancelled(signal: AbortSignal, what: string): SkeinError {
  return isSkeinError(signal.reason) ? signal.reason : createError(ErrorCode.CANCELLED, `etcd ${what}: cancelled`, { cause: signal.reason });
}


function ignore(): void {}

// ------------------------------------------------------------------ connection

type FaultPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/**
 * The etcd3 pool's fault handling, replaced: no circuit breaker (it would refuse every call
 * for 5 s after three failures, longer than an etcd restart takes), and a call that could
 * not reach one member is tried once on each other member. Retrying over time is done by
 * the loops here, which know their deadlines.
 */
function passThrough(): FaultPolicy {
  return { execute: (fn: (ctx: { signal: AbortSignal }) => unknown) => Promise.resolve().then(() => fn({ signal: new AbortController().signal })) } as unknown as FaultPolicy;
}

function failover(attempts: number): FaultPolicy {
  return {
    execute: async (fn: (ctx: { signal: AbortSignal }) => unknown) => {
      let last: unknown;
      for (let i = 0; i < attempts; i++) {
        try {
          return await fn({ signal: new AbortController().signal });
        } catch (err) {
          last = err;
          if (!(err instanceof Error) || !isRecoverableError(err) || err instanceof GRPCDeadlineExceededError) throw err;
        }
      }
      throw last;
    },
  } as unknown as FaultPolicy;
}

type Stream<Req, Res> = IDuplexStream<Req, Res> & { end(): void; cancel(): void };

/** One etcd3 client, with deadlines on every call and every open stream tracked for close(). */
class EtcdConnection {
  readonly endpoints: string[];
  readonly #client: Etcd3;
  readonly #o: Readonly<Resolved>;
  readonly #streams = new Set<{ end(): void; cancel(): void }>();
  #closed = false;

  constructor(endpoints: string[], o: Readonly<Resolved>) {
    this.endpoints = endpoints;
    this.#o = o;
    const secure = o.client.credentials !== undefined;
    this.#client = new Etcd3({
      ...o.client,
      hosts: endpoints.map((e) => `${secure ? 'https' : 'http'}://${e}`),
      grpcOptions: {
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 1000,
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5000,
        ...o.client.grpcOptions,
      },
      faultHandling: { host: () => passThrough(), global: failover(endpoints.length) },
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** One unary request with the call deadline, cut short by `signal`; failures as SkeinErrors. */
  async call<T>(what: string, fn: (client: Etcd3, options: { deadline: number }) => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.#closed) throw createError(ErrorCode.CLOSED, `etcd ${what}: the client is closed`);
    if (signal?.aborted === true) throw cancelled(signal, what);
    try {
      const p = fn(this.#client, { deadline: Date.now() + this.#o.callTimeoutMs });
      if (signal === undefined) return await p;
      p.catch(ignore);
      return await new Promise<T>((resolve, reject) => {
        const onAbort = (): void => reject(cancelled(signal, what));
        signal.addEventListener('abort', onAbort, { once: true });
        p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
      });
    } catch (err) {
      throw toSkeinError(err, what);
    }
  }

  /**
   * One keepalive for `leaseId` on its own stream, answered within `budgetMs` or failed.
   * On success the stream is half-closed, so etcd ends it cleanly (a cancel would make the
   * etcd3 pool reset its channels).
   */
  async keepAliveOnce(leaseId: string, budgetMs: number): Promise<ILeaseKeepAliveResponse> {
    if (this.#closed) throw createError(ErrorCode.CLOSED, 'etcd keepalive: the client is closed');
    let stream: Stream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;
    try {
      stream = (await this.#client.leaseClient.leaseKeepAlive({ deadline: Date.now() + budgetMs })) as Stream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;
    } catch (err) {
      throw toSkeinError(err, 'keepalive');
    }
    this.#streams.add(stream);
    return new Promise<ILeaseKeepAliveResponse>((resolve, reject) => {
      let done = false;
      const finish = (err: unknown, res?: ILeaseKeepAliveResponse): void => {
        if (done) return;
        done = true;
        this.#o.clock.clearTimeout(timer);
        this.#streams.delete(stream);
        if (err === undefined) {
          stream.end();
          resolve(res!);
        } else {
          stream.cancel();
          reject(toSkeinError(err, 'keepalive'));
        }
      };
      // gRPC enforces the deadline; this only guards against a stream that never settles.
      const timer = this.#o.clock.setTimeout(() => finish(new GRPCDeadlineExceededError('keepalive: no answer in time')), budgetMs + 500);
      stream.on('data', (res) => finish(undefined, res));
      stream.on('error', (err) => finish(err));
      stream.on('end', () => finish(new Error('the keepalive stream ended without an answer')));
      stream.write({ ID: leaseId });
    });
  }

  /** Open a watch stream (the caller writes the create request and must `release()` it). */
  async openWatch(): Promise<Stream<IWatchRequest, IWatchResponse>> {
    if (this.#closed) throw createError(ErrorCode.CLOSED, 'etcd watch: the client is closed');
    try {
      const stream = (await this.#client.watchClient.watch()) as Stream<IWatchRequest, IWatchResponse>;
      stream.on('error', ignore);
      if (this.#closed) {
        this.release(stream);
        throw createError(ErrorCode.CLOSED, 'etcd watch: the client is closed');
      }
      this.#streams.add(stream);
      return stream;
    } catch (err) {
      throw toSkeinError(err, 'watch');
    }
  }

  /**
   * Tear a stream down. end() first: the pool resets a member's channels on an error from a
   * stream that is still writable, and a deliberate cancel is no reason for that.
   */
  release(stream: { end(): void; cancel(): void }): void {
    this.#streams.delete(stream);
    try {
      stream.end();
      stream.cancel();
    } catch {
      // already gone
    }
  }

  /** Cancel every open stream and close the client; calls made after this fail with CLOSED. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of [...this.#streams]) this.release(s);
    this.#client.close();
  }
}

// ------------------------------------------------------------------ resolver

/** Compaction: the watch cannot resume from its revision; resync with a snapshot. */
class Compacted extends Error {}

/** One `watch()`: the loop of the module comment, feeding one iterator. */
class EtcdWatch {
  readonly #conn: EtcdConnection;
  readonly #o: Readonly<Resolved>;
  readonly #key: Buffer;
  readonly #end: Buffer;
  readonly #feed: WatchFeed;
  readonly #life = new AbortController();
  /** Last revision delivered (snapshot or event); undefined: a snapshot is needed. */
  #rev: number | undefined;
  readonly #instances = new Map<string, Instance>();

  constructor(conn: EtcdConnection, o: Readonly<Resolved>, keyPrefix: string, signal: AbortSignal) {
    this.#conn = conn;
    this.#o = o;
    this.#key = utf8(keyPrefix);
    this.#end = prefixEnd(this.#key);
    this.#feed = new WatchFeed({
      signal,
      snapshot: () => [...this.#instances.values()].map(copyInstance),
      onStart: () => void this.#run(),
      onEnd: () => this.#life.abort(),
    });
  }

  get feed(): WatchFeed {
    return this.#feed;
  }

  async #run(): Promise<void> {
    const signal = this.#life.signal;
    const backoff = new Backoff(this.#o.backoff);
    while (!signal.aborted) {
      try {
        if (this.#rev === undefined) await this.#snapshot(signal);
        await this.#follow(signal, () => backoff.reset());
      } catch (err) {
        if (signal.aborted) break;
        if (err instanceof Compacted) {
          this.#rev = undefined; // at once: a fresh snapshot
          continue;
        }
        this.#feed.push({ type: 'error', error: toSkeinError(err, 'watch') });
        await sleep(backoff.next(), signal, this.#o.clock);
      }
    }
  }

  async #snapshot(signal: AbortSignal): Promise<void> {
    const res = await this.#conn.call('range', (c, options) => c.kv.range({ key: this.#key, range_end: this.#end }, options), signal);
    if (signal.aborted) return;
    this.#instances.clear();
    for (const kv of res.kvs) {
      const instance = decodeInstance(this.#o.prefix, kv);
      if (instance !== undefined) this.#instances.set(kv.key.toString('utf8'), instance);
    }
    this.#rev = Number(res.header.revision);
    this.#feed.push({ type: 'snapshot', instances: [...this.#instances.values()].map(copyInstance), revision: this.#rev });
  }

  /** Follow the watch from #rev + 1 until the stream fails (rejects) or `signal` aborts (resolves). */
  #follow(signal: AbortSignal, onCreated: () => void): Promise<void> {
    const clock = this.#o.clock;
    const start = this.#rev! + 1;
    return new Promise<void>((resolve, reject) => {
      let stream: Stream<IWatchRequest, IWatchResponse> | undefined;
      let settled = false;
      let lastHeard = clock.now();
      let probeAt: number | undefined;
      let tickTimer: unknown;
      const finish = (err?: unknown): void => {
        if (settled) return;
        settled = true;
        clock.clearTimeout(createTimer);
        clock.clearTimeout(tickTimer);
        signal.removeEventListener('abort', onAbort);
        if (stream !== undefined) this.#conn.release(stream);
        if (err === undefined) resolve();
        else reject(err);
      };
      const onAbort = (): void => finish();
      signal.addEventListener('abort', onAbort, { once: true });
      const createTimer = clock.setTimeout(() => finish(createError(ErrorCode.DEADLINE, `etcd watch: not created within ${this.#o.callTimeoutMs} ms`)), this.#o.callTimeoutMs);
      const tickMs = Math.max(20, Math.min(this.#o.watchCheckMs, this.#o.callTimeoutMs) / 4);
      const tick = (): void => {
        if (settled || stream === undefined) return;
        const now = clock.now();
        if (probeAt !== undefined && lastHeard < probeAt && now - probeAt >= this.#o.callTimeoutMs) {
          finish(createError(ErrorCode.KEEPALIVE_TIMEOUT, `etcd watch: the stream did not answer a progress request within ${this.#o.callTimeoutMs} ms`));
          return;
        }
        if (probeAt !== undefined && lastHeard >= probeAt) probeAt = undefined;
        if (probeAt === undefined && now - lastHeard >= this.#o.watchCheckMs) {
          probeAt = now;
          stream.write({ progress_request: {} });
        }
        tickTimer = clock.setTimeout(tick, tickMs);
      };
      this.#conn.openWatch().then(
        (s) => {
          if (settled) {
            this.#conn.release(s);
            return;
          }
          stream = s;
          s.on('error', (err) => finish(err));
          s.on('end', () => finish(createError(ErrorCode.CONNECTION_LOST, 'etcd watch: the stream ended')));
          s.on('data', (res) => {
            if (settled) return;
            lastHeard = clock.now();
            if (res.canceled) {
              if (Number(res.compact_revision) > 0) finish(new Compacted(`revision ${start} compacted (oldest kept: ${res.compact_revision})`));
              else finish(createError(ErrorCode.CONNECTION_LOST, `etcd watch: cancelled by etcd${res.cancel_reason ? `: ${res.cancel_reason}` : ''}`));
              return;
            }
            if (res.created) {
              clock.clearTimeout(createTimer);
              onCreated();
              tickTimer = clock.setTimeout(tick, tickMs);
            }
            for (const ev of res.events) this.#apply(ev, start);
          });
          s.write({ create_request: { key: this.#key, range_end: this.#end, start_revision: String(start) } });
        },
        (err) => finish(err),
      );
    });
  }

  #apply(ev: IEvent, start: number): void {
    const rev = Number(ev.kv.mod_revision);
    if (rev < start) return; // etcd never sends these; a guard against a duplicate
    this.#rev = rev;
    const key = ev.kv.key.toString('utf8');
    const before = this.#instances.get(key);
    const now = ev.type === 'Put' ? decodeInstance(this.#o.prefix, ev.kv) : undefined;
    if (now === undefined) {
      // a delete, or a put of something that is not an instance
      if (before === undefined) return;
      this.#instances.delete(key);
      this.#feed.push({ type: 'removed', instance: copyInstance(before), revision: rev });
      return;
    }
    this.#instances.set(key, now);
    if (before === undefined) this.#feed.push({ type: 'added', instance: copyInstance(now), revision: rev });
    else if (!sameInstance(before, now)) this.#feed.push({ type: 'updated', instance: copyInstance(now), revision: rev });
    // else: the same instance put again (a new lease, a re-put): nothing changed for a consumer
  }
}

/** Follows services registered in etcd. */
export class EtcdResolver implements Resolver {
  /** Where it reads: etcd members and key prefix. */
  readonly target: EtcdTarget;
  readonly #o: Readonly<Resolved>;
  readonly #conn: EtcdConnection;
  readonly #closing = new AbortController();

  constructor(url: URL, options: EtcdDiscoveryOptions = {}) {
    const o = resolveOptions(options);
    this.target = parseEtcdUrl(url, o.prefix);
    this.#o = Object.freeze({ ...o, prefix: this.target.prefix });
    this.#conn = new EtcdConnection(this.target.endpoints, this.#o);
  }

  /** See `Resolver.watch`. The watch starts when the iterator is first read. */
  watch(service: string, options: AbortOptions = {}): AsyncIterable<ResolverEvent> {
    checkService(service);
    return this.#watch(`${this.#o.prefix}${service}/`, options);
  }

  /** Every service at once (`skein watch` without a service): the same events, snapshots holding all instances. */
  watchAll(options: AbortOptions = {}): AsyncIterable<ResolverEvent> {
    return this.#watch(this.#o.prefix, options);
  }

  #watch(keyPrefix: string, options: AbortOptions): AsyncIterable<ResolverEvent> {
    const signal = options.signal === undefined ? this.#closing.signal : AbortSignal.any([this.#closing.signal, options.signal]);
    return { [Symbol.asyncIterator]: () => new EtcdWatch(this.#conn, this.#o, keyPrefix, signal).feed };
  }

  async list(service?: string, options: AbortOptions = {}): Promise<Instance[]> {
    if (service !== undefined) checkService(service);
    const key = utf8(service === undefined ? this.#o.prefix : `${this.#o.prefix}${service}/`);
    const res = await this.#conn.call('range', (c, o) => c.kv.range({ key, range_end: prefixEnd(key) }, o), options.signal);
    const out: Instance[] = [];
    for (const kv of res.kvs) {
      const instance = decodeInstance(this.#o.prefix, kv);
      if (instance !== undefined) out.push(instance);
    }
    return out;
  }

  /** End every watch and close the connection. Idempotent. */
  async close(): Promise<void> {
    this.#closing.abort(createError(ErrorCode.CLOSED, 'resolver closed'));
    this.#conn.close();
  }
}

// ------------------------------------------------------------------ registrar

type RegState = 'registering' | 'registered' | 'lost' | 'closed';

/** Older leases a registration remembers, to recognise its key on one of them. */
const MAX_OLD_LEASES = 16;

/** One instance kept registered (see the module comment). */
export class EtcdRegistration extends EventEmitter implements Registration {
  readonly instance: Instance;
  #ttlMs: number;
  #leaseId: string | undefined;
  readonly #conn: EtcdConnection;
  readonly #o: Readonly<Resolved>;
  readonly #key: Buffer;
  readonly #value: Buffer;
  readonly #ttlSeconds: number;
  readonly #onClosed: (r: EtcdRegistration) => void;
  readonly #life = new AbortController();
  #state: RegState = 'registering';
  /** Leases this registration held before (newest last): its key on one of them is still its own. */
  #oldLeases: string[] = [];
  #kaTimer: unknown;
  #lossTimer: unknown;
  #kaCount = 0;
  #lastError: SkeinError | undefined;
  #deregistering: Promise<void> | undefined;

  /** @internal use EtcdRegistrar.register() */
  constructor(conn: EtcdConnection, o: Readonly<Resolved>, instance: Instance, ttlMs: number, onClosed: (r: EtcdRegistration) => void) {
    super();
    this.#conn = conn;
    this.#o = o;
    this.instance = instance;
    this.#ttlSeconds = Math.max(1, Math.ceil(ttlMs / 1000));
    this.#ttlMs = this.#ttlSeconds * 1000;
    this.#key = utf8(`${o.prefix}${instance.service}/${instance.id}`);
    this.#value = encodeInstance(instance);
    this.#onClosed = onClosed;
  }

  /** Lease TTL in ms, as etcd granted it (etcd raises a TTL below its minimum, 2 s by default). */
  get ttlMs(): number {
    return this.#ttlMs;
  }

  /** The lease holding the instance now (etcd's id, decimal); undefined while lost or deregistered. */
  get leaseId(): string | undefined {
    return this.#leaseId;
  }

  /** True while the instance is registered under a live lease (as far as this side knows). */
  get registered(): boolean {
    return this.#state === 'registered';
  }

  /** @internal First registration: retried on transient failures until it works or `signal` aborts. */
  async start(signal: AbortSignal | undefined): Promise<void> {
    const stop = signal === undefined ? this.#life.signal : AbortSignal.any([signal, this.#life.signal]);
    const backoff = new Backoff(this.#o.backoff);
    for (;;) {
      if (stop.aborted) {
        this.#close();
        throw cancelled(stop, 'register');
      }
      try {
        const leaseId = await this.#attempt(stop);
        this.#activate(leaseId);
        setImmediate(() => {
          if (this.#state === 'registered' && this.leaseId === leaseId) this.emit('registered', this.instance);
        });
        return;
      } catch (err) {
        const e = toSkeinError(err, 'register');
        if (stop.aborted || !retryable(e)) {
          this.#close();
          throw stop.aborted ? cancelled(stop, 'register') : e;
        }
        await sleep(backoff.next(), stop, this.#o.clock);
      }
    }
  }

  /** grant + put; resolves with the lease id once the key is on it. */
  async #attempt(signal: AbortSignal): Promise<string> {
    const grantedAt = this.#o.clock.now();
    const grant = await this.#conn.call('lease grant', (c, o) => c.leaseClient.leaseGrant({ TTL: this.#ttlSeconds }, o), signal);
    const leaseId = grant.ID;
    const granted = Number(grant.TTL);
    if (granted > 0) this.#ttlMs = granted * 1000;
    try {
      // The lease may expire before the put lands if the put took longer than the TTL.
      await this.#conn.call('put', (c, o) => c.kv.put({ key: this.#key, value: this.#value, lease: leaseId }, o), signal);
      if (this.#o.clock.now() - grantedAt >= this.#ttlMs) throw leaseLost('etcd register: the lease expired while the instance was being put');
    } catch (err) {
      this.#revokeQuietly(leaseId);
      throw err;
    }
    return leaseId;
  }

  /** The lease is ours and the key on it: start keeping it alive. */
  #activate(leaseId: string): void {
    const previous = this.#leaseId;
    this.#leaseId = leaseId;
    this.#state = 'registered';
    this.#kaCount = 0;
    if (previous !== undefined && previous !== leaseId) this.#remember(previous);
    this.#armLossTimer();
    this.#scheduleKeepAlive(this.ttlMs / 3);
  }

  #remember(leaseId: string): void {
    this.#oldLeases.push(leaseId);
    if (this.#oldLeases.length > MAX_OLD_LEASES) this.#oldLeases.shift();
  }

  #armLossTimer(): void {
    const clock = this.#o.clock;
    clock.clearTimeout(this.#lossTimer);
    this.#lossTimer = clock.setTimeout(() => {
      const why = this.#lastError === undefined ? '' : ` (last error: ${this.#lastError.message})`;
      this.#lose(leaseLost(`lease lost: no successful keepalive for ${this.ttlMs} ms (the TTL)${why}`, this.#lastError));
    }, this.ttlMs);
  }

  #scheduleKeepAlive(ms: number): void {
    this.#o.clock.clearTimeout(this.#kaTimer);
    this.#kaTimer = this.#o.clock.setTimeout(() => void this.#keepAlive(), ms);
  }

  async #keepAlive(): Promise<void> {
    const leaseId = this.leaseId;
    if (this.#state !== 'registered' || leaseId === undefined) return;
    try {
      const res = await this.#conn.keepAliveOnce(leaseId, Math.min(this.#o.callTimeoutMs, this.ttlMs / 3));
      if (this.#state !== 'registered' || this.leaseId !== leaseId) return;
      if (!(Number(res.TTL) > 0)) {
        this.#lose(leaseLost(`lease lost: etcd says lease ${leaseId} is gone (expired or revoked)`));
        return;
      }
      this.#lastError = undefined;
      this.#armLossTimer();
      this.#scheduleKeepAlive(this.ttlMs / 3);
      // Alongside, not in the way: a slow read must not delay the next keepalive.
      if (++this.#kaCount % 3 === 0) void this.#reconcile(leaseId);
    } catch (err) {
      if (this.#state !== 'registered' || this.leaseId !== leaseId) return;
      this.#lastError = toSkeinError(err, 'keepalive');
      // Try again soon: the loss timer decides when it is too late.
      this.#scheduleKeepAlive(Math.min(this.ttlMs / 6, 250));
    }
  }

  /** Read the key back; put it again if it vanished or sits on one of our older leases. */
  async #reconcile(leaseId: string): Promise<void> {
    try {
      const res = await this.#conn.call('range', (c, o) => c.kv.range({ key: this.#key }, o), this.#life.signal);
      if (this.#state !== 'registered' || this.leaseId !== leaseId) return;
      const kv = res.kvs[0];
      if (kv !== undefined && (kv.lease === leaseId ? kv.value.equals(this.#value) : !this.#oldLeases.includes(kv.lease))) return;
      const missing = kv === undefined;
      if (missing) this.emit('lost', leaseLost(`instance lost: its key ${this.#key.toString('utf8')} was deleted while its lease lived`));
      await this.#conn.call('put', (c, o) => c.kv.put({ key: this.#key, value: this.#value, lease: leaseId }, o), this.#life.signal);
      if (missing && this.#state === 'registered' && this.leaseId === leaseId) this.emit('registered', this.instance);
    } catch {
      // the keepalive loop reports trouble; this is checked again in one TTL
    }
  }

  #lose(err: SkeinError): void {
    if (this.#state !== 'registered') return;
    this.#state = 'lost';
    this.#stopTimers();
    const old = this.#leaseId;
    if (old !== undefined) this.#remember(old);
    this.#leaseId = undefined;
    this.emit('lost', err);
    void this.#recover(old);
  }

  /** Register again (new lease, put) with backoff until it works or the registration is closed. */
  async #recover(old: string | undefined): Promise<void> {
    const backoff = new Backoff(this.#o.backoff);
    const signal = this.#life.signal;
    while (this.#state === 'lost') {
      try {
        const leaseId = await this.#attempt(signal);
        if (this.#state !== 'lost') {
          this.#revokeQuietly(leaseId);
          return;
        }
        this.#activate(leaseId);
        // The lost lease holds nothing now (the key moved to the new one), if etcd still has it.
        if (old !== undefined) this.#revokeQuietly(old);
        this.emit('registered', this.instance);
        return;
      } catch {
        if (this.#state !== 'lost') return;
        await sleep(backoff.next(), signal, this.#o.clock);
      }
    }
  }

  #revokeQuietly(leaseId: string): void {
    if (this.#conn.closed) return;
    this.#conn.call('lease revoke', (c, o) => c.leaseClient.leaseRevoke({ ID: leaseId }, o)).catch(ignore);
  }

  #stopTimers(): void {
    this.#o.clock.clearTimeout(this.#kaTimer);
    this.#o.clock.clearTimeout(this.#lossTimer);
    this.#kaTimer = undefined;
    this.#lossTimer = undefined;
  }

  /**
   * Remove the instance (its key, if it is still on our lease) and revoke the lease. The
   * keepalives stop at once, whatever etcd answers: if etcd cannot be reached the instance
   * vanishes when the lease expires. Idempotent.
   */
  deregister(options: AbortOptions = {}): Promise<void> {
    if (this.#deregistering !== undefined) return this.#deregistering;
    const leaseId = this.leaseId;
    this.#close();
    if (leaseId === undefined || this.#conn.closed) return (this.#deregistering = Promise.resolve());
    const key = this.#key;
    this.#deregistering = (async () => {
      await this.#conn.call(
        'deregister',
        (c, o) =>
          c.kv.txn(
            {
              compare: [{ key, target: 'Lease', result: 'Equal', lease: leaseId }],
              success: [{ request_delete_range: { key } }],
              failure: [],
            },
            o,
          ),
        options.signal,
      );
      await this.#conn.call('lease revoke', (c, o) => c.leaseClient.leaseRevoke({ ID: leaseId }, o), options.signal).catch((err: SkeinError) => {
        if (err.status !== Status.NOT_FOUND) throw err; // already gone: fine
      });
    })();
    return this.#deregistering;
  }

  /** Stop everything locally (nothing is sent to etcd). */
  #close(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#leaseId = undefined;
    this.#life.abort(createError(ErrorCode.CLOSED, 'registration closed'));
    this.#stopTimers();
    this.#onClosed(this);
  }

  /** @internal see EtcdRegistrar.abandon() */
  abandon(): void {
    this.#close();
  }
}

/** Registers instances in etcd under leases kept alive by this process. */
export class EtcdRegistrar implements Registrar {
  /** Where it writes: etcd members and key prefix. */
  readonly target: EtcdTarget;
  readonly #o: Readonly<Resolved>;
  readonly #conn: EtcdConnection;
  readonly #registrations = new Set<EtcdRegistration>();
  #closed = false;

  constructor(url: URL, options: EtcdDiscoveryOptions = {}) {
    const o = resolveOptions(options);
    this.target = parseEtcdUrl(url, o.prefix);
    this.#o = Object.freeze({ ...o, prefix: this.target.prefix });
    this.#conn = new EtcdConnection(this.target.endpoints, this.#o);
  }

  /**
   * Grant a lease (TTL rounded up to whole seconds; etcd may raise it to its minimum), put
   * the instance on it and keep it alive. Transient failures are retried with backoff until
   * it works or `options.signal` aborts; bad arguments and refused credentials fail at once.
   */
  async register(input: Omit<Instance, 'id' | 'metadata'> & { id?: string; metadata?: Record<string, string> }, options: RegisterOptions = {}): Promise<EtcdRegistration> {
    if (this.#closed) throw createError(ErrorCode.CLOSED, 'etcd register: the registrar is closed');
    checkService(input.service);
    if (typeof input.address !== 'string' || input.address === '') throw createError(ErrorCode.INVALID_OPTIONS, 'etcd register: an instance needs an address');
    const id = input.id ?? input.address;
    if (typeof id !== 'string' || id === '') throw createError(ErrorCode.INVALID_OPTIONS, 'etcd register: an instance id must be a non-empty string');
    const metadata: Record<string, string> = {};
    for (const [k, v] of Object.entries(input.metadata ?? {})) {
      if (typeof v !== 'string') throw createError(ErrorCode.INVALID_OPTIONS, `etcd register: metadata ${JSON.stringify(k)} must be a string`);
      metadata[k] = v;
    }
    const ttlMs = positive('ttlMs', options.ttlMs, 10_000);
    const instance: Instance = { service: input.service, id, address: input.address, metadata };
    const registration = new EtcdRegistration(this.#conn, this.#o, instance, ttlMs, (r) => this.#registrations.delete(r));
    this.#registrations.add(registration);
    await registration.start(options.signal);
    return registration;
  }

  /** Deregister every instance (bounded by the call deadline), then close the connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#registrations].map((r) => r.deregister()));
    this.#conn.close();
  }

  /**
   * Stop keeping the leases alive and drop the connection WITHOUT deregistering, as a
   * crashed process would: the instances vanish when their leases expire (within one TTL).
   * For tests (the registry compliance suite's owner-crash case) and for handing instances
   * over to another process.
   */
  abandon(): void {
    this.#closed = true;
    for (const r of [...this.#registrations]) r.abandon();
    this.#conn.close();
  }
}

// ------------------------------------------------------------------ plugin

/** The `etcd:` plugin, typed with the adapter's own classes. */
export interface EtcdDiscoveryPlugin extends DiscoveryPlugin {
  readonly scheme: 'etcd';
  resolver(url: URL): EtcdResolver;
  registrar(url: URL): EtcdRegistrar;
}

/** An `etcd:` discovery plugin with these options (the default one is `etcdDiscovery`). */
export function createEtcdDiscovery(options: EtcdDiscoveryOptions = {}): EtcdDiscoveryPlugin {
  resolveOptions(options); // fail early on bad options
  return Object.freeze({
    scheme: 'etcd',
    resolver: (url: URL) => new EtcdResolver(url, options),
    registrar: (url: URL) => new EtcdRegistrar(url, options),
  });
}

/** The `etcd://` plugin with default options. */
export const etcdDiscovery = createEtcdDiscovery();

/** Register the `etcd:` plugin. Idempotent. */
export function setup(): void {
  registerDiscovery(etcdDiscovery);
}
