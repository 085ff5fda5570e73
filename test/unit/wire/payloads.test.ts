/**
 * Payload encodings: round trips for every frame type that has a structured payload,
 * property round trips for metadata, and the decoders' behaviour on hostile input — every
 * truncation, trailing bytes, bad keys, lengths claiming 4 GiB — which must always be a
 * ProtocolError (SKEIN_ERR_PROTOCOL), never a RangeError or a peer-sized allocation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ErrorCode, SkeinError } from '../../../src/errors.js';
import { GoawayReason, Limits } from '../../../src/wire/frame.js';
import {
  checkMetadata,
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
  isValidMetadataKey,
  metadataSize,
  readMetadata,
  Reader,
  writeMetadata,
  type Hello,
  type HelloAck,
  type Metadata,
} from '../../../src/wire/payloads.js';
import { assertProtocolError } from './_helpers.js';

const LIMITS = { minFrame: Limits.MIN_MAX_FRAME_SIZE, maxFrame: Limits.MAX_MAX_FRAME_SIZE };

const HELLO: Hello = {
  codecs: ['msgpack', 'json'],
  compression: ['gzip'],
  maxFrameSize: 65536,
  streamWindow: 1 << 20,
  connectionWindow: 1 << 24,
  heartbeatMs: 5000,
  credential: Buffer.from('secret').toString('base64'),
  agent: 'test/1',
};

const HELLO_ACK: HelloAck = {
  codecs: ['msgpack'],
  compression: null,
  maxFrameSize: 1 << 22,
  streamWindow: 1 << 20,
  connectionWindow: 1 << 24,
  heartbeatMs: 0,
  maxConcurrentStreams: 100,
  agent: 'server/1',
};

function mdBlock(md: Metadata | undefined): Buffer {
  const b = Buffer.alloc(metadataSize(md));
  const end = writeMetadata(b, 0, md);
  assert.equal(end, b.length, 'metadataSize matches what writeMetadata writes');
  return b;
}

function readMd(b: Buffer): Metadata {
  const r = new Reader(b, 'metadata');
  const md = readMetadata(r);
  r.end();
  return md;
}

/** Valid payloads of every structured kind, with the decoder that reads each. */
const validPayloads: Array<[string, Buffer, (p: Buffer) => unknown]> = [
  ['CALL', encodeCall(1, 250, encodeCallPath('shop.cart', 'add'), { 'x-user': 'ann', bin: Buffer.from([0, 0xff]) }), decodeCall],
  ['CALL without metadata', encodeCall(2, 0, encodeCallPath('s', 'm'), undefined), decodeCall],
  ['END with details and metadata', encodeEnd(5, 'not found', { id: 7, why: ['gone'] }, { trace: 'abc', raw: Buffer.from([1, 2, 3]) }), decodeEnd],
  ['END_OK', END_OK, decodeEnd],
  ['RESET', encodeReset(1, 'cancelled by user'), decodeReset],
  ['WINDOW_UPDATE', encodeWindowUpdate(65536), decodeWindowUpdate],
  ['GOAWAY', encodeGoaway(41, GoawayReason.PROTOCOL_ERROR, 'bad frame'), decodeGoaway],
  ['HELLO', encodeJson(HELLO), (p) => decodeHello(p, LIMITS)],
  ['HELLO_ACK', encodeJson(HELLO_ACK), (p) => decodeHelloAck(p, LIMITS)],
];

// ------------------------------------------------------------------------- round trips

test('payloads - CALL round-trips codec, timeout, service, method and metadata', () => {
  const md = { 'x-request-id': 'r-1', 'trace.bin': Buffer.from([0, 1, 2, 254, 255]), empty: '', 'utf8-value': 'héllo 👋' };
  const head = decodeCall(encodeCall(3, 1234, encodeCallPath('shop.cart-v2', 'addItem'), md));
  assert.deepStrictEqual(head, { codec: 3, timeoutMs: 1234, service: 'shop.cart-v2', method: 'addItem', metadata: md });
});

