/**
 * Connectivity states of a client connection (docs/lifecycle.md).
 *
 *   IDLE ──call or connect()──▶ CONNECTING ──handshake ok──▶ READY
 *    ▲                            │    ▲                         │
 *    │                      failure    └── backoff elapsed ──┐   │ connection lost
 *    │                            ▼                          │   ▼
 *    └──── peer drained (GOAWAY) ─ TRANSIENT_FAILURE ◀───────┴───┘
 *   any state ──close()──▶ SHUTDOWN (final)
 */
export const ConnectivityState = {
  IDLE: 'IDLE',
  CONNECTING: 'CONNECTING',
  READY: 'READY',
  TRANSIENT_FAILURE: 'TRANSIENT_FAILURE',
  SHUTDOWN: 'SHUTDOWN',
} as const;
export type ConnectivityStateValue = (typeof ConnectivityState)[keyof typeof ConnectivityState];

/** One transition, as delivered by `status()` and the 'state' event. */
export interface StateChange {
  state: ConnectivityStateValue;
  previous: ConnectivityStateValue;
  /** Why the connection left READY/CONNECTING, when it failed. */
  error?: import('../errors.js').SkeinError;
}
