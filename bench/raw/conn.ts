/**
 * Raw baseline client connection: ONE socket, many requests in flight, replies matched by
 * request id. Writes issued in the same tick are coalesced under cork(), uncorked on
 * process.nextTick.
 */
import net from 'node:net';
import { FrameDecoder, encodeFrame, HEADER, STREAM_BIT } from './framing.js';

interface StreamState {
  remaining: number;
  received: number;
  onMessage: (len: number) => void;
  resolve: (n: number) => void;
  reject: (err: Error) => void;
}

interface Pending {
  resolve: (b: Buffer) => void;
  reject: (err: Error) => void;
}

export class RawConn {
  private readonly pending = new Map<number, Pending>();
  private readonly streams = new Map<number, StreamState>();
  private nextId = 1;
  private corked = false;
  private closedError: Error | null = null;

  private constructor(private readonly socket: net.Socket) {
    const decoder = new FrameDecoder((frame, id) => this.onFrame(frame, id));
    socket.on('data', (chunk: Buffer) => decoder.push(chunk));
    const fail = (err?: Error): void => {
      const e = err ?? new Error('connection closed');
      this.closedError ??= e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
      for (const s of this.streams.values()) s.reject(e);
      this.streams.clear();
    };
    socket.on('error', fail);
    socket.on('close', () => fail());
  }

  static connect(host: string, port: number, timeoutMs = 10_000): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port, noDelay: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${host}:${port} timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeListener('error', reject);
        resolve(new RawConn(socket));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  private onFrame(frame: Buffer, id: number): void {
    if (id & STREAM_BIT) {
      const s = this.streams.get(id);
      if (!s) return;
      s.received++;
      s.onMessage(frame.length - HEADER);
      if (--s.remaining === 0) {
        this.streams.delete(id);
        s.resolve(s.received);
      }
      return;
    }
    const p = this.pending.get(id);
    if (p) {
      this.pending.delete(id);
      p.resolve(frame.subarray(HEADER));
    }
  }

  private allocId(): number {
    const id = this.nextId;
    this.nextId = id >= 0x7fff_ffff ? 1 : id + 1;
    return id;
  }

  private write(frame: Buffer): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(frame);
  }

  echo(payload: Buffer): Promise<Buffer> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const id = this.allocId();
      this.pending.set(id, { resolve, reject });
      this.write(encodeFrame(id, payload));
    });
  }

  stream(count: number, size: number, onMessage: (len: number) => void): Promise<number> {
    if (this.closedError) return Promise.reject(this.closedError);
    if (count === 0) return Promise.resolve(0);
    return new Promise((resolve, reject) => {
      const id = (this.allocId() | STREAM_BIT) >>> 0;
      this.streams.set(id, { remaining: count, received: 0, onMessage, resolve, reject });
      const req = Buffer.allocUnsafe(8);
      req.writeUInt32LE(count, 0);
      req.writeUInt32LE(size, 4);
      this.write(encodeFrame(id, req));
    });
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }
}
