/**
 * `static://host:port[,host:port...][?service=NAME[,NAME...]][&tls]` — a fixed address list.
 *
 * The service name is not part of the URL: every service resolves to the listed addresses
 * (so one `SKEIN_DISCOVERY=static://...` serves a process that calls several services on
 * the same hosts). `?service=echo,greeter` restricts the list to those services: any
 * other resolves to no instance. `?tls` makes the addresses `tls://host:port`.
 *
 * Instances: id = address, metadata empty. `watch()` yields one snapshot and then nothing
 * until its signal aborts or the resolver closes. Read-only: there is no registrar.
 * `list()` without a service returns the addresses under each `?service=` name, or under
 * the wildcard service name `'*'` when there is no filter.
 */
import { createError, ErrorCode } from '../errors.js';
import { parseTarget } from '../transport/target.js';
import { discoveryHosts, registerDiscovery } from './registry.js';
import type { AbortOptions, DiscoveryPlugin, Instance, Resolver, ResolverEvent } from './types.js';
import { boolParam, checkParams, WatchFeed } from './watch-feed.js';

/** The service name `list()` uses for the addresses of an unfiltered static URL. */
export const ANY_SERVICE = '*';

/** What a `static://` URL says, parsed and validated. */
export interface StaticConfig {
  /** 'host:port' (or 'tls://host:port'), de-duplicated, in URL order. */
  readonly addresses: readonly string[];
  /** The services that resolve to the addresses; undefined: every service. */
  readonly services: readonly string[] | undefined;
}

const PARAMS = ['service', 'tls'] as const;

/** Parse and validate a `static://` URL; SKEIN_ERR_INVALID_OPTIONS on anything malformed. */
export function parseStaticUrl(url: URL): StaticConfig {
  const invalid = (why: string): never => {
    throw createError(ErrorCode.INVALID_OPTIONS, `invalid static:// discovery URL: ${why} (expected static://host:port[,host:port...])`);
  };
  if (url.protocol !== 'static:') invalid(`scheme is ${JSON.stringify(url.protocol)}`);
  if (url.username !== '' || url.password !== '') invalid('user info is not allowed');
  if (url.pathname !== '' && url.pathname !== '/') invalid(`unexpected path ${JSON.stringify(url.pathname)}`);
  checkParams(url.searchParams, PARAMS, invalid);
  const tls = boolParam(url.searchParams, 'tls', false, invalid);
  const hosts = discoveryHosts(url);
  if (hosts.length === 0) invalid('no addresses');
  const addresses: string[] = [];
  for (const host of hosts) {
    if (host.includes('://')) invalid(`${JSON.stringify(host)}: give host:port (use ?tls for TLS)`);
    let target: ReturnType<typeof parseTarget>;
    try {
      target = parseTarget(host);
    } catch (err) {
      return invalid(`bad address ${JSON.stringify(host)}: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (target.transport !== 'tcp') invalid(`${JSON.stringify(host)}: give host:port`);
    if (target.port === 0) invalid(`${JSON.stringify(host)}: port 0`);
    const address = target.address;
    const full = tls ? `tls://${address}` : address;
    if (!addresses.includes(full)) addresses.push(full);
  }
  const named = url.searchParams.getAll('service').flatMap((s) => s.split(','));
  if (named.some((s) => s.trim() === '')) invalid('empty ?service= name');
  const services = named.length === 0 ? undefined : [...new Set(named.map((s) => s.trim()))];
  return Object.freeze({ addresses: Object.freeze(addresses), services: services === undefined ? undefined : Object.freeze(services) });
}

function checkService(service: unknown, method: string): asserts service is string {
  if (typeof service !== 'string' || service === '') throw createError(ErrorCode.INVALID_OPTIONS, `${method}: the service name must be a non-empty string`);
}

export class StaticResolver implements Resolver {
  readonly config: StaticConfig;
  readonly #feeds = new Set<WatchFeed>();
  #closed = false;

  constructor(url: URL) {
    this.config = parseStaticUrl(url);
  }

  #instances(service: string): Instance[] {
    if (this.config.services !== undefined && !this.config.services.includes(service)) return [];
    return this.config.addresses.map((address) => ({ service, id: address, address, metadata: {} }));
  }

  watch(service: string, options: AbortOptions = {}): AsyncIterable<ResolverEvent> {
    checkService(service, 'static resolver watch()');
    if (this.#closed) throw createError(ErrorCode.CLOSED, 'static resolver: closed');
    return new WatchFeed({
      signal: options.signal,
      snapshot: () => this.#instances(service),
      onStart: (feed) => {
        if (this.#closed) return feed.end();
        this.#feeds.add(feed);
        feed.push({ type: 'snapshot', instances: this.#instances(service) });
      },
      onEnd: (feed) => this.#feeds.delete(feed),
    });
  }

  async list(service?: string, options: AbortOptions = {}): Promise<Instance[]> {
    options.signal?.throwIfAborted();
    if (this.#closed) throw createError(ErrorCode.CLOSED, 'static resolver: closed');
    if (service !== undefined) {
      checkService(service, 'static resolver list()');
      return this.#instances(service);
    }
    const services = this.config.services ?? [ANY_SERVICE];
    return services.flatMap((s) => this.#instances(s));
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const feed of [...this.#feeds]) feed.end();
  }
}

/** The `static:` plugin (read-only: no registrar). */
export const staticDiscovery: DiscoveryPlugin = Object.freeze({
  scheme: 'static',
  resolver: (url: URL): Resolver => new StaticResolver(url),
});

/** Register the `static:` plugin. Idempotent. */
export function setup(): void {
  registerDiscovery(staticDiscovery);
}
