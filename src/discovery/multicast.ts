/**
 * `multicast://[GROUP][:PORT][?iface=ADDR][&hops=N][&settle=MS]` — zero-configuration
 * discovery for dev clusters and LANs with no registry: registrars announce their
 * instances to a UDP multicast group, resolvers listen and keep a table.
 *
 *   registrar                       group 239.255.77.77:7707                  resolver
 *     │── announce (on register, then every ttl/3) ─────────────────────────────▶│ table[service][id]
 *     │                                                                           │ expires ttl after the last announce
 *     │◀───────────────────────────────────────────────── query (when it starts) ─│
 *     │── announce (at once) ──────────────────────────────────────────────────▶│ first snapshot after `settle` ms
 *     │── goodbye (deregister / close) ────────────────────────────────────────▶│ removed at once
 *
 * Datagrams are UTF-8 JSON objects of at most 8 KiB (MAX_DATAGRAM_BYTES), with a magic
 * string and a version:
 *
 *   {"magic":"skein-discovery","v":1,"type":"announce","service":"echo","id":"…","address":"127.0.0.1:7700","metadata":{…},"ttlMs":10000}
 *   {"magic":"skein-discovery","v":1,"type":"goodbye","service":"echo","id":"…"}
 *   {"magic":"skein-discovery","v":1,"type":"query"}            (optionally "service":"echo")
 *
 * Anything else — not JSON, another magic or version, a missing or mistyped field, too
 * large — is ignored and counted (`stats().malformed`); nothing a peer sends can throw.
 *
 * Sockets. Every registrar and resolver has one UDP socket bound to the group's port with
 * SO_REUSEADDR (several processes on one host share the port), joined to the group on one
 * interface, loopback delivery on. The default interface is 127.0.0.1: datagrams never
 * leave the host, which is what tests and single-machine dev clusters want; `?iface=` names
 * another local IPv4 address (or `any` for the OS default) to span a LAN, with `?hops=` the
 * multicast TTL (default 1: the local link only). On POSIX the socket binds to the group
 * address itself, so unicast datagrams to the port are not delivered to it.
 *
 * Timing. A registration re-announces every ttl/3 (so two consecutive losses are
 * tolerated); a resolver drops an instance `ttlMs` after its last announcement (one unref'd
 * timer, armed for the earliest expiry). Answers to queries are rate-limited to one per
 * 100 ms per registration (a later one is delayed, never dropped), so a query flood cannot
 * turn into an announcement flood. The socket keeps the process alive while it has
 * registrations or watches; timers never do.
 */
import { createSocket, type Socket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { isIPv4 } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createError, ErrorCode, isSkeinError, type SkeinError } from '../errors.js';
import { Backoff } from '../util/backoff.js';
import { discoveryHosts, registerDiscovery } from './registry.js';
import type { AbortOptions, DiscoveryPlugin, Instance, RegisterOptions, Registrar, Registration, Resolver, ResolverEvent } from './types.js';
import { checkParams, copyInstance, intParam, sameInstance, WatchFeed } from './watch-feed.js';

export const DEFAULT_MULTICAST_GROUP = '239.255.77.77';
export const DEFAULT_MULTICAST_PORT = 7707;
export const DEFAULT_MULTICAST_IFACE = '127.0.0.1';
/** Largest datagram sent or accepted, in bytes. Keep announcements under ~1400 bytes on a real LAN to avoid IP fragmentation. */
export const MAX_DATAGRAM_BYTES = 8192;
/** The `magic` field of every datagram. */
export const MULTICAST_MAGIC = 'skein-discovery';
/** The `v` field of every datagram this version sends and accepts. */
export const MULTICAST_VERSION = 1;
/** Default lease TTL of a registration (RegisterOptions.ttlMs). */
export const DEFAULT_MULTICAST_TTL_MS = 10_000;
/** Shortest accepted TTL. */
export const MIN_MULTICAST_TTL_MS = 100;
/** Longest TTL accepted from the wire (a day). */
const MAX_TTL_MS = 86_400_000;
/** A registration answers queries at most this often. */
const MIN_ANSWER_INTERVAL_MS = 100;
/** Field length limits checked on received announcements. */
const MAX_NAME_LENGTH = 512;

