/**
 * Default policies: how `createServer()` and `connect()` get their resilience chain when
 * the caller does not say otherwise (issue 4: "on by default where it is safe").
 *
 * The policies themselves live in the resilience layer, above this one, so this module
 * only holds the hook: that layer registers its factories here once (`setPolicyFactories`,
 * called by the package index) and names its option types by augmenting `PolicyTypes`
 * (as the channel layer does with `ChannelTypes`). Without that layer — a program that
 * imports only `skein/internal` pieces — servers and clients have no default policies.
 *
 * The chain a factory returns goes OUTSIDE the user's own interceptors: the limiters see a
 * call before anything else spends work on it, and the client's retries wrap everything
 * the user added (so an interceptor that adds metadata runs for every attempt).
 */
import type { MethodDef } from './define.js';
import type { ClientInterceptor, ServerInterceptor } from './types.js';

/**
 * Filled in by the resilience layer with `{ server: ServerResilienceOptions; client:
 * ClientResilienceOptions }` (src/resilience/setup.ts).
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface PolicyTypes {}

/** Options of the server's default policies (`createServer({ resilience })`). */
export type ServerPolicyOptions = PolicyTypes extends { server: infer S } ? S : Record<string, unknown>;
/** Options of a client's default policies (`connect(Def, { resilience })`). */
export type ClientPolicyOptions = PolicyTypes extends { client: infer C } ? C : Record<string, unknown>;

/** The per-method chains of one client: asked once per method when the client is built. */
export type ClientPolicyChains = (method: string, def: MethodDef) => ClientInterceptor[];

export interface PolicyFactories {
  /** The server's chain, outermost first, built once per server. */
  server(options: ServerPolicyOptions | undefined): ServerInterceptor[];
  /** A client's chains (one budget, one set of breakers per client), built once per client. */
  client(service: string, options: ClientPolicyOptions | undefined): ClientPolicyChains;
}

let factories: PolicyFactories | undefined;

/** @internal The resilience layer registers its factories here (once, from the package index). */
export function setPolicyFactories(f: PolicyFactories | undefined): void {
  factories = f;
}

/** The server's default chain, or [] when turned off (`false`) or not set up. */
export function serverPolicies(options: ServerPolicyOptions | false | undefined): ServerInterceptor[] {
  if (options === false || factories === undefined) return [];
  return factories.server(options);
}

/** A client's default chains, or undefined when turned off (`false`) or not set up. */
export function clientPolicies(service: string, options: ClientPolicyOptions | false | undefined): ClientPolicyChains | undefined {
  if (options === false || factories === undefined) return undefined;
  return factories.client(service, options);
}
