/**
 * Admission gates: cheap admission control the server runs around a call without wrapping
 * its handler (so it keeps its fast path: no IncomingCall, no extra promise per call).
 *
 * A server interceptor may also carry a `gate` (a `GatedInterceptor`). When such
 * interceptors come first in the server's chain (its default policies come first of all),
 * the server runs their gates instead of composing them: `admit` right before the handler
 * would run, `release` once the call is over. Anywhere else in the chain the interceptor
 * runs as an ordinary interceptor — same decisions, the slower path — so that an
 * interceptor placed after, say, an authentication interceptor still runs after it.
 *
 * The server's own load reporting is its first gate (src/rpc/server.ts `loadGate`), so every
 * call is timed once, by the server, whatever gates follow.
 *
 * Contract for a gate (load shedding is the policy built on it: src/resilience/shed.ts):
 *   - `admit` is synchronous and cheap; it returns a ticket (>= 0) that `release` will get
 *     back, NOT_GATED when this call is none of its business (no `release` follows), or a
 *     SkeinError to refuse the call with (the handler does not run; the error's metadata
 *     goes out as trailers);
 *   - `release` is called exactly once per ticket: with the time since admission, the error
 *     the call ended with (undefined: OK) and whether the client went away (cancelled,
 *     connection lost) — never throws.
 */
import type { SkeinError } from '../errors.js';
import type { MethodKindValue } from './define.js';
import type { ServerInterceptor } from './types.js';

/** `admit` answer for a call the gate does not hold. */
export const NOT_GATED = -1;

export interface AdmissionGate {
  admit(service: string, method: string, kind: MethodKindValue): number | SkeinError;
  release(ticket: number, kind: MethodKindValue, elapsedMs: number, err: SkeinError | undefined, cancelled: boolean): void;
}

/** A server interceptor that can also run as an admission gate. */
export type GatedInterceptor = ServerInterceptor & { readonly gate?: AdmissionGate };

/**
 * Split a chain into the gates the server can run (the leading interceptors that have
 * one) and the interceptors it must compose (the rest, in order).
 */
export function splitGates(chain: readonly ServerInterceptor[]): { gates: AdmissionGate[]; rest: ServerInterceptor[] } {
  let n = 0;
  while (n < chain.length && (chain[n] as GatedInterceptor).gate !== undefined) n++;
  return { gates: chain.slice(0, n).map((i) => (i as GatedInterceptor).gate!), rest: chain.slice(n) };
}
