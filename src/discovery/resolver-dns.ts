/**
 * `dns://NAME[:PORT][?refresh=MS][&timeout=MS][&srv=SRVNAME|off][&tls]` — instances from DNS,
 * re-resolved periodically.
 *
 * Resolving service S:
 *   1. SRV records of NAME (or of `?srv=SRVNAME`): each record is an instance
 *      `target:port` with metadata `{ priority, weight }`. Skipped for IP literals, for
 *      `localhost` / `*.localhost` (RFC 6761: never sent to DNS) unless `?srv=` names a
 *      record, and with `?srv=off`.
 *   2. When the name has no SRV record (ENODATA / ENOTFOUND): the A and AAAA addresses of
 *      NAME through the system resolver (`dns.lookup`, so /etc/hosts counts), each with
 *      PORT (default 7700), metadata empty.
 *   Any other SRV failure (timeout, refused, SERVFAIL) is an error, not a reason to fall
 *   back: a name that has SRV records must not flip to its A records on a transient failure.
 *
 * NAME and SRVNAME may contain `{service}`, replaced by the service being resolved:
 * `dns://{service}.service.consul` or `dns://cluster.local?srv=_{service}._tcp.ns.svc.cluster.local`.
 * Without it every service resolves to the same set (like static://).
 *
 * A watch resolves at once — its first event is always a 'snapshot' — then every
 * `refresh` ms (default 30 s), emitting 'added' / 'updated' / 'removed' for what changed.
 * A failed resolution is an 'error' event (SKEIN_ERR_CONNECT_FAILED, status UNAVAILABLE);
 * the last known set stays in force and the next attempt comes sooner, with exponential
 * backoff from 1 s up to the refresh interval. If the very first resolution fails, the
 * watch yields an empty snapshot, then the error. Watches of the same service share one
 * polling loop, which stops when its last watch ends. Instance id = address.
 *
 * The lookup functions and the clock are injectable (`DnsResolverOptions`) so the
 * refresh, diff and error logic is testable without a DNS server.
 */
import { promises as dns } from 'node:dns';
import { isIP } from 'node:net';
import { createError, ErrorCode, isSkeinError, type SkeinError } from '../errors.js';
import { formatAddress } from '../transport/target.js';
import { Backoff, type BackoffOptions } from '../util/backoff.js';
import { systemClock, type Clock } from '../util/clock.js';
import { discoveryHosts, registerDiscovery } from './registry.js';
import type { AbortOptions, DiscoveryPlugin, Instance, Resolver, ResolverEvent } from './types.js';
import { boolParam, checkParams, copyInstance, diffInstances, intParam, WatchFeed } from './watch-feed.js';

/** Port for A/AAAA results when the URL names none. */
export const DEFAULT_DNS_PORT = 7700;
/** Re-resolution interval. */
export const DEFAULT_DNS_REFRESH_MS = 30_000;
/** Time allowed for one resolution (SRV, then A/AAAA). */
export const DEFAULT_DNS_TIMEOUT_MS = 5_000;
/** The placeholder replaced by the service name in NAME and ?srv=. */
export const SERVICE_PLACEHOLDER = '{service}';

/** The error code of a failed resolution. A dedicated discovery code would fit better; see docs/discovery.md. */
const RESOLVE_FAILED = ErrorCode.CONNECT_FAILED;

/** One SRV record, as node:dns returns it. */
export interface DnsSrvRecord {
  name: string;
  port: number;
  priority: number;
  weight: number;
}

/** One address, as `dns.lookup(name, { all: true })` returns it. */
export interface DnsAddress {
  address: string;
  family: number;
}

export interface DnsResolverOptions {
  /** Re-resolve this often while a service is watched, in ms. Overrides `?refresh=`. @default 30000 */
  refreshMs?: number;
  /** Give up on one resolution after this long, in ms. Overrides `?timeout=`. @default 5000 */
  timeoutMs?: number;
  /** Retry delays after a failed resolution; `maxMs` is capped at the refresh interval. @default { initialMs: 1000, maxMs: refreshMs } */
  backoff?: BackoffOptions;
  /** SRV lookup. @default a node:dns `Resolver` (c-ares, the servers of /etc/resolv.conf) */
  resolveSrv?: (name: string) => Promise<DnsSrvRecord[]>;
  /** A/AAAA lookup. @default `dns.lookup(name, { all: true })` (the system resolver, /etc/hosts included) */
  lookup?: (name: string) => Promise<DnsAddress[]>;
  /** Timers (a fake one in tests). @default systemClock */
  clock?: Clock;
}

