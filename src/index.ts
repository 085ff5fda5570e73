/**
 * skein — public API. Every name is listed explicitly (no `export *`).
 */
export { SkeinError, ProtocolError, Status, ErrorCode, statusName, toStatus, isSkeinError, createError } from './errors.js';
export type { StatusName, StatusCode, ErrorCodeValue, SkeinErrorOptions } from './errors.js';

export { service, unary, serverStream, clientStream, bidi, MethodKind } from './rpc/define.js';
export type { ServiceDef, MethodDef, MethodMap, MethodOptions, MethodKindValue } from './rpc/define.js';
export { createServer, implement, Server } from './rpc/server.js';
export type { ServerOptions, BoundAddress } from './rpc/server.js';
export { connect } from './rpc/client.js';
export type { Client, ClientOptions, ClientControl } from './rpc/client.js';
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

export { ConnectivityState } from './session/connectivity.js';
export type { ConnectivityStateValue, StateChange } from './session/connectivity.js';
export { ClientConnection } from './session/client-connection.js';
export type { ClientConnectionOptions } from './session/client-connection.js';
export type { SessionOptions } from './session/options.js';
export type { BackoffOptions } from './util/backoff.js';

export { protobufCodec, loadProtoType, availableCompressors } from './codec/index.js';
export type { Codec, Compressor } from './codec/index.js';
export type { TlsOptions, PeerInfo, ListenOptions } from './transport/transport.js';
