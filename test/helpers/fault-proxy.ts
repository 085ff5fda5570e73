/**
 * `startFaultProxy({ target })`: a real TCP proxy on 127.0.0.1, port 0, that sits between a
 * client and `target` and breaks the connection on demand.
 *
 *   client ──up──▶ [ proxy: lane 'up' ]   ──▶ target
 *   client ◀─down─ [ proxy: lane 'down' ] ◀── target
 *
 * Each accepted client gets its own upstream connection; the pair of lanes forwards bytes
 * with the faults currently switched on:
 *
 *   cutAll()                destroy every live pair (both sockets), dropping held bytes;
 *                           `{ reset: true }` sends a TCP RST instead of a FIN
 *   stall(true|false)       hold every byte in both directions (connections stay open);
 *                           stall(false) delivers what was held, in order
 *   delay(ms)               each chunk is forwarded `ms` after it reached the proxy (a
 *                           latency: order is kept and throughput is not reduced); 0 = off
 *   slice(min, max)         re-chunk forwarded bytes into pieces of random size min..max,
 *                           one piece per event-loop turn, in order; slice(0) = off
 *   corruptNext(dir, off)   flip the lowest bit of one byte: the byte `off` bytes (default 0)
 *                           into what this lane forwards next (it may span chunks)
 *   refuse(true|false)      accept new connections and destroy them at once (no upstream)
 *
 * Counters: `connections` (every accepted client connection, refused ones included),
 * `bytesUp`/`bytesDown` (bytes forwarded to the target / to the client), `held` (bytes
 * waiting inside the proxy per direction) and `live` (pairs still open). Events:
 * 'connection' ({ id, refused }) for every accepted client connection, and
 * 'forward' (direction, bytes) for every piece written out.
 *
 * Half-close is forwarded faithfully (a FIN from one side becomes a FIN to the other once
 * the lane has drained). A side that resets makes the proxy destroy the whole pair.
 * A lane that holds more than 1 MiB stops reading its source until it drains, so a stalled
 * proxy pushes back on the writer just as a stalled network would.
 */
import { EventEmitter } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

export type Direction = 'up' | 'down';

export interface FaultProxyOptions {
  /** Where to forward: 'host:port' (IPv6 in brackets). */
  target: string;
}

export interface FaultProxyConnectionInfo {
  /** 0-based index of the accepted client connection. */
  id: number;
  /** True when it was destroyed at once because `refuse(true)` was on. */
  refused: boolean;
}

/** Pause reading a source when a lane holds more than this; resume below the low mark. */
const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;

function parseHostPort(target: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(target);
  if (!m) throw new Error(`fault proxy: bad target ${JSON.stringify(target)} (want host:port)`);
  return { host: (m[1] ?? m[2])!, port: Number(m[3]) };
}

interface Held {
  buf: Buffer;
  /** performance.now() before which it must not be forwarded. */
  releaseAt: number;
}

/** One direction of one pair: reads `source`, writes `dest`. */
class Lane {
  readonly direction: Direction;
  readonly #proxy: FaultProxy;
  readonly #source: Socket;
  readonly #dest: Socket;
  #queue: Held[] = [];
  #held = 0;
  #sourceEnded = false;
  #destEnded = false;
  #waitingDrain = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #immediate: ReturnType<typeof setImmediate> | undefined;
  #paused = false;
  #dead = false;

