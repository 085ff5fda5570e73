/**
 * Transports: public names of the transport layer. See transport.ts for the contracts and
 * target.ts for the address syntax.
 */
import { createError, ErrorCode } from '../errors.js';
import { memoryTransport } from './memory.js';
import { parseTarget } from './target.js';
import { tcpTransport } from './tcp.js';
import { tlsTransport } from './tls.js';
import type { Connection, DialOptions, Transport } from './transport.js';
import { unixTransport } from './unix.js';

export { tcpTransport } from './tcp.js';
export { tlsTransport } from './tls.js';
export { unixTransport } from './unix.js';
export { memoryTransport, createMemoryPair, MemorySocket, DEFAULT_MEMORY_HIGH_WATER_MARK } from './memory.js';
export type { MemoryPairOptions } from './memory.js';
export { parseTarget, formatAddress } from './target.js';
export { DEFAULT_CONNECT_TIMEOUT_MS } from './connect.js';
export type { AbortOptions, Connection, DialOptions, Listener, ListenOptions, PeerInfo, Target, TlsOptions, Transport } from './transport.js';

const transports: ReadonlyMap<string, Transport> = new Map<string, Transport>([
  [tcpTransport.name, tcpTransport],
  [tlsTransport.name, tlsTransport],
  [unixTransport.name, unixTransport],
  [memoryTransport.name, memoryTransport],
]);

/** The transport called `name` ('tcp' | 'tls' | 'unix' | 'memory'); SKEIN_ERR_INVALID_OPTIONS otherwise. */
export function getTransport(name: string): Transport {
  const transport = transports.get(name);
  if (transport === undefined) {
    throw createError(ErrorCode.INVALID_OPTIONS, `unknown transport ${JSON.stringify(name)} (expected one of ${[...transports.keys()].join(', ')})`);
  }
  return transport;
}

/**
 * Dial a target string through the transport it names (see `parseTarget`); a scheme-less
 * 'host:port' goes over TLS when `options.tls` is given, TCP otherwise.
 * Rejects with SKEIN_ERR_INVALID_OPTIONS for a malformed target, SKEIN_ERR_CONNECT_FAILED
 * when the connection cannot be made, and the signal's reason (or SKEIN_ERR_CANCELLED)
 * when aborted.
 */
export async function dial(target: string, options: DialOptions = {}): Promise<Connection> {
  const parsed = parseTarget(target, { tls: options.tls !== undefined });
  return getTransport(parsed.transport).dial(parsed.transport === 'unix' ? `unix:${parsed.address}` : parsed.transport === 'memory' ? `memory:${parsed.address}` : parsed.address, options);
}
