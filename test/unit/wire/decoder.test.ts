/**
 * FrameDecoder: every fixture is fed whole, one byte at a time, split into two at every
 * offset and into three at many offsets; a property test does the same with random frames
 * and random chunkings. Then the limits (checked on the header, before any payload is
 * buffered), the error codes, and the view-versus-copy contract.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ErrorCode } from '../../../src/errors.js';
import { FrameDecoder } from '../../../src/wire/decoder.js';
import { EMPTY, encodeFrame, Flags, FrameType, GoawayReason, HEADER_SIZE, Limits, MAX_FRAME_TYPE, PREFACE, PREFACE_SIZE, PROTOCOL_VERSION, writeHeader } from '../../../src/wire/frame.js';
import { encodeCall, encodeCallPath, encodeEnd, encodeGoaway, encodeJson, encodeReset, encodeWindowUpdate, END_OK } from '../../../src/wire/payloads.js';
import { assertFramesEqual, assertProtocolError, decodeChunks, encodeStream, ownBuffer, splitAt, type Frame } from './_helpers.js';

const MAX = Limits.MIN_MAX_FRAME_SIZE; // 16 KiB: the limit the fixtures are decoded under

function f(type: number, flags: number, streamId: number, payload: Buffer = EMPTY): Frame {
  return { type, flags, streamId, payload };
}

function ping(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(n, 0);
  return b;
}

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

interface Fixture {
  name: string;
  frames: Frame[];
  preface: boolean;
}

const fixtures: Fixture[] = [
  {
    name: 'handshake',
    preface: true,
    frames: [
      f(FrameType.HELLO, 0, 0, encodeJson({ codecs: ['msgpack', 'json'], compression: [], maxFrameSize: MAX, streamWindow: 65536, connectionWindow: 1 << 20, heartbeatMs: 0 })),
      f(FrameType.HELLO_ACK, 0, 0, encodeJson({ codecs: ['msgpack'], compression: null, maxFrameSize: MAX, streamWindow: 65536, connectionWindow: 1 << 20, heartbeatMs: 0, maxConcurrentStreams: 8 })),
    ],
  },
  {
    name: 'every frame type with a payload',
    preface: true,
    frames: [
      f(FrameType.HELLO, 0, 0, encodeJson({ codecs: ['json'] })),
      f(FrameType.HELLO_ACK, 0, 0, encodeJson({ codecs: ['json'] })),
      f(FrameType.CALL, 0, 1, encodeCall(2, 1500, encodeCallPath('shop.cart', 'add'), { 'x-id': 'abc', bin: Buffer.from([0, 1, 255]) })),
      f(FrameType.DATA, 0, 1, Buffer.from('{"item":42}')),
      f(FrameType.DATA, Flags.END_STREAM | Flags.COMPRESSED, 1, pattern(300, 7)),
      f(FrameType.END, 0, 1, encodeEnd(5, 'no such item', { id: 42 }, { trace: 't-1' })),
      f(FrameType.END, 0, 3, END_OK),
      f(FrameType.RESET, 0, 5, encodeReset(1, 'cancelled')),
      f(FrameType.WINDOW_UPDATE, 0, 0, encodeWindowUpdate(65536)),
      f(FrameType.WINDOW_UPDATE, 0, 7, encodeWindowUpdate(1)),
      f(FrameType.PING, 0, 0, ping(1)),
      f(FrameType.PONG, 0, 0, ping(1)),
      f(FrameType.GOAWAY, 0, 0, encodeGoaway(7, GoawayReason.NO_ERROR, 'bye')),
    ],
  },
  {
    name: 'every frame type with an empty payload',
    preface: true,
    frames: Array.from({ length: MAX_FRAME_TYPE + 1 }, (_, type) => f(type, 0, type === FrameType.CALL || type === FrameType.DATA ? 1 : 0)),
  },
  {
    name: 'a max-size payload between small frames',
    preface: true,
    frames: [f(FrameType.PING, 0, 0, ping(9)), f(FrameType.DATA, 0, 1, pattern(MAX, 3)), f(FrameType.DATA, Flags.END_STREAM, 1), f(FrameType.PONG, 0, 0, ping(9))],
  },
  {
    name: 'extreme header values',
    preface: true,
    frames: [f(FrameType.DATA, 0xff, Limits.MAX_STREAM_ID, Buffer.from([0])), f(FrameType.GOAWAY, 0xff, 0, encodeGoaway(Limits.MAX_STREAM_ID, 0xff, '')), f(FrameType.DATA, 0, 0x12345679)],
  },
  {
    name: 'no preface (expectPreface: false)',
    preface: false,
    frames: [f(FrameType.DATA, 0, 3, Buffer.from('abc')), f(FrameType.END, 0, 3, END_OK), f(FrameType.PING, 0, 0)],
  },
];

/** Offsets worth splitting at in a long fixture: near every frame boundary, plus a stride. */
function interestingOffsets(fx: Fixture, total: number): number[] {
  const set = new Set<number>();
  let pos = fx.preface ? PREFACE_SIZE : 0;
  const marks = [0, pos];
  for (const fr of fx.frames) {
    marks.push(pos + HEADER_SIZE);
    pos += HEADER_SIZE + fr.payload.length;
    marks.push(pos);
  }
  for (const m of marks) for (let d = -2; d <= 2; d++) if (m + d >= 0 && m + d <= total) set.add(m + d);
  for (let o = 0; o <= total; o += 97) set.add(o);
  return [...set].sort((a, b) => a - b);
}