/** The error code of a socket failure (a dedicated discovery code would fit better; see docs/discovery.md). */
const SOCKET_FAILED = ErrorCode.CONNECT_FAILED;

export interface MulticastOptions {
  /** IPv4 multicast group (224.0.0.0/4). Overrides the URL's host. @default '239.255.77.77' */
  group?: string;
  /** UDP port. Overrides the URL's port. @default 7707 */
  port?: number;
  /**
   * Local IPv4 address of the interface to join the group on and to send from; 'any' lets
   * the OS choose (its default multicast route). Overrides `?iface=`. @default '127.0.0.1'
   */
  iface?: string;
  /** Multicast TTL: how many routers a datagram may cross. Overrides `?hops=`. @default 1 */
  hops?: number;
  /** How long a starting resolver collects answers to its query before its first snapshot (ms). Overrides `?settle=`. @default 250 */
  settleMs?: number;
  /** Instances a resolver holds at most; announcements of further ones are ignored and counted. @default 10000 */
  maxInstances?: number;
}

/** A parsed `multicast://` URL merged with options. */
export interface MulticastConfig {
  readonly group: string;
  readonly port: number;
  /** undefined: the OS default interface ('any'). */
  readonly iface: string | undefined;
  readonly hops: number;
  readonly settleMs: number;
  readonly maxInstances: number;
}

/** Counters of one socket's traffic. */
export interface MulticastStats {
  /** Datagrams received (all kinds, valid or not, own ones included). */
  datagrams: number;
  announces: number;
  goodbyes: number;
  queries: number;
  /** Datagrams ignored as malformed (bad JSON, magic, version, fields, size). */
  malformed: number;
  /** Announcements ignored because the table was full (resolver only). */
  dropped: number;
  /** Socket errors (send failures included). */
  errors: number;
}

const PARAMS = ['iface', 'hops', 'settle'] as const;

function isMulticastV4(addr: string): boolean {
  if (!isIPv4(addr)) return false;
  const first = Number(addr.split('.')[0]);
  return first >= 224 && first <= 239;
}

/** Parse and validate a `multicast://` URL (merged with `options`); SKEIN_ERR_INVALID_OPTIONS on anything malformed. */
export function parseMulticastUrl(url: URL, options: MulticastOptions = {}): MulticastConfig {
  const invalid = (why: string): never => {
    throw createError(ErrorCode.INVALID_OPTIONS, `invalid multicast:// discovery URL: ${why} (expected multicast://[group][:port][?iface=addr])`);
  };
  if (url.protocol !== 'multicast:') invalid(`scheme is ${JSON.stringify(url.protocol)}`);
  if (url.username !== '' || url.password !== '') invalid('user info is not allowed');
  if (url.pathname !== '' && url.pathname !== '/') invalid(`unexpected path ${JSON.stringify(url.pathname)}`);
  checkParams(url.searchParams, PARAMS, invalid);
  if (discoveryHosts(url).length > 1) invalid('one group only');
  const group = options.group ?? (url.hostname === '' ? DEFAULT_MULTICAST_GROUP : url.hostname);
  if (!isMulticastV4(group)) invalid(`${JSON.stringify(group)} is not an IPv4 multicast address (224.0.0.0 - 239.255.255.255)`);
  const port = options.port ?? (url.port === '' ? DEFAULT_MULTICAST_PORT : Number(url.port));
  if (!Number.isInteger(port) || port < 1 || port > 65535) invalid(`bad port ${JSON.stringify(port)}`);
  const ifaceText = options.iface ?? url.searchParams.get('iface') ?? DEFAULT_MULTICAST_IFACE;
  if (ifaceText !== 'any' && !isIPv4(ifaceText)) invalid(`?iface= must be a local IPv4 address or "any", got ${JSON.stringify(ifaceText)}`);
  const hops = options.hops ?? intParam(url.searchParams, 'hops', 1, 0, 255, invalid);
  if (!Number.isInteger(hops) || hops < 0 || hops > 255) invalid(`hops must be 0..255, got ${hops}`);
  const settleMs = options.settleMs ?? intParam(url.searchParams, 'settle', 250, 0, 60_000, invalid);
  if (!(settleMs >= 0)) invalid(`settleMs must be >= 0, got ${settleMs}`);
  const maxInstances = options.maxInstances ?? 10_000;
  if (!(maxInstances >= 1)) invalid(`maxInstances must be >= 1, got ${maxInstances}`);
  return Object.freeze({ group, port, iface: ifaceText === 'any' ? undefined : ifaceText, hops, settleMs, maxInstances });
}

