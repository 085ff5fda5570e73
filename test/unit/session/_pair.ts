/**
 * Session unit-test kit: two Sessions over an in-memory duplexPair (no ports), a tap that
 * decodes every frame one side receives, and a raw peer that writes hand-made frames.
 *
 * Ordering barrier: frames on one connection arrive in the order they were written, so
 * once the client's `ping()` resolves, every frame the server wrote before its PONG has
 * been received by the client too. Tests use that instead of waiting for time to pass.
 */
import { duplexPair, type MemorySocket } from '../../helpers/duplex-pair.js';
import { once, withTimeout } from '../../helpers/wait.js';
import { Session } from '../../../src/session/session.js';
import type { SessionOptions } from '../../../src/session/options.js';
import type { Stream } from '../../../src/session/stream.js';
import { FrameDecoder } from '../../../src/wire/decoder.js';
import { encodeFrame, FrameType, Limits, PREFACE } from '../../../src/wire/frame.js';
import { encodeJson, type CallHead } from '../../../src/wire/payloads.js';
import { encodeCallPath } from '../../../src/wire/payloads.js';

export interface Frame {
  type: number;
  flags: number;
  id: number;
  payload: Buffer;
}

/** Record every frame arriving on `socket` (attach before the session starts reading). */
export function tapFrames(socket: MemorySocket): Frame[] {
  const frames: Frame[] = [];
  const decoder = new FrameDecoder({ expectPreface: true, maxFrameSize: Limits.MAX_MAX_FRAME_SIZE }, (type, flags, id, payload) => frames.push({ type, flags, id, payload: Buffer.from(payload) }));
  socket.on('data', (chunk: Buffer) => decoder.push(chunk));
  return frames;
}

const peer = (name: string) => ({ socket: undefined as unknown as MemorySocket, peer: { transport: 'memory', address: `memory:${name}` }, local: `memory:${name}` });

export interface ServerStreamRecord {
  stream: Stream;
  head: CallHead;
  messages: Buffer[];
  sizes: number[];
  ended: boolean;
  aborted: Error | undefined;
}

export interface SessionPair {
  client: Session;
  server: Session;
  /** Frames the client received from the server. */
  toClient: Frame[];
  /** Frames the server received from the client. */
  toServer: Frame[];
  /** Server streams, in arrival order; messages are recorded and NOT consumed. */
  incoming: ServerStreamRecord[];
  close(): Promise<void>;
}

/** A connected client/server session pair; the server records streams without consuming. */
export async function sessionPair(clientOptions: SessionOptions = {}, serverOptions: SessionOptions = {}): Promise<SessionPair> {
  const [a, b] = duplexPair({ highWaterMark: 1024 * 1024 });
  const toClient = tapFrames(a);
  const toServer = tapFrames(b);
  const server = Session.accept({ ...peer('client'), socket: b }, { heartbeatMs: 0, ...serverOptions });
  const incoming: ServerStreamRecord[] = [];
  server.onStream = (stream, head) => {
    const rec: ServerStreamRecord = { stream, head, messages: [], sizes: [], ended: false, aborted: undefined };
    stream.onMessage = (msg, size) => {
      rec.messages.push(Buffer.from(msg));
      rec.sizes.push(size);
    };
    stream.onEnd = () => (rec.ended = true);
    stream.onAbort = (err) => (rec.aborted = err);
    incoming.push(rec);
  };
  const serverReady = server.isReady ? Promise.resolve() : once(server, 'ready');
  const client = await withTimeout(Session.connect({ ...peer('server'), socket: a }, { heartbeatMs: 0, ...clientOptions }), 5000, 'the handshake');
  await serverReady;
  return {
    client,
    server,
    toClient,
    toServer,
    incoming,
    async close() {
      client.close();
      server.close();
      await withTimeout(Promise.all([client.closed, server.closed]), 5000, 'both sessions to close');
    },
  };
}

/** A call head for `openStream` (msgpack codec, no deadline). */
export function head(method = 'm'): { codec: number; timeoutMs: number; path: Buffer } {
  return { codec: 1, timeoutMs: 0, path: encodeCallPath('svc', method) };
}

/** Raw client: preface + HELLO, then whatever frames the test writes. */
export function rawClient(serverOptions: SessionOptions = {}) {
  const [a, b] = duplexPair();
  const received = tapFrames(a);
  const server = Session.accept({ ...peer('raw'), socket: b }, { heartbeatMs: 0, ...serverOptions });
  const streams: number[] = [];
  server.onStream = (stream) => {
    streams.push(stream.id);
  };
  const hello = { codecs: ['msgpack'], compression: [], maxFrameSize: 65536, streamWindow: 65536, connectionWindow: 1 << 20, heartbeatMs: 0 };
  a.write(Buffer.concat([PREFACE, encodeFrame(FrameType.HELLO, 0, 0, encodeJson(hello))]));
  return {
    server,
    received,
    streams,
    socket: a,
    write(type: number, flags: number, id: number, payload?: Buffer) {
      a.write(encodeFrame(type, flags, id, payload));
    },
  };
}
