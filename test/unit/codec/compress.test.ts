import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { availableCompressors, getCompressor, gzipCompressor } from '../../../src/codec/index.js';
import type { Compressor } from '../../../src/codec/index.js';
import { ErrorCode } from '../../../src/errors.js';
import { assertThrowsCode, returnsOrThrowsCode } from './_helpers.js';

const NAMES = ['lz4', 'snappy', 'gzip'] as const;

/** The compressor, failing the test (not skipping it) when its package does not load. */
function must(name: string): Compressor {
  const c = getCompressor(name);
  assert.ok(c, `compressor ${name} did not load: lz4-napi and snappy are installed here and in CI`);
  assert.equal(c.name, name);
  return c;
}

test('compress - all three compressors load, in preference order lz4, snappy, gzip', () => {
  assert.deepStrictEqual(availableCompressors(), ['lz4', 'snappy', 'gzip']);
  for (const name of NAMES) must(name);
  assert.equal(getCompressor('gzip'), gzipCompressor);
});

test('compress - unknown names give undefined', () => {
  assert.equal(getCompressor('zstd'), undefined);
  assert.equal(getCompressor(''), undefined);
  assert.equal(getCompressor('GZIP'), undefined);
});

for (const name of NAMES) {
  test(`compress - ${name} round-trips random buffers (property)`, () => {
    const c = must(name);
    const data = fc.oneof(
      fc.uint8Array({ maxLength: 4096 }),
      // repetitive data, which actually compresses
      fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 16 }), fc.integer({ min: 1, max: 5000 })).map(([unit, n]) => Buffer.concat(Array<Uint8Array>(n).fill(unit))),
    );
    fc.assert(
      fc.property(data, (bytes) => {
        const input = Buffer.from(bytes);
        const packed = c.compress(input);
        assert.ok(Buffer.isBuffer(packed));
        // the limit is inclusive: exactly the original size is allowed
        assert.deepStrictEqual(c.decompress(packed, input.length), input);
      }),
      { numRuns: 200 },
    );
  });

  test(`compress - ${name} round-trips empty and large payloads`, () => {
    const c = must(name);
    assert.deepStrictEqual(c.decompress(c.compress(Buffer.alloc(0)), 0), Buffer.alloc(0));
    const big = Buffer.concat([randomBytes(1 << 20), Buffer.alloc(1 << 20, 'a')]);
    assert.deepStrictEqual(c.decompress(c.compress(big), big.length), big);
  });

  test(`compress - ${name} refuses output over maxOutput with SKEIN_ERR_MESSAGE_TOO_LARGE`, () => {
    const c = must(name);
    const packed = c.compress(Buffer.alloc(100_000));
    assertThrowsCode(() => c.decompress(packed, 99_999), ErrorCode.MESSAGE_TOO_LARGE, /exceeds the limit of 99999 bytes/);
    assertThrowsCode(() => c.decompress(packed, 0), ErrorCode.MESSAGE_TOO_LARGE);
    assert.equal(c.decompress(packed, 100_000).length, 100_000);
  });

  test(`compress - ${name} corrupt input gives SKEIN_ERR_CODEC`, () => {
    const c = must(name);
    const packed = c.compress(Buffer.from('hello hello hello hello hello hello'));
    const cases: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['truncated', packed.subarray(0, packed.length - 3)],
      ['extended', Buffer.concat([packed, Buffer.from([1, 2, 3])])],
    ];
    if (name === 'gzip') cases.push(['not gzip', Buffer.from('definitely not gzip data')]);
    for (const [label, bytes] of cases) assertThrowsCode(() => c.decompress(bytes, 1 << 20), ErrorCode.CODEC, new RegExp(`^${name}: corrupt`), label);
  });

  test(`compress - ${name} random and mangled input never crashes (property)`, () => {
    const c = must(name);
    const arb = fc.tuple(fc.uint8Array({ maxLength: 300 }), fc.nat(), fc.integer({ min: 0, max: 7 }), fc.boolean());
    fc.assert(
      fc.property(arb, ([bytes, pos, bit, mangle]) => {
        let input = Buffer.from(bytes);
        if (mangle) {
          input = Buffer.from(c.compress(input));
          input[pos % input.length] ^= 1 << bit;
        }
        returnsOrThrowsCode(() => {
          const out = c.decompress(input, 4096);
          assert.ok(out.length <= 4096);
        }, ErrorCode.CODEC, ErrorCode.MESSAGE_TOO_LARGE);
      }),
      { numRuns: 1000 },
    );
  });

  test(`compress - ${name} rejects a negative or NaN maxOutput with SKEIN_ERR_INVALID_OPTIONS`, () => {
    const c = must(name);
    const packed = c.compress(Buffer.from('x'));
    assertThrowsCode(() => c.decompress(packed, -1), ErrorCode.INVALID_OPTIONS);
    assertThrowsCode(() => c.decompress(packed, Number.NaN), ErrorCode.INVALID_OPTIONS);
  });
}