for (const fx of fixtures) {
  const bytes = encodeStream(fx.frames, fx.preface);
  const decode = (chunks: Buffer[]): Frame[] => decodeChunks(chunks, MAX, fx.preface);

  test(`decoder - ${fx.name}: fed whole`, () => {
    assertFramesEqual(decode([bytes]), fx.frames, 'whole');
  });

  test(`decoder - ${fx.name}: fed one byte at a time`, () => {
    const chunks: Buffer[] = [];
    for (let i = 0; i < bytes.length; i++) chunks.push(bytes.subarray(i, i + 1));
    assertFramesEqual(decode(chunks), fx.frames, 'byte by byte');
  });

  test(`decoder - ${fx.name}: split into two at every offset`, () => {
    for (let i = 0; i <= bytes.length; i++) assertFramesEqual(decode(splitAt(bytes, [i])), fx.frames, `split at ${i}`);
  });

  test(`decoder - ${fx.name}: split into three at many offsets`, () => {
    // Every pair of offsets for small fixtures; pairs of interesting offsets for large ones.
    const offsets = bytes.length <= 400 ? Array.from({ length: bytes.length + 1 }, (_, i) => i) : interestingOffsets(fx, bytes.length);
    let cases = 0;
    for (let a = 0; a < offsets.length; a++) {
      for (let b = a; b < offsets.length; b++) {
        assertFramesEqual(decode(splitAt(bytes, [offsets[a]!, offsets[b]!])), fx.frames, `split at ${offsets[a]} and ${offsets[b]}`);
        cases++;
      }
    }
    assert.ok(cases > 100, `only ${cases} three-way splits tried`);
  });
}

// ------------------------------------------------------------------------- property

const frameArb: fc.Arbitrary<Frame> = fc.record({
  type: fc.integer({ min: 0, max: MAX_FRAME_TYPE }),
  flags: fc.integer({ min: 0, max: 0xff }),
  streamId: fc.oneof(fc.constantFrom(0, 1, Limits.MAX_STREAM_ID), fc.integer({ min: 0, max: Limits.MAX_STREAM_ID })),
  payload: fc.oneof({ weight: 1, arbitrary: fc.constant(EMPTY) }, { weight: 4, arbitrary: fc.uint8Array({ maxLength: 600 }).map((u) => Buffer.from(u)) }),
});

test('decoder - random frames, encoded and split into random chunks, decode to themselves (property)', () => {
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 12 }), fc.boolean(), fc.array(fc.nat(), { maxLength: 24 }), (frames, preface, cuts) => {
      const bytes = encodeStream(frames, preface);
      const offsets = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
      assertFramesEqual(decodeChunks(splitAt(bytes, offsets), 1024, preface), frames, `cuts ${offsets.join(',')}`);
    }),
    { numRuns: 500 },
  );
});

// ------------------------------------------------------------------------- limits

function header(length: number, type: number, flags = 0, streamId = 1): Buffer {
  const h = Buffer.alloc(HEADER_SIZE);
  writeHeader(h, 0, length, type, flags, streamId);
  return h;
}

function newDecoder(maxFrameSize = MAX, frames: Frame[] = []): FrameDecoder {
  return new FrameDecoder({ maxFrameSize }, (type, flags, streamId, payload) => frames.push({ type, flags, streamId, payload }));
}

