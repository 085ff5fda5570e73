/**
 * `skein serve`: modules outside the repo importing 'skein', metadata from `call --meta`,
 * load errors (exit 2), draining on SIGTERM, TLS and mutual TLS.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { TLS_FIXTURES_DIR } from '../helpers/tls.js';
import { ECHO, jsonLines, runCli, startServe, tempDir, type Served } from './run.js';

// Lives in a temp dir, far from any node_modules with skein in it: `import 'skein'` only
// works through the CLI's resolve hook.
const META_MODULE = `
import { service, unary, implement, SkeinError } from 'skein';
const Meta = service('test.meta', { get: unary(), bytes: unary(), close: unary(), fail: unary() });
export default [implement(Meta, {
  async get(_req, ctx) { return { metadata: ctx.metadata }; },
  async bytes() { return { data: Buffer.from('hi'), big: 2n ** 60n }; },
  async close(req) { return { closed: req }; },
  async fail() { throw new SkeinError('NOT_FOUND', 'no such thing'); },
})];
`;

describe('skein serve', () => {
  const tmp = tempDir({
    'meta.mjs': META_MODULE,
    'nodefault.mjs': 'export const x = 1;\n',
    'notservice.mjs': 'export default { hello: 1 };\n',
    'throws.mjs': "throw new Error('boom at load');\n",
    'empty.mjs': 'export default [];\n',
  });
  let served: Served;

  before(async () => {
    served = await startServe([join(tmp.dir, 'meta.mjs')], { cwd: tmp.dir });
  });
  after(async () => {
    await served?.stop();
    tmp.cleanup();
  });

  test('serve - a module outside the repo can import skein; --meta reaches ctx.metadata', async () => {
    const r = await runCli(['call', 'test.meta.get', '{}', '--target', served.address, '--meta', 'user=ada', '-m', 'trace-id=a=b', '--meta', 'user=bob']);
    assert.equal(r.code, 0, r.stderr);
    const [reply] = jsonLines(r.stdout) as Array<{ metadata: Record<string, string> }>;
    assert.equal(reply!.metadata.user, 'bob');
    assert.equal(reply!.metadata['trace-id'], 'a=b');
  });

  test('serve - binary replies print as base64, big integers as strings', async () => {
    const r = await runCli(['call', 'test.meta.bytes', '{}', '--target', served.address]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(jsonLines(r.stdout), [{ data: Buffer.from('hi').toString('base64'), big: (2n ** 60n).toString() }]);
  });

  test('serve - a method named like a client control method (close) is callable', async () => {
    const r = await runCli(['call', 'test.meta.close', '{"x":1}', '--target', served.address]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(jsonLines(r.stdout), [{ closed: { x: 1 } }]);
  });

  test('serve - a status thrown by a handler reaches the caller as STATUS: message', async () => {
    const r = await runCli(['call', 'test.meta.fail', '{}', '--target', served.address]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), 'NOT_FOUND: no such thing');
  });

  test('serve - bad modules exit 2 with a message naming the file', async () => {
    const cases: Array<[string, RegExp]> = [
      ['missing.mjs', /missing\.mjs: no such file/],
      ['nodefault.mjs', /nodefault\.mjs: no default export/],
      ['notservice.mjs', /notservice\.mjs: the default export is not an implemented service/],
      ['throws.mjs', /throws\.mjs: cannot load the module: .*boom at load/],
      ['empty.mjs', /empty\.mjs: the default export is an empty array/],
    ];
    for (const [file, re] of cases) {
      const r = await runCli(['serve', file], { cwd: tmp.dir });
      assert.equal(r.code, 2, `${file}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stdout, '', `${file} printed a ready line`);
    }
  });

  test('serve - the same service twice is a usage error', async () => {
    const r = await runCli(['serve', ECHO, ECHO]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /already added/);
  });

  test('serve - SIGTERM drains: an in-flight call completes OK, then exit 0', async () => {
    const s = await startServe([ECHO, '--verbose']);
    try {
      const inflight = runCli(['call', 'echo.sleep', '{"ms":300}', '--target', s.address]);
      await s.waitForStderr('call echo.sleep');
      const exit = await s.stop('SIGTERM');
      const r = await inflight;
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(jsonLines(r.stdout), [{ slept: 300 }]);
      assert.deepEqual(exit, { code: 0, signal: null }, s.stderr);
      assert.match(s.stderr, /draining/);
    } finally {
      await s.stop('SIGKILL');
    }
  });
});

describe('skein serve - TLS', () => {
  const f = (name: string): string => join(TLS_FIXTURES_DIR, name);

  test('serve --tls-cert/--tls-key + call --tls-ca', async () => {
    const s = await startServe([ECHO, '--tls-cert', f('server.pem'), '--tls-key', f('server-key.pem')]);
    try {
      const ok = await runCli(['call', 'echo.say', '{"tls":true}', '--target', s.address, '--tls-ca', f('ca.pem')]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.deepEqual(jsonLines(ok.stdout), [{ tls: true }]);
      const wrongCa = await runCli(['call', 'echo.say', '{}', '--target', s.address, '--tls-ca', f('other-ca.pem')]);
      assert.equal(wrongCa.code, 1);
      assert.match(wrongCa.stderr, /^UNAVAILABLE: /);
    } finally {
      assert.equal((await s.stop()).code, 0);
    }
  });

  test('serve --tls-ca requires client certificates (mutual TLS)', async () => {
    const s = await startServe([ECHO, '--tls-cert', f('server.pem'), '--tls-key', f('server-key.pem'), '--tls-ca', f('ca.pem')]);
    try {
      const ok = await runCli(['call', 'echo.count', '{"n":2}', '--target', s.address, '--tls-ca', f('ca.pem'), '--tls-cert', f('client.pem'), '--tls-key', f('client-key.pem')]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.deepEqual(jsonLines(ok.stdout), [{ i: 1 }, { i: 2 }]);
      const noCert = await runCli(['call', 'echo.say', '{}', '--target', s.address, '--tls-ca', f('ca.pem')]);
      assert.equal(noCert.code, 1, noCert.stderr);
      assert.match(noCert.stderr, /^UNAVAILABLE: /);
    } finally {
      assert.equal((await s.stop()).code, 0);
    }
  });

  test('serve - TLS flag mistakes are usage errors', async () => {
    const onlyCert = await runCli(['serve', ECHO, '--tls-cert', f('server.pem')]);
    assert.equal(onlyCert.code, 2);
    const unreadable = await runCli(['serve', ECHO, '--tls-cert', f('nope.pem'), '--tls-key', f('server-key.pem')]);
    assert.equal(unreadable.code, 2);
    assert.match(unreadable.stderr, /cannot read/);
  });
});