test('payloads - CALL timeout is rounded up and clamped to u32', () => {
  const path = encodeCallPath('s', 'm');
  assert.equal(decodeCall(encodeCall(1, 1.2, path, undefined)).timeoutMs, 2);
  assert.equal(decodeCall(encodeCall(1, -5, path, undefined)).timeoutMs, 0);
  assert.equal(decodeCall(encodeCall(1, 2 ** 40, path, undefined)).timeoutMs, 0xffffffff);
  assert.equal(decodeCall(encodeCall(1, 0, path, undefined)).timeoutMs, 0);
});

test('payloads - CALL with an empty service or method is rejected on both sides', () => {
  assert.throws(() => encodeCallPath('', 'm'), (e: unknown) => e instanceof SkeinError && e.code === ErrorCode.INVALID_OPTIONS);
  assert.throws(() => encodeCallPath('s', ''), (e: unknown) => e instanceof SkeinError && e.code === ErrorCode.INVALID_OPTIONS);
  // hand-made: service length 0
  const p = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 1, 0x6d, 0, 0]);
  assertProtocolError(() => decodeCall(p), ErrorCode.PROTOCOL, 'empty service', /empty service or method/);
});

test('payloads - END round-trips status, message, details and string + binary metadata', () => {
  const md = { 'retry-after': '5', 'debug.bin': Buffer.from([0xde, 0xad, 0xbe, 0xef]) };
  const info = decodeEnd(encodeEnd(14, 'server busy ✋', { retry: true, after: [1, 2] }, md));
  assert.deepStrictEqual(info, { status: 14, message: 'server busy ✋', details: { retry: true, after: [1, 2] }, metadata: md });
  assert.ok(Buffer.isBuffer(info.metadata['debug.bin']));
});

test('payloads - END details: null, falsy values and unserialisable values', () => {
  assert.equal(decodeEnd(encodeEnd(2, 'x', null, undefined)).details, null);
  assert.equal(decodeEnd(encodeEnd(2, 'x', 0, undefined)).details, 0);
  assert.equal(decodeEnd(encodeEnd(2, 'x', '', undefined)).details, '');
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.equal(decodeEnd(encodeEnd(2, 'x', cyclic, undefined)).details, '(details not serialisable)');
  assert.equal(decodeEnd(encodeEnd(2, 'x', undefined, undefined)).details, undefined);
});

test('payloads - END_OK is what encodeEnd gives for a bare OK, and decodes as OK', () => {
  assert.equal(encodeEnd(0, '', undefined, undefined), END_OK);
  assert.deepStrictEqual(decodeEnd(END_OK), { status: 0, message: '', details: undefined, metadata: {} });
  // An OK with metadata is not END_OK
  assert.deepStrictEqual(decodeEnd(encodeEnd(0, '', undefined, { a: 'b' })).metadata, { a: 'b' });
});

test('payloads - END, RESET and GOAWAY messages longer than 4096 bytes are truncated, not rejected', () => {
  const long = 'x'.repeat(70000);
  assert.equal(decodeEnd(encodeEnd(2, long, undefined, undefined)).message.length, 4096);
  assert.equal(decodeReset(encodeReset(2, long)).message.length, 4096);
  assert.equal(decodeGoaway(encodeGoaway(1, 0, long)).message.length, 4096);
});

test('payloads - truncation never splits a UTF-8 character', () => {
  const long = 'x' + 'é'.repeat(5000); // 1 + 2 bytes each: the 4096-byte cut falls inside a character
  const msg = decodeReset(encodeReset(2, long)).message;
  assert.ok(!msg.includes('\uFFFD'), 'no replacement character');
  assert.equal(msg, long.slice(0, msg.length));
  assert.ok(Buffer.byteLength(msg) <= 4096);
});

test('payloads - END and RESET with a status above 16 are rejected', () => {
  assertProtocolError(() => decodeEnd(encodeEnd(17, 'x', undefined, undefined)), ErrorCode.PROTOCOL, 'END 17', /unknown status 17/);
  assertProtocolError(() => decodeReset(encodeReset(200, 'x')), ErrorCode.PROTOCOL, 'RESET 200', /unknown status 200/);
});