  constructor(proxy: FaultProxy, direction: Direction, source: Socket, dest: Socket) {
    this.#proxy = proxy;
    this.direction = direction;
    this.#source = source;
    this.#dest = dest;
    source.on('data', (chunk: Buffer) => this.#onData(chunk));
    source.on('end', () => {
      this.#sourceEnded = true;
      this.pump();
    });
    dest.on('drain', () => {
      this.#waitingDrain = false;
      this.pump();
    });
  }

  get held(): number {
    return this.#held;
  }

  #onData(chunk: Buffer): void {
    if (this.#dead) return;
    const delay = this.#proxy.delayMs;
    this.#queue.push({ buf: chunk, releaseAt: delay > 0 ? performance.now() + delay : 0 });
    this.#held += chunk.length;
    if (this.#held > HIGH_WATER && !this.#paused) {
      this.#paused = true;
      this.#source.pause();
    }
    this.pump();
  }

  /** Forward what may be forwarded now; reschedules itself for delays and slicing. */
  pump(): void {
    if (this.#dead || this.#timer !== undefined || this.#immediate !== undefined) return;
    const slicing = this.#proxy.sliceRange;
    while (this.#queue.length > 0 && !this.#proxy.stalled && !this.#waitingDrain && !this.#dest.destroyed) {
      const head = this.#queue[0]!;
      const wait = head.releaseAt - performance.now();
      if (wait > 0) {
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.pump();
        }, Math.ceil(wait));
        return;
      }
      let piece: Buffer;
      if (slicing !== undefined) {
        const [min, max] = slicing;
        const n = min + Math.floor(Math.random() * (max - min + 1));
        piece = head.buf.subarray(0, n);
        head.buf = head.buf.subarray(piece.length);
        if (head.buf.length === 0) this.#queue.shift();
      } else {
        piece = head.buf;
        this.#queue.shift();
      }
      this.#held -= piece.length;
      piece = this.#proxy.corrupt(this.direction, piece);
      this.#proxy.count(this.direction, piece.length);
      if (!this.#dest.write(piece)) this.#waitingDrain = true;
      this.#proxy.emit('forward', this.direction, piece.length);
      if (slicing !== undefined && this.#queue.length > 0) {
        // One piece per turn, so the receiver can see each piece as its own read.
        this.#immediate = setImmediate(() => {
          this.#immediate = undefined;
          this.pump();
        });
        break;
      }
    }
    if (this.#paused && this.#held < LOW_WATER) {
      this.#paused = false;
      this.#source.resume();
    }
    if (this.#queue.length === 0 && this.#sourceEnded && !this.#destEnded && !this.#dest.destroyed) {
      this.#destEnded = true;
      this.#dest.end();
    }
  }

  /** Drop everything and stop: timers cleared, nothing more forwarded. */
  kill(): void {
    this.#dead = true;
    this.#queue = [];
    this.#held = 0;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    this.#timer = undefined;
    this.#immediate = undefined;
  }
}

class Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  readonly up: Lane;
  readonly down: Lane;
  #closed = 0;

  constructor(proxy: FaultProxy, client: Socket, upstream: Socket, onGone: () => void) {
    this.client = client;
    this.upstream = upstream;
    this.up = new Lane(proxy, 'up', client, upstream);
    this.down = new Lane(proxy, 'down', upstream, client);
    const onError = (): void => this.destroy(false);
    client.on('error', onError);
    upstream.on('error', onError);
    const onClose = (): void => {
      // Nothing more can reach a closed socket, and once both are closed the pair is gone.
      if (++this.#closed === 2) {
        this.up.kill();
        this.down.kill();
        onGone();
      }
    };
    client.on('close', onClose);
    upstream.on('close', onClose);
  }

  destroy(reset: boolean): void {
    this.up.kill();
    this.down.kill();
    for (const s of [this.client, this.upstream]) {
      if (s.destroyed) continue;
      if (reset && s.readyState === 'open') s.resetAndDestroy();
      else s.destroy();
    }
  }
}

export class FaultProxy extends EventEmitter {
  /** '127.0.0.1:PORT' */
  readonly address: string;
  readonly port: number;
  /** Accepted client connections (refused ones included). */
  connections = 0;
  /** Bytes forwarded client → target. */
  bytesUp = 0;
  /** Bytes forwarded target → client. */
  bytesDown = 0;
  /** @internal current fault settings, read by the lanes */
  stalled = false;
  delayMs = 0;
  sliceRange: [number, number] | undefined;
  #refusing = false;
  #corrupt: Record<Direction, number | undefined> = { up: undefined, down: undefined };
  readonly #server: Server;
  readonly #pairs = new Set<Pair>();
  /** Clients whose upstream connection is still being made. */
  readonly #pending = new Map<Socket, Socket>();

  constructor(server: Server, port: number) {
    super();
    this.#server = server;
    this.port = port;
    this.address = `127.0.0.1:${port}`;
  }

  /** Bytes held in the proxy (received, not yet forwarded) per direction. */
  get held(): Record<Direction, number> {
    let up = 0;
    let down = 0;
    for (const p of this.#pairs) {
      up += p.up.held;
      down += p.down.held;
    }
    return { up, down };
  }

  /** Number of connection pairs still open. */
  get live(): number {
    return this.#pairs.size;
  }