/** What a `dns://` URL says, parsed and validated. */
export interface DnsConfig {
  /** The name to resolve, possibly with `{service}`; IPv6 literals without brackets. */
  readonly name: string;
  readonly port: number;
  /** The SRV name (possibly with `{service}`); null: no SRV lookup. */
  readonly srv: string | null;
  readonly tls: boolean;
  readonly refreshMs: number;
  readonly timeoutMs: number;
}

const PARAMS = ['refresh', 'timeout', 'srv', 'tls'] as const;
const NAME = /^[A-Za-z0-9_{}]([A-Za-z0-9_.{}-]*[A-Za-z0-9_{}])?\.?$/;

/** Parse and validate a `dns://` URL; SKEIN_ERR_INVALID_OPTIONS on anything malformed. */
export function parseDnsUrl(url: URL): DnsConfig {
  const invalid = (why: string): never => {
    throw createError(ErrorCode.INVALID_OPTIONS, `invalid dns:// discovery URL: ${why} (expected dns://name[:port])`);
  };
  if (url.protocol !== 'dns:') invalid(`scheme is ${JSON.stringify(url.protocol)}`);
  if (url.username !== '' || url.password !== '') invalid('user info is not allowed');
  if (url.pathname !== '' && url.pathname !== '/') invalid(`unexpected path ${JSON.stringify(url.pathname)}`);
  checkParams(url.searchParams, PARAMS, invalid);
  const hosts = discoveryHosts(url);
  if (hosts.length !== 1) invalid(hosts.length === 0 ? 'no name' : 'one name only (use SRV records for several hosts)');
  let name: string;
  try {
    name = decodeURIComponent(url.hostname);
  } catch {
    name = url.hostname;
  }
  if (name.startsWith('[') && name.endsWith(']')) {
    name = name.slice(1, -1);
    if (isIP(name) !== 6) invalid(`bad IPv6 address ${JSON.stringify(name)}`);
  } else if (!NAME.test(name)) {
    invalid(`bad name ${JSON.stringify(name)}`);
  }
  const port = url.port === '' ? DEFAULT_DNS_PORT : Number(url.port);
  if (!(port >= 1 && port <= 65535)) invalid(`bad port ${JSON.stringify(url.port)}`);
  const srvParam = url.searchParams.get('srv');
  let srv: string | null;
  if (srvParam === null) srv = isIP(name) !== 0 || isLocalhost(name) ? null : name;
  else if (srvParam === 'off') srv = null;
  else if (NAME.test(srvParam)) srv = srvParam;
  else return invalid(`bad ?srv= name ${JSON.stringify(srvParam)} (a DNS name, or "off")`);
  return Object.freeze({
    name,
    port,
    srv,
    tls: boolParam(url.searchParams, 'tls', false, invalid),
    refreshMs: intParam(url.searchParams, 'refresh', DEFAULT_DNS_REFRESH_MS, 100, 0x7fffffff, invalid),
    timeoutMs: intParam(url.searchParams, 'timeout', DEFAULT_DNS_TIMEOUT_MS, 1, 0x7fffffff, invalid),
  });
}

function isLocalhost(name: string): boolean {
  const n = name.toLowerCase().replace(/\.$/, '');
  return n === 'localhost' || n.endsWith('.localhost');
}

function fill(template: string, service: string): string {
  return template.split(SERVICE_PLACEHOLDER).join(service);
}

function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** The error codes that mean "this name has no such record", as opposed to "DNS failed". */
const NO_RECORD = new Set<string>([dns.NODATA, dns.NOTFOUND, 'ENODATA', 'ENOTFOUND']);

/** The state of one watched service: one polling loop shared by its watches. */
interface Poll {
  readonly service: string;
  readonly feeds: Set<WatchFeed>;
  readonly backoff: Backoff;
  /** Undefined until the first resolution finished (either way). */
  current: Map<string, Instance> | undefined;
  lastError: SkeinError | undefined;
  timer: unknown;
  stopped: boolean;
}

export class DnsResolver implements Resolver {
  readonly config: DnsConfig;
  readonly #clock: Clock;
  readonly #backoff: BackoffOptions;
  readonly #resolveSrv: (name: string) => Promise<DnsSrvRecord[]>;
  readonly #lookup: (name: string) => Promise<DnsAddress[]>;
  readonly #polls = new Map<string, Poll>();
  #cares: InstanceType<typeof dns.Resolver> | undefined;
  #closed = false;

