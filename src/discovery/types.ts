/**
 * Discovery: the interfaces every plugin implements (docs/discovery.md).
 *
 *   Registrar  — a server puts its instances under a lease kept alive with a TTL.
 *   Resolver   — a client watches the instances of a service: a snapshot, then changes.
 *
 * Plugins are chosen by URL scheme (`skein://`, `etcd://`, `static://`, `dns://`,
 * `multicast://`); see `registry.ts`. No core module imports an engine's client library:
 * engines (etcd) live in src/engines/ behind these interfaces.
 */
import type { SkeinError } from '../errors.js';

export interface AbortOptions {
  signal?: AbortSignal;
}

/** One reachable instance of a service. */
export interface Instance {
  /** Service name, e.g. 'echo'. */
  service: string;
  /** Unique within the service (default: the address). */
  id: string;
  /** What a client dials: 'host:port', 'tls://host:port', 'unix:/path'. */
  address: string;
  /** Free-form string metadata: version, zone, weight, tags (comma-separated), ... */
  metadata: Record<string, string>;
}

/** What a Resolver's watch yields. */
export type ResolverEvent =
  /** The full set of instances: always first, and again after any resync (e.g. "compacted"). */
  | { type: 'snapshot'; instances: Instance[]; revision?: number }
  | { type: 'added'; instance: Instance; revision?: number }
  | { type: 'updated'; instance: Instance; revision?: number }
  | { type: 'removed'; instance: Instance; revision?: number }
  /**
   * The source is unreachable or failed; the watch keeps retrying with backoff and the
   * consumer should keep its last known instances. Not terminal.
   */
  | { type: 'error'; error: SkeinError };

export interface Resolver {
  /**
   * Watch one service: a 'snapshot' first, then changes, until `signal` aborts (then the
   * iterator ends). Errors of the source never end the iterator: they are reported as
   * 'error' events while the resolver retries.
   */
  watch(service: string, options?: AbortOptions): AsyncIterable<ResolverEvent>;
  /** The instances known now; all services when `service` is omitted. */
  list(service?: string, options?: AbortOptions): Promise<Instance[]>;
  /** Release connections and timers. */
  close(): Promise<void>;
}

export interface RegisterOptions extends AbortOptions {
  /** Lease time-to-live in ms: the instance vanishes this long after its owner stops. @default 10000 */
  ttlMs?: number;
}

/** A live registration; re-registers by itself after losing its lease until `deregister()`. */
export interface Registration {
  readonly instance: Instance;
  /** Lease TTL in ms. */
  readonly ttlMs: number;
  /** The backend's id of the current lease, when it has one (changes after a re-registration). */
  readonly leaseId?: string | number;
  /**
   * Events: 'lost' (the lease expired or was revoked: the instance is not visible until
   * re-registered), 'registered' (first registration and every re-registration).
   */
  on(event: 'lost', listener: (err: SkeinError) => void): this;
  on(event: 'registered', listener: (instance: Instance) => void): this;
  off(event: 'lost' | 'registered', listener: (...args: any[]) => void): this;
  /** Remove the instance and stop keeping the lease alive. Idempotent. */
  deregister(options?: AbortOptions): Promise<void>;
}

export interface Registrar {
  /** Register an instance under a lease kept alive until deregistered or closed. */
  register(instance: Omit<Instance, 'id' | 'metadata'> & { id?: string; metadata?: Record<string, string> }, options?: RegisterOptions): Promise<Registration>;
  /** Deregister everything and release connections. */
  close(): Promise<void>;
}

/** A discovery plugin: one URL scheme. */
export interface DiscoveryPlugin {
  /** URL scheme without the colon, e.g. 'skein', 'etcd', 'static'. */
  readonly scheme: string;
  resolver(url: URL): Resolver;
  /** Absent for read-only sources (static, dns). */
  registrar?(url: URL): Registrar;
}
