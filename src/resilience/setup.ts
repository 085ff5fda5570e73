/**
 * Makes the resilience chains the default of every server and client (issue 4: "on by
 * default where it is safe"): registers the factories with the RPC layer's hook
 * (src/rpc/policies.ts) and names the option types there. Called once by the package index.
 */
import { setPolicyFactories } from '../rpc/policies.js';
import { clientResilience, type ClientResilienceOptions } from './client-policy.js';
import { serverResilience, type ServerResilienceOptions } from './server-policy.js';

declare module '../rpc/policies.js' {
  interface PolicyTypes {
    server: ServerResilienceOptions;
    client: ClientResilienceOptions;
  }
}

/** Register the default policies (idempotent). */
export function setupResilience(): void {
  setPolicyFactories({
    server: (options) => serverResilience(options ?? {}),
    client: (_service, options) => clientResilience(options ?? {}),
  });
}
