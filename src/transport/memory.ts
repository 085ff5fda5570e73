/**
 * In-memory transport ('memory:NAME') and the socket pair under it.
 *
 * `createMemoryPair()` returns two `MemorySocket`s wired back to back. They behave like
 * the two ends of a TCP connection, close enough that the session layer cannot tell:
 *
 *   A.write(x)  --setImmediate-->  B.push(x)   bytes arrive in order, never synchronously
 *                                              inside write(); cork()/uncork() and writev
 *                                              deliver a batch in one turn.
 *   A.end()     --after A's data-> B 'end'     (B then ends its own side: allowHalfOpen is
 *                                              false, as for net sockets) ... both 'close'.
 *   A.destroy() --after A's data-> B 'end' -> B 'close' (like a FIN; data B has not read
 *                                              yet is still delivered first).
 *
 * Backpressure is end to end, as with a real socket: a chunk handed to B is only
 * acknowledged to A's Writable once B's readable buffer is below its highWaterMark (or
 * B's reader calls `_read`). While it is not, A's own writable buffer fills up, so
 * `A.write()` returns false and A's 'drain' comes only after B's reader has consumed data.
 * Just as with TCP, a reader that never reads never sees 'end' (and so never 'close').
 *
 * Writes to a peer that has been destroyed are dropped (the peer's EOF is on its way and
 * the session learns of the loss from it), rather than raising EPIPE.
 */
import { Duplex } from 'node:stream';
import { createError, ErrorCode } from '../errors.js';
import { abortError, resolveConnectTimeout } from './connect.js';
import type { Connection, DialOptions, Listener, ListenOptions, Transport } from './transport.js';

/** @default highWaterMark of each side of a memory socket, bytes (what net sockets use on Node 20). */
export const DEFAULT_MEMORY_HIGH_WATER_MARK = 16 * 1024;

export interface MemoryPairOptions {
  /** Readable and writable buffer size of each end, bytes. @default 16384 */
  highWaterMark?: number;
}

/** One end of an in-memory connection. Create with `createMemoryPair()`. */
export class MemorySocket extends Duplex {
  #peer: MemorySocket | undefined;
  /** The peer's write callback, held until our reader makes room (backpressure). */
  #pendingAck: (() => void) | undefined;
  #eofReceived = false;

  constructor(options: MemoryPairOptions = {}) {
    super({ allowHalfOpen: false, highWaterMark: options.highWaterMark ?? DEFAULT_MEMORY_HIGH_WATER_MARK, decodeStrings: true });
  }

  /** Wire two sockets together (each to the other). */
  static connect(a: MemorySocket, b: MemorySocket): void {
    a.#peer = b;
    b.#peer = a;
  }

  /** Net-socket compatibility: no-ops. */
  setNoDelay(_noDelay?: boolean): this {
    return this;
  }
  setKeepAlive(_enable?: boolean, _initialDelay?: number): this {
    return this;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#send([chunk], callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>, callback: (error?: Error | null) => void): void {
    this.#send(
      chunks.map((c) => c.chunk),
      callback,
    );
  }

  /** Hand chunks to the peer on a later turn; acknowledge once the peer has room. */
  #send(chunks: Buffer[], callback: () => void): void {
    setImmediate(() => {
      const peer = this.#peer;
      if (peer === undefined || !peer.#canReceive()) {
        callback();
        return;
      }
      let room = true;
      for (const chunk of chunks) room = peer.push(chunk);
      if (room || !peer.#canReceive()) callback();
      else peer.#pendingAck = callback;
    });
  }

  #canReceive(): boolean {
    return !this.destroyed && !this.#eofReceived;
  }

  #receiveEof(): void {
    if (!this.#canReceive()) return;
    this.#eofReceived = true;
    this.push(null);
    this.#releaseAck();
  }

  #releaseAck(): void {
    const ack = this.#pendingAck;
    this.#pendingAck = undefined;
    ack?.();
  }

  override _read(): void {
    this.#releaseAck();
  }

  override _final(callback: (error?: Error | null) => void): void {
    // Every write has been acknowledged by now, so the EOF lands after the data.
    setImmediate(() => {
      const peer = this.#peer;
      if (peer !== undefined) peer.#receiveEof();
      callback();
    });
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const peer = this.#peer;
    // Release the peer's write that waited for our reader: nobody will read it now.
    const ack = this.#pendingAck;
    this.#pendingAck = undefined;
    // Queued behind any deliveries already scheduled, so the peer gets our data, then EOF.
    setImmediate(() => {
      ack?.();
      if (peer !== undefined) peer.#receiveEof();
    });
    callback(error);
  }
}

