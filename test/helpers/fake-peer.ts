/**
 * `startFakePeer()`: a real TCP server on 127.0.0.1, port 0, that plays the other side of
 * a protocol exchange from a script. It records every byte each connection sends and lets
 * the test write exactly the bytes it wants (valid, truncated, malformed...).
 *
 *   const peer = await startFakePeer();
 *   const client = connectSomething(peer.address);
 *   const conn = await peer.nextConnection();
 *   await conn.waitFor(16);                          // first 16 bytes arrived
 *   assert.deepEqual(conn.received().subarray(0, 4), MAGIC);
 *   conn.write(Buffer.from([0xde, 0xad]));           // reply with garbage
 *   await conn.closed;                               // the client hung up
 *   await peer.close();
 *
 * Connections are queued in arrival order; `nextConnection()` hands out the next one not
 * yet taken (waiting for it if needed). Socket errors (ECONNRESET...) are recorded in
 * `FakeConn.error`, never thrown.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { DEFAULT_WAIT_MS } from './wait.js';

export interface FakeConn {
  /** Index of this connection on its peer, from 0. */
  readonly index: number;
  /** The underlying socket, for anything not covered here. */
  readonly socket: Socket;
  /** Write raw bytes to the client (strings as UTF-8). Writes after close are ignored. */
  write(data: Buffer | Uint8Array | string): void;
  /** Everything received so far, as one Buffer (a copy). */
  received(): Buffer;
  /** Number of bytes received so far. */
  readonly bytesReceived: number;
  /**
   * Resolve with `received()` once `predicate(received())` is true, or once at least
   * `byteCount` bytes arrived. Rejects after `timeoutMs` (default 5000), or as soon as the
   * connection closes without the condition being met.
   */
  waitFor(condition: number | ((received: Buffer) => boolean), timeoutMs?: number): Promise<Buffer>;
  /** Resolves when the client's end-of-stream (FIN) arrives. Never rejects. */
  readonly ended: Promise<void>;
  /** Resolves when the socket has closed, for any reason. Never rejects. */
  readonly closed: Promise<void>;
  /** True once the socket has closed. */
  readonly isClosed: boolean;
  /** The socket error, if one happened (e.g. ECONNRESET). */
  readonly error: Error | undefined;
  /** Graceful close: send FIN after pending writes. */
  end(data?: Buffer | Uint8Array | string): void;
  /** Close at once (FIN, unsent data dropped). */
  destroy(): void;
  /** Abort with a TCP RST: the client sees ECONNRESET. */
  reset(): void;
}

export interface FakePeerOptions {
  /**
   * Keep the server's side open after the client's FIN (the test ends it). When false,
   * the server side ends as soon as the client's does, like a normal server. @default false
   */
  allowHalfOpen?: boolean;
}

export interface FakePeer {
  /** '127.0.0.1:PORT'. */
  readonly address: string;
  readonly port: number;
  /** Every connection accepted so far, in order. */
  readonly connections: readonly FakeConn[];
  /** The next connection not yet returned by an earlier call; waits up to `timeoutMs` (default 5000). */
  nextConnection(timeoutMs?: number): Promise<FakeConn>;
  /** Stop listening and destroy every connection. */
  close(): Promise<void>;
}

class Conn implements FakeConn {
  readonly index: number;
  readonly socket: Socket;
  readonly ended: Promise<void>;
  readonly closed: Promise<void>;
  isClosed = false;
  error: Error | undefined;
  #chunks: Buffer[] = [];
  #bytes = 0;
  #waiters = new Set<() => void>();

  constructor(index: number, socket: Socket) {
    this.index = index;
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.#chunks.push(chunk);
      this.#bytes += chunk.length;
      this.#notify();
    });
    socket.on('error', (err: Error) => {
      this.error = err;
    });
    this.ended = new Promise<void>((resolve) => socket.once('end', () => resolve()));
    this.closed = new Promise<void>((resolve) =>
      socket.once('close', () => {
        this.isClosed = true;
        this.#notify();
        resolve();
      }),
    );
  }

  get bytesReceived(): number {
    return this.#bytes;
  }

  received(): Buffer {
    if (this.#chunks.length > 1) this.#chunks = [Buffer.concat(this.#chunks)];
    return Buffer.from(this.#chunks[0] ?? Buffer.alloc(0));
  }

  write(data: Buffer | Uint8Array | string): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(data);
  }

  end(data?: Buffer | Uint8Array | string): void {
    if (data !== undefined) this.write(data);
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  reset(): void {
    if (!this.socket.destroyed) this.socket.resetAndDestroy();
  }

  waitFor(condition: number | ((received: Buffer) => boolean), timeoutMs: number = DEFAULT_WAIT_MS): Promise<Buffer> {
    const met = (): boolean => (typeof condition === 'number' ? this.#bytes >= condition : condition(this.received()));
    const what = typeof condition === 'number' ? `${condition} bytes` : 'the predicate';
    return new Promise<Buffer>((resolve, reject) => {
      const check = (): void => {
        let ok: boolean;
        try {
          ok = met();
        } catch (err) {
          finish();
          reject(err);
          return;
        }
        if (ok) {
          finish();
          resolve(this.received());
        } else if (this.isClosed) {
          finish();
          reject(new Error(`fake peer connection #${this.index} closed after ${this.#bytes} bytes, before ${what}`));
        }
      };
      const finish = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`timed out after ${timeoutMs}ms waiting for ${what} on fake peer connection #${this.index} (${this.#bytes} bytes received)`));
      }, timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  #notify(): void {
    for (const w of [...this.#waiters]) w();
  }
}

/** Start a fake peer on 127.0.0.1, port 0. */
export async function startFakePeer(options: FakePeerOptions = {}): Promise<FakePeer> {
  const conns: Conn[] = [];
  let taken = 0;
  const waiting: Array<() => void> = [];
  const server: Server = createServer({ allowHalfOpen: options.allowHalfOpen ?? false, noDelay: true }, (socket) => {
    conns.push(new Conn(conns.length, socket));
    for (const w of waiting.splice(0)) w();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as { port: number }).port;

  return {
    address: `127.0.0.1:${port}`,
    port,
    connections: conns,
    nextConnection(timeoutMs: number = DEFAULT_WAIT_MS): Promise<FakeConn> {
      const index = taken++;
      return new Promise<FakeConn>((resolve, reject) => {
        const check = (): void => {
          const conn = conns[index];
          if (conn === undefined) return;
          clearTimeout(timer);
          const i = waiting.indexOf(check);
          if (i >= 0) waiting.splice(i, 1);
          resolve(conn);
        };
        const timer = setTimeout(() => {
          const i = waiting.indexOf(check);
          if (i >= 0) waiting.splice(i, 1);
          reject(new Error(`timed out after ${timeoutMs}ms waiting for fake peer connection #${index} (${conns.length} accepted)`));
        }, timeoutMs);
        waiting.push(check);
        check();
      });
    },
    close(): Promise<void> {
      for (const c of conns) c.socket.destroy();
      return new Promise<void>((resolve) => {
        if (!server.listening) resolve();
        else server.close(() => resolve());
      });
    },
  };
}