  constructor(url: URL, options: DnsResolverOptions = {}) {
    const parsed = parseDnsUrl(url);
    const refreshMs = options.refreshMs ?? parsed.refreshMs;
    const timeoutMs = options.timeoutMs ?? parsed.timeoutMs;
    if (!(refreshMs > 0) || !(timeoutMs > 0)) throw createError(ErrorCode.INVALID_OPTIONS, 'dns resolver: refreshMs and timeoutMs must be positive');
    this.config = Object.freeze({ ...parsed, refreshMs, timeoutMs });
    this.#clock = options.clock ?? systemClock;
    this.#backoff = { initialMs: 1000, ...options.backoff, maxMs: Math.min(options.backoff?.maxMs ?? refreshMs, refreshMs) };
    this.#resolveSrv =
      options.resolveSrv ??
      ((name) => {
        this.#cares ??= new dns.Resolver({ timeout: timeoutMs, tries: 1 });
        return this.#cares.resolveSrv(name);
      });
    this.#lookup = options.lookup ?? ((name) => dns.lookup(name, { all: true }));
  }

  watch(service: string, options: AbortOptions = {}): AsyncIterable<ResolverEvent> {
    if (typeof service !== 'string' || service === '') throw createError(ErrorCode.INVALID_OPTIONS, 'dns resolver watch(): the service name must be a non-empty string');
    if (this.#closed) throw createError(ErrorCode.CLOSED, 'dns resolver: closed');
    return new WatchFeed({
      signal: options.signal,
      snapshot: () => [...(this.#polls.get(service)?.current?.values() ?? [])].map(copyInstance),
      onStart: (feed) => this.#join(service, feed),
      onEnd: (feed) => this.#leave(service, feed),
    });
  }

  /**
   * The instances of `service` now: the watched set if the service is being watched and
   * its last resolution succeeded, else one fresh resolution (rejecting with
   * SKEIN_ERR_CONNECT_FAILED if it fails). Without a service: the fresh set under the
   * wildcard name '*' — or, when NAME depends on `{service}`, the sets of the watched services.
   */
  async list(service?: string, options: AbortOptions = {}): Promise<Instance[]> {
    options.signal?.throwIfAborted();
    if (this.#closed) throw createError(ErrorCode.CLOSED, 'dns resolver: closed');
    if (service === undefined) {
      const templated = this.config.name.includes(SERVICE_PLACEHOLDER) || (this.config.srv?.includes(SERVICE_PLACEHOLDER) ?? false);
      if (!templated) return [...(await this.#resolve('*')).values()];
      return [...this.#polls.values()].flatMap((p) => [...(p.current?.values() ?? [])].map(copyInstance));
    }
    if (typeof service !== 'string' || service === '') throw createError(ErrorCode.INVALID_OPTIONS, 'dns resolver list(): the service name must be a non-empty string');
    const poll = this.#polls.get(service);
    if (poll?.current !== undefined && poll.lastError === undefined) return [...poll.current.values()].map(copyInstance);
    return [...(await this.#resolve(service)).values()];
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const poll of [...this.#polls.values()]) {
      for (const feed of [...poll.feeds]) feed.end();
      this.#stop(poll);
    }
    this.#cares?.cancel();
  }

  #join(service: string, feed: WatchFeed): void {
    if (this.#closed) return feed.end();
    let poll = this.#polls.get(service);
    if (poll === undefined) {
      poll = { service, feeds: new Set(), backoff: new Backoff(this.#backoff), current: undefined, lastError: undefined, timer: undefined, stopped: false };
      this.#polls.set(service, poll);
      poll.feeds.add(feed);
      void this.#poll(poll);
      return;
    }
    poll.feeds.add(feed);
    if (poll.current !== undefined) {
      feed.push({ type: 'snapshot', instances: [...poll.current.values()].map(copyInstance) });
      if (poll.lastError !== undefined) feed.push({ type: 'error', error: poll.lastError });
    }
  }

  #leave(service: string, feed: WatchFeed): void {
    const poll = this.#polls.get(service);
    if (poll === undefined || !poll.feeds.delete(feed)) return;
    if (poll.feeds.size === 0) this.#stop(poll);
  }

  #stop(poll: Poll): void {
    poll.stopped = true;
    if (poll.timer !== undefined) this.#clock.clearTimeout(poll.timer);
    poll.timer = undefined;
    if (this.#polls.get(poll.service) === poll) this.#polls.delete(poll.service);
  }

  async #poll(poll: Poll): Promise<void> {
    poll.timer = undefined;
    let next: Map<string, Instance> | undefined;
    let error: SkeinError | undefined;
    try {
      next = await this.#resolve(poll.service);
    } catch (err) {
      error = isSkeinError(err) ? err : createError(RESOLVE_FAILED, String(err), { cause: err });
    }
    if (poll.stopped) return;
    const emit = (event: ResolverEvent): void => {
      for (const feed of poll.feeds) feed.push(event);
    };
    let delay: number;
    if (next !== undefined) {
      poll.backoff.reset();
      poll.lastError = undefined;
      if (poll.current === undefined) {
        poll.current = next;
        emit({ type: 'snapshot', instances: [...next.values()] });
      } else {
        const events = diffInstances(poll.current, next);
        poll.current = next;
        for (const event of events) emit(event);
      }
      delay = this.config.refreshMs;
    } else {
      if (poll.current === undefined) {
        poll.current = new Map();
        emit({ type: 'snapshot', instances: [] });
      }
      poll.lastError = error;
      emit({ type: 'error', error: error! });
      delay = poll.backoff.next();
    }
    poll.timer = this.#clock.setTimeout(() => void this.#poll(poll), delay);
  }

  /** One resolution of `service`: SRV, else A/AAAA (see the module comment). */
  async #resolve(service: string): Promise<Map<string, Instance>> {
    const { port, tls } = this.config;
    const name = fill(this.config.name, service);
    const instance = (host: string, p: number, metadata: Record<string, string>): Instance => {
      const address = (tls ? 'tls://' : '') + formatAddress(host, p);
      return { service, id: address, address, metadata };
    };
    const result = new Map<string, Instance>();
    const add = (i: Instance): void => {
      if (!result.has(i.id)) result.set(i.id, i);
    };
    if (isIP(name) !== 0) {
      add(instance(name, port, {}));
      return result;
    }
    if (this.config.srv !== null) {
      const srvName = fill(this.config.srv, service);
      let records: DnsSrvRecord[] | undefined;
      try {
        records = await this.#timed(this.#resolveSrv(srvName), `SRV ${srvName}`);
      } catch (err) {
        const code = errnoCode(err);
        if (code === undefined || !NO_RECORD.has(code)) throw this.#failed(`SRV ${srvName}`, err);
      }
      if (records !== undefined && records.length > 0) {
        // A target of "." means "decidedly not available at this domain" (RFC 2782).
        for (const r of records) {
          const target = r.name.replace(/\.$/, '');
          if (target === '' || !(r.port >= 1 && r.port <= 65535)) continue;
          add(instance(target, r.port, { priority: String(r.priority), weight: String(r.weight) }));
        }
        return result;
      }
    }
    let addresses: DnsAddress[];
    try {
      addresses = await this.#timed(this.#lookup(name), `A/AAAA ${name}`);
    } catch (err) {
      throw this.#failed(`A/AAAA ${name}`, err);
    }
    if (addresses.length === 0) throw this.#failed(`A/AAAA ${name}`, new Error('no addresses'));
    for (const a of addresses) add(instance(a.address, port, {}));
    return result;
  }

  #failed(what: string, err: unknown): SkeinError {
    if (isSkeinError(err) && err.code === RESOLVE_FAILED) return err;
    const code = errnoCode(err);
    const detail = code ?? (err instanceof Error ? err.message : String(err));
    return createError(RESOLVE_FAILED, `dns discovery: ${what} failed: ${detail}`, { cause: err });
  }

  /** `promise`, or a rejection after the resolution timeout. */
  #timed<T>(promise: Promise<T>, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = this.#clock.setTimeout(() => reject(createError(RESOLVE_FAILED, `dns discovery: ${what} timed out after ${this.config.timeoutMs} ms`)), this.config.timeoutMs);
      promise.then(
        (v) => {
          this.#clock.clearTimeout(timer);
          resolve(v);
        },
        (e: unknown) => {
          this.#clock.clearTimeout(timer);
          reject(e);
        },
      );
    });
  }
}

/** The `dns:` plugin (read-only: no registrar). */
export const dnsDiscovery: DiscoveryPlugin = Object.freeze({
  scheme: 'dns',
  resolver: (url: URL): Resolver => new DnsResolver(url),
});

/** Register the `dns:` plugin. Idempotent. */
export function setup(): void {
  registerDiscovery(dnsDiscovery);
}