/** Two connected in-memory socket ends: what one writes the other reads. */
export function createMemoryPair(options: MemoryPairOptions = {}): [MemorySocket, MemorySocket] {
  const a = new MemorySocket(options);
  const b = new MemorySocket(options);
  MemorySocket.connect(a, b);
  return [a, b];
}

interface MemoryListenerEntry {
  accept(socket: MemorySocket): void;
}

/** Listeners by name, process-wide. */
const listeners = new Map<string, MemoryListenerEntry>();
let anonymous = 0;

function memoryName(address: string): string {
  if (typeof address !== 'string') throw createError(ErrorCode.INVALID_OPTIONS, 'memory address must be a string');
  const name = address.startsWith('memory:') ? address.slice('memory:'.length) : address;
  if (name === '') throw createError(ErrorCode.INVALID_OPTIONS, `empty memory listener name in ${JSON.stringify(address)}`);
  return name;
}

/**
 * Dial a memory listener. Completes on a later turn (never synchronously), so an abort
 * right after the call is seen, as with real sockets. `connectTimeoutMs` is validated but
 * a memory dial never waits long enough to need it.
 */
function dial(address: string, options: DialOptions = {}): Promise<Connection> {
  return new Promise<Connection>((resolve, reject) => {
    let name: string;
    try {
      name = memoryName(address);
      resolveConnectTimeout(options);
    } catch (err) {
      reject(err);
      return;
    }
    const printable = `memory:${name}`;
    const { signal } = options;
    if (signal?.aborted) {
      reject(abortError(signal, printable));
      return;
    }
    const onAbort = (): void => {
      clearImmediate(immediate);
      reject(abortError(signal!, printable));
    };
    const immediate = setImmediate(() => {
      signal?.removeEventListener('abort', onAbort);
      const entry = listeners.get(name);
      if (entry === undefined) {
        reject(createError(ErrorCode.CONNECT_FAILED, `connect ECONNREFUSED ${printable}`));
        return;
      }
      const [client, server] = createMemoryPair();
      entry.accept(server);
      resolve({ socket: client, peer: { transport: 'memory', address: printable }, local: printable });
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Listen on a name (`options.name`, with or without 'memory:'; a unique 'anon-N' name is
 * made up when absent). A name in use fails with "listen EADDRINUSE memory:NAME".
 * `onConnection` is called on a later turn than the dial that caused it.
 */
async function listen(options: ListenOptions, onConnection: (conn: Connection) => void): Promise<Listener> {
  const name = options.name === undefined ? `anon-${++anonymous}` : memoryName(options.name);
  const printable = `memory:${name}`;
  if (options.backlog !== undefined && (!Number.isInteger(options.backlog) || options.backlog < 0)) {
    throw createError(ErrorCode.INVALID_OPTIONS, `listen backlog must be a non-negative integer, got ${String(options.backlog)}`);
  }
  if (listeners.has(name)) {
    throw createError(ErrorCode.INVALID_OPTIONS, `listen EADDRINUSE ${printable}`, { status: 'UNAVAILABLE' });
  }
  let closed = false;
  const entry: MemoryListenerEntry = {
    accept(socket) {
      // Handed over even if the listener closes in between: the dial has already succeeded,
      // so this is an existing connection, which closing a listener leaves alone.
      setImmediate(() => onConnection({ socket, peer: { transport: 'memory', address: printable }, local: printable }));
    },
  };
  listeners.set(name, entry);
  return {
    address: printable,
    close(): Promise<void> {
      if (!closed) {
        closed = true;
        if (listeners.get(name) === entry) listeners.delete(name);
      }
      return Promise.resolve();
    },
  };
}

/** The in-memory transport ('memory:NAME'): in-process only, for tests and embedding. */
export const memoryTransport: Transport = Object.freeze({ name: 'memory', dial, listen });