test('compress - lz4 frames the block with the uncompressed size as a little-endian u32', () => {
  const c = must('lz4');
  const packed = c.compress(Buffer.alloc(300, 'a'));
  assert.equal(packed.readUInt32LE(0), 300);
});

test('compress - lz4 refuses a declared size over maxOutput before decompressing', () => {
  const c = must('lz4');
  // A tiny block claiming 4 GiB: refused from the header, nothing is allocated.
  const bomb = Buffer.from(c.compress(Buffer.from('abc')));
  bomb.writeUInt32LE(0xffffffff, 0);
  assertThrowsCode(() => c.decompress(bomb, 1 << 20), ErrorCode.MESSAGE_TOO_LARGE, /decompressed size 4294967295/);
  // Declaring more than the block holds (within the limit) is corrupt, not a short read.
  bomb.writeUInt32LE(10, 0);
  assertThrowsCode(() => c.decompress(bomb, 1 << 20), ErrorCode.CODEC, /declared 10 bytes, decoded 3/);
  // Declaring less than the block holds is corrupt too.
  bomb.writeUInt32LE(2, 0);
  assertThrowsCode(() => c.decompress(bomb, 1 << 20), ErrorCode.CODEC);
});

test('compress - snappy starts the block with the uncompressed length as a varint', () => {
  const c = must('snappy');
  assert.deepStrictEqual(c.compress(Buffer.alloc(300, 'a')).subarray(0, 2), Buffer.from([0xac, 0x02]));
});

test('compress - snappy refuses a declared length over maxOutput before decompressing', () => {
  const c = must('snappy');
  const body = c.compress(Buffer.from('abc')).subarray(1); // drop the 1-byte varint (3)
  const bomb = Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), body]); // 2^32 - 1
  assertThrowsCode(() => c.decompress(bomb, 1 << 20), ErrorCode.MESSAGE_TOO_LARGE, /decompressed size 4294967295/);
  const overlong = Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff, 0x1f]), body]); // > u32
  assertThrowsCode(() => c.decompress(overlong, 1 << 20), ErrorCode.CODEC, /bad length header/);
  const unterminated = Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
  assertThrowsCode(() => c.decompress(unterminated, 1 << 20), ErrorCode.CODEC, /bad length header/);
  const lying = Buffer.concat([Buffer.from([10]), body]);
  assertThrowsCode(() => c.decompress(lying, 1 << 20), ErrorCode.CODEC);
});

test('compress - gzip stops inflating a bomb at maxOutput', () => {
  const bomb = gzipCompressor.compress(Buffer.alloc(64 << 20)); // 64 MiB of zeros, ~64 KiB packed
  assert.ok(bomb.length < 1 << 17);
  assertThrowsCode(() => gzipCompressor.decompress(bomb, 1 << 20), ErrorCode.MESSAGE_TOO_LARGE);
});
