import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CodecId, msgpackCodec } from '../../../src/codec/index.js';
import { ErrorCode } from '../../../src/errors.js';
import { assertThrowsCode, hasProtoKey, returnsOrThrowsCode } from './_helpers.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('msgpack - has name msgpack and wire id 1', () => {
  assert.equal(msgpackCodec.name, 'msgpack');
  assert.equal(msgpackCodec.id, CodecId.MSGPACK);
});

test('msgpack - round-trips JSON values (property)', () => {
  // msgpackr renames a `__proto__` key (tested below), so such values are left out here.
  // -0 comes back as 0 (it is written as the integer 0, as JSON writes it): compare against
  // the JSON round trip, which is the identity on JSON values apart from that.
  const value = fc.jsonValue({ stringUnit: 'binary' }).filter((v) => !hasProtoKey(v));
  fc.assert(
    fc.property(value, (v) => {
      assert.deepStrictEqual(msgpackCodec.decode(msgpackCodec.encode(v)), JSON.parse(JSON.stringify(v)));
    }),
    { numRuns: 300 },
  );
});

test('msgpack - round-trips nested objects with binary, dates and numbers of every width', () => {
  const v = {
    user: { id: 42, name: 'ada', tags: ['a', 'b'], nested: { deep: [1, [2, [3, { x: null }]]] } },
    blob: Buffer.from([0, 1, 2, 255]),
    when: new Date(1_700_000_000_123),
    ints: [0, 127, 128, -32, -33, 255, 65535, 65536, 2 ** 32, -(2 ** 31) - 1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER],
    floats: [0.5, -1.25, 1e300, Number.EPSILON],
    text: 'héllo wörld 👋 '.repeat(50),
    empty: { obj: {}, arr: [], str: '' },
  };
  assert.deepStrictEqual(msgpackCodec.decode(msgpackCodec.encode(v)), v);
});

test('msgpack - round-trips binary data of any size (property)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 70_000, size: 'large' }), (bytes) => {
      const out = msgpackCodec.decode(msgpackCodec.encode({ bytes: Buffer.from(bytes) })) as { bytes: Buffer };
      assert.ok(Buffer.isBuffer(out.bytes));
      assert.deepStrictEqual(new Uint8Array(out.bytes), bytes);
    }),
    { numRuns: 50 },
  );
});

test('msgpack - writes standard MessagePack bytes', () => {
  assert.deepStrictEqual(msgpackCodec.encode({ a: 1, b: [true, null], c: 'x' }), hex('83 a161 01 a162 92 c3 c0 a163 a178'));
  assert.deepStrictEqual(msgpackCodec.encode(Buffer.from([1, 2])), hex('c4 02 0102'), 'Buffer as bin 8');
  assert.deepStrictEqual(msgpackCodec.encode(new Uint8Array([1, 2])), hex('c4 02 0102'), 'Uint8Array as bin 8');
  assert.deepStrictEqual(msgpackCodec.encode(new Date(0)), hex('d6 ff 00000000'), 'Date as timestamp 32');
  assert.deepStrictEqual(msgpackCodec.encode(-1), hex('ff'));
  assert.deepStrictEqual(msgpackCodec.encode(1.5), hex('cb 3ff8000000000000'));
  const sixteen = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, i]));
  assert.deepStrictEqual(msgpackCodec.encode(sixteen).subarray(0, 3), hex('de 0010'), '16 keys: map 16');
});

test('msgpack - encodes objects with more than 65535 keys as map 32', () => {
  const big = Object.fromEntries(Array.from({ length: 70_000 }, (_, i) => [`k${i}`, i]));
  const bytes = msgpackCodec.encode(big);
  assert.deepStrictEqual(bytes.subarray(0, 5), hex('df 00011170'));
  assert.deepStrictEqual(msgpackCodec.decode(bytes), big);
});

test('msgpack - reads MessagePack written by other implementations', () => {
  // map 32 { str8 "k": [float32 1.5, uint64 2^32, int64 2^60, bin8, timestamp 32, nil, -1] }
  const bytes = hex(`df 00000001 d9 01 6b 97
    ca 3fc00000  cf 0000000100000000  d3 1000000000000000  c4 02 0102  d6 ff 00000001  c0  ff`);
  assert.deepStrictEqual(msgpackCodec.decode(bytes), {
    k: [1.5, 2 ** 32, 2n ** 60n, Buffer.from([1, 2]), new Date(1000), null, -1],
  });
});

test('msgpack - encodes undefined as nil: top level and arrays decode as null, object properties are dropped', () => {
  assert.deepStrictEqual(msgpackCodec.encode(undefined), hex('c0'));
  assert.equal(msgpackCodec.decode(msgpackCodec.encode(undefined)), null);
  assert.deepStrictEqual(msgpackCodec.decode(msgpackCodec.encode([undefined, 1])), [null, 1]);
  assert.deepStrictEqual(msgpackCodec.decode(msgpackCodec.encode({ a: undefined, b: 1 })), { b: 1 });
});