  /** Destroy every live connection pair (and connections still dialing upstream). */
  cutAll(options: { reset?: boolean } = {}): void {
    const reset = options.reset === true;
    for (const p of [...this.#pairs]) p.destroy(reset);
    for (const [client, upstream] of [...this.#pending]) {
      upstream.destroy();
      if (reset && client.readyState === 'open') client.resetAndDestroy();
      else client.destroy();
    }
    this.#pending.clear();
  }

  /** Hold (true) or release (false) all traffic in both directions. */
  stall(on: boolean): void {
    this.stalled = on;
    if (!on) this.#pumpAll();
  }

  /** Forward each chunk `ms` after it arrives (0 turns it off). Applies to chunks arriving from now on. */
  delay(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`delay(ms) needs ms >= 0, got ${ms}`);
    this.delayMs = ms;
  }

  /** Re-chunk forwarded bytes into pieces of min..max bytes; `slice(0)` turns it off. */
  slice(min: number, max: number = min): void {
    if (min === 0) {
      this.sliceRange = undefined;
      this.#pumpAll();
      return;
    }
    if (!Number.isInteger(min) || !Number.isInteger(max) || min < 1 || max < min) throw new RangeError(`slice(min, max) needs integers 1 <= min <= max, got ${min}, ${max}`);
    this.sliceRange = [min, max];
  }

  /** Flip one bit in the byte `byteOffset` bytes into what `direction` forwards next. */
  corruptNext(direction: Direction, byteOffset = 0): void {
    if (!Number.isInteger(byteOffset) || byteOffset < 0) throw new RangeError(`corruptNext byteOffset must be an integer >= 0, got ${byteOffset}`);
    this.#corrupt[direction] = byteOffset;
  }

  /** Accept and immediately destroy new connections (true), or serve them again (false). */
  refuse(on: boolean): void {
    this.#refusing = on;
  }

  /** Stop listening and destroy every connection. */
  close(): Promise<void> {
    this.cutAll();
    return new Promise<void>((resolve) => {
      if (!this.#server.listening) resolve();
      else this.#server.close(() => resolve());
    });
  }

  /** @internal Apply a pending corruption to a piece about to be forwarded. */
  corrupt(direction: Direction, piece: Buffer): Buffer {
    const offset = this.#corrupt[direction];
    if (offset === undefined) return piece;
    if (offset >= piece.length) {
      this.#corrupt[direction] = offset - piece.length;
      return piece;
    }
    this.#corrupt[direction] = undefined;
    const copy = Buffer.from(piece);
    copy[offset] = copy[offset]! ^ 0x01;
    return copy;
  }

  /** @internal */
  count(direction: Direction, n: number): void {
    if (direction === 'up') this.bytesUp += n;
    else this.bytesDown += n;
  }

  /** @internal */
  accept(client: Socket, target: { host: string; port: number }): void {
    const id = this.connections++;
    client.on('error', () => {});
    if (this.#refusing) {
      client.destroy();
      this.emit('connection', { id, refused: true } satisfies FaultProxyConnectionInfo);
      return;
    }
    client.setNoDelay(true);
    client.pause(); // until upstream is up; the Lane starts the flow
    const upstream = connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
    this.#pending.set(client, upstream);
    upstream.on('error', () => {});
    const onFail = (): void => {
      this.#pending.delete(client);
      client.destroy();
    };
    upstream.once('close', onFail);
    upstream.once('connect', () => {
      upstream.off('close', onFail);
      this.#pending.delete(client);
      if (client.destroyed) {
        upstream.destroy();
        return;
      }
      const pair = new Pair(this, client, upstream, () => this.#pairs.delete(pair));
      this.#pairs.add(pair);
      client.resume();
    });
    this.emit('connection', { id, refused: false } satisfies FaultProxyConnectionInfo);
  }

  #pumpAll(): void {
    for (const p of this.#pairs) {
      p.up.pump();
      p.down.pump();
    }
  }
}

/** Start a fault proxy on 127.0.0.1, port 0, forwarding to `options.target`. */
export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const target = parseHostPort(options.target);
  const server = createServer({ allowHalfOpen: true, noDelay: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const proxy = new FaultProxy(server, (server.address() as { port: number }).port);
  server.on('connection', (client: Socket) => proxy.accept(client, target));
  return proxy;
}
