/**
 * The embedded registry (`skein registry`, `skein://host:port`): public names, listed
 * explicitly (no `export *`). docs/registry.md describes the protocol and guarantees.
 *
 * Importing this module registers nothing; `setup()` registers the `skein://` discovery plugin.
 */
export { RegistryService, REGISTRY_SERVICE_NAME, DEFAULT_REGISTRY_PORT } from './api.js';
export type {
  RegistryServiceDef,
  GrantRequest,
  GrantReply,
  KeepAliveRequest,
  KeepAliveReply,
  PutRequest,
  PutReply,
  RemoveRequest,
  RemoveReply,
  RevokeRequest,
  RevokeReply,
  ListRequest,
  ListReply,
  ListedInstance,
  WatchRequest,
  WatchMessage,
  WatchChangeType,
  InfoReply,
} from './api.js';
export { RegistryStore, Watcher, storageError } from './store.js';
export type { RegistryStoreOptions, RegistryPersistence, RestoredState, SnapshotData, LogRecord, StoreEvent, LeaseEndReason, GrantResult, PutResult, RemoveResult, RevokeResult } from './store.js';
export { FilePersistence, crc32, encodeFrame, decodeFrames, SNAPSHOT_FILE, LOG_FILE, LOCK_FILE } from './persist.js';
export type { FilePersistenceOptions, PersistIO } from './persist.js';
export { Registry, openRegistry, registryService, checkInstance } from './service.js';
export type { RegistryOptions } from './service.js';
export { EmbeddedResolver, EmbeddedRegistrar, EmbeddedRegistration, embeddedDiscovery, createEmbeddedDiscovery, registryTarget, setup } from './plugin.js';
export type { EmbeddedDiscoveryOptions, EmbeddedDiscoveryPlugin } from './plugin.js';
