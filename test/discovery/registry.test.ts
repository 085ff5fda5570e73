/**
 * The discovery plugin family: lookup by URL scheme, registration rules, URL parsing
 * (host lists included) and the errors for unknown schemes and read-only sources.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, isSkeinError } from '../../src/errors.js';
import {
  discoveryFor,
  discoveryHosts,
  discoverySchemes,
  parseDiscoveryUrl,
  registerDiscovery,
  registrarFor,
  resolverFor,
  setupDiscovery,
  unregisterDiscovery,
  DnsResolver,
  MulticastResolver,
  StaticResolver,
  staticDiscovery,
} from '../../src/discovery/index.js';
import type { DiscoveryPlugin, Resolver } from '../../src/discovery/index.js';

setupDiscovery();

function invalidOptions(pattern?: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(isSkeinError(err), `expected a SkeinError, got ${String(err)}`);
    assert.equal(err.code, ErrorCode.INVALID_OPTIONS);
    if (pattern !== undefined) assert.match(err.message, pattern);
    return true;
  };
}

function fakePlugin(scheme: string): DiscoveryPlugin {
  const resolver: Resolver = {
    watch: () => ({ [Symbol.asyncIterator]: () => ({ next: async () => ({ done: true, value: undefined }) }) }),
    list: async () => [],
    close: async () => {},
  };
  return { scheme, resolver: () => resolver };
}

test('discovery registry - setupDiscovery registers static, dns and multicast, and is idempotent', () => {
  setupDiscovery();
  for (const s of ['static', 'dns', 'multicast']) assert.ok(discoverySchemes().includes(s), `${s} registered`);
  assert.equal(discoveryFor('static://127.0.0.1:1'), staticDiscovery);
});

test('discovery registry - resolverFor picks the plugin by scheme', async () => {
  const a = resolverFor('static://127.0.0.1:7700');
  const b = resolverFor('dns://localhost');
  const c = resolverFor(new URL('multicast://239.255.1.2:7000'));
  assert.ok(a instanceof StaticResolver);
  assert.ok(b instanceof DnsResolver);
  assert.ok(c instanceof MulticastResolver);
  await Promise.all([a.close(), b.close(), c.close()]);
});

test('discovery registry - scheme lookup ignores case', async () => {
  const r = resolverFor('STATIC://127.0.0.1:7700');
  assert.ok(r instanceof StaticResolver);
  await r.close();
});

test('discovery registry - an unknown scheme is INVALID_OPTIONS naming the known schemes', () => {
  assert.throws(() => discoveryFor('zk://h:2181'), invalidOptions(/unknown scheme "zk:".*static:\/\/.*/));
  assert.throws(() => resolverFor('zk://h:2181'), invalidOptions(/dns:\/\/, multicast:\/\/, static:\/\//));
  assert.throws(() => registrarFor('zk://h:2181'), invalidOptions(/unknown scheme/));
});

test('discovery registry - malformed URLs are INVALID_OPTIONS', () => {
  for (const bad of ['', '   ', '127.0.0.1:7700', 'no scheme here', '://x', 'static://a:1,,b:2', 'static://a:1, b:2', 'static://[::1:1']) {
    assert.throws(() => discoveryFor(bad), invalidOptions(/invalid discovery URL/), JSON.stringify(bad));
  }
  assert.throws(() => discoveryFor(42 as unknown as string), invalidOptions());
});