test('payloads - END details that are not JSON are rejected', () => {
  const p = Buffer.from([2, 0, 0, 0, 0, 0, 3, 0x7b, 0x7b, 0x7b, 0, 0]); // status 2, no message, details '{{{', no metadata
  assertProtocolError(() => decodeEnd(p), ErrorCode.PROTOCOL, 'details', /not valid JSON/);
});

test('payloads - RESET round-trips', () => {
  assert.deepStrictEqual(decodeReset(encodeReset(1, 'cancelled: user went away')), { status: 1, message: 'cancelled: user went away' });
  assert.deepStrictEqual(decodeReset(encodeReset(8, '')), { status: 8, message: '' });
});

test('payloads - WINDOW_UPDATE round-trips and rejects 0 and increments over 2^31-1', () => {
  for (const inc of [1, 65535, Limits.MAX_WINDOW]) assert.equal(decodeWindowUpdate(encodeWindowUpdate(inc)), inc);
  assertProtocolError(() => decodeWindowUpdate(encodeWindowUpdate(0)), ErrorCode.PROTOCOL, '0', /invalid increment 0/);
  assertProtocolError(() => decodeWindowUpdate(encodeWindowUpdate(0x80000000)), ErrorCode.PROTOCOL, '2^31');
  assertProtocolError(() => decodeWindowUpdate(encodeWindowUpdate(0xffffffff)), ErrorCode.PROTOCOL, '2^32-1');
});

test('payloads - GOAWAY round-trips', () => {
  assert.deepStrictEqual(decodeGoaway(encodeGoaway(Limits.MAX_STREAM_ID, GoawayReason.FRAME_SIZE_ERROR, 'too big ✂')), { lastStreamId: Limits.MAX_STREAM_ID, reason: GoawayReason.FRAME_SIZE_ERROR, message: 'too big ✂' });
  assert.deepStrictEqual(decodeGoaway(encodeGoaway(0, GoawayReason.NO_ERROR, '')), { lastStreamId: 0, reason: 0, message: '' });
});

test('payloads - HELLO and HELLO_ACK round-trip', () => {
  assert.deepStrictEqual(decodeHello(encodeJson(HELLO), LIMITS), HELLO);
  assert.deepStrictEqual(decodeHelloAck(encodeJson(HELLO_ACK), LIMITS), HELLO_ACK);
  const { credential: _c, agent: _a, ...bare } = HELLO;
  assert.deepStrictEqual(decodeHello(encodeJson(bare), LIMITS), bare);
  assert.equal(decodeHelloAck(encodeJson({ ...HELLO_ACK, compression: 'gzip' }), LIMITS).compression, 'gzip');
});

test('payloads - HELLO ignores unknown fields and truncates a long agent', () => {
  const h = decodeHello(encodeJson({ ...HELLO, future: { x: 1 }, agent: 'a'.repeat(500) }), LIMITS);
  assert.equal(h.agent!.length, 128);
  assert.equal((h as unknown as Record<string, unknown>).future, undefined);
});

