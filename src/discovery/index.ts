/**
 * Discovery: public names of the discovery layer (docs/discovery.md). Every name is listed
 * explicitly (no `export *`).
 *
 * Importing this module registers nothing; `setupDiscovery()` registers the built-in
 * plugins (static:, dns:, multicast:). The embedded registry (skein:) and the etcd adapter
 * (etcd:) register themselves through `registerDiscovery` from their own setup functions.
 */
import { setup as setupDns } from './resolver-dns.js';
import { setup as setupStatic } from './resolver-static.js';
import { setup as setupMulticast } from './multicast.js';

export type { AbortOptions, Instance, ResolverEvent, Resolver, RegisterOptions, Registration, Registrar, DiscoveryPlugin } from './types.js';

export { registerDiscovery, unregisterDiscovery, discoverySchemes, discoveryFor, resolverFor, registrarFor, parseDiscoveryUrl, discoveryHosts } from './registry.js';
export type { RegisterDiscoveryOptions } from './registry.js';

export { StaticResolver, staticDiscovery, parseStaticUrl, ANY_SERVICE } from './resolver-static.js';
export type { StaticConfig } from './resolver-static.js';

export { DnsResolver, dnsDiscovery, parseDnsUrl, DEFAULT_DNS_PORT, DEFAULT_DNS_REFRESH_MS, DEFAULT_DNS_TIMEOUT_MS, SERVICE_PLACEHOLDER } from './resolver-dns.js';
export type { DnsResolverOptions, DnsConfig, DnsSrvRecord, DnsAddress } from './resolver-dns.js';

export {
  MulticastResolver,
  MulticastRegistrar,
  MulticastRegistration,
  multicastDiscovery,
  parseMulticastUrl,
  encodeMessage as encodeMulticastMessage,
  decodeMessage as decodeMulticastMessage,
  DEFAULT_MULTICAST_GROUP,
  DEFAULT_MULTICAST_PORT,
  DEFAULT_MULTICAST_IFACE,
  DEFAULT_MULTICAST_TTL_MS,
  MIN_MULTICAST_TTL_MS,
  MAX_DATAGRAM_BYTES,
  MULTICAST_MAGIC,
  MULTICAST_VERSION,
} from './multicast.js';
export type { MulticastOptions, MulticastConfig, MulticastStats, MulticastMessage } from './multicast.js';

export { WatchFeed, diffInstances, sameInstance } from './watch-feed.js';
export type { WatchFeedOptions } from './watch-feed.js';

/** Register the built-in discovery plugins: static:, dns:, multicast:. Idempotent. */
export function setupDiscovery(): void {
  setupStatic();
  setupDns();
  setupMulticast();
}
