/**
 * The pipe's defaults in one place (docs/protocol.md §14.6, docs/pipe.md "Defaults"), and
 * the session options every pipe connection uses.
 */
import type { SessionOptions } from '../session/options.js';

export const PipeDefaults = Object.freeze({
  /** Sender: bytes per DATA message. */
  chunkSize: 256 * 1024,
  /** Receiver: bytes a sender may have sent and not had acknowledged (ACCEPT). */
  window: 8 * 1024 * 1024,
  /** Smallest window a receiver offers. */
  minWindow: 64 * 1024,
  /** Largest window a receiver offers. */
  maxWindow: 1024 * 1024 * 1024,
  /** Receiver: acknowledge at the latest this long after the first unacknowledged byte. */
  ackDelayMs: 50,
  /** Session keepalive of pipe connections (§14.1). */
  heartbeatMs: 1000,
  keepaliveMisses: 3,
  /** Sender reconnect backoff: 100 ms, ×2, at most 5 s, full jitter. */
  backoffInitialMs: 100,
  backoffMultiplier: 2,
  backoffMaxMs: 5000,
  /** Sender: give up after this long without an accepted attachment. */
  retryTimeoutMs: 60_000,
  /** Receiver: give up a transfer after this long without an attachment. */
  resumeTimeoutMs: 60_000,
  /** Listener: how long `close()` lets a finished sender hang up by itself. */
  closeGraceMs: 2000,
});

/**
 * Session options of the listener: the pipe's heartbeat, and receive windows large enough
 * that the session's flow control (§6) never limits the pipe's own window.
 */
export function listenerSessionOptions(window: number): SessionOptions {
  const streamWindow = Math.min(0x7fffffff, Math.max(16 * 1024 * 1024, 2 * window));
  return {
    heartbeatMs: PipeDefaults.heartbeatMs,
    keepaliveMisses: PipeDefaults.keepaliveMisses,
    streamWindow,
    connectionWindow: Math.min(0x7fffffff, 2 * streamWindow),
  };
}