test('payloads - HELLO / HELLO_ACK with bad JSON, a non-object, missing or out-of-range fields are ProtocolErrors', () => {
  const bad: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['not JSON', Buffer.from('hello')],
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0x7d])],
    ['array', encodeJson([HELLO])],
    ['null', encodeJson(null)],
    ['string', encodeJson('HELLO')],
    ['missing codecs', encodeJson({ ...HELLO, codecs: undefined })],
    ['codecs not strings', encodeJson({ ...HELLO, codecs: [1, 2] })],
    ['too many codecs', encodeJson({ ...HELLO, codecs: Array.from({ length: 65 }, () => 'x') })],
    ['missing maxFrameSize', encodeJson({ ...HELLO, maxFrameSize: undefined })],
    ['maxFrameSize below the minimum', encodeJson({ ...HELLO, maxFrameSize: Limits.MIN_MAX_FRAME_SIZE - 1 })],
    ['maxFrameSize above the maximum', encodeJson({ ...HELLO, maxFrameSize: Limits.MAX_MAX_FRAME_SIZE + 1 })],
    ['maxFrameSize not an integer', encodeJson({ ...HELLO, maxFrameSize: 65536.5 })],
    ['maxFrameSize a string', encodeJson({ ...HELLO, maxFrameSize: '65536' })],
    ['streamWindow too small', encodeJson({ ...HELLO, streamWindow: 10 })],
    ['connectionWindow over u31', encodeJson({ ...HELLO, connectionWindow: 2 ** 31 })],
    ['heartbeatMs negative', encodeJson({ ...HELLO, heartbeatMs: -1 })],
    ['credential not a string', encodeJson({ ...HELLO, credential: 42 })],
  ];
  for (const [label, p] of bad) assertProtocolError(() => decodeHello(p, LIMITS), ErrorCode.PROTOCOL, `HELLO ${label}`);
  const badAck: Array<[string, Buffer]> = [
    ['not JSON', Buffer.from('{')],
    ['compression a number', encodeJson({ ...HELLO_ACK, compression: 1 })],
    ['missing maxConcurrentStreams', encodeJson({ ...HELLO_ACK, maxConcurrentStreams: undefined })],
    ['maxConcurrentStreams 0', encodeJson({ ...HELLO_ACK, maxConcurrentStreams: 0 })],
  ];
  for (const [label, p] of badAck) assertProtocolError(() => decodeHelloAck(p, LIMITS), ErrorCode.PROTOCOL, `HELLO_ACK ${label}`);
});

// ------------------------------------------------------------------------- metadata

const keyArb = fc.stringMatching(/^[a-z0-9\-_.]{1,40}$/);
const valueArb: fc.Arbitrary<string | Buffer> = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u)),
);
const metadataArb: fc.Arbitrary<Metadata> = fc.dictionary(keyArb, valueArb, { maxKeys: 12, noNullPrototype: true });

test('payloads - metadata round-trips through a metadata block (property)', () => {
  fc.assert(
    fc.property(metadataArb, (md) => {
      assert.deepStrictEqual(readMd(mdBlock(md)), md);
    }),
    { numRuns: 500 },
  );
});

test('payloads - metadata round-trips through CALL and END (property)', () => {
  fc.assert(
    fc.property(metadataArb, fc.string({ maxLength: 30 }), (md, message) => {
      assert.deepStrictEqual(decodeCall(encodeCall(1, 0, encodeCallPath('s', 'm'), md)).metadata, md);
      const end = decodeEnd(encodeEnd(3, message, undefined, md));
      assert.deepStrictEqual(end.metadata, md);
      assert.equal(end.message, message);
    }),
    { numRuns: 300 },
  );
});

test('payloads - metadata keys of exactly 255 characters round-trip', () => {
  const md = { ['k'.repeat(255)]: 'v', ['0'.repeat(255)]: Buffer.from([1]) };
  assert.deepStrictEqual(readMd(mdBlock(md)), md);
});

test('payloads - decoded binary metadata is a copy, not a view of the payload', () => {
  const p = encodeEnd(2, '', undefined, { bin: Buffer.from([1, 2, 3]) });
  const info = decodeEnd(p);
  p.fill(0);
  assert.deepStrictEqual(info.metadata.bin, Buffer.from([1, 2, 3]));
});

