/**
 * The registry's state: instances under leases, a global revision, a bounded history of
 * changes, and the watchers that follow them (docs/registry.md).
 *
 * Mutations (grant, put, remove, revoke, expire) go through one pipeline, so that nothing
 * is seen before it is durable and revisions are never reused:
 *
 *   submit(op) ──▶ queue ──▶ apply (state changes, revision++, undo entry, log record)
 *                               │
 *                               ▼
 *                     persistence.append(records)  ── write + fsync, one per batch
 *                        │ ok                 │ failed
 *                        ▼                    ▼
 *                     publish              undo in reverse; every op of the batch
 *                     (history, watchers,  fails with the storage error, nothing
 *                      lease listeners)    was seen or acknowledged
 *                        │
 *                        ▼
 *                     resolve the callers (the RPC reply goes out only now)
 *
 * Ops that arrive while a batch is being written wait and go together in the next one
 * (group commit: one fsync for many registrations). Without persistence an op is applied
 * and published synchronously. Readers (list, a new watch's snapshot or resume) never see
 * a state that is not yet durable: while a batch is in flight they wait for its outcome.
 *
 * Leases expire at (last keepalive + TTL). One min-heap of due times and one clock timer
 * for its head drive expiry, whatever the number of leases: a keepalive only moves the
 * lease's `expiresAt`; when its heap entry comes due, a renewed lease is re-queued at its
 * new time and an expired one becomes an 'expire' op. So a lease is checked about once
 * per TTL, not once per keepalive.
 *
 * Fan-out: the watchers of a service sit in one Set; a published change is one shared
 * message object appended to each watcher's queue — O(watchers) per change, no timer per
 * watcher. A watcher's queue only grows while its RPC stream is out of credit (the client
 * reads slower than changes come); past `watcherBufferLimit` queued messages its queue is
 * dropped and it gets one `compacted` message and the end of its stream, so a stuck client
 * costs bounded memory and resyncs with a fresh snapshot.
 */
import { randomUUID } from 'node:crypto';
import { createError, ErrorCode, isSkeinError, type SkeinError } from '../../errors.js';
import { systemClock, type Clock } from '../../util/clock.js';
import type { Instance } from '../types.js';
import type { InfoReply, ListedInstance, WatchChangeType, WatchMessage } from './api.js';

// ------------------------------------------------------------------ log and snapshot shapes

/** One durable mutation, as written to the log (persist.ts adds a sequence number). */
export type LogRecord =
  | { op: 'grant'; lease: number; ttl: number }
  | { op: 'put'; lease: number; rev: number; inst: Instance }
  | { op: 'remove'; rev: number; service: string; id: string }
  /** `removed`: [service, id, revision of the removal] in the order they were removed. */
  | { op: 'revoke' | 'expire'; lease: number; removed: Array<[string, string, number]> };

/** A change, as kept in the history and sent to watchers. */
export interface StoreEvent {
  type: WatchChangeType;
  revision: number;
  instance: Instance;
}

/** The whole state at one point of the log (persist.ts adds `seq`). */
export interface SnapshotData {
  v: 1;
  epoch: string;
  revision: number;
  compactedThrough: number;
  nextLease: number;
  /** [lease id, ttl ms] */
  leases: Array<[number, number]>;
  /** [lease id, revision of the last change, instance] */
  instances: Array<[number, number, Instance]>;
  /** The retained history, oldest first. */
  history: StoreEvent[];
}

/** Where the store makes its mutations durable (persist.ts: a log plus snapshots on disk). */
export interface RegistryPersistence {
  /**
   * Append `records` and make them durable (fsync) before resolving. On failure nothing of
   * the batch may count as written: reject with a SkeinError (RESOURCE_EXHAUSTED for a full
   * disk, UNAVAILABLE otherwise).
   */
  append(records: readonly LogRecord[]): Promise<void>;
  /** True when the log has grown enough (or a failure needs a fresh start) to compact. */
  readonly compactionDue: boolean;
  /** True when the log holds any record not covered by the last snapshot. */
  readonly hasLog: boolean;
  /** Write `snapshot` atomically and start an empty log. Rejects on failure (the old files stay valid). */
  compact(snapshot: SnapshotData): Promise<void>;
  close(): Promise<void>;
}

/** What a persistence layer loaded from disk. */
export interface RestoredState {
  snapshot: SnapshotData | undefined;
  /** Log records after the snapshot, in order. */
  records: LogRecord[];
}

// ------------------------------------------------------------------ options

export interface RegistryStoreOptions {
  /** Time source for leases (tests pass a FakeClock). @default systemClock */
  clock?: Clock;
  /** Changes kept for resumable watches. @default 10000 */
  historyLimit?: number;
  /** Messages a watcher may have queued (unsent) before it is ended with `compacted`. @default 4096 */
  watcherBufferLimit?: number;
  /** Smallest lease TTL granted, ms. @default 100 */
  minTtlMs?: number;
  /** Largest lease TTL granted, ms. @default 3600000 */
  maxTtlMs?: number;
  /** Time a restored lease gets for its owner to come back, ms. @default the lease's TTL */
  restoreGraceMs?: number;
  /** Where mutations are made durable. @default none: memory only */
  persistence?: RegistryPersistence;
  /** State loaded by the persistence layer, restored before anything else. */
  restored?: RestoredState;
  /** Also compact this often when the log is not empty, ms (0: only by size). @default 60000 */
  compactIntervalMs?: number;
  /** Retry an expiry that could not be written after this long, ms. @default 1000 */
  expiryRetryMs?: number;
  /** Non-fatal problems (compaction failed, odd log records). @default ignored */
  onWarning?: (message: string) => void;
}

