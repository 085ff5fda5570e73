/**
 * Fuzzing at the wire: random byte strings and random mutations of valid frame streams,
 * pushed (in random chunks) into a FrameDecoder and the payload decoders, then into a real
 * server socket over TCP.
 *
 * - The decoders may only ever throw ProtocolError (SKEIN_ERR_PROTOCOL / _FRAME_TOO_LARGE /
 *   _VERSION), and the decoder never holds more than one header + max frame size.
 * - The server never crashes (no uncaught exception or unhandled rejection), only ever
 *   sends well-formed frames back, ends with GOAWAY when it complains, closes every fuzzed
 *   connection, and keeps answering a well-behaved client.
 *
 * Runtime is kept to a few seconds: fixed run counts, small inputs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as netConnect, type Socket } from 'node:net';
import fc from 'fast-check';
import { connect, createServer, implement, service, unary } from '../../src/index.js';
import { CodecId } from '../../src/codec/index.js';
import { ErrorCode, ProtocolError } from '../../src/errors.js';
import { FrameDecoder } from '../../src/wire/decoder.js';
import { encodeFrame, Flags, FrameType, GoawayReason, HEADER_SIZE, Limits, MAX_FRAME_TYPE, PREFACE } from '../../src/wire/frame.js';
import {
  decodeCall,
  decodeEnd,
  decodeGoaway,
  decodeHello,
  decodeHelloAck,
  decodeReset,
  decodeWindowUpdate,
  encodeCall,
  encodeCallPath,
  encodeEnd,
  encodeGoaway,
  encodeJson,
  encodeReset,
  encodeWindowUpdate,
  END_OK,
  type Hello,
} from '../../src/wire/payloads.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

const MAX = Limits.MIN_MAX_FRAME_SIZE;
const PROTOCOL_CODES: readonly string[] = [ErrorCode.PROTOCOL, ErrorCode.FRAME_TOO_LARGE, ErrorCode.VERSION];
const LIMITS = { minFrame: Limits.MIN_MAX_FRAME_SIZE, maxFrame: Limits.MAX_MAX_FRAME_SIZE };

const HELLO: Hello = { codecs: ['json'], compression: [], maxFrameSize: MAX, streamWindow: 1 << 16, connectionWindow: 1 << 20, heartbeatMs: 0 };

/** Payload decoder per frame type (types without a structured payload have none). */
const payloadDecoders: Record<number, (p: Buffer) => unknown> = {
  [FrameType.HELLO]: (p) => decodeHello(p, LIMITS),
  [FrameType.HELLO_ACK]: (p) => decodeHelloAck(p, LIMITS),
  [FrameType.CALL]: decodeCall,
  [FrameType.END]: decodeEnd,
  [FrameType.RESET]: decodeReset,
  [FrameType.WINDOW_UPDATE]: decodeWindowUpdate,
  [FrameType.GOAWAY]: decodeGoaway,
};

function assertProtocolError(e: unknown, context: string): void {
  assert.ok(e instanceof ProtocolError && PROTOCOL_CODES.includes(e.code), `${context}: expected a ProtocolError, got ${e instanceof Error ? `${e.name} (${(e as { code?: string }).code}): ${e.message}\n${e.stack}` : String(e)}`);
}

/** Push `bytes` split at `cuts` into a decoder; decode each frame's payload too. Only ProtocolErrors may escape. */
function feed(bytes: Buffer, cuts: number[], expectPreface: boolean): void {
  const d = new FrameDecoder({ expectPreface, maxFrameSize: MAX }, (type, _flags, _id, payload) => {
    assert.ok(payload.length <= MAX);
    payloadDecoders[type]?.(payload);
  });
  const offsets = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let prev = 0;
  try {
    for (const o of [...offsets, bytes.length]) {
      d.push(bytes.subarray(prev, o));
      prev = o;
      assert.ok(d.bufferedBytes <= HEADER_SIZE + MAX, `decoder holds ${d.bufferedBytes} bytes`);
    }
    d.end();
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assertProtocolError(e, 'decoder');
  }
}

// ------------------------------------------------------------------------- mutations of valid streams