test('decoder - a declared length over maxFrameSize throws SKEIN_ERR_FRAME_TOO_LARGE on the header alone', () => {
  const d = newDecoder();
  d.push(PREFACE);
  // Only the 10 header bytes go in: the throw cannot be waiting for the payload.
  const err = assertProtocolError(() => d.push(header(MAX + 1, FrameType.DATA)), ErrorCode.FRAME_TOO_LARGE, 'MAX + 1', new RegExp(`${MAX + 1}`));
  assert.equal(err.statusName, 'RESOURCE_EXHAUSTED');
  assert.equal(d.bufferedBytes, 0, 'nothing is kept buffered');
});

test('decoder - an oversize length is caught at the 10th header byte when fed byte by byte', () => {
  const d = newDecoder();
  d.push(PREFACE);
  const h = header(MAX + 1, FrameType.CALL);
  for (let i = 0; i < HEADER_SIZE - 1; i++) d.push(h.subarray(i, i + 1));
  assert.equal(d.bufferedBytes, HEADER_SIZE - 1);
  assertProtocolError(() => d.push(h.subarray(HEADER_SIZE - 1)), ErrorCode.FRAME_TOO_LARGE);
  assert.equal(d.bufferedBytes, 0);
});

test('decoder - a length claiming 4 GiB (0xFFFFFFFF) throws SKEIN_ERR_FRAME_TOO_LARGE on the header alone', () => {
  for (const type of [FrameType.DATA, FrameType.HELLO, FrameType.PING]) {
    const d = newDecoder(Limits.MAX_MAX_FRAME_SIZE);
    d.push(PREFACE);
    assertProtocolError(() => d.push(header(0xffffffff, type, 0, 0)), ErrorCode.FRAME_TOO_LARGE, `type ${type}`, /4294967295/);
    assert.equal(d.bufferedBytes, 0);
  }
});

test('decoder - a length of exactly maxFrameSize is accepted, the payload waited for', () => {
  const frames: Frame[] = [];
  const d = newDecoder(MAX, frames);
  d.push(PREFACE);
  d.push(header(MAX, FrameType.DATA));
  assert.equal(frames.length, 0);
  d.push(Buffer.alloc(MAX - 1));
  assert.equal(frames.length, 0);
  assert.equal(d.bufferedBytes, MAX - 1);
  d.push(Buffer.alloc(1));
  assert.equal(frames.length, 1);
  assert.equal(frames[0]!.payload.length, MAX);
  assert.equal(d.bufferedBytes, 0);
});

test('decoder - setMaxFrameSize applies from the next header on', () => {
  const frames: Frame[] = [];
  const d = newDecoder(100, frames);
  d.push(PREFACE);
  assertProtocolError(() => newDecoder(100).push(Buffer.concat([PREFACE, header(101, FrameType.DATA)])), ErrorCode.FRAME_TOO_LARGE);
  d.setMaxFrameSize(200);
  d.push(encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(200)));
  assert.equal(frames.length, 1);
  d.setMaxFrameSize(50);
  assertProtocolError(() => d.push(header(51, FrameType.DATA)), ErrorCode.FRAME_TOO_LARGE);
});

// ------------------------------------------------------------------------- bad input

test('decoder - an unknown frame type throws SKEIN_ERR_PROTOCOL on the header', () => {
  for (const type of [MAX_FRAME_TYPE + 1, 0x7f, 0xff]) {
    const d = newDecoder();
    d.push(PREFACE);
    assertProtocolError(() => d.push(header(0, type)), ErrorCode.PROTOCOL, `type ${type}`, /unknown frame type/);
    // also with a length that would be fine and a payload that never arrives
    const d2 = newDecoder();
    d2.push(PREFACE);
    assertProtocolError(() => d2.push(header(5, type)), ErrorCode.PROTOCOL, `type ${type} with a payload`);
  }
});

test('decoder - a stream id with the reserved high bit throws SKEIN_ERR_PROTOCOL', () => {
  const d = newDecoder();
  d.push(PREFACE);
  assertProtocolError(() => d.push(header(0, FrameType.DATA, 0, 0x80000001)), ErrorCode.PROTOCOL, 'high bit', /reserved/);
});

test('decoder - bad magic throws SKEIN_ERR_PROTOCOL at the first wrong byte', () => {
  // A wrong byte at each of the 5 magic positions, pushed alone after the right prefix.
  for (let pos = 0; pos < 5; pos++) {
    const d = newDecoder();
    for (let i = 0; i < pos; i++) d.push(PREFACE.subarray(i, i + 1));
    const wrong = Buffer.from([PREFACE[pos]! ^ 0x20]);
    assertProtocolError(() => d.push(wrong), ErrorCode.PROTOCOL, `wrong byte at ${pos}`, /magic/);
  }
  // Typical strangers: an HTTP request, a TLS ClientHello, a single zero byte.
  for (const [label, bytes] of [
    ['HTTP', Buffer.from('GET / HTTP/1.1\r\n')],
    ['TLS', Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00])],
    ['zero byte', Buffer.from([0])],
  ] as const) {
    assertProtocolError(() => newDecoder().push(bytes), ErrorCode.PROTOCOL, label);
  }
});