interface ResolvedStoreOptions {
  clock: Clock;
  historyLimit: number;
  watcherBufferLimit: number;
  minTtlMs: number;
  maxTtlMs: number;
  restoreGraceMs: number | undefined;
  compactIntervalMs: number;
  expiryRetryMs: number;
  onWarning: (message: string) => void;
}

function resolveOptions(o: RegistryStoreOptions): Readonly<ResolvedStoreOptions> {
  const r: ResolvedStoreOptions = {
    clock: o.clock ?? systemClock,
    historyLimit: o.historyLimit ?? 10000,
    watcherBufferLimit: o.watcherBufferLimit ?? 4096,
    minTtlMs: o.minTtlMs ?? 100,
    maxTtlMs: o.maxTtlMs ?? 3_600_000,
    restoreGraceMs: o.restoreGraceMs,
    compactIntervalMs: o.compactIntervalMs ?? 60000,
    expiryRetryMs: o.expiryRetryMs ?? 1000,
    onWarning: o.onWarning ?? (() => {}),
  };
  const int = (name: string, v: number, min: number): void => {
    if (!Number.isSafeInteger(v) || v < min) throw createError(ErrorCode.INVALID_OPTIONS, `registry store: ${name} must be an integer >= ${min}, got ${v}`);
  };
  int('historyLimit', r.historyLimit, 1);
  int('watcherBufferLimit', r.watcherBufferLimit, 1);
  int('minTtlMs', r.minTtlMs, 1);
  int('maxTtlMs', r.maxTtlMs, r.minTtlMs);
  int('compactIntervalMs', r.compactIntervalMs, 0);
  int('expiryRetryMs', r.expiryRetryMs, 1);
  if (r.restoreGraceMs !== undefined) int('restoreGraceMs', r.restoreGraceMs, 0);
  return Object.freeze(r);
}

// ------------------------------------------------------------------ state

interface Lease {
  readonly id: number;
  readonly ttlMs: number;
  /** clock.now() at which it expires unless kept alive. */
  expiresAt: number;
  /** Keys (see keyOf) of the instances it holds, in insertion order. */
  readonly keys: Set<string>;
  /** It has an entry in the expiry heap. */
  scheduled: boolean;
  /** An 'expire' op for it is queued. */
  expiring: boolean;
}

interface Entry {
  readonly instance: Instance;
  readonly leaseId: number;
  /** Revision of the last change. */
  readonly revision: number;
}

/** Why a lease ended, as told to its keepalive streams. */
export type LeaseEndReason = 'revoked' | 'expired' | 'shutdown';

type Op =
  | { kind: 'grant'; ttlMs: number }
  | { kind: 'put'; leaseId: number; instance: Instance }
  | { kind: 'remove'; service: string; id: string; leaseId: number | undefined }
  | { kind: 'revoke'; leaseId: number }
  | { kind: 'expire'; leaseId: number };

export interface GrantResult {
  leaseId: number;
  ttlMs: number;
}
export interface PutResult {
  revision: number;
}
export interface RemoveResult {
  removed: boolean;
  revision: number;
}
export interface RevokeResult {
  found: boolean;
  removed: number;
  revision: number;
}

interface Batch {
  records: LogRecord[];
  events: StoreEvent[];
  undo: Array<() => void>;
  ended: Array<[number, LeaseEndReason]>;
}

interface Pending {
  op: Op;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/** Instance keys: service names cannot contain NUL (rpc/define.ts NAME_RE), ids may contain anything else. */
function keyOf(service: string, id: string): string {
  return `${service}\u0000${id}`;
}

function cloneInstance(i: Instance): Instance {
  return { service: i.service, id: i.id, address: i.address, metadata: { ...i.metadata } };
}

// ------------------------------------------------------------------ expiry heap

interface HeapItem {
  due: number;
  leaseId: number;
}

/** A binary min-heap on `due`. */
class DueHeap {
  private readonly a: HeapItem[] = [];
  get size(): number {
    return this.a.length;
  }
  peek(): HeapItem | undefined {
    return this.a[0];
  }
  push(item: HeapItem): void {
    const a = this.a;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]!.due <= item.due) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = item;
  }
  pop(): HeapItem | undefined {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (top === undefined || last === undefined || a.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const r = l + 1;
      const c = r < a.length && a[r]!.due < a[l]!.due ? r : l;
      if (a[c]!.due >= last.due) break;
      a[i] = a[c]!;
      i = c;
    }
    a[i] = last;
    return top;
  }
  clear(): void {
    this.a.length = 0;
  }
}

// ------------------------------------------------------------------ history ring

class History {
  private readonly ring: Array<StoreEvent | undefined>;
  private start = 0;
  private count = 0;

