import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CodecId, jsonCodec } from '../../../src/codec/index.js';
import { ErrorCode } from '../../../src/errors.js';
import { assertThrowsCode, returnsOrThrowsCode } from './_helpers.js';

test('json - has name json and wire id 2', () => {
  assert.equal(jsonCodec.name, 'json');
  assert.equal(jsonCodec.id, CodecId.JSON);
});

test('json - round-trips JSON values (property)', () => {
  // -0 is written as 0 by JSON.stringify; the JSON round trip is the expected value.
  fc.assert(
    fc.property(fc.jsonValue({ stringUnit: 'binary' }), (v) => {
      assert.deepStrictEqual(jsonCodec.decode(jsonCodec.encode(v)), JSON.parse(JSON.stringify(v)));
    }),
    { numRuns: 300 },
  );
});

test('json - round-trips nested objects', () => {
  const v = { a: { b: [1, 'two', { c: null, d: true }], e: 'héllo 👋' }, f: -1.5e-7 };
  assert.deepStrictEqual(jsonCodec.decode(jsonCodec.encode(v)), v);
});

test('json - writes the UTF-8 bytes of JSON.stringify', () => {
  assert.deepStrictEqual(jsonCodec.encode({ a: 'é', b: [1] }), Buffer.from('{"a":"é","b":[1]}', 'utf8'));
  // a lone surrogate is escaped by JSON.stringify, so the bytes stay valid UTF-8
  assert.deepStrictEqual(jsonCodec.decode(jsonCodec.encode('\ud800')), '\ud800');
});

test('json - undefined encodes as null at top level and is dropped from objects', () => {
  assert.deepStrictEqual(jsonCodec.encode(undefined), Buffer.from('null'));
  assert.deepStrictEqual(jsonCodec.decode(jsonCodec.encode({ a: undefined, b: [undefined] })), { b: [null] });
});

test('json - Buffers encode through Buffer#toJSON and decode as plain objects', () => {
  assert.deepStrictEqual(jsonCodec.decode(jsonCodec.encode({ blob: Buffer.from([1, 2]) })), { blob: { type: 'Buffer', data: [1, 2] } });
});

test('json - decode does not keep a reference to the input buffer', () => {
  const input = Buffer.from(jsonCodec.encode({ s: 'text', n: [1, 2] }));
  const out = jsonCodec.decode(input);
  input.fill(0x20);
  assert.deepStrictEqual(out, { s: 'text', n: [1, 2] });
});

test('json - malformed input gives SKEIN_ERR_CODEC', () => {
  const cases: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['truncated', Buffer.from('{"a":')],
    ['not JSON', Buffer.from('hello')],
    ['trailing garbage', Buffer.from('{} x')],
    ['invalid UTF-8', Buffer.from([0x22, 0xff, 0xfe, 0x22])],
    ['overlong UTF-8', Buffer.from([0x22, 0xc0, 0xaf, 0x22])],
    ['byte order mark', Buffer.from('\ufeff{}', 'utf8')],
  ];
  for (const [label, bytes] of cases) assertThrowsCode(() => jsonCodec.decode(bytes), ErrorCode.CODEC, /^json: malformed message/, label);
});

test('json - random bytes never crash the decoder (property)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      returnsOrThrowsCode(() => jsonCodec.decode(Buffer.from(bytes)), ErrorCode.CODEC);
    }),
    { numRuns: 1000 },
  );
});

test('json - values it cannot encode give SKEIN_ERR_CODEC', () => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assertThrowsCode(() => jsonCodec.encode(cyclic), ErrorCode.CODEC, /^json: cannot encode/);
  assertThrowsCode(() => jsonCodec.encode({ n: 1n }), ErrorCode.CODEC);
});