function validStream(): Buffer {
  const path = encodeCallPath('fuzz.echo', 'say');
  return Buffer.concat([
    PREFACE,
    encodeFrame(FrameType.HELLO, 0, 0, encodeJson(HELLO)),
    encodeFrame(FrameType.CALL, 0, 1, encodeCall(CodecId.JSON, 5000, path, { 'x-id': 'a', bin: Buffer.from([1, 2]) })),
    encodeFrame(FrameType.DATA, Flags.END_STREAM, 1, Buffer.from('{"text":"hi"}')),
    encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(8, 7)),
    encodeFrame(FrameType.WINDOW_UPDATE, 0, 0, encodeWindowUpdate(1024)),
    encodeFrame(FrameType.CALL, 0, 3, encodeCall(CodecId.JSON, 0, path, undefined)),
    encodeFrame(FrameType.DATA, 0, 3, Buffer.from('{"text":"again"}')),
    encodeFrame(FrameType.RESET, 0, 3, encodeReset(1, 'cancelled')),
    encodeFrame(FrameType.END, 0, 5, encodeEnd(5, 'nope', { a: 1 }, { k: 'v' })),
    encodeFrame(FrameType.END, 0, 7, END_OK),
    encodeFrame(FrameType.GOAWAY, 0, 0, encodeGoaway(3, GoawayReason.NO_ERROR, 'bye')),
  ]);
}

type Mutation = { kind: 'set'; at: number; byte: number } | { kind: 'flip'; at: number; bit: number } | { kind: 'insert'; at: number; bytes: Uint8Array } | { kind: 'delete'; at: number; n: number } | { kind: 'truncate'; at: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
);

function mutate(input: Buffer, mutations: readonly Mutation[]): Buffer {
  let b = Buffer.from(input);
  for (const m of mutations) {
    if (b.length === 0) break;
    const at = m.at % b.length;
    switch (m.kind) {
      case 'set':
        b[at] = m.byte;
        break;
      case 'flip':
        b[at]! ^= 1 << m.bit;
        break;
      case 'insert':
        b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
        break;
      case 'delete':
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.n)]);
        break;
      case 'truncate':
        b = b.subarray(0, at);
        break;
    }
  }
  return b;
}

const cutsArb = fc.array(fc.nat(), { maxLength: 8 });

test('decoder fuzz - random bytes only ever raise ProtocolError (property)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), cutsArb, (bytes, expectPreface, cuts) => {
      feed(Buffer.from(bytes), cuts, expectPreface);
    }),
    { numRuns: 3000 },
  );
});

test('decoder fuzz - random bytes after a valid preface only ever raise ProtocolError (property)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), cutsArb, (bytes, cuts) => {
      feed(Buffer.concat([PREFACE, bytes]), cuts, true);
    }),
    { numRuns: 3000 },
  );
});

test('decoder fuzz - random frames with well-formed headers only ever raise ProtocolError (property)', () => {
  const frameArb = fc.record({
    type: fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 0, max: MAX_FRAME_TYPE }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }),
    flags: fc.integer({ min: 0, max: 255 }),
    id: fc.integer({ min: 0, max: 9 }),
    payload: fc.uint8Array({ maxLength: 64 }),
  });
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 10 }), cutsArb, (frames, cuts) => {
      const bytes = Buffer.concat([PREFACE, ...frames.map((f) => encodeFrame(f.type, f.flags, f.id, Buffer.from(f.payload)))]);
      feed(bytes, cuts, true);
    }),
    { numRuns: 2000 },
  );
});

test('decoder fuzz - mutations of a valid frame stream only ever raise ProtocolError (property)', () => {
  const valid = validStream();
  feed(valid, [], true); // unmutated: decodes cleanly
  fc.assert(
    fc.property(fc.array(mutationArb, { minLength: 1, maxLength: 4 }), cutsArb, (mutations, cuts) => {
      feed(mutate(valid, mutations), cuts, true);
    }),
    { numRuns: 3000 },
  );
});

// ------------------------------------------------------------------------- a real server

const Fuzz = service('fuzz.echo', { say: unary<{ text: string }, { text: string }>() });

/** Open a raw socket, write `chunks` one by one, half-close, and collect what the server sends until it closes. */
async function throwAtServer(port: number, chunks: Buffer[]): Promise<{ out: Buffer; reset: boolean }> {
  const socket: Socket = netConnect({ host: '127.0.0.1', port });
  socket.setNoDelay(true);
  let reset = false;
  socket.on('error', () => (reset = true)); // ECONNRESET / EPIPE are fine: the server may hang up first
  const received: Buffer[] = [];
  socket.on('data', (c: Buffer) => received.push(c));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      }),
      5000,
      'connect',
    );
    for (const c of chunks) if (c.length > 0 && socket.writable) socket.write(c);
    if (socket.writable) socket.end();
    await withTimeout(closed, 5000, 'the server to close a fuzzed connection');
  } finally {
    socket.destroy();
  }
  return { out: Buffer.concat(received), reset };
}