// ---------------------------------------------------------------------------------------
// Wire

/** A decoded datagram. */
export type MulticastMessage =
  | { type: 'announce'; instance: Instance; ttlMs: number }
  | { type: 'goodbye'; service: string; id: string }
  | { type: 'query'; service: string | undefined };

/** Encode a message as a datagram (no size check: see `register`). */
export function encodeMessage(message: MulticastMessage): Buffer {
  const head = { magic: MULTICAST_MAGIC, v: MULTICAST_VERSION, type: message.type };
  switch (message.type) {
    case 'announce': {
      const { service, id, address, metadata } = message.instance;
      return Buffer.from(JSON.stringify({ ...head, service, id, address, metadata, ttlMs: message.ttlMs }));
    }
    case 'goodbye':
      return Buffer.from(JSON.stringify({ ...head, service: message.service, id: message.id }));
    case 'query':
      return Buffer.from(JSON.stringify(message.service === undefined ? head : { ...head, service: message.service }));
  }
}

function isName(v: unknown, max = MAX_NAME_LENGTH): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= max;
}

/** Decode a datagram; undefined for anything malformed. Never throws. */
export function decodeMessage(data: Buffer): MulticastMessage | undefined {
  if (data.length === 0 || data.length > MAX_DATAGRAM_BYTES || data[0] !== 0x7b /* { */) return undefined;
  let m: unknown;
  try {
    m = JSON.parse(data.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return undefined;
  const o = m as Record<string, unknown>;
  if (o.magic !== MULTICAST_MAGIC || o.v !== MULTICAST_VERSION) return undefined;
  switch (o.type) {
    case 'announce': {
      if (!isName(o.service) || !isName(o.id) || !isName(o.address, 2048)) return undefined;
      if (typeof o.ttlMs !== 'number' || !Number.isInteger(o.ttlMs) || o.ttlMs < 1 || o.ttlMs > MAX_TTL_MS) return undefined;
      const md = o.metadata ?? {};
      if (typeof md !== 'object' || md === null || Array.isArray(md)) return undefined;
      const entries = Object.entries(md as Record<string, unknown>);
      if (!entries.every(([, v]) => typeof v === 'string')) return undefined;
      const metadata = Object.fromEntries(entries) as Record<string, string>;
      return { type: 'announce', instance: { service: o.service, id: o.id, address: o.address, metadata }, ttlMs: o.ttlMs };
    }
    case 'goodbye':
      if (!isName(o.service) || !isName(o.id)) return undefined;
      return { type: 'goodbye', service: o.service, id: o.id };
    case 'query':
      if (o.service !== undefined && !isName(o.service)) return undefined;
      return { type: 'query', service: o.service };
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------
// Socket

function newStats(): MulticastStats {
  return { datagrams: 0, announces: 0, goodbyes: 0, queries: 0, malformed: 0, dropped: 0, errors: 0 };
}

/** One UDP socket joined to the group; counts what it receives and hands valid messages on. */
class GroupSocket {
  readonly #socket: Socket;
  #closed = false;

  private constructor(
    socket: Socket,
    readonly config: MulticastConfig,
  ) {
    this.#socket = socket;
  }

  /** Bind, join and configure; rejects with SKEIN_ERR_INVALID_OPTIONS (bad interface) or SKEIN_ERR_CONNECT_FAILED. */
  static open(config: MulticastConfig, stats: MulticastStats, onMessage: (m: MulticastMessage) => void): Promise<GroupSocket> {
    return new Promise<GroupSocket>((resolve, reject) => {
      const socket = createSocket({ type: 'udp4', reuseAddr: true });
      const gs = new GroupSocket(socket, config);
      const fail = (err: unknown): void => {
        socket.removeAllListeners('error');
        socket.on('error', () => {});
        try {
          socket.close();
        } catch {
          // already closed
        }
        const code = (err as { code?: unknown } | null)?.code;
        const badIface = code === 'EADDRNOTAVAIL' || code === 'EINVAL' || code === 'ENODEV';
        reject(
          isSkeinError(err)
            ? err
            : createError(
                badIface ? ErrorCode.INVALID_OPTIONS : SOCKET_FAILED,
                `multicast discovery: cannot join ${config.group}:${config.port} on ${config.iface ?? 'the default interface'}: ${err instanceof Error ? err.message : String(err)}`,
                { cause: err },
              ),
        );
      };
      socket.once('error', fail);
      socket.on('message', (data: Buffer) => {
        stats.datagrams++;
        const m = decodeMessage(data);
        if (m === undefined) stats.malformed++;
        else onMessage(m);
      });
      // Windows cannot bind to a multicast address; elsewhere binding to the group keeps unicast out.
      const bindAddress = process.platform === 'win32' ? undefined : config.group;
      socket.bind({ port: config.port, address: bindAddress, exclusive: false }, () => {
        try {
          socket.addMembership(config.group, config.iface);
          if (config.iface !== undefined) socket.setMulticastInterface(config.iface);
          socket.setMulticastLoopback(true);
          socket.setMulticastTTL(config.hops);
        } catch (err) {
          fail(err);
          return;
        }
        socket.off('error', fail);
        socket.on('error', () => {
          stats.errors++;
        });
        resolve(gs);
      });
    });
  }

  /** Send one datagram to the group; rejects with SKEIN_ERR_CONNECT_FAILED (or CLOSED). */
  send(data: Buffer): Promise<void> {
    if (this.#closed) return Promise.reject(createError(ErrorCode.CLOSED, 'multicast discovery: socket closed'));
    return new Promise<void>((resolve, reject) => {
      try {
        this.#socket.send(data, this.config.port, this.config.group, (err) => {
          if (err) reject(createError(SOCKET_FAILED, `multicast discovery: send to ${this.config.group}:${this.config.port} failed: ${err.message}`, { cause: err }));
          else resolve();
        });
      } catch (err) {
        reject(createError(SOCKET_FAILED, `multicast discovery: send failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
      }
    });
  }

  /** Whether the socket keeps the process alive. */
  keepAlive(on: boolean): void {
    if (this.#closed) return;
    if (on) this.#socket.ref();
    else this.#socket.unref();
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    return new Promise<void>((resolve) => {
      try {
        this.#socket.close(() => resolve());
      } catch {
        resolve();
      }
    });
  }
}

function unref(timer: NodeJS.Timeout): NodeJS.Timeout {
  timer.unref();
  return timer;
}

function key(service: string, id: string): string {
  return `${service}\u0000${id}`;
}

// ---------------------------------------------------------------------------------------
// Registrar

/** A multicast registration: announced every ttl/3 until deregistered. */
export class MulticastRegistration extends EventEmitter implements Registration {
  readonly instance: Instance;
  readonly ttlMs: number;
  readonly #announce: Buffer;
  readonly #registrar: MulticastRegistrar;
  #refresh: NodeJS.Timeout | undefined;
  #answer: NodeJS.Timeout | undefined;
  #lastAnswer = -Infinity;
  #lost = false;
  #deregistered: Promise<void> | undefined;

  /** @internal made by MulticastRegistrar.register */
  constructor(registrar: MulticastRegistrar, instance: Instance, ttlMs: number, announce: Buffer) {
    super();
    this.#registrar = registrar;
    this.instance = Object.freeze({ ...instance, metadata: Object.freeze({ ...instance.metadata }) }) as Instance;
    this.ttlMs = ttlMs;
    this.#announce = announce;
  }

  /** True until `deregister()` (or the registrar's `close()`). */
  get active(): boolean {
    return this.#deregistered === undefined;
  }

  /** @internal first announcement, then the refresh loop. */
  async start(): Promise<void> {
    await this.#registrar.send(this.#announce);
    this.#schedule();
  }

  #schedule(): void {
    if (!this.active) return;
    this.#refresh = unref(setTimeout(() => void this.#send(), Math.max(1, Math.floor(this.ttlMs / 3))));
  }

  /** Send the announcement; report a failure as 'lost' and a recovery as 'registered'. */
  async #send(): Promise<void> {
    if (!this.active) return;
    try {
      await this.#registrar.send(this.#announce);
      if (this.#lost && this.active) {
        this.#lost = false;
        this.emit('registered', this.instance);
      }
    } catch (err) {
      if (this.active && !this.#lost) {
        this.#lost = true;
        this.emit('lost', isSkeinError(err) ? err : createError(SOCKET_FAILED, String(err), { cause: err }));
      }
    } finally {
      if (this.#refresh !== undefined) {
        clearTimeout(this.#refresh);
        this.#refresh = undefined;
      }
      this.#schedule();
    }
  }

  /** @internal a query for this registration's service (or all) arrived. */
  answer(): void {
    if (!this.active || this.#answer !== undefined) return;
    const wait = this.#lastAnswer + MIN_ANSWER_INTERVAL_MS - performance.now();
    const go = (): void => {
      this.#answer = undefined;
      this.#lastAnswer = performance.now();
      void this.#registrar.send(this.#announce).catch(() => {});
    };
    if (wait <= 0) go();
    else this.#answer = unref(setTimeout(go, wait));
  }

  deregister(options: AbortOptions = {}): Promise<void> {
    if (options.signal?.aborted === true) return Promise.reject(options.signal.reason);
    this.#deregistered ??= (async () => {
      clearTimeout(this.#refresh);
      clearTimeout(this.#answer);
      this.#refresh = this.#answer = undefined;
      await this.#registrar.goodbye(this);
    })();
    return this.#deregistered;
  }
}

/**
 * Announces instances to the multicast group and answers queries. One socket per registrar,
 * opened on the first `register()`.
 */
export class MulticastRegistrar implements Registrar {
  readonly config: MulticastConfig;
  readonly #stats = newStats();
  readonly #registrations = new Map<string, MulticastRegistration>();
  #socket: Promise<GroupSocket> | undefined;
  #closed = false;

  constructor(url: URL, options: MulticastOptions = {}) {
    this.config = parseMulticastUrl(url, options);
  }

  /** Traffic counters (a copy). */
  stats(): MulticastStats {
    return { ...this.#stats };
  }

  /**
   * Announce an instance (id defaults to the address) until deregistered. Resolves once the
   * first announcement is sent; 'registered' fires on a later turn (setImmediate), so a
   * listener added right after `await register()` sees it. SKEIN_ERR_INVALID_OPTIONS for a
   * bad instance, a TTL under 100 ms, an announcement over MAX_DATAGRAM_BYTES, or a
   * service+id this registrar already announces.
   */
  async register(input: Omit<Instance, 'id' | 'metadata'> & { id?: string; metadata?: Record<string, string> }, options: RegisterOptions = {}): Promise<Registration> {
    options.signal?.throwIfAborted();
    if (this.#closed) throw createError(ErrorCode.CLOSED, 'multicast registrar: closed');
    const bad = (why: string): never => {
      throw createError(ErrorCode.INVALID_OPTIONS, `multicast registrar register(): ${why}`);
    };
    if (typeof input !== 'object' || input === null) bad('expected an instance');
    if (!isName(input.service)) bad('service must be a non-empty string');
    if (!isName(input.address, 2048)) bad('address must be a non-empty string');
    const id = input.id ?? input.address;
    if (!isName(id)) bad('id must be a non-empty string');
    const metadata = { ...(input.metadata ?? {}) };
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') bad(`metadata ${JSON.stringify(k)} must be a string`);
    const ttlMs = options.ttlMs ?? DEFAULT_MULTICAST_TTL_MS;
    if (!Number.isInteger(ttlMs) || ttlMs < MIN_MULTICAST_TTL_MS || ttlMs > MAX_TTL_MS) bad(`ttlMs must be an integer in ${MIN_MULTICAST_TTL_MS}..${MAX_TTL_MS}, got ${ttlMs}`);
    const instance: Instance = { service: input.service, id, address: input.address, metadata };
    const announce = encodeMessage({ type: 'announce', instance, ttlMs });
    if (announce.length > MAX_DATAGRAM_BYTES) bad(`the announcement is ${announce.length} bytes, over the ${MAX_DATAGRAM_BYTES}-byte datagram limit (trim the metadata)`);
    const k = key(instance.service, id);
    if (this.#registrations.has(k)) bad(`${instance.service}/${id} is already registered by this registrar`);

    const registration = new MulticastRegistration(this, instance, ttlMs, announce);
    this.#registrations.set(k, registration);
    try {
      const socket = await this.#open();
      socket.keepAlive(true);
      options.signal?.throwIfAborted();
      await registration.start();
    } catch (err) {
      this.#registrations.delete(k);
      await registration.deregister().catch(() => {});
      throw err;
    }
    setImmediate(() => {
      if (registration.active) registration.emit('registered', registration.instance);
    });
    return registration;
  }

  /** Deregister everything (goodbyes sent) and close the socket. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#registrations.values()].map((r) => r.deregister()));
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket !== undefined) await socket.then((s) => s.close(), () => {});
  }

  #open(): Promise<GroupSocket> {
    if (this.#socket === undefined) {
      const opening = GroupSocket.open(this.config, this.#stats, (m) => this.#onMessage(m));
      this.#socket = opening;
      opening.catch(() => {
        if (this.#socket === opening) this.#socket = undefined; // let a later register() retry
      });
    }
    return this.#socket;
  }

  #onMessage(m: MulticastMessage): void {
    if (m.type === 'announce') this.#stats.announces++;
    else if (m.type === 'goodbye') this.#stats.goodbyes++;
    else {
      this.#stats.queries++;
      for (const r of this.#registrations.values()) if (m.service === undefined || m.service === r.instance.service) r.answer();
    }
  }

  /** @internal */
  async send(data: Buffer): Promise<void> {
    const socket = this.#socket;
    if (socket === undefined) throw createError(ErrorCode.CLOSED, 'multicast registrar: closed');
    try {
      await (await socket).send(data);
    } catch (err) {
      this.#stats.errors++;
      throw err;
    }
  }

  /** @internal remove a registration and say goodbye (best effort). */
  async goodbye(registration: MulticastRegistration): Promise<void> {
    const k = key(registration.instance.service, registration.instance.id);
    if (this.#registrations.get(k) !== registration) return;
    this.#registrations.delete(k);
    await this.send(encodeMessage({ type: 'goodbye', service: registration.instance.service, id: registration.instance.id })).catch(() => {});
    if (this.#registrations.size === 0) await this.#socket?.then((s) => s.keepAlive(false), () => {});
  }
}

// ---------------------------------------------------------------------------------------
// Resolver

interface Entry {
  instance: Instance;
  expiresAt: number;
}

/**
 * Listens to the group and keeps a table of every announced instance (all services).
 * Opens its socket on the first `watch()` / `list()`, sends a query, and waits `settleMs`
 * for the answers before its first snapshot.
 */
export class MulticastResolver implements Resolver {
  readonly config: MulticastConfig;
  readonly #stats = newStats();
  readonly #table = new Map<string, Map<string, Entry>>();
  readonly #feeds = new Map<string, Set<WatchFeed>>();
  readonly #backoff = new Backoff({ initialMs: 1000, maxMs: 30_000 });
  #size = 0;
  #socket: GroupSocket | undefined;
  #ready: Promise<void> | undefined;
  #retry: NodeJS.Timeout | undefined;
  #expiry: NodeJS.Timeout | undefined;
  #expiryAt = Infinity;
  #closed = false;

  constructor(url: URL, options: MulticastOptions = {}) {
    this.config = parseMulticastUrl(url, options);
  }

  /** Traffic counters (a copy). */
  stats(): MulticastStats {
    return { ...this.#stats };
  }

  watch(service: string, options: AbortOptions = {}): AsyncIterable<ResolverEvent> {
    if (typeof service !== 'string' || service === '') throw createError(ErrorCode.INVALID_OPTIONS, 'multicast resolver watch(): the service name must be a non-empty string');
    if (this.#closed) throw createError(ErrorCode.CLOSED, 'multicast resolver: closed');
    return new WatchFeed({
      signal: options.signal,
      snapshot: () => this.#snapshot(service),
      onStart: (feed) => {
        this.#start().then(
          () => this.#join(service, feed),
          (err: unknown) => {
            this.#join(service, feed);
            feed.push({ type: 'error', error: err as SkeinError });
            this.#scheduleRetry();
          },
        );
      },
      onEnd: (feed) => {
        const set = this.#feeds.get(service);
        if (set?.delete(feed) === true && set.size === 0) this.#feeds.delete(service);
        this.#keepAlive();
      },
    });
  }

  /** The instances known now (after the first settle window). Rejects if the socket cannot open. */
  async list(service?: string, options: AbortOptions = {}): Promise<Instance[]> {
    options.signal?.throwIfAborted();
    if (this.#closed) throw createError(ErrorCode.CLOSED, 'multicast resolver: closed');
    await this.#start();
    if (service !== undefined) return this.#snapshot(service);
    return [...this.#table.keys()].flatMap((s) => this.#snapshot(s));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const set of [...this.#feeds.values()]) for (const feed of [...set]) feed.end();
    this.#feeds.clear();
    clearTimeout(this.#retry);
    clearTimeout(this.#expiry);
    await this.#socket?.close();
    this.#socket = undefined;
  }

  #snapshot(service: string): Instance[] {
    return [...(this.#table.get(service)?.values() ?? [])].map((e) => copyInstance(e.instance));
  }

  #join(service: string, feed: WatchFeed): void {
    if (feed.ended) return;
    if (this.#closed) return feed.end();
    let set = this.#feeds.get(service);
    if (set === undefined) this.#feeds.set(service, (set = new Set()));
    set.add(feed);
    feed.push({ type: 'snapshot', instances: this.#snapshot(service) });
    this.#keepAlive();
  }

  /** The socket keeps the process alive while someone watches. */
  #keepAlive(): void {
    this.#socket?.keepAlive(this.#feeds.size > 0);
  }

  /** Open the socket, query, wait for answers; shared by every caller until it fails. */
  #start(): Promise<void> {
    this.#ready ??= (async () => {
      const socket = await GroupSocket.open(this.config, this.#stats, (m) => this.#onMessage(m));
      if (this.#closed) {
        await socket.close();
        throw createError(ErrorCode.CLOSED, 'multicast resolver: closed');
      }
      this.#socket = socket;
      this.#backoff.reset();
      this.#keepAlive();
      await socket.send(encodeMessage({ type: 'query', service: undefined })).catch(() => {
        this.#stats.errors++;
      });
      if (this.config.settleMs > 0) await new Promise<void>((resolve) => setTimeout(resolve, this.config.settleMs));
    })();
    const ready = this.#ready;
    ready.catch(() => {
      if (this.#ready === ready) this.#ready = undefined;
    });
    return ready;
  }

  /** After a failed open, try again (with backoff) while someone watches. */
  #scheduleRetry(): void {
    if (this.#closed || this.#retry !== undefined) return;
    this.#retry = unref(
      setTimeout(() => {
        this.#retry = undefined;
        if (this.#closed || this.#feeds.size === 0 || this.#socket !== undefined) return;
        this.#start().catch((err: unknown) => {
          for (const set of this.#feeds.values()) for (const feed of set) feed.push({ type: 'error', error: err as SkeinError });
          this.#scheduleRetry();
        });
      }, this.#backoff.next()),
    );
  }

  #emit(service: string, event: ResolverEvent): void {
    const set = this.#feeds.get(service);
    if (set !== undefined) for (const feed of set) feed.push(event);
  }

  #onMessage(m: MulticastMessage): void {
    if (this.#closed) return;
    switch (m.type) {
      case 'query':
        this.#stats.queries++;
        return;
      case 'goodbye': {
        this.#stats.goodbyes++;
        const entries = this.#table.get(m.service);
        const entry = entries?.get(m.id);
        if (entries === undefined || entry === undefined) return;
        this.#remove(entries, entry);
        return;
      }
      case 'announce': {
        this.#stats.announces++;
        const { instance, ttlMs } = m;
        const expiresAt = performance.now() + ttlMs;
        let entries = this.#table.get(instance.service);
        const entry = entries?.get(instance.id);
        if (entry !== undefined) {
          entry.expiresAt = expiresAt;
          if (!sameInstance(entry.instance, instance)) {
            entry.instance = instance;
            this.#emit(instance.service, { type: 'updated', instance: copyInstance(instance) });
          }
        } else {
          if (this.#size >= this.config.maxInstances) {
            this.#stats.dropped++;
            return;
          }
          if (entries === undefined) this.#table.set(instance.service, (entries = new Map()));
          entries.set(instance.id, { instance, expiresAt });
          this.#size++;
          this.#emit(instance.service, { type: 'added', instance: copyInstance(instance) });
        }
        if (expiresAt < this.#expiryAt) this.#armExpiry(expiresAt);
        return;
      }
    }
  }

  #remove(entries: Map<string, Entry>, entry: Entry): void {
    const { service, id } = entry.instance;
    entries.delete(id);
    this.#size--;
    if (entries.size === 0) this.#table.delete(service);
    this.#emit(service, { type: 'removed', instance: copyInstance(entry.instance) });
  }

  #armExpiry(at: number): void {
    clearTimeout(this.#expiry);
    this.#expiryAt = at;
    this.#expiry = unref(setTimeout(() => this.#expire(), Math.max(1, Math.ceil(at - performance.now()))));
  }

  /** Drop every instance whose announcements stopped for its TTL; re-arm for the next one. */
  #expire(): void {
    this.#expiry = undefined;
    this.#expiryAt = Infinity;
    if (this.#closed) return;
    const now = performance.now();
    let next = Infinity;
    for (const entries of [...this.#table.values()]) {
      for (const entry of [...entries.values()]) {
        if (entry.expiresAt <= now) this.#remove(entries, entry);
        else if (entry.expiresAt < next) next = entry.expiresAt;
      }
    }
    if (next !== Infinity) this.#armExpiry(next);
  }
}

/** The `multicast:` plugin. */
export const multicastDiscovery: DiscoveryPlugin = Object.freeze({
  scheme: 'multicast',
  resolver: (url: URL): Resolver => new MulticastResolver(url),
  registrar: (url: URL): Registrar => new MulticastRegistrar(url),
});

/** Register the `multicast:` plugin. Idempotent. */
export function setup(): void {
  registerDiscovery(multicastDiscovery);
}
