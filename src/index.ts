/**
 * skein — public API. Every name is listed explicitly (no `export *`).
 *
 * Plugin families register here, once (STYLE item 2): importing a plugin file registers
 * nothing; the setup calls at the bottom of this file do.
 */
import { setupBalance } from './balance/index.js';
import { setupChannel } from './channel/index.js';
import { setupResilience } from './resilience/index.js';
import { registerDiscovery, setupDiscovery } from './discovery/index.js';
import { setup as setupEmbeddedDiscovery } from './discovery/embedded/plugin.js';
import type { DiscoveryPlugin, Registrar, Resolver } from './discovery/types.js';

export { SkeinError, ProtocolError, Status, ErrorCode, statusName, toStatus, isSkeinError, createError } from './errors.js';
export type { StatusName, StatusCode, ErrorCodeValue, SkeinErrorOptions } from './errors.js';

export { service, unary, serverStream, clientStream, bidi, MethodKind } from './rpc/define.js';
export type { ServiceDef, MethodDef, MethodMap, MethodOptions, MethodKindValue } from './rpc/define.js';
export { createServer, implement, Server } from './rpc/server.js';
export type { ServerOptions, ServerEvents, BoundAddress } from './rpc/server.js';
export { connect } from './rpc/client.js';
export type { Client, ClientOptions, ClientControl, ClientBase, AnyClient, ChannelClient, ChannelClientControl, DiscoveryClientOptions } from './rpc/client.js';
export { compose } from './rpc/types.js';
export type {
  CallOptions,
  CallContext,
  Metadata,
  Handlers,
  HandlerFor,
  ImplementedService,
  ResponseStream,
  RequestSource,
  ClientMethods,
  ClientMethod,
  OutgoingCall,
  Invoke,
  ClientInterceptor,
  IncomingCall,
  Handle,
  ServerInterceptor,
  UnaryHandler,
  ServerStreamHandler,
  ClientStreamHandler,
  BidiHandler,
} from './rpc/types.js';
export { pushable } from './util/pushable.js';
export type { Pushable } from './util/pushable.js';
export { pipe, pipeListen, pipeSend, byteChunks, collectBytes, PipeReceiver, PipeSender, PipeService, PIPE_SERVICE, PipeDefaults } from './pipe/index.js';
export type { PipeListenOptions, PipeReceiverEvents, PipeProgress, PipeResult, PipeAttachInfo, PipeSendOptions, PipeSendAttachInfo, ByteChunksOptions, CollectBytesOptions } from './pipe/index.js';

export { ConnectivityState } from './session/connectivity.js';
export type { ConnectivityStateValue, StateChange } from './session/connectivity.js';
export { ClientConnection } from './session/client-connection.js';
export type { ClientConnectionOptions } from './session/client-connection.js';
export type { SessionOptions } from './session/options.js';
export type { BackoffOptions } from './util/backoff.js';

export { protobufCodec, loadProtoType, availableCompressors } from './codec/index.js';
export type { Codec, Compressor } from './codec/index.js';
export type { TlsOptions, PeerInfo, ListenOptions } from './transport/transport.js';

export { Channel, Subchannel } from './channel/index.js';
export type { ChannelEvents, SubchannelCounters } from './channel/index.js';
export { registerPicker, pickerFor, pickerNames, roundRobin, weighted, leastInflight, random, p2cEwma, ringHash, load } from './balance/index.js';
export type { Picker, PickerBuilder, PickerOptions, PickerSubchannel, PickInfo, PickResult, CallOutcome, LoadReport } from './balance/index.js';
export { Health, HealthStatus, HealthService, HEALTH_SERVICE } from './observe/index.js';
export type { HealthStatusValue, HealthRequest, HealthReply } from './observe/index.js';
export type { LoadSample } from './observe/index.js';
export { registerDiscovery, unregisterDiscovery, discoverySchemes, discoveryFor, resolverFor, registrarFor, parseDiscoveryUrl, setupDiscovery } from './discovery/index.js';
export type { Instance, Resolver, ResolverEvent, Registrar, Registration, RegisterOptions, DiscoveryPlugin, RegisterDiscoveryOptions } from './discovery/index.js';
export { embeddedDiscovery, openRegistry, Registry } from './discovery/embedded/index.js';
export type { RegistryOptions } from './discovery/embedded/index.js';