test('decoder - a correct partial magic waits for more bytes', () => {
  const frames: Frame[] = [];
  const d = newDecoder(MAX, frames);
  d.push(Buffer.from('SKE'));
  assert.equal(d.bufferedBytes, 3);
  d.push(Buffer.concat([PREFACE.subarray(3), encodeFrame(FrameType.PING, 0, 0, ping(1))]));
  assert.equal(frames.length, 1);
});

test('decoder - a wrong protocol version throws SKEIN_ERR_VERSION', () => {
  for (const version of [0, PROTOCOL_VERSION + 1, 0xff]) {
    const p = Buffer.from(PREFACE);
    p[5] = version;
    const err = assertProtocolError(() => newDecoder().push(p), ErrorCode.VERSION, `version ${version}`, new RegExp(`version ${version}`));
    assert.equal(err.statusName, 'UNAVAILABLE');
    // byte by byte too: the version is judged once the preface is complete
    const d = newDecoder();
    for (let i = 0; i < PREFACE_SIZE - 1; i++) d.push(p.subarray(i, i + 1));
    assertProtocolError(() => d.push(p.subarray(PREFACE_SIZE - 1)), ErrorCode.VERSION);
  }
});

test('decoder - after an error the decoder is dead: later pushes are ignored', () => {
  const frames: Frame[] = [];
  const d = newDecoder(MAX, frames);
  assertProtocolError(() => d.push(Buffer.from('X')), ErrorCode.PROTOCOL);
  d.push(Buffer.concat([PREFACE, encodeFrame(FrameType.PING, 0, 0, ping(1))]));
  assert.equal(frames.length, 0);
  assert.equal(d.bufferedBytes, 0);
});

test('decoder - a throwing frame handler propagates out of push and kills the decoder', () => {
  let calls = 0;
  const d = new FrameDecoder({ maxFrameSize: MAX }, () => {
    calls++;
    throw new Error('handler failed');
  });
  const two = Buffer.concat([PREFACE, encodeFrame(FrameType.PING, 0, 0, ping(1)), encodeFrame(FrameType.PING, 0, 0, ping(2))]);
  assert.throws(() => d.push(two), /handler failed/);
  assert.equal(calls, 1);
  d.push(encodeFrame(FrameType.PING, 0, 0, ping(3)));
  assert.equal(calls, 1);
  assert.equal(d.bufferedBytes, 0);
});

test('decoder - destroy() from inside the handler stops delivery of the rest of the chunk', () => {
  let calls = 0;
  const d: FrameDecoder = new FrameDecoder({ maxFrameSize: MAX }, () => {
    calls++;
    d.destroy();
  });
  d.push(Buffer.concat([PREFACE, encodeFrame(FrameType.PING, 0, 0, ping(1)), encodeFrame(FrameType.PING, 0, 0, ping(2))]));
  assert.equal(calls, 1);
  assert.equal(d.bufferedBytes, 0);
});

test('decoder - empty pushes are no-ops in every state', () => {
  const frames: Frame[] = [];
  const d = newDecoder(MAX, frames);
  const bytes = Buffer.concat([PREFACE, encodeFrame(FrameType.DATA, 0, 1, Buffer.from('hi'))]);
  for (let i = 0; i < bytes.length; i++) {
    d.push(EMPTY);
    d.push(bytes.subarray(i, i + 1));
  }
  d.push(EMPTY);
  assertFramesEqual(frames, [f(FrameType.DATA, 0, 1, Buffer.from('hi'))], 'with empty pushes');
});

// ------------------------------------------------------------------------- views and copies

test('decoder - a frame inside one chunk is handed out as a view of that chunk', () => {
  const frames: Frame[] = [];
  const d = newDecoder(MAX, frames);
  d.push(ownBuffer(PREFACE));
  const chunk = ownBuffer(Buffer.concat([encodeFrame(FrameType.DATA, 0, 1, Buffer.from('first')), encodeFrame(FrameType.DATA, 0, 3, Buffer.from('second'))]));
  d.push(chunk);
  assert.equal(frames.length, 2);
  for (const fr of frames) {
    assert.equal(fr.payload.buffer, chunk.buffer, 'payload shares the chunk memory');
  }
  assert.equal(frames[0]!.payload.byteOffset, chunk.byteOffset + HEADER_SIZE);
  // A view, not a copy: writing to the chunk shows through.
  chunk[HEADER_SIZE] = 0x46; // 'F'
  assert.equal(frames[0]!.payload.toString(), 'First');
});