test('msgpack - bigints encode as 64-bit integers and come back as numbers when safe', () => {
  assert.equal(msgpackCodec.decode(msgpackCodec.encode(10n)), 10);
  assert.equal(msgpackCodec.decode(msgpackCodec.encode(2n ** 63n - 1n)), 2n ** 63n - 1n);
  assert.equal(msgpackCodec.decode(msgpackCodec.encode(2n ** 64n - 1n)), 2n ** 64n - 1n);
  assert.equal(msgpackCodec.decode(msgpackCodec.encode(-(2n ** 63n))), -(2n ** 63n));
  assertThrowsCode(() => msgpackCodec.encode(2n ** 64n), ErrorCode.CODEC);
});

test('msgpack - decode does not keep a reference to the input buffer', () => {
  const input = Buffer.from(msgpackCodec.encode({ bin: Buffer.from('abcdef'), s: 'text' }));
  const out = msgpackCodec.decode(input) as { bin: Buffer; s: string };
  input.fill(0);
  assert.deepStrictEqual(out.bin, Buffer.from('abcdef'));
  assert.equal(out.s, 'text');
  assert.notEqual(out.bin.buffer, input.buffer);
});

test('msgpack - decodes a view into a larger buffer', () => {
  const payload = msgpackCodec.encode({ x: [1, 2, 3] });
  const big = Buffer.concat([Buffer.from([0xc1, 0xc1]), payload, Buffer.from([0xc1])]);
  assert.deepStrictEqual(msgpackCodec.decode(big.subarray(2, 2 + payload.length)), { x: [1, 2, 3] });
});

test('msgpack - encoded buffers stay intact after later encodes', () => {
  const first = msgpackCodec.encode({ n: 1 });
  const copy = Buffer.from(first);
  for (let i = 0; i < 2000; i++) msgpackCodec.encode({ n: i, pad: 'x'.repeat(100) });
  assert.deepStrictEqual(first, copy);
});

test('msgpack - a __proto__ key is renamed and never pollutes prototypes', () => {
  const bytes = hex('81 a9 5f5f70726f746f5f5f 81 a1 70 c3'); // { "__proto__": { p: true } }
  const out = msgpackCodec.decode(bytes) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(out), Object.prototype);
  assert.deepStrictEqual(out, { __proto_: { p: true } });
  assert.equal(({} as Record<string, unknown>).p, undefined);
});

test('msgpack - malformed input gives SKEIN_ERR_CODEC', () => {
  const cases: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['truncated array', hex('92 01')],
    ['truncated string', hex('a5 6162')],
    ['truncated bin', hex('c4 05 0102')],
    ['huge array header', hex('dd ffffffff')],
    ['huge map header', hex('df ffffffff')],
    ['trailing bytes', hex('c0 c0')],
    ['reserved byte 0xc1', hex('c1')],
    ['unknown extension', hex('d4 05 00')],
    ['structured clone extension', hex('d6 69 00000001 c0')],
  ];
  for (const [label, bytes] of cases) {
    assertThrowsCode(() => msgpackCodec.decode(bytes), ErrorCode.CODEC, /^msgpack: malformed message/, label);
  }
});

test('msgpack - random bytes never crash the decoder (property)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      returnsOrThrowsCode(() => msgpackCodec.decode(Buffer.from(bytes)), ErrorCode.CODEC);
    }),
    { numRuns: 2000 },
  );
});

test('msgpack - corrupted valid messages never crash the decoder (property)', () => {
  const arb = fc.tuple(fc.jsonValue(), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat());
  fc.assert(
    fc.property(arb, ([v, pos, byte, cut]) => {
      const bytes = Buffer.from(msgpackCodec.encode(v));
      bytes[pos % bytes.length] = byte;
      returnsOrThrowsCode(() => msgpackCodec.decode(bytes), ErrorCode.CODEC);
      returnsOrThrowsCode(() => msgpackCodec.decode(bytes.subarray(0, cut % bytes.length)), ErrorCode.CODEC);
    }),
    { numRuns: 1000 },
  );
});

test('msgpack - values it cannot encode give SKEIN_ERR_CODEC', () => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assertThrowsCode(() => msgpackCodec.encode(Symbol('s')), ErrorCode.CODEC, /^msgpack: cannot encode/);
  assertThrowsCode(() => msgpackCodec.encode(cyclic), ErrorCode.CODEC);
  // the shared encoder is still usable afterwards
  assert.deepStrictEqual(msgpackCodec.decode(msgpackCodec.encode({ ok: true })), { ok: true });
});
