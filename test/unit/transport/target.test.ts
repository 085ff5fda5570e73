import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isSkeinError } from '../../../src/errors.js';
import { formatAddress, parseTarget } from '../../../src/transport/target.js';
import type { Target } from '../../../src/transport/transport.js';

const valid: Array<[string, Target, { tls?: boolean }?]> = [
  ['127.0.0.1:4000', { transport: 'tcp', address: '127.0.0.1:4000', host: '127.0.0.1', port: 4000 }],
  ['localhost:80', { transport: 'tcp', address: 'localhost:80', host: 'localhost', port: 80 }],
  ['my-host.example.com:65535', { transport: 'tcp', address: 'my-host.example.com:65535', host: 'my-host.example.com', port: 65535 }],
  ['svc_a:0', { transport: 'tcp', address: 'svc_a:0', host: 'svc_a', port: 0 }],
  ['tcp://10.0.0.1:9', { transport: 'tcp', address: '10.0.0.1:9', host: '10.0.0.1', port: 9 }],
  ['TCP://10.0.0.1:9', { transport: 'tcp', address: '10.0.0.1:9', host: '10.0.0.1', port: 9 }],
  ['tls://example.com:443', { transport: 'tls', address: 'example.com:443', host: 'example.com', port: 443 }],
  ['[::1]:4000', { transport: 'tcp', address: '[::1]:4000', host: '::1', port: 4000 }],
  ['tls://[fe80::1]:4000', { transport: 'tls', address: '[fe80::1]:4000', host: 'fe80::1', port: 4000 }],
  ['tcp://[::ffff:127.0.0.1]:1', { transport: 'tcp', address: '[::ffff:127.0.0.1]:1', host: '::ffff:127.0.0.1', port: 1 }],
  ['unix:/tmp/skein.sock', { transport: 'unix', address: '/tmp/skein.sock' }],
  ['unix:///tmp/skein.sock', { transport: 'unix', address: '/tmp/skein.sock' }],
  ['unix:run/skein.sock', { transport: 'unix', address: 'run/skein.sock' }],
  ['memory:a', { transport: 'memory', address: 'a' }],
  ['memory:with:colons/and-slash', { transport: 'memory', address: 'with:colons/and-slash' }],
  // `tls` turns a scheme-less host:port into TLS; explicit schemes win.
  ['127.0.0.1:4000', { transport: 'tls', address: '127.0.0.1:4000', host: '127.0.0.1', port: 4000 }, { tls: true }],
  ['[::1]:4000', { transport: 'tls', address: '[::1]:4000', host: '::1', port: 4000 }, { tls: true }],
  ['tcp://127.0.0.1:4000', { transport: 'tcp', address: '127.0.0.1:4000', host: '127.0.0.1', port: 4000 }, { tls: true }],
  ['unix:/x.sock', { transport: 'unix', address: '/x.sock' }, { tls: true }],
  ['memory:m', { transport: 'memory', address: 'm' }, { tls: true }],
];

const invalid: string[] = [
  '',
  'localhost',
  'localhost:',
  ':4000',
  'host:port',
  'host:-1',
  'host:65536',
  'host:123456',
  'host:80/path',
  'host:80 ',
  ' host:80',
  'ho st:80',
  '::1:4000',
  '[::1]',
  '[::1]4000',
  '[::1:4000',
  '[not-v6]:4000',
  'http://host:80',
  'tcp://host',
  'tls://',
  'unix:',
  'unix://',
  'unix://relative/path',
  'memory:',
  '-bad-.host:80',
];

describe('parseTarget', () => {
  for (const [input, expected, opts] of valid) {
    it(`parseTarget - accepts ${JSON.stringify(input)}${opts?.tls ? ' with tls' : ''}`, () => {
      assert.deepEqual(parseTarget(input, opts), expected);
    });
  }

  for (const input of invalid) {
    it(`parseTarget - refuses ${JSON.stringify(input)} with SKEIN_ERR_INVALID_OPTIONS`, () => {
      assert.throws(
        () => parseTarget(input),
        (err: unknown) => isSkeinError(err) && err.code === ErrorCode.INVALID_OPTIONS && err.message.includes(JSON.stringify(input)),
      );
    });
  }
});

describe('formatAddress', () => {
  it('formatAddress - joins host and port', () => {
    assert.equal(formatAddress('127.0.0.1', 80), '127.0.0.1:80');
    assert.equal(formatAddress('example.com', 0), 'example.com:0');
  });

  it('formatAddress - brackets IPv6 hosts', () => {
    assert.equal(formatAddress('::1', 4000), '[::1]:4000');
    assert.equal(formatAddress('fe80::1', 1), '[fe80::1]:1');
  });

  it('formatAddress - round-trips through parseTarget', () => {
    for (const [host, port] of [['::1', 1], ['10.1.2.3', 65535], ['a.b', 7]] as const) {
      const t = parseTarget(formatAddress(host, port));
      assert.equal(t.host, host);
      assert.equal(t.port, port);
    }
  });
});
