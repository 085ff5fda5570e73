import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

// Runs in a child process so that the optional packages can be made to fail to load
// before the codec layer first asks for them.
test('compress - skein works without lz4-napi and snappy: only gzip is offered', () => {
  const index = new URL('../../../src/codec/index.js', import.meta.url).href;
  const script = `
    import Module from 'node:module';
    const resolve = Module._resolveFilename;
    Module._resolveFilename = function (request, ...rest) {
      if (request === 'lz4-napi' || request === 'snappy') {
        throw Object.assign(new Error('Cannot find module ' + request), { code: 'MODULE_NOT_FOUND' });
      }
      return resolve.call(this, request, ...rest);
    };
    const { availableCompressors, getCompressor } = await import(${JSON.stringify(index)});
    const gzip = getCompressor('gzip');
    const roundTrip = gzip.decompress(gzip.compress(Buffer.from('ok')), 2).toString();
    console.log(JSON.stringify({ names: availableCompressors(), lz4: getCompressor('lz4') ?? null, snappy: getCompressor('snappy') ?? null, roundTrip }));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepStrictEqual(JSON.parse(r.stdout), { names: ['gzip'], lz4: null, snappy: null, roundTrip: 'ok' });
});