  constructor(readonly limit: number) {
    this.ring = new Array<StoreEvent | undefined>(limit);
  }

  get size(): number {
    return this.count;
  }

  /** Append; returns the evicted event when full. */
  push(e: StoreEvent): StoreEvent | undefined {
    if (this.count < this.limit) {
      this.ring[(this.start + this.count) % this.limit] = e;
      this.count++;
      return undefined;
    }
    const evicted = this.ring[this.start];
    this.ring[this.start] = e;
    this.start = (this.start + 1) % this.limit;
    return evicted;
  }

  at(i: number): StoreEvent {
    return this.ring[(this.start + i) % this.limit]!;
  }

  /** Events with revision >= `from`, oldest first. */
  since(from: number): StoreEvent[] {
    // Revisions increase along the ring: binary search for the first >= from.
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.at(mid).revision < from) lo = mid + 1;
      else hi = mid;
    }
    const out: StoreEvent[] = [];
    for (let i = lo; i < this.count; i++) out.push(this.at(i));
    return out;
  }

  toArray(): StoreEvent[] {
    return this.since(-Infinity);
  }
}

// ------------------------------------------------------------------ watchers

const DONE: IteratorResult<WatchMessage> = Object.freeze({ done: true, value: undefined });

/**
 * One watch: a queue of messages for one RPC stream, read through the AsyncIterator
 * protocol by the server's stream pump (which pulls only while the stream has credit).
 */
export class Watcher implements AsyncIterableIterator<WatchMessage> {
  private queue: WatchMessage[] = [];
  private head = 0;
  private waiter: ((r: IteratorResult<WatchMessage>) => void) | undefined;
  /** No more messages will be added (compacted, closed); the queue still drains. */
  private ending = false;
  private closed = false;

  /** @internal */
  constructor(
    private readonly store: RegistryStore,
    /** The service watched; undefined for all services. */
    readonly service: string | undefined,
    private readonly limit: number,
    initial: WatchMessage[],
  ) {
    for (const m of initial) this.queue.push(m);
    if (this.queue.length > limit) this.overflow();
  }

  /** Messages queued and not yet taken. */
  get buffered(): number {
    return this.queue.length - this.head;
  }

  /** @internal Deliver one message (called by the store in revision order). */
  push(m: WatchMessage): void {
    if (this.ending) return;
    const w = this.waiter;
    if (w !== undefined) {
      this.waiter = undefined;
      w({ done: false, value: m });
      return;
    }
    this.queue.push(m);
    if (this.queue.length - this.head > this.limit) this.overflow();
  }

  /** @internal End with one `compacted` message (queue dropped): the client resyncs. */
  compact(reason: string): void {
    this.finishWith({ type: 'compacted', revision: this.store.revision, epoch: this.store.epoch, reason });
  }

  private overflow(): void {
    this.compact(`the watcher fell more than ${this.limit} changes behind`);
  }

  /** @internal Stop: queued messages are dropped, the stream ends. */
  end(): void {
    this.finishWith(undefined);
  }

  private finishWith(last: WatchMessage | undefined): void {
    if (this.ending) return;
    this.ending = true;
    this.store.unsubscribe(this);
    this.queue = last === undefined ? [] : [last];
    this.head = 0;
    const w = this.waiter;
    if (w !== undefined) {
      this.waiter = undefined;
      const m = this.queue[this.head++];
      w(m === undefined ? DONE : { done: false, value: m });
    }
  }

