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

/** Anything with a connectivity state and 'state' events (a connection, a channel). */
export interface StateSource {
  readonly state: ConnectivityStateValue;
  on(event: 'state', listener: (change: StateChange) => void): unknown;
  off(event: 'state', listener: (change: StateChange) => void): unknown;
}

/**
 * Every state change of `source` from now on, as an async iterator that ends after
 * SHUTDOWN (the last item) or when the consumer stops (`return()` removes the listener).
 */
export function stateChanges(source: StateSource): AsyncIterableIterator<StateChange> {
  const queue: StateChange[] = [];
  let wake: (() => void) | undefined;
  let finished = source.state === ConnectivityState.SHUTDOWN;
  const onState = (c: StateChange): void => {
    queue.push(c);
    if (c.state === ConnectivityState.SHUTDOWN) {
      finished = true;
      source.off('state', onState);
    }
    wake?.();
  };
  if (!finished) source.on('state', onState);
  const it: AsyncIterableIterator<StateChange> = {
    [Symbol.asyncIterator]: () => it,
    next: async () => {
      while (queue.length === 0) {
        if (finished) return { done: true, value: undefined };
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
      return { done: false, value: queue.shift()! };
    },
    return: async () => {
      finished = true;
      source.off('state', onState);
      wake?.();
      return { done: true, value: undefined };
    },
  };
  return it;
}

/** Move `holder` to `state` and emit the change as a 'state' event (nothing when unchanged). */
export function changeState(holder: { state: ConnectivityStateValue; emit(event: 'state', change: StateChange): unknown }, state: ConnectivityStateValue, error?: import('../errors.js').SkeinError): void {
  const previous = holder.state;
  if (previous === state) return;
  holder.state = state;
  const change: StateChange = { state, previous };
  if (error !== undefined) change.error = error;
  holder.emit('state', change);
}
