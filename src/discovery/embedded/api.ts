/**
 * The embedded registry's wire API: the `skein.registry` service definition and its
 * messages, shared by the server (service.ts) and the `skein://` plugin (plugin.ts).
 * docs/registry.md describes every method, the lease rules and the watch protocol.
 *
 *   grant      unary         { ttlMs }                      → { leaseId, ttlMs }
 *   keepAlive  bidi          { leaseId } every ttl/3        → { leaseId, ttlMs, remainingMs } per ping;
 *                                                             ends NOT_FOUND 'lease lost' once the lease is gone
 *   put        unary         { leaseId, instance }          → { revision }            (durable before the reply)
 *   remove     unary         { service, id, leaseId? }      → { removed, revision }
 *   revoke     unary         { leaseId }                    → { found, removed, revision }
 *   list       unary         { service? }                   → { epoch, revision, instances (with lease time left) }
 *   watch      server stream { service?, fromRevision?, epoch? } → snapshot | added | updated | removed | compacted
 *   info       unary         {}                             → counters
 */
import { bidi, serverStream, service, unary } from '../../rpc/define.js';
import type { Instance } from '../types.js';

/** The name the registry is served under. */
export const REGISTRY_SERVICE_NAME = 'skein.registry';

/** The port `skein registry` listens on when `--port` is not given, and the default of `skein://host`. */
export const DEFAULT_REGISTRY_PORT = 7700;

export interface GrantRequest {
  /** Lease time-to-live in ms (bounded by the registry's minTtlMs/maxTtlMs). */
  ttlMs: number;
}
export interface GrantReply {
  leaseId: number;
  ttlMs: number;
}

export interface KeepAliveRequest {
  leaseId: number;
}
export interface KeepAliveReply {
  leaseId: number;
  ttlMs: number;
  /** Time left before the lease expires, ms (a full TTL right after this ping). */
  remainingMs: number;
}

export interface PutRequest {
  leaseId: number;
  instance: Instance;
}
export interface PutReply {
  /** The revision of this change. */
  revision: number;
}

export interface RemoveRequest {
  service: string;
  id: string;
  /** Only remove the instance while it is held by this lease (protects a newer registration). */
  leaseId?: number;
}
export interface RemoveReply {
  removed: boolean;
  /** The revision of the removal, or the current revision when nothing was removed. */
  revision: number;
}

export interface RevokeRequest {
  leaseId: number;
}
export interface RevokeReply {
  /** False when the lease did not exist (already expired or revoked): revoking is idempotent. */
  found: boolean;
  /** How many instances went with it. */
  removed: number;
  revision: number;
}

export interface ListRequest {
  /** One service; all services when omitted. */
  service?: string;
}
/** An instance as `list` reports it: with its lease and the time the lease has left. */
export interface ListedInstance extends Instance {
  leaseId: number;
  ttlMs: number;
  /** Lease time left, ms. */
  leaseRemainingMs: number;
  /** The revision of the instance's last change. */
  revision: number;
}
export interface ListReply {
  epoch: string;
  revision: number;
  instances: ListedInstance[];
}

export interface WatchRequest {
  /** One service; all services when omitted. */
  service?: string;
  /**
   * Resume: send the changes with revision >= fromRevision (no snapshot). Needs `epoch`
   * (from the snapshot that started the history). When the registry no longer holds that
   * revision (compacted history, other epoch, revision from the future) the answer is one
   * `compacted` message and the end of the stream.
   */
  fromRevision?: number;
  /** The registry epoch the revision belongs to (from a snapshot or compacted message). */
  epoch?: string;
}

export type WatchChangeType = 'added' | 'updated' | 'removed';

/** What a watch stream carries, in revision order. */
export type WatchMessage =
  /** The full set of instances at `revision`; first on a new watch. */
  | { type: 'snapshot'; revision: number; epoch: string; instances: Instance[] }
  | { type: WatchChangeType; revision: number; instance: Instance }
  /**
   * The registry cannot continue this watch without a gap (history compacted, other epoch,
   * or the watcher fell too far behind): resync with a new watch without fromRevision.
   * Always the last message of its stream.
   */
  | { type: 'compacted'; revision: number; epoch: string; reason: string };

export interface InfoReply {
  epoch: string;
  revision: number;
  /** Revisions up to this one are no longer in the history (resuming from them gives `compacted`). */
  compactedThrough: number;
  leases: number;
  instances: number;
  watchers: number;
  /** True when state is kept on disk (`--data`). */
  persistent: boolean;
  /** Resident set size of the registry process, bytes. */
  rss: number;
  /** V8 heap in use in the registry process, bytes (includes garbage not yet collected). */
  heapUsed: number;
}

/** The registry service definition. */
export const RegistryService = service(REGISTRY_SERVICE_NAME, {
  grant: unary<GrantRequest, GrantReply>(),
  keepAlive: bidi<KeepAliveRequest, KeepAliveReply>(),
  put: unary<PutRequest, PutReply>(),
  remove: unary<RemoveRequest, RemoveReply>(),
  revoke: unary<RevokeRequest, RevokeReply>({ idempotent: true }),
  list: unary<ListRequest, ListReply>({ idempotent: true }),
  watch: serverStream<WatchRequest, WatchMessage>(),
  info: unary<Record<string, never>, InfoReply>({ idempotent: true }),
});
export type RegistryServiceDef = typeof RegistryService;
