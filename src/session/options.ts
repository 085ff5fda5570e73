/**
 * Session options, their defaults, and the one place they are resolved.
 */
import type { PeerInfo } from '../transport/transport.js';
import { createError, ErrorCode } from '../errors.js';
import { Limits } from '../wire/frame.js';

export interface SessionOptions {
  /** Largest frame payload (so: largest message) this side accepts, in bytes. @default 4194304 (4 MiB) */
  maxFrameSize?: number;
  /** Initial receive window per stream: bytes the peer may send on one stream before this side grants more. @default 1048576 (1 MiB) */
  streamWindow?: number;
  /** Initial receive window for the whole connection. @default 16777216 (16 MiB) */
  connectionWindow?: number;
  /** Server: how many streams a client may have open at once. @default 1024 */
  maxConcurrentStreams?: number;
  /**
   * Keepalive interval in ms. Both sides propose one and the lower wins; 0 proposes none and
   * takes the peer's (keepalive is off only when both sides say 0). @default 5000
   */
  heartbeatMs?: number;
  /**
   * Close the connection once this many PINGs in a row (one per silent heartbeat interval)
   * went unanswered and no other byte arrived: a dead peer is detected (keepaliveMisses + 1)
   * to (keepaliveMisses + 2) intervals after its last byte. @default 3
   */
  keepaliveMisses?: number;
  /** Close the connection gracefully after this long with no stream open (0 = never). @default 0 */
  idleTimeoutMs?: number;
  /** Fail the connection if the handshake has not completed within this time. @default 10000 */
  handshakeTimeoutMs?: number;
  /**
   * Compression algorithms offered (client, in preference order) or accepted (server). The
   * server picks the client's first choice that it accepts. @default [] (none)
   */
  compression?: string[];
  /** Compress DATA payloads of at least this many bytes (when compression was negotiated). @default 1024 */
  compressionThreshold?: number;
  /** Client: an opaque credential sent in HELLO to the server's `authenticate` hook. */
  credential?: Buffer | string;
  /**
   * Server: decide whether a connection may proceed, before any call on it is processed.
   * Return any value other than `false` to accept (it becomes the session's `identity`);
   * return `false` or throw to refuse (the client gets UNAUTHENTICATED, SKEIN_ERR_AUTH_REFUSED).
   * Bounded by `handshakeTimeoutMs`.
   */
  authenticate?: (credential: Buffer | undefined, peer: PeerInfo) => unknown;
}

export type ResolvedSessionOptions = Readonly<Required<Omit<SessionOptions, 'credential' | 'authenticate'>>> & Pick<SessionOptions, 'credential' | 'authenticate'>;

export const sessionDefaults = Object.freeze({
  maxFrameSize: 4 * 1024 * 1024,
  streamWindow: 1024 * 1024,
  connectionWindow: 16 * 1024 * 1024,
  maxConcurrentStreams: 1024,
  heartbeatMs: 5000,
  keepaliveMisses: 3,
  idleTimeoutMs: 0,
  handshakeTimeoutMs: 10000,
  compression: [] as string[],
  compressionThreshold: 1024,
});

function int(name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw createError(ErrorCode.INVALID_OPTIONS, `${name} must be an integer in [${min}, ${max}], got ${v}`);
  return v;
}

/** Resolved options per input object: a server resolves its options once, not per connection. */
const resolved = new WeakMap<SessionOptions, ResolvedSessionOptions>();

export function resolveSessionOptions(o: SessionOptions = {}): ResolvedSessionOptions {
  const cached = resolved.get(o);
  if (cached !== undefined) return cached;
  const r = resolveFresh(o);
  resolved.set(o, r);
  return r;
}

function resolveFresh(o: SessionOptions): ResolvedSessionOptions {
  const r = { ...sessionDefaults, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) } as ResolvedSessionOptions;
  int('maxFrameSize', r.maxFrameSize, Limits.MIN_MAX_FRAME_SIZE, Limits.MAX_MAX_FRAME_SIZE);
  int('streamWindow', r.streamWindow, 1024, Limits.MAX_WINDOW);
  int('connectionWindow', r.connectionWindow, 1024, Limits.MAX_WINDOW);
  int('maxConcurrentStreams', r.maxConcurrentStreams, 1, 0x7fffffff);
  int('heartbeatMs', r.heartbeatMs, 0, 0x7fffffff);
  int('keepaliveMisses', r.keepaliveMisses, 1, 1000);
  int('idleTimeoutMs', r.idleTimeoutMs, 0, 0x7fffffff);
  int('handshakeTimeoutMs', r.handshakeTimeoutMs, 1, 0x7fffffff);
  int('compressionThreshold', r.compressionThreshold, 0, 0x7fffffff);
  return Object.freeze(r);
}
