/**
 * The embedded registry as a skein service (`skein.registry`, api.ts) over a RegistryStore.
 *
 *   const registry = await openRegistry({ dataDir: '/var/lib/skein' });   // or {} for memory only
 *   const { host, port } = await registry.listen({ host: '127.0.0.1', port: 7700 });
 *   ...
 *   await registry.close();     // ends watches and keepalive streams, drains, flushes
 *
 * The handlers only translate between messages and the store: validation of requests,
 * NOT_FOUND 'lease lost' on keepalive streams whose lease ended, and the watch stream as
 * the store's Watcher (an async iterator the server's stream pump pulls as credit allows,
 * so a slow watcher is bounded by the store's watcherBufferLimit, not by memory).
 */
import { createError, ErrorCode, isSkeinError, type SkeinError } from '../../errors.js';
import { createServer, implement, type BoundAddress, type Server, type ServerOptions } from '../../rpc/server.js';
import type { CallContext, ImplementedService } from '../../rpc/types.js';
import type { ListenOptions } from '../../transport/transport.js';
import type { Instance } from '../types.js';
import { RegistryService, type KeepAliveReply, type KeepAliveRequest, type RegistryServiceDef, type WatchMessage } from './api.js';
import { FilePersistence, type FilePersistenceOptions } from './persist.js';
import { RegistryStore, type LeaseEndReason, type RegistryStoreOptions } from './store.js';

// ------------------------------------------------------------------ request validation

const SERVICE_RE = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
const MAX_NAME = 255;
const MAX_ADDRESS = 1024;
const MAX_METADATA_KEYS = 64;
const MAX_METADATA_VALUE = 4096;

function bad(message: string): SkeinError {
  return createError(ErrorCode.VALIDATION, message);
}

function checkService(v: unknown, what = 'service'): string {
  if (typeof v !== 'string' || v.length > MAX_NAME || !SERVICE_RE.test(v)) throw bad(`${what} must be a service name (${SERVICE_RE.source}, at most ${MAX_NAME} characters), got ${JSON.stringify(v)}`);
  return v;
}