test('payloads - a metadata key named __proto__ is an ordinary key, not the prototype', () => {
  // Valid by the key grammar ([a-z0-9-_.]). Decoding must neither drop it nor let a peer
  // replace the prototype of the metadata object with a Buffer.
  for (const value of ['x', Buffer.from([1, 2, 3])]) {
    const md = JSON.parse('{"__proto__":null,"a":"b"}') as Metadata;
    md.__proto__ = value; // an own property (JSON.parse made it one), assignment keeps it so
    assert.deepStrictEqual(Object.keys(md), ['__proto__', 'a']);
    const back = decodeEnd(encodeEnd(2, 'm', undefined, md)).metadata;
    assert.equal(Object.getPrototypeOf(back), Object.prototype, 'the prototype is untouched');
    assert.deepStrictEqual(Object.keys(back), ['__proto__', 'a']);
    assert.deepStrictEqual(Object.getOwnPropertyDescriptor(back, '__proto__')?.value, value);
    assert.equal(metadataSize(back), metadataSize(md), 'the decoded object can be re-encoded');
  }
});

test('payloads - invalid metadata keys on the wire are ProtocolErrors', () => {
  const entry = (key: Buffer, kind = 0, value = Buffer.alloc(0)): Buffer => {
    const b = Buffer.alloc(2 + 1 + key.length + 1 + 4 + value.length);
    b.writeUInt16BE(1, 0);
    b[2] = key.length;
    key.copy(b, 3);
    b[3 + key.length] = kind;
    b.writeUInt32BE(value.length, 4 + key.length);
    value.copy(b, 8 + key.length);
    return b;
  };
  const badKeys: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['upper case', Buffer.from('X-User')],
    ['space', Buffer.from('a b')],
    ['colon', Buffer.from(':path')],
    ['slash', Buffer.from('a/b')],
    ['non-ASCII', Buffer.from('clé')],
    ['invalid UTF-8', Buffer.from([0x61, 0xff])],
    ['NUL', Buffer.from([0x61, 0x00])],
  ];
  for (const [label, key] of badKeys) assertProtocolError(() => readMd(entry(key)), ErrorCode.PROTOCOL, label, /invalid metadata key/);
  assertProtocolError(() => readMd(entry(Buffer.from('ok'), 2)), ErrorCode.PROTOCOL, 'value kind 2', /invalid metadata value kind 2/);
  assertProtocolError(() => readMd(entry(Buffer.from('ok'), 0xff)), ErrorCode.PROTOCOL, 'value kind 255');
  // the same inside a CALL
  const call = Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), encodeCallPath('s', 'm'), entry(Buffer.from('Bad'))]);
  assertProtocolError(() => decodeCall(call), ErrorCode.PROTOCOL, 'CALL', /invalid metadata key/);
});

test('payloads - checkMetadata refuses what the wire would refuse, as SKEIN_ERR_INVALID_OPTIONS', () => {
  const bad: Array<[string, unknown]> = [
    ['upper-case key', { Bad: 'x' }],
    ['empty key', { '': 'x' }],
    ['long key', { ['k'.repeat(256)]: 'x' }],
    ['number value', { a: 1 }],
    ['Uint8Array value', { a: new Uint8Array(2) }],
    ['null value', { a: null }],
  ];
  for (const [label, md] of bad) {
    assert.throws(() => checkMetadata(md as Metadata), (e: unknown) => e instanceof SkeinError && e.code === ErrorCode.INVALID_OPTIONS, label);
  }
  checkMetadata(undefined);
  checkMetadata({ 'a-b_c.d': 'x', bin: Buffer.alloc(1) });
  assert.ok(isValidMetadataKey('x-request-id'));
  assert.ok(!isValidMetadataKey('X'));
});

// ------------------------------------------------------------------------- hostile input

test('payloads - every truncation of a valid payload is a ProtocolError, never a RangeError', () => {
  for (const [label, payload, decode] of validPayloads) {
    decode(payload); // the whole payload is valid
    for (let n = 0; n < payload.length; n++) {
      assertProtocolError(() => decode(payload.subarray(0, n)), ErrorCode.PROTOCOL, `${label} cut to ${n} of ${payload.length} bytes`);
    }
  }
});

test('payloads - trailing bytes after a valid payload are rejected', () => {
  for (const [label, payload, decode] of validPayloads) {
    for (const extra of [Buffer.from([0]), Buffer.from([0x78, 0x78, 0x78])]) {
      assertProtocolError(() => decode(Buffer.concat([payload, extra])), ErrorCode.PROTOCOL, `${label} + ${extra.length} bytes`);
    }
  }
});