  next(): Promise<IteratorResult<WatchMessage>> {
    if (this.head < this.queue.length) {
      const m = this.queue[this.head]!;
      this.queue[this.head++] = undefined as unknown as WatchMessage;
      if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      return Promise.resolve({ done: false, value: m });
    }
    if (this.ending || this.closed) return Promise.resolve(DONE);
    if (this.waiter !== undefined) return Promise.reject(new Error('concurrent next() on a registry watcher'));
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** The reader stopped (stream cancelled or finished): unsubscribe. */
  return(): Promise<IteratorResult<WatchMessage>> {
    this.close();
    return Promise.resolve(DONE);
  }

  /** Unsubscribe and end at once (pending read resolves done). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ending = true;
    this.store.unsubscribe(this);
    this.queue = [];
    this.head = 0;
    const w = this.waiter;
    this.waiter = undefined;
    w?.(DONE);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<WatchMessage> {
    return this;
  }
}

// ------------------------------------------------------------------ the store

export class RegistryStore {
  /** Identifies this registry's history: revisions only compare within one epoch. */
  readonly epoch: string;
  /** Last revision handed out (a change's revision is always larger than any before it). */
  revision = 0;
  /** Revisions <= this are no longer in the history. */
  compactedThrough = 0;
  readonly options: Readonly<ResolvedStoreOptions>;

  /**
   * Next lease id. A registry without history starts at a random point of a 2^40 range, so
   * an owner still renewing a lease of a previous (in-memory) incarnation is told its lease
   * is unknown instead of silently renewing someone else's lease with the same number.
   */
  private nextLease = 1 + Math.floor(Math.random() * 2 ** 40);
  private readonly leases = new Map<number, Lease>();
  private readonly entries = new Map<string, Entry>();
  private readonly byService = new Map<string, Map<string, Entry>>();
  private readonly history: History;
  private readonly heap = new DueHeap();
  private expiryTimer: unknown;
  private expiryTimerDue = Infinity;
  private compactTimer: ReturnType<typeof setInterval> | undefined;

  private readonly watchersByService = new Map<string, Set<Watcher>>();
  private readonly watchersAll = new Set<Watcher>();
  private watcherCount = 0;
  private readonly leaseListeners = new Map<number, Set<(reason: LeaseEndReason) => void>>();

  private readonly persistence: RegistryPersistence | undefined;
  private readonly queue: Pending[] = [];
  private loopRunning = false;
  private loopScheduled = false;
  /** State holds changes not yet durable (a batch is being written): readers wait. */
  private unsynced = false;
  private readers: Array<() => void> = [];
  private compactRequested = false;
  private compactWaiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  private closed = false;
  private loopDone: Promise<void> = Promise.resolve();
  private loopDoneResolve: (() => void) | undefined;

  constructor(options: RegistryStoreOptions = {}) {
    this.options = resolveOptions(options);
    this.history = new History(this.options.historyLimit);
    this.persistence = options.persistence;
    const snap = options.restored?.snapshot;
    this.epoch = snap?.epoch ?? randomUUID();
    if (options.restored !== undefined) this.restore(options.restored);
    if (this.persistence !== undefined && this.options.compactIntervalMs > 0) {
      this.compactTimer = setInterval(() => {
        if (this.persistence!.hasLog || this.persistence!.compactionDue) this.requestCompaction();
      }, this.options.compactIntervalMs);
      this.compactTimer.unref();
    }
  }

  /** True when mutations are written to disk before they are acknowledged. */
  get persistent(): boolean {
    return this.persistence !== undefined;
  }

  get leaseCount(): number {
    return this.leases.size;
  }

  get instanceCount(): number {
    return this.entries.size;
  }

  get watchers(): number {
    return this.watcherCount;
  }

  // ---------------------------------------------------------------- mutations

  /** Grant a lease of `ttlMs` (clamped to [minTtlMs, maxTtlMs]). */
  grant(ttlMs: number): Promise<GrantResult> {
    if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs <= 0) return Promise.reject(createError(ErrorCode.VALIDATION, `ttlMs must be a positive number, got ${String(ttlMs)}`));
    const ttl = Math.min(this.options.maxTtlMs, Math.max(this.options.minTtlMs, Math.round(ttlMs)));
    return this.submit({ kind: 'grant', ttlMs: ttl }) as Promise<GrantResult>;
  }

  /** Put (add or replace) an instance under a lease; an instance held by another lease moves to this one. */
  put(leaseId: number, instance: Instance): Promise<PutResult> {
    return this.submit({ kind: 'put', leaseId, instance: cloneInstance(instance) }) as Promise<PutResult>;
  }

  /** Remove an instance (only while held by `leaseId`, when given). */
  remove(service: string, id: string, leaseId?: number): Promise<RemoveResult> {
    return this.submit({ kind: 'remove', service, id, leaseId }) as Promise<RemoveResult>;
  }

  /** End a lease now; its instances go with it. Revoking an unknown lease is not an error. */
  revoke(leaseId: number): Promise<RevokeResult> {
    return this.submit({ kind: 'revoke', leaseId }) as Promise<RevokeResult>;
  }

  /**
   * Keep a lease alive: it now expires TTL from now. Returns undefined when the lease does
   * not exist (expired, revoked, or never granted).
   */
  keepAlive(leaseId: number): { ttlMs: number; remainingMs: number } | undefined {
    const lease = this.leases.get(leaseId);
    if (lease === undefined || this.closed) return undefined;
    lease.expiresAt = this.options.clock.now() + lease.ttlMs;
    return { ttlMs: lease.ttlMs, remainingMs: lease.ttlMs };
  }

  /** The lease's TTL and time left, or undefined. */
  leaseInfo(leaseId: number): { ttlMs: number; remainingMs: number } | undefined {
    const lease = this.leases.get(leaseId);
    if (lease === undefined) return undefined;
    return { ttlMs: lease.ttlMs, remainingMs: Math.max(0, lease.expiresAt - this.options.clock.now()) };
  }

  /**
   * Call `listener` once when the lease ends (revoked, expired, or the store shuts down),
   * after that is durable. Returns a function that removes the listener.
   */
  onLeaseEnd(leaseId: number, listener: (reason: LeaseEndReason) => void): () => void {
    let set = this.leaseListeners.get(leaseId);
    if (set === undefined) this.leaseListeners.set(leaseId, (set = new Set()));
    set.add(listener);
    return () => {
      const s = this.leaseListeners.get(leaseId);
      if (s === undefined) return;
      s.delete(listener);
      if (s.size === 0) this.leaseListeners.delete(leaseId);
    };
  }

  // ---------------------------------------------------------------- reads