test('discovery registry - registrarFor refuses read-only schemes', () => {
  assert.throws(() => registrarFor('static://127.0.0.1:7700'), invalidOptions(/read-only.*multicast:\/\//));
  assert.throws(() => registrarFor('dns://localhost'), invalidOptions(/"dns:" discovery is read-only/));
});

test('discovery registry - registrarFor gives a registrar for multicast', async () => {
  const r = registrarFor('multicast://239.255.1.2:7000');
  assert.equal(typeof r.register, 'function');
  await r.close();
});

test('discovery registry - the same plugin registers twice, a different one needs replace', () => {
  const a = fakePlugin('fake-a');
  const b = fakePlugin('fake-a');
  try {
    registerDiscovery(a);
    registerDiscovery(a);
    assert.equal(discoveryFor('fake-a://x'), a);
    assert.throws(() => registerDiscovery(b), invalidOptions(/already registered/));
    registerDiscovery(b, { replace: true });
    assert.equal(discoveryFor('fake-a://x'), b);
  } finally {
    assert.equal(unregisterDiscovery('fake-a'), true);
  }
  assert.equal(unregisterDiscovery('fake-a'), false);
  assert.throws(() => discoveryFor('fake-a://x'), invalidOptions(/unknown scheme/));
});

test('discovery registry - bad plugins and schemes are refused', () => {
  assert.throws(() => registerDiscovery(fakePlugin('Upper')), invalidOptions(/bad scheme/));
  assert.throws(() => registerDiscovery(fakePlugin('with:colon')), invalidOptions(/bad scheme/));
  assert.throws(() => registerDiscovery(fakePlugin('')), invalidOptions(/bad scheme/));
  assert.throws(() => registerDiscovery({ scheme: 'x' } as unknown as DiscoveryPlugin), invalidOptions(/resolver/));
  assert.throws(() => registerDiscovery(null as unknown as DiscoveryPlugin), invalidOptions());
});

test('discovery registry - a plugin receives the parsed URL', () => {
  let seen: URL | undefined;
  const plugin: DiscoveryPlugin = { scheme: 'fake-b', resolver: (url) => ((seen = url), fakePlugin('fake-b').resolver(url)) };
  registerDiscovery(plugin);
  try {
    resolverFor('fake-b://h1:1,h2:2/path?x=1');
    assert.ok(seen !== undefined);
    assert.deepEqual(discoveryHosts(seen), ['h1:1', 'h2:2']);
    assert.equal(seen.pathname, '/path');
    assert.equal(seen.searchParams.get('x'), '1');
  } finally {
    unregisterDiscovery('fake-b');
  }
});

test('discovery registry - host lists survive parsing with user info, path and query', () => {
  const url = parseDiscoveryUrl('etcd://user:secret@h1:2379,h2:2379,[::1]:2380/prefix?timeout=5');
  assert.equal(url.protocol, 'etcd:');
  assert.equal(url.username, 'user');
  assert.equal(url.password, 'secret');
  assert.deepEqual(discoveryHosts(url), ['h1:2379', 'h2:2379', '[::1]:2380']);
  assert.equal(url.pathname, '/prefix');
  assert.equal(url.searchParams.get('timeout'), '5');
  // A parsed URL goes through again unchanged.
  assert.deepEqual(discoveryHosts(parseDiscoveryUrl(url)), ['h1:2379', 'h2:2379', '[::1]:2380']);
  assert.deepEqual(discoveryHosts(parseDiscoveryUrl(url.href)), ['h1:2379', 'h2:2379', '[::1]:2380']);
});

test('discovery registry - single hosts and empty hosts', () => {
  assert.deepEqual(discoveryHosts(parseDiscoveryUrl('skein://127.0.0.1:7700')), ['127.0.0.1:7700']);
  assert.deepEqual(discoveryHosts(parseDiscoveryUrl('skein://[::1]:7700')), ['[::1]:7700']);
  assert.deepEqual(discoveryHosts(parseDiscoveryUrl('skein://registry')), ['registry']);
  assert.deepEqual(discoveryHosts(parseDiscoveryUrl('multicast://')), []);
  assert.equal(parseDiscoveryUrl('skein://127.0.0.1:7700').port, '7700');
});

test('discovery registry - error messages hide passwords', () => {
  assert.throws(
    () => discoveryFor('zk://admin:hunter2@h:1'),
    (err: unknown) => {
      assert.ok(isSkeinError(err));
      assert.doesNotMatch(err.message, /hunter2/);
      assert.match(err.message, /\*\*\*@/);
      return true;
    },
  );
});