test('decoder - a payload spanning chunks is handed out as a copy', () => {
  const frames: Frame[] = [];
  const d = newDecoder(MAX, frames);
  d.push(ownBuffer(PREFACE));
  const bytes = encodeFrame(FrameType.DATA, 0, 1, Buffer.from('spanning payload'));
  const a = ownBuffer(bytes.subarray(0, HEADER_SIZE + 4));
  const b = ownBuffer(bytes.subarray(HEADER_SIZE + 4));
  d.push(a);
  d.push(b);
  assert.equal(frames.length, 1);
  const p = frames[0]!.payload;
  assert.equal(p.toString(), 'spanning payload');
  assert.notEqual(p.buffer, a.buffer);
  assert.notEqual(p.buffer, b.buffer);
  a.fill(0);
  b.fill(0);
  assert.equal(p.toString(), 'spanning payload', 'the copy does not change with the chunks');
});

test('decoder - a header spanning chunks does not force a copy of a payload inside one chunk', () => {
  const frames: Frame[] = [];
  const d = newDecoder(MAX, frames);
  d.push(ownBuffer(PREFACE));
  const bytes = encodeFrame(FrameType.DATA, 0, 1, Buffer.from('payload'));
  d.push(ownBuffer(bytes.subarray(0, 4)));
  const rest = ownBuffer(bytes.subarray(4));
  d.push(rest);
  assert.equal(frames[0]!.payload.buffer, rest.buffer);
});

test('decoder - a payload that is exactly one chunk is that chunk', () => {
  const frames: Frame[] = [];
  const d = newDecoder(MAX, frames);
  d.push(Buffer.concat([PREFACE, header(5, FrameType.DATA)]));
  const payload = ownBuffer(Buffer.from('exact'));
  d.push(payload);
  assert.equal(frames[0]!.payload.buffer, payload.buffer);
  assert.equal(frames[0]!.payload.length, 5);
});

test('decoder - bufferedBytes never exceeds header + max frame size while a frame is incomplete', () => {
  const d = newDecoder(MAX);
  d.push(PREFACE);
  const bytes = encodeFrame(FrameType.DATA, 0, 1, pattern(MAX, 1));
  let peak = 0;
  for (let i = 0; i < bytes.length; i += 1000) {
    d.push(bytes.subarray(i, i + 1000));
    peak = Math.max(peak, d.bufferedBytes);
  }
  assert.ok(peak <= HEADER_SIZE + MAX, `peak ${peak}`);
  assert.equal(d.bufferedBytes, 0);
});

// ------------------------------------------------------------------------- end of input

test('decoder - end() at a frame boundary is quiet and kills the decoder', () => {
  const frames: Frame[] = [];
  const d = newDecoder(MAX, frames);
  d.end(); // nothing received at all: not an error
  const d2 = newDecoder(MAX, frames);
  d2.push(Buffer.concat([PREFACE, encodeFrame(FrameType.PING, 0, 0, ping(1))]));
  d2.end();
  d2.push(encodeFrame(FrameType.PING, 0, 0, ping(2)));
  assert.equal(frames.length, 1);
  d2.end(); // idempotent
});

test('decoder - end() inside the preface, a header or a payload throws SKEIN_ERR_PROTOCOL', () => {
  const bytes = Buffer.concat([PREFACE, encodeFrame(FrameType.DATA, 0, 1, Buffer.from('abc')), encodeFrame(FrameType.END, 0, 1, END_OK)]);
  const boundaries = new Set([0, PREFACE_SIZE, PREFACE_SIZE + HEADER_SIZE + 3, bytes.length]);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const d = newDecoder();
    d.push(bytes.subarray(0, cut));
    if (boundaries.has(cut)) d.end();
    else assertProtocolError(() => d.end(), ErrorCode.PROTOCOL, `end after ${cut} bytes`, /in the middle of/);
    assert.equal(d.bufferedBytes, 0);
  }
});

test('decoder - end() after a header announcing a payload throws even with no payload byte buffered', () => {
  const d = newDecoder();
  d.push(Buffer.concat([PREFACE, header(4, FrameType.DATA)]));
  assert.equal(d.bufferedBytes, 0);
  assertProtocolError(() => d.end(), ErrorCode.PROTOCOL, 'payload missing', /frame payload \(0 of 4 bytes\)/);
});