  /** The instances (of one service, or all), with lease details, at a durable point. */
  list(service?: string): Promise<{ epoch: string; revision: number; instances: ListedInstance[] }> {
    return this.read(() => {
      const now = this.options.clock.now();
      const source = service === undefined ? this.entries.values() : (this.byService.get(service)?.values() ?? [].values());
      const instances: ListedInstance[] = [];
      for (const e of source) {
        const lease = this.leases.get(e.leaseId);
        instances.push({
          ...cloneInstance(e.instance),
          leaseId: e.leaseId,
          ttlMs: lease?.ttlMs ?? 0,
          leaseRemainingMs: lease === undefined ? 0 : Math.max(0, Math.round(lease.expiresAt - now)),
          revision: e.revision,
        });
      }
      return { epoch: this.epoch, revision: this.revision, instances };
    });
  }

  /**
   * Start a watch. Without `fromRevision`: a snapshot, then every change. With it: every
   * change with revision >= fromRevision, or one `compacted` message when that cannot be
   * done without a gap (history no longer holds it, other epoch, revision from the future).
   */
  watch(service: string | undefined, fromRevision?: number, epoch?: string): Promise<Watcher> {
    return this.read(() => {
      const limit = this.options.watcherBufferLimit;
      const compacted = (why: string): Watcher => {
        const w = new Watcher(this, service, limit, []);
        w.compact(why);
        return w;
      };
      if (this.closed) return compacted('the registry is shutting down');
      let initial: WatchMessage[];
      if (fromRevision === undefined) {
        initial = [{ type: 'snapshot', revision: this.revision, epoch: this.epoch, instances: this.instancesOf(service) }];
      } else {
        const why =
          epoch !== this.epoch
            ? `revision ${fromRevision} is from another registry epoch`
            : fromRevision <= this.compactedThrough
              ? `revision ${fromRevision} is compacted (history starts after ${this.compactedThrough})`
              : fromRevision > this.revision + 1
                ? `revision ${fromRevision} is ahead of the registry (at ${this.revision})`
                : undefined;
        if (why !== undefined) return compacted(why);
        initial = this.history.since(fromRevision).filter((e) => service === undefined || e.instance.service === service);
      }
      const w = new Watcher(this, service, limit, initial);
      if (initial.length <= limit) this.subscribe(w);
      return w;
    });
  }

  /** Counters for `info`. */
  info(): Omit<InfoReply, 'rss' | 'heapUsed'> {
    return {
      epoch: this.epoch,
      revision: this.revision,
      compactedThrough: this.compactedThrough,
      leases: this.leases.size,
      instances: this.entries.size,
      watchers: this.watcherCount,
      persistent: this.persistent,
    };
  }

  /** The full state as a snapshot (persistence format). Consistent only between batches. */
  snapshot(): SnapshotData {
    return {
      v: 1,
      epoch: this.epoch,
      revision: this.revision,
      compactedThrough: this.compactedThrough,
      nextLease: this.nextLease,
      leases: [...this.leases.values()].map((l) => [l.id, l.ttlMs]),
      instances: [...this.entries.values()].map((e) => [e.leaseId, e.revision, e.instance]),
      history: this.history.toArray(),
    };
  }

  // ---------------------------------------------------------------- lifecycle

  /** Compact now (between batches): snapshot + fresh log. No-op without persistence. */
  compactNow(): Promise<void> {
    if (this.persistence === undefined) return Promise.resolve();
    if (this.closed) return Promise.reject(createError(ErrorCode.CLOSED, 'the registry is shutting down'));
    return new Promise<void>((resolve, reject) => {
      this.compactWaiters.push({ resolve, reject });
      this.compactRequested = true;
      this.schedule();
    });
  }

  /** Ask for a compaction at the next quiet point of the commit loop. */
  requestCompaction(): void {
    if (this.persistence === undefined || this.closed) return;
    this.compactRequested = true;
    this.schedule();
  }

  /**
   * Stop: pending mutations finish, watchers end (their clients resume elsewhere or later),
   * keepalive streams are told 'shutdown', timers stop, a last compaction is attempted and
   * the persistence layer is closed. Leases are not expired: a restart restores them.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.compactTimer !== undefined) clearInterval(this.compactTimer);
    this.options.clock.clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    this.expiryTimerDue = Infinity;
    await this.loopDone;
    for (const w of [...this.watchersAll]) w.end();
    for (const set of [...this.watchersByService.values()]) for (const w of [...set]) w.end();
    for (const [, set] of [...this.leaseListeners]) for (const l of [...set]) l('shutdown');
    this.leaseListeners.clear();
    if (this.persistence !== undefined) {
      if (this.persistence.hasLog) {
        try {
          await this.persistence.compact(this.snapshot());
        } catch (err) {
          this.options.onWarning(`registry: final compaction failed (the log stays valid): ${(err as Error).message}`);
        }
      }
      await this.persistence.close();
    }
  }

  // ---------------------------------------------------------------- internals: watchers

  /** @internal */
  unsubscribe(w: Watcher): void {
    const set = w.service === undefined ? this.watchersAll : this.watchersByService.get(w.service);
    if (set === undefined || !set.delete(w)) return;
    this.watcherCount--;
    if (w.service !== undefined && set.size === 0) this.watchersByService.delete(w.service);
  }

  private subscribe(w: Watcher): void {
    if (w.service === undefined) this.watchersAll.add(w);
    else {
      let set = this.watchersByService.get(w.service);
      if (set === undefined) this.watchersByService.set(w.service, (set = new Set()));
      set.add(w);
    }
    this.watcherCount++;
  }