test('payloads - random bytes into every decoder give a value or a ProtocolError (property)', () => {
  const decoders = validPayloads.map(([, , d]) => d);
  fc.assert(
    fc.property(fc.integer({ min: 0, max: decoders.length - 1 }), fc.uint8Array({ maxLength: 80 }), (i, bytes) => {
      try {
        decoders[i]!(Buffer.from(bytes));
      } catch (e) {
        assert.ok(e instanceof SkeinError && e.code === ErrorCode.PROTOCOL, `decoder ${validPayloads[i]![0]}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      }
    }),
    { numRuns: 2000 },
  );
});

test('payloads - random single-byte mutations of valid payloads give a value or a ProtocolError (property)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: validPayloads.length - 1 }), fc.nat(), fc.integer({ min: 0, max: 255 }), (i, at, byte) => {
      const [label, payload, decode] = validPayloads[i]!;
      const p = Buffer.from(payload);
      if (p.length === 0) return;
      p[at % p.length] = byte;
      try {
        decode(p);
      } catch (e) {
        assert.ok(e instanceof SkeinError && e.code === ErrorCode.PROTOCOL, `${label}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      }
    }),
    { numRuns: 2000 },
  );
});

/** Run `fn` while recording every Buffer allocation of at least `threshold` bytes. */
function bigAllocationsDuring(fn: () => void, threshold = 64 * 1024): number[] {
  const seen: number[] = [];
  const B = Buffer as unknown as Record<'alloc' | 'allocUnsafe' | 'allocUnsafeSlow', (n: number, ...rest: unknown[]) => Buffer>;
  const saved = { alloc: B.alloc, allocUnsafe: B.allocUnsafe, allocUnsafeSlow: B.allocUnsafeSlow };
  for (const name of ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const) {
    const orig = saved[name];
    B[name] = (n: number, ...rest: unknown[]) => {
      if (n >= threshold) seen.push(n);
      return orig.call(Buffer, n, ...rest);
    };
  }
  try {
    fn();
  } finally {
    Object.assign(B, saved);
  }
  return seen;
}

test('payloads - a metadata value length claiming 4 GiB in a small payload is a ProtocolError without allocating', () => {
  for (const kind of [0, 1]) {
    // END: status 2, no message, no details, 1 metadata entry 'a' of kind `kind`, length 0xFFFFFFFF, 3 bytes present
    const p = Buffer.from([2, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x61, kind, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    const big = bigAllocationsDuring(() => assertProtocolError(() => decodeEnd(p), ErrorCode.PROTOCOL, `kind ${kind}`, /truncated END payload/));
    assert.deepStrictEqual(big, [], `allocations of ${big.join(', ')} bytes`);
  }
});

test('payloads - other lengths claiming more than the payload holds are ProtocolErrors without allocating', () => {
  const cases: Array<[string, Buffer, (p: Buffer) => unknown]> = [
    ['CALL service length 65535', Buffer.from([1, 0, 0, 0, 0, 0xff, 0xff, 0x61]), decodeCall],
    ['CALL metadata count 65535', Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), encodeCallPath('s', 'm'), Buffer.from([0xff, 0xff])]), decodeCall],
    ['END details length 4 GiB', Buffer.from([2, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x7b]), decodeEnd],
    ['END message length 65535', Buffer.from([2, 0xff, 0xff, 0x61]), decodeEnd],
    ['RESET message length 65535', Buffer.from([2, 0xff, 0xff]), decodeReset],
    ['GOAWAY message length 65535', Buffer.from([0, 0, 0, 1, 1, 0xff, 0xff, 0x61]), decodeGoaway],
  ];
  for (const [label, p, decode] of cases) {
    const big = bigAllocationsDuring(() => assertProtocolError(() => decode(p), ErrorCode.PROTOCOL, label, /truncated/));
    assert.deepStrictEqual(big, [], label);
  }
});