/**
 * `etcd:` is registered lazily: the adapter (src/engines/etcd.ts) and the etcd3 client it
 * imports (~130 ms to load) are only loaded when an etcd:// URL is first used, so that
 * `import 'skein'` and every `skein` command stay quick and no core module imports etcd3.
 * A URL error of the adapter then surfaces on first use (the watch's 'error' / a rejected
 * call) instead of at resolverFor().
 */
function lazyDiscovery(scheme: string, load: () => Promise<DiscoveryPlugin>): DiscoveryPlugin {
  let loading: Promise<DiscoveryPlugin> | undefined;
  const later = <T>(make: (p: DiscoveryPlugin) => T): Promise<T> => {
    const p = (loading ??= load()).then(make);
    p.catch(() => {}); // reported by whoever uses it
    return p;
  };
  return Object.freeze({
    scheme,
    resolver(url: URL): Resolver {
      const r = later((p) => p.resolver(url));
      return {
        watch: (service, options) => ({
          async *[Symbol.asyncIterator]() {
            yield* (await r).watch(service, options);
          },
        }),
        list: async (service, options) => (await r).list(service, options),
        close: async () => (await r.catch(() => undefined))?.close(),
      };
    },
    registrar(url: URL): Registrar {
      const r = later((p) => p.registrar!(url));
      return {
        register: async (instance, options) => (await r).register(instance, options),
        close: async () => (await r.catch(() => undefined))?.close(),
      };
    },
  });
}

// Built-in plugins, registered once (idempotent).
setupDiscovery();
setupEmbeddedDiscovery();
registerDiscovery(lazyDiscovery('etcd', async () => (await import('./engines/etcd.js')).etcdDiscovery));
setupBalance();
setupChannel();
setupResilience();

export { TokenBucket, rateLimit, bulkhead, Compartment, shed, AimdLimiter, fallback, serverResilience, ResilienceChannel, RETRY_AFTER_TRAILER, RateLimitDefaults, BulkheadDefaults, ShedDefaults, FallbackDefaults } from './resilience/index.js';
export type { BucketSpec, RateLimitOptions, RateLimitStats, RateLimitInterceptor, BulkheadOptions, BulkheadStats, BulkheadInterceptor, ShedOptions, ShedStats, ShedInterceptor, FallbackFn, FallbackOptions, FallbackStats, FallbackInterceptor, ResilienceEvent, ResilienceChannelName, ServerResilienceOptions } from './resilience/index.js';
export { retry, retryBudget, retryReason, pushbackOf, RETRY_CHANNEL, RetryDefaults, RetryBudgetDefaults } from './resilience/index.js';
export type { RetryOptions, RetryBackoffOptions, RetryStats, RetryEvent, RetryInterceptor, RetryBudget, RetryBudgetOptions, RetryBudgetStats } from './resilience/index.js';
export { breaker, CircuitBreaker, BreakerState, BREAKER_CHANNEL, BreakerDefaults, OutlierDefaults } from './resilience/index.js';
export type { BreakerOptions, CircuitBreakerOptions, BreakerStats, BreakerEvent, BreakerInterceptor, BreakerStateValue } from './resilience/index.js';
export { OutlierDetector, OUTLIER_CHANNEL } from './channel/outlier.js';
export type { OutlierOptions, OutlierStats, OutlierEvent } from './channel/outlier.js';
export { hedge, LatencyWindow, HEDGE_CHANNEL, HedgeDefaults, clientResilience, ClientResilienceDefaults, ServerResilienceDefaults, clientBulkhead, CLIENT_BULKHEAD_CHANNEL, ClientBulkheadDefaults } from './resilience/index.js';
export type { ClientResilienceOptions, ClientMethodResilience, ClientPolicySet, ClientBulkheadOptions, ClientBulkheadStats, ClientBulkheadEvent, ClientBulkheadInterceptor } from './resilience/index.js';
export type { HedgeOptions, HedgePercentileDelay, HedgeStats, HedgeEvent, HedgeInterceptor } from './resilience/index.js';