  private instancesOf(service: string | undefined): Instance[] {
    const source = service === undefined ? this.entries.values() : (this.byService.get(service)?.values() ?? [].values());
    const out: Instance[] = [];
    for (const e of source) out.push(e.instance);
    return out;
  }

  // ---------------------------------------------------------------- internals: pipeline

  private read<T>(fn: () => T): Promise<T> {
    if (!this.unsynced) {
      try {
        return Promise.resolve(fn());
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise<T>((resolve, reject) => {
      this.readers.push(() => {
        try {
          resolve(fn());
        } catch (err) {
          reject(err);
        }
      });
    });
  }

  private runReaders(): void {
    while (this.readers.length > 0 && !this.unsynced) {
      const list = this.readers;
      this.readers = [];
      for (const r of list) r();
    }
  }

  private submit(op: Op): Promise<unknown> {
    if (this.closed && op.kind !== 'expire') return Promise.reject(createError(ErrorCode.CLOSED, 'the registry is shutting down'));
    if (this.persistence === undefined) {
      // Memory only: apply and publish at once.
      const batch: Batch = { records: [], events: [], undo: [], ended: [] };
      try {
        const result = this.apply(op, batch);
        this.publish(batch);
        return Promise.resolve(result);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ op, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.loopRunning || this.loopScheduled) return;
    this.loopScheduled = true;
    this.loopDone = new Promise<void>((r) => (this.loopDoneResolve = r));
    // setImmediate: every op that arrived in this I/O phase goes into the same batch (one fsync).
    setImmediate(() => void this.loop());
  }

  private async loop(): Promise<void> {
    this.loopScheduled = false;
    this.loopRunning = true;
    try {
      while (this.queue.length > 0 || this.compactRequested) {
        if (this.queue.length > 0) await this.commitBatch(this.queue.splice(0));
        if (this.compactRequested || this.persistence?.compactionDue === true) {
          this.compactRequested = false;
          const waiters = this.compactWaiters;
          this.compactWaiters = [];
          try {
            await this.persistence?.compact(this.snapshot());
            for (const w of waiters) w.resolve();
          } catch (err) {
            this.options.onWarning(`registry: compaction failed (the log stays valid; will retry): ${(err as Error).message}`);
            for (const w of waiters) w.reject(err);
          }
        }
      }
    } finally {
      this.loopRunning = false;
      this.runReaders();
      const done = this.loopDoneResolve;
      this.loopDoneResolve = undefined;
      done?.();
      if (this.queue.length > 0) this.schedule();
    }
  }

  private async commitBatch(items: Pending[]): Promise<void> {
    const batch: Batch = { records: [], events: [], undo: [], ended: [] };
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    for (const it of items) {
      try {
        outcomes.push({ ok: true, value: this.apply(it.op, batch) });
      } catch (err) {
        outcomes.push({ ok: false, error: err });
      }
    }
    if (batch.records.length > 0) {
      this.unsynced = true;
      try {
        await this.persistence!.append(batch.records);
      } catch (err) {
        for (let i = batch.undo.length - 1; i >= 0; i--) batch.undo[i]!();
        this.unsynced = false;
        const e = isSkeinError(err) ? err : storageError(err, 'append');
        items.forEach((it, i) => {
          const o = outcomes[i]!;
          it.reject(o.ok ? e : o.error);
        });
        this.runReaders();
        return;
      }
      this.unsynced = false;
    }
    this.publish(batch);
    items.forEach((it, i) => {
      const o = outcomes[i]!;
      if (o.ok) it.resolve(o.value);
      else it.reject(o.error);
    });
    this.runReaders();
  }

  /** Make `batch`'s effects visible: history, watchers, lease listeners. */
  private publish(batch: Batch): void {
    for (const e of batch.events) {
      this.pushHistory(e);
      const msg = e as WatchMessage;
      for (const w of this.watchersAll) w.push(msg);
      const set = this.watchersByService.get(e.instance.service);
      if (set !== undefined) for (const w of set) w.push(msg);
    }
    for (const [leaseId, reason] of batch.ended) {
      const set = this.leaseListeners.get(leaseId);
      if (set === undefined) continue;
      this.leaseListeners.delete(leaseId);
      for (const l of set) l(reason);
    }
  }

  // ---------------------------------------------------------------- internals: apply

  /** Apply one op to the state; records its log record, events and undo. Throws for a bad op (nothing changed). */
  private apply(op: Op, b: Batch): unknown {
    switch (op.kind) {
      case 'grant':
        return this.applyGrant(op.ttlMs, b);
      case 'put':
        return this.applyPut(op.leaseId, op.instance, b);
      case 'remove':
        return this.applyRemove(op.service, op.id, op.leaseId, b);
      case 'revoke':
        return this.applyEnd(op.leaseId, 'revoke', b);
      case 'expire': {
        const lease = this.leases.get(op.leaseId);
        if (lease === undefined) return { found: false, removed: 0, revision: this.revision };
        lease.expiring = false;
        const now = this.options.clock.now();
        if (lease.expiresAt > now) {
          // Kept alive while the op waited.
          if (!lease.scheduled) this.scheduleExpiry(lease, lease.expiresAt);
          return { found: true, removed: 0, revision: this.revision };
        }
        return this.applyEnd(op.leaseId, 'expire', b);
      }
    }
  }

  private applyGrant(ttlMs: number, b: Batch): GrantResult {
    const id = this.nextLease++;
    const lease: Lease = { id, ttlMs, expiresAt: this.options.clock.now() + ttlMs, keys: new Set(), scheduled: false, expiring: false };
    this.leases.set(id, lease);
    this.scheduleExpiry(lease, lease.expiresAt);
    b.records.push({ op: 'grant', lease: id, ttl: ttlMs });
    b.undo.push(() => this.leases.delete(id));
    return { leaseId: id, ttlMs };
  }

  private applyPut(leaseId: number, instance: Instance, b: Batch): PutResult {
    const lease = this.leases.get(leaseId);
    if (lease === undefined) throw createError(ErrorCode.LEASE_LOST, `lease ${leaseId} not found (expired or revoked)`);
    const key = keyOf(instance.service, instance.id);
    const prev = this.entries.get(key);
    const revision = ++this.revision;
    this.setEntry(key, { instance, leaseId, revision });
    const prevLease = prev !== undefined && prev.leaseId !== leaseId ? this.leases.get(prev.leaseId) : undefined;
    prevLease?.keys.delete(key);
    const had = lease.keys.has(key);
    lease.keys.add(key);
    b.records.push({ op: 'put', lease: leaseId, rev: revision, inst: instance });
    b.events.push({ type: prev === undefined ? 'added' : 'updated', revision, instance });
    b.undo.push(() => {
      if (prev === undefined) this.deleteEntry(key);
      else this.setEntry(key, prev);
      if (!had) lease.keys.delete(key);
      prevLease?.keys.add(key);
    });
    return { revision };
  }

  private applyRemove(service: string, id: string, leaseId: number | undefined, b: Batch): RemoveResult {
    const key = keyOf(service, id);
    const prev = this.entries.get(key);
    if (prev === undefined || (leaseId !== undefined && prev.leaseId !== leaseId)) return { removed: false, revision: this.revision };
    const revision = ++this.revision;
    this.deleteEntry(key);
    const lease = this.leases.get(prev.leaseId);
    lease?.keys.delete(key);
    b.records.push({ op: 'remove', rev: revision, service, id });
    b.events.push({ type: 'removed', revision, instance: prev.instance });
    b.undo.push(() => {
      this.setEntry(key, prev);
      lease?.keys.add(key);
    });
    return { removed: true, revision };
  }

  private applyEnd(leaseId: number, kind: 'revoke' | 'expire', b: Batch): RevokeResult {
    const lease = this.leases.get(leaseId);
    if (lease === undefined) return { found: false, removed: 0, revision: this.revision };
    const removed: Array<[string, string, number]> = [];
    const gone: Array<[string, Entry]> = [];
    for (const key of lease.keys) {
      const e = this.entries.get(key);
      if (e === undefined) continue;
      const revision = ++this.revision;
      this.deleteEntry(key);
      gone.push([key, e]);
      removed.push([e.instance.service, e.instance.id, revision]);
      b.events.push({ type: 'removed', revision, instance: e.instance });
    }
    this.leases.delete(leaseId);
    b.records.push({ op: kind, lease: leaseId, removed });
    b.ended.push([leaseId, kind === 'revoke' ? 'revoked' : 'expired']);
    b.undo.push(() => {
      this.leases.set(leaseId, lease);
      for (const [key, e] of gone) this.setEntry(key, e);
      if (!lease.scheduled) this.scheduleExpiry(lease, Math.max(lease.expiresAt, this.options.clock.now() + (kind === 'expire' ? this.options.expiryRetryMs : 0)));
    });
    return { found: true, removed: removed.length, revision: this.revision };
  }

  private setEntry(key: string, e: Entry): void {
    this.entries.set(key, e);
    let m = this.byService.get(e.instance.service);
    if (m === undefined) this.byService.set(e.instance.service, (m = new Map()));
    m.set(e.instance.id, e);
  }

  private deleteEntry(key: string): void {
    const e = this.entries.get(key);
    if (e === undefined) return;
    this.entries.delete(key);
    const m = this.byService.get(e.instance.service);
    if (m === undefined) return;
    m.delete(e.instance.id);
    if (m.size === 0) this.byService.delete(e.instance.service);
  }

  // ---------------------------------------------------------------- internals: expiry

  private scheduleExpiry(lease: Lease, due: number): void {
    lease.scheduled = true;
    this.heap.push({ due, leaseId: lease.id });
    this.armExpiry();
  }

  private armExpiry(): void {
    if (this.closed) return;
    const top = this.heap.peek();
    const due = top?.due ?? Infinity;
    if (due === this.expiryTimerDue) return;
    const clock = this.options.clock;
    clock.clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    this.expiryTimerDue = due;
    if (due === Infinity) return;
    this.expiryTimer = clock.setTimeout(() => {
      this.expiryTimer = undefined;
      this.expiryTimerDue = Infinity;
      this.sweep();
    }, Math.max(0, due - clock.now()));
    (this.expiryTimer as { unref?: () => void } | undefined)?.unref?.();
  }

  /** Pop every heap entry that is due: renewed leases go back in, expired ones become ops. */
  private sweep(): void {
    if (this.closed) return;
    const now = this.options.clock.now();
    for (let top = this.heap.peek(); top !== undefined && top.due <= now; top = this.heap.peek()) {
      this.heap.pop();
      const lease = this.leases.get(top.leaseId);
      if (lease === undefined || !lease.scheduled) continue;
      lease.scheduled = false;
      if (lease.expiresAt > now) {
        this.queueExpiry(lease, lease.expiresAt);
        continue;
      }
      if (lease.expiring) continue;
      lease.expiring = true;
      this.submit({ kind: 'expire', leaseId: lease.id }).catch(() => {
        // A failed write is undone and the expiry retried after expiryRetryMs (see applyEnd).
      });
    }
    this.armExpiry();
  }

  private queueExpiry(lease: Lease, due: number): void {
    lease.scheduled = true;
    this.heap.push({ due, leaseId: lease.id });
  }

  // ---------------------------------------------------------------- internals: restore

  private restore(r: RestoredState): void {
    const now = this.options.clock.now();
    const grace = (ttl: number): number => now + (this.options.restoreGraceMs ?? ttl);
    const snap = r.snapshot;
    if (snap !== undefined) {
      this.revision = snap.revision;
      this.compactedThrough = snap.compactedThrough;
      this.nextLease = snap.nextLease;
      for (const [id, ttl] of snap.leases) this.leases.set(id, { id, ttlMs: ttl, expiresAt: grace(ttl), keys: new Set(), scheduled: false, expiring: false });
      for (const [leaseId, revision, instance] of snap.instances) {
        const lease = this.leases.get(leaseId);
        if (lease === undefined) {
          this.options.onWarning(`registry: snapshot instance ${instance.service}/${instance.id} refers to unknown lease ${leaseId}; dropped`);
          continue;
        }
        const key = keyOf(instance.service, instance.id);
        this.setEntry(key, { instance, leaseId, revision });
        lease.keys.add(key);
      }
      for (const e of snap.history) this.pushHistory(e);
    }
    for (const rec of r.records) this.replay(rec, grace);
    for (const lease of this.leases.values()) this.queueExpiry(lease, lease.expiresAt);
    this.armExpiry();
  }

  private pushHistory(e: StoreEvent): void {
    const evicted = this.history.push(e);
    if (evicted !== undefined) this.compactedThrough = Math.max(this.compactedThrough, evicted.revision);
  }

  /** Apply one log record while restoring (no validation beyond consistency; no watchers yet). */
  private replay(rec: LogRecord, grace: (ttl: number) => number): void {
    switch (rec.op) {
      case 'grant':
        this.leases.set(rec.lease, { id: rec.lease, ttlMs: rec.ttl, expiresAt: grace(rec.ttl), keys: new Set(), scheduled: false, expiring: false });
        this.nextLease = Math.max(this.nextLease, rec.lease + 1);
        return;
      case 'put': {
        const lease = this.leases.get(rec.lease);
        if (lease === undefined) {
          this.options.onWarning(`registry: log put of ${rec.inst.service}/${rec.inst.id} under unknown lease ${rec.lease}; skipped`);
          return;
        }
        const key = keyOf(rec.inst.service, rec.inst.id);
        const prev = this.entries.get(key);
        if (prev !== undefined && prev.leaseId !== rec.lease) this.leases.get(prev.leaseId)?.keys.delete(key);
        this.setEntry(key, { instance: rec.inst, leaseId: rec.lease, revision: rec.rev });
        lease.keys.add(key);
        this.revision = Math.max(this.revision, rec.rev);
        this.pushHistory({ type: prev === undefined ? 'added' : 'updated', revision: rec.rev, instance: rec.inst });
        return;
      }
      case 'remove': {
        const key = keyOf(rec.service, rec.id);
        const prev = this.entries.get(key);
        this.revision = Math.max(this.revision, rec.rev);
        if (prev === undefined) return;
        this.deleteEntry(key);
        this.leases.get(prev.leaseId)?.keys.delete(key);
        this.pushHistory({ type: 'removed', revision: rec.rev, instance: prev.instance });
        return;
      }
      case 'revoke':
      case 'expire': {
        for (const [service, id, rev] of rec.removed) {
          const key = keyOf(service, id);
          const prev = this.entries.get(key);
          this.revision = Math.max(this.revision, rev);
          if (prev === undefined) continue;
          this.deleteEntry(key);
          this.pushHistory({ type: 'removed', revision: rev, instance: prev.instance });
        }
        this.leases.delete(rec.lease);
        return;
      }
      default:
        this.options.onWarning(`registry: unknown log record ${JSON.stringify(rec).slice(0, 200)}; skipped`);
    }
  }
}

/** A SkeinError for the storage layer: RESOURCE_EXHAUSTED for a full disk or quota, UNAVAILABLE otherwise. */
export function storageError(err: unknown, what: string): SkeinError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const full = code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG';
  return createError(ErrorCode.STORAGE, `registry storage failed (${what}): ${(err as Error)?.message ?? String(err)}`, { status: full ? 'RESOURCE_EXHAUSTED' : 'UNAVAILABLE', cause: err });
}