/** What the server sent must decode; if it complained, GOAWAY is its last frame. */
function checkServerOutput(out: Buffer, complete: boolean): void {
  if (out.length === 0) return;
  const types: number[] = [];
  const d = new FrameDecoder({ maxFrameSize: Limits.MAX_MAX_FRAME_SIZE }, (type, _f, _id, payload) => {
    types.push(type);
    payloadDecoders[type]?.(payload);
  });
  d.push(out);
  if (complete) d.end(); // after a reset the tail may be lost; what did arrive must still decode
  const g = types.indexOf(FrameType.GOAWAY);
  if (g >= 0) assert.equal(g, types.length - 1, `frames after GOAWAY: ${types.join(',')}`);
}

test('decoder fuzz - a real server survives random and mutated input and keeps serving (property)', async () => {
  const problems: unknown[] = [];
  const onProblem = (e: unknown): void => {
    problems.push(e);
  };
  process.on('uncaughtException', onProblem);
  process.on('unhandledRejection', onProblem);
  const server = createServer({ maxFrameSize: MAX, heartbeatMs: 0, handshakeTimeoutMs: 5000, onError: onProblem }).add(implement(Fuzz, { say: (req) => req }));
  const bound = await server.listen({ host: '127.0.0.1', port: 0 });
  const port = bound.port!;
  const client = connect(Fuzz, { target: `127.0.0.1:${port}`, timeout: 5000 });
  try {
    assert.deepStrictEqual(await client.say({ text: 'before' }), { text: 'before' });
    const hello = Buffer.concat([PREFACE, encodeFrame(FrameType.HELLO, 0, 0, encodeJson(HELLO))]);
    const full = validStream();
    const valid = full.subarray(0, full.length - (HEADER_SIZE + encodeGoaway(3, GoawayReason.NO_ERROR, 'bye').length)); // without the client's GOAWAY
    const inputArb = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 200 }).map((u) => Buffer.from(u)),
      fc.uint8Array({ minLength: 1, maxLength: 200 }).map((u) => Buffer.concat([PREFACE, u])),
      fc.uint8Array({ minLength: 1, maxLength: 200 }).map((u) => Buffer.concat([hello, u])),
      fc
        .array(fc.record({ type: fc.integer({ min: 0, max: MAX_FRAME_TYPE + 1 }), flags: fc.integer({ min: 0, max: 3 }), id: fc.integer({ min: 0, max: 7 }), payload: fc.uint8Array({ maxLength: 40 }) }), { minLength: 1, maxLength: 6 })
        .map((fs) => Buffer.concat([hello, ...fs.map((f) => encodeFrame(f.type, f.flags, f.id, Buffer.from(f.payload)))])),
      fc.array(mutationArb, { minLength: 1, maxLength: 3 }).map((ms) => mutate(valid, ms)),
    );
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(inputArb, cutsArb, async (input, cuts) => {
        const offsets = [...new Set(cuts.map((c) => c % (input.length + 1)))].sort((a, b) => a - b);
        const chunks: Buffer[] = [];
        let prev = 0;
        for (const o of [...offsets, input.length]) {
          chunks.push(input.subarray(prev, o));
          prev = o;
        }
        const { out, reset } = await throwAtServer(port, chunks);
        checkServerOutput(out, !reset);
        if (++runs % 20 === 0) assert.deepStrictEqual(await client.say({ text: `during ${runs}` }), { text: `during ${runs}` });
      }),
      { numRuns: 400 },
    );
    await waitFor(() => server.connectionCount === 1, { timeoutMs: 5000, what: `fuzzed connections to close (${server.connectionCount} open)` });
    assert.deepStrictEqual(await client.say({ text: 'after' }), { text: 'after' });
    assert.deepStrictEqual(problems, [], 'no uncaught exception, unhandled rejection or handler error');
  } finally {
    process.off('uncaughtException', onProblem);
    process.off('unhandledRejection', onProblem);
    await client.close();
    await server.close(0);
  }
});