function checkLeaseId(v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw bad(`leaseId must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function checkRevision(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`${what} must be an integer >= 0, got ${JSON.stringify(v)}`);
  return v;
}

/** Validate and normalise an instance (id defaults to the address, metadata to {}). */
export function checkInstance(v: unknown): Instance {
  if (v === null || typeof v !== 'object') throw bad('instance must be an object');
  const i = v as Partial<Instance>;
  const service = checkService(i.service, 'instance.service');
  if (typeof i.address !== 'string' || i.address === '' || i.address.length > MAX_ADDRESS) throw bad(`instance.address must be a non-empty string of at most ${MAX_ADDRESS} characters`);
  const id = i.id ?? i.address;
  if (typeof id !== 'string' || id === '' || id.length > MAX_NAME) throw bad(`instance.id must be a non-empty string of at most ${MAX_NAME} characters`);
  const metadata: Record<string, string> = {};
  if (i.metadata !== undefined && i.metadata !== null) {
    if (typeof i.metadata !== 'object' || Array.isArray(i.metadata)) throw bad('instance.metadata must be an object of strings');
    const entries = Object.entries(i.metadata);
    if (entries.length > MAX_METADATA_KEYS) throw bad(`instance.metadata has more than ${MAX_METADATA_KEYS} keys`);
    for (const [k, val] of entries) {
      if (k === '' || k.length > MAX_NAME) throw bad(`instance.metadata key ${JSON.stringify(k)} must have 1-${MAX_NAME} characters`);
      if (typeof val !== 'string' || val.length > MAX_METADATA_VALUE) throw bad(`instance.metadata.${k} must be a string of at most ${MAX_METADATA_VALUE} characters`);
      metadata[k] = val;
    }
  }
  return { service, id, address: i.address, metadata };
}

function leaseLost(leaseId: number, reason: LeaseEndReason | 'unknown'): SkeinError {
  if (reason === 'shutdown') return createError(ErrorCode.CLOSED, 'the registry is shutting down; keep the lease alive again once it is back');
  return createError(ErrorCode.LEASE_LOST, `lease lost: lease ${leaseId} ${reason === 'unknown' ? 'does not exist (expired or revoked)' : `was ${reason}`}`);
}

// ------------------------------------------------------------------ handlers

/** A small queue between the keepalive request reader and the reply stream. */
class ReplyQueue<T> {
  private items: T[] = [];
  private waiter: (() => void) | undefined;
  private error: SkeinError | undefined;
  private ended = false;

  push(v: T): void {
    if (this.ended) return;
    this.items.push(v);
    this.wake();
  }
  fail(err: SkeinError): void {
    if (this.ended) return;
    this.error = err;
    this.ended = true;
    this.wake();
  }
  end(): void {
    this.ended = true;
    this.wake();
  }
  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
  async *drain(): AsyncGenerator<T> {
    for (;;) {
      if (this.items.length > 0) {
        yield this.items.shift()!;
        continue;
      }
      if (this.error !== undefined) throw this.error;
      if (this.ended) return;
      await new Promise<void>((r) => (this.waiter = r));
    }
  }
}

function keepAliveStream(store: RegistryStore, requests: AsyncIterable<KeepAliveRequest>): AsyncIterable<KeepAliveReply> {
  const out = new ReplyQueue<KeepAliveReply>();
  let bound: number | undefined;
  let unsubscribe: (() => void) | undefined;
  void (async () => {
    try {
      for await (const req of requests) {
        const id = checkLeaseId((req as KeepAliveRequest | undefined)?.leaseId);
        if (bound === undefined) {
          bound = id;
          unsubscribe = store.onLeaseEnd(id, (reason) => out.fail(leaseLost(id, reason)));
        } else if (id !== bound) {
          throw bad(`this keepalive stream is for lease ${bound}; open another stream for lease ${id}`);
        }
        const r = store.keepAlive(id);
        if (r === undefined) throw leaseLost(id, 'unknown');
        out.push({ leaseId: id, ttlMs: r.ttlMs, remainingMs: r.remainingMs });
      }
      out.end();
    } catch (err) {
      // Ours (INVALID_ARGUMENT, NOT_FOUND) end the stream with their status; the request
      // stream dying (client gone) ends a call that is already over, so the status is moot.
      out.fail(isSkeinError(err) ? err : createError(ErrorCode.INTERNAL, 'keepalive failed', { cause: err }));
    }
  })();
  return {
    [Symbol.asyncIterator]: () => {
      const it = out.drain();
      const finish = () => unsubscribe?.();
      return {
        next: async () => {
          try {
            const r = await it.next();
            if (r.done === true) finish();
            return r;
          } catch (err) {
            finish();
            throw err;
          }
        },
        return: async () => {
          finish();
          out.end();
          return it.return(undefined);
        },
      };
    },
  };
}

/** The handlers of `skein.registry` over `store`. */
export function registryService(store: RegistryStore): ImplementedService<RegistryServiceDef['methods']> {
  return implement(RegistryService, {
    async grant(req) {
      return store.grant((req as { ttlMs?: unknown } | undefined)?.ttlMs as number);
    },
    keepAlive(requests) {
      return keepAliveStream(store, requests);
    },
    async put(req) {
      const leaseId = checkLeaseId(req?.leaseId);
      const instance = checkInstance(req?.instance);
      return store.put(leaseId, instance);
    },
    async remove(req) {
      const service = checkService(req?.service);
      if (typeof req.id !== 'string' || req.id === '') throw bad('id must be a non-empty string');
      return store.remove(service, req.id, req.leaseId === undefined || req.leaseId === null ? undefined : checkLeaseId(req.leaseId));
    },
    async revoke(req) {
      return store.revoke(checkLeaseId(req?.leaseId));
    },
    async list(req) {
      const service = req?.service === undefined || req.service === null ? undefined : checkService(req.service);
      return store.list(service);
    },
    watch(req, ctx: CallContext) {
      const service = req?.service === undefined || req.service === null ? undefined : checkService(req.service);
      const from = req?.fromRevision === undefined || req.fromRevision === null ? undefined : checkRevision(req.fromRevision, 'fromRevision');
      if (from !== undefined && typeof req.epoch !== 'string') throw bad('fromRevision needs the epoch it belongs to');
      return watchStream(store, ctx, service, from, req?.epoch);
    },
    async info() {
      const { rss, heapUsed } = process.memoryUsage();
      return { ...store.info(), rss, heapUsed };
    },
  });
}

/** The store's watcher as the stream: ends when the call dies (the pump may be waiting in next()). */
async function* watchStream(store: RegistryStore, ctx: CallContext, service: string | undefined, from: number | undefined, epoch: string | undefined): AsyncGenerator<WatchMessage> {
  const watcher = await store.watch(service, from, epoch);
  const signal = ctx.signal;
  const onAbort = () => watcher.close();
  if (signal.aborted) watcher.close();
  else signal.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      const r = await watcher.next();
      if (r.done === true) return;
      yield r.value;
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    watcher.close();
  }
}

// ------------------------------------------------------------------ the registry

export interface RegistryOptions {
  /** Keep state in this directory (created if missing); memory only when omitted. */
  dataDir?: string;
  /** Store options (history size, watcher buffer, TTL bounds, clock...). */
  store?: Omit<RegistryStoreOptions, 'persistence' | 'restored' | 'onWarning'>;
  /** Log compaction threshold and I/O hooks (with dataDir). */
  persistence?: Omit<FilePersistenceOptions, 'onWarning'>;
  /**
   * Server options. @default { maxConcurrentStreams: 16384 } (one client may hold many
   * watches and keepalive streams on one connection), drainGraceMs 2000
   */
  server?: ServerOptions;
  /** Warnings (torn log tail truncated, compaction failed). @default ignored */
  onWarning?: (message: string) => void;
}

/** A running embedded registry: the store, and the server that serves it. */
export class Registry {
  private closing: Promise<void> | undefined;

  /** @internal use openRegistry() */
  constructor(
    readonly store: RegistryStore,
    readonly server: Server,
  ) {}

  /** Listen (TCP host/port, unix path, memory name); may be called more than once. */
  listen(options: ListenOptions): Promise<BoundAddress> {
    return this.server.listen(options);
  }

  /**
   * Stop: no new connections or calls, watch streams end (clients resume later from their
   * revision), keepalive streams end with UNAVAILABLE (leases stay: a restart restores them
   * with a grace period), in-flight unary calls get `graceMs`, and the data is flushed.
   */
  close(graceMs = 2000): Promise<void> {
    this.closing ??= (async () => {
      const drained = this.server.close(graceMs);
      await this.store.close();
      await drained;
    })();
    return this.closing;
  }
}

/** Open (restore from `dataDir`, if given) a registry; `listen()` it to serve. */
export async function openRegistry(options: RegistryOptions = {}): Promise<Registry> {
  const onWarning = options.onWarning ?? (() => {});
  const storeOptions: RegistryStoreOptions = { ...options.store, onWarning };
  let fresh = false;
  if (options.dataDir !== undefined) {
    const { persistence, restored } = await FilePersistence.open(options.dataDir, { ...options.persistence, onWarning });
    storeOptions.persistence = persistence;
    storeOptions.restored = restored;
    fresh = restored.snapshot === undefined;
  }
  const store = new RegistryStore(storeOptions);
  // A snapshot first thing: it records the epoch (and folds a replayed log in).
  if (options.dataDir !== undefined && (fresh || storeOptions.persistence!.hasLog)) await store.compactNow();
  const server = createServer({ maxConcurrentStreams: 16384, drainGraceMs: 2000, ...options.server });
  server.add(registryService(store));
  return new Registry(store, server);
}
