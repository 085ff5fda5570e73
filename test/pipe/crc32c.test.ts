import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { crc32c, crc32cImplementation, crc32cJs, crc32cNative } from '../../src/pipe/crc32c.js';

const ascending = Uint8Array.from({ length: 32 }, (_, i) => i);
const descending = Uint8Array.from({ length: 32 }, (_, i) => 31 - i);
const VECTORS: Array<[string, Uint8Array, number]> = [
  // RFC 3720 appendix B.4
  ['32 x 0x00', new Uint8Array(32), 0x8a9136aa],
  ['32 x 0xFF', new Uint8Array(32).fill(0xff), 0x62a8ab43],
  ['0..31 ascending', ascending, 0x46dd794e],
  ['31..0 descending', descending, 0x113fdb5c],
  ['"123456789"', new TextEncoder().encode('123456789'), 0xe3069283],
  ['empty', new Uint8Array(0), 0],
  ['"a"', new TextEncoder().encode('a'), 0xc1d04330],
];

const native = crc32cNative();
const impls: Array<[string, (d: Uint8Array, i?: number) => number]> = [
  ['crc32c', crc32c],
  ['js', crc32cJs],
  ...(native === null ? [] : [['native', native] as [string, (d: Uint8Array, i?: number) => number]]),
];

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

test('crc32c - known vectors (RFC 3720 B.4, check value), every implementation', () => {
  for (const [impl, f] of impls) {
    for (const [name, data, expected] of VECTORS) {
      assert.equal(f(data), expected, `${impl} ${name}: got 0x${f(data).toString(16)}`);
      // The same vector padded to past the native threshold and through a subarray view.
      const padded = new Uint8Array(data.length + 200);
      padded.set(data, 100);
      assert.equal(f(padded.subarray(100, 100 + data.length)), expected, `${impl} ${name} (subarray view)`);
    }
  }
});

test('crc32c - result is an unsigned 32-bit integer', () => {
  for (const [impl, f] of impls) {
    const v = f(new Uint8Array(32).fill(0xff));
    assert.ok(Number.isInteger(v) && v >= 0 && v <= 0xffffffff, `${impl}: ${v}`);
  }
});

test('crc32c - empty input returns initial unchanged', () => {
  for (const [impl, f] of impls) {
    for (const initial of [0, 1, 0x12345678, 0x80000000, 0xffffffff]) {
      assert.equal(f(new Uint8Array(0), initial), initial, `${impl} initial 0x${initial.toString(16)}`);
    }
  }
});

test('crc32c - chaining: crc32c(b, crc32c(a)) === crc32c(a + b)', () => {
  const a = new TextEncoder().encode('1234');
  const b = new TextEncoder().encode('56789');
  for (const [impl, f] of impls) assert.equal(f(b, f(a)), 0xe3069283, impl);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.uint8Array({ maxLength: 600 }), (x, y) => {
      const whole = crc32cJs(concat(x, y));
      for (const [impl, f] of impls) assert.equal(f(y, f(x)), whole, impl);
    }),
    { numRuns: 300 },
  );
});

test('crc32c - JS and native agree on random inputs and initial values', (t) => {
  if (native === null) {
    t.skip('@node-rs/crc32 is not loadable here');
    return;
  }
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 5000 }), fc.nat({ max: 0xffffffff }), fc.nat(16), (data, initial, offset) => {
      const view = data.subarray(Math.min(offset, data.length));
      assert.equal(native(view, initial), crc32cJs(view, initial));
      assert.equal(crc32c(view, initial), crc32cJs(view, initial));
    }),
    { numRuns: 500 },
  );
  // One large buffer, chunked at odd sizes.
  const big = new Uint8Array(3 * 1024 * 1024 + 13);
  for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
  const whole = crc32cJs(big);
  assert.equal(native(big), whole);
  let chained = 0;
  for (let i = 0; i < big.length; i += 65_531) chained = crc32c(big.subarray(i, i + 65_531), chained);
  assert.equal(chained, whole);
});

test('crc32c - implementation is native when @node-rs/crc32 loads, else js', () => {
  assert.equal(crc32cImplementation(), native === null ? 'js' : 'native');
});

// In a child process so the package can be made to fail to load before first use.
test('crc32c - falls back to JavaScript when @node-rs/crc32 fails to load', () => {
  const mod = new URL('../../src/pipe/crc32c.js', import.meta.url).href;
  const script = `
    import Module from 'node:module';
    const resolve = Module._resolveFilename;
    Module._resolveFilename = function (request, ...rest) {
      if (request === '@node-rs/crc32') throw Object.assign(new Error('Cannot find module ' + request), { code: 'MODULE_NOT_FOUND' });
      return resolve.call(this, request, ...rest);
    };
    const { crc32c, crc32cImplementation, crc32cNative } = await import(${JSON.stringify(mod)});
    const big = new Uint8Array(1000).fill(7);
    console.log(JSON.stringify({ impl: crc32cImplementation(), native: crc32cNative(), v: crc32c(new TextEncoder().encode('123456789')), big: crc32c(big) }));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { impl: string; native: null; v: number; big: number };
  assert.deepStrictEqual(out, { impl: 'js', native: null, v: 0xe3069283, big: crc32cJs(new Uint8Array(1000).fill(7)) });
});

test('crc32c - SKEIN_CRC32C=js forces the JavaScript version', () => {
  const mod = new URL('../../src/pipe/crc32c.js', import.meta.url).href;
  const script = `const m = await import(${JSON.stringify(mod)}); console.log(m.crc32cImplementation());`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, SKEIN_CRC32C: 'js' } });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'js');
});
