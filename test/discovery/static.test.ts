/**
 * static:// — a fixed address list: every service resolves to it (or the ?service= ones),
 * one snapshot per watch, read-only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, isSkeinError } from '../../src/errors.js';
import { parseDiscoveryUrl, parseStaticUrl, resolverFor, setupDiscovery, StaticResolver } from '../../src/discovery/index.js';
import type { ResolverEvent } from '../../src/discovery/index.js';
import { withTimeout } from '../helpers/wait.js';

setupDiscovery();

function staticResolver(url: string): StaticResolver {
  return new StaticResolver(parseDiscoveryUrl(url));
}

function invalidOptions(pattern?: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(isSkeinError(err), `expected a SkeinError, got ${String(err)}`);
    assert.equal(err.code, ErrorCode.INVALID_OPTIONS);
    if (pattern !== undefined) assert.match(err.message, pattern);
    return true;
  };
}

test('static resolver - every service resolves to the listed addresses', async () => {
  const r = resolverFor('static://127.0.0.1:7700,10.0.0.2:7701');
  for (const service of ['echo', 'greeter']) {
    assert.deepEqual(await r.list(service), [
      { service, id: '127.0.0.1:7700', address: '127.0.0.1:7700', metadata: {} },
      { service, id: '10.0.0.2:7701', address: '10.0.0.2:7701', metadata: {} },
    ]);
  }
  await r.close();
});

test('static resolver - watch yields one snapshot, then ends when aborted', async () => {
  const r = staticResolver('static://a.example:1,b.example:2');
  const ac = new AbortController();
  const it = r.watch('echo', { signal: ac.signal })[Symbol.asyncIterator]();
  const first = await withTimeout(it.next(), 2000, 'the snapshot');
  assert.equal(first.done, false);
  const ev = first.value as ResolverEvent;
  assert.equal(ev.type, 'snapshot');
  assert.deepEqual(
    ev.type === 'snapshot' ? ev.instances.map((i) => i.address) : [],
    ['a.example:1', 'b.example:2'],
  );
  const pending = it.next();
  ac.abort();
  assert.deepEqual(await withTimeout(pending, 2000, 'the end of the watch'), { done: true, value: undefined });
  await r.close();
});

test('static resolver - a watch with an already aborted signal yields nothing', async () => {
  const r = staticResolver('static://127.0.0.1:1');
  const events: ResolverEvent[] = [];
  for await (const ev of r.watch('echo', { signal: AbortSignal.abort() })) events.push(ev);
  assert.deepEqual(events, []);
  await r.close();
});

test('static resolver - close ends active watches', async () => {
  const r = staticResolver('static://127.0.0.1:1');
  const it = r.watch('echo')[Symbol.asyncIterator]();
  assert.equal((await withTimeout(it.next(), 2000, 'the snapshot')).done, false);
  const pending = it.next();
  await r.close();
  assert.equal((await withTimeout(pending, 2000, 'the end of the watch')).done, true);
  assert.throws(() => r.watch('echo'), (err: unknown) => isSkeinError(err) && err.code === ErrorCode.CLOSED);
  await assert.rejects(r.list('echo'), (err: unknown) => isSkeinError(err) && err.code === ErrorCode.CLOSED);
});

test('static resolver - breaking out of the loop ends the watch', async () => {
  const r = staticResolver('static://127.0.0.1:1');
  let n = 0;
  for await (const ev of r.watch('echo')) {
    assert.equal(ev.type, 'snapshot');
    n++;
    break;
  }
  assert.equal(n, 1);
  await r.close();
});

test('static resolver - ?service= restricts the services', async () => {
  const r = staticResolver('static://127.0.0.1:1?service=echo,greeter&service=shop.cart');
  assert.equal((await r.list('echo')).length, 1);
  assert.equal((await r.list('shop.cart')).length, 1);
  assert.deepEqual(await r.list('other'), []);
  const it = r.watch('other')[Symbol.asyncIterator]();
  assert.deepEqual((await withTimeout(it.next(), 2000, 'the snapshot')).value, { type: 'snapshot', instances: [] });
  await it.return?.();
  assert.deepEqual(
    (await r.list()).map((i) => `${i.service}@${i.address}`),
    ['echo@127.0.0.1:1', 'greeter@127.0.0.1:1', 'shop.cart@127.0.0.1:1'],
  );
  await r.close();
});

test('static resolver - list() without a service uses the wildcard service', async () => {
  const r = staticResolver('static://127.0.0.1:1,127.0.0.1:2');
  assert.deepEqual(
    (await r.list()).map((i) => `${i.service}@${i.address}`),
    ['*@127.0.0.1:1', '*@127.0.0.1:2'],
  );
  await r.close();
});

test('static resolver - ?tls, IPv6 literals and duplicates', () => {
  assert.deepEqual(parseStaticUrl(parseDiscoveryUrl('static://[::1]:7700,127.0.0.1:7700,[::1]:7700')).addresses, ['[::1]:7700', '127.0.0.1:7700']);
  assert.deepEqual(parseStaticUrl(parseDiscoveryUrl('static://h:1,[::1]:2?tls')).addresses, ['tls://h:1', 'tls://[::1]:2']);
  assert.deepEqual(parseStaticUrl(parseDiscoveryUrl('static://h:1?tls=false')).addresses, ['h:1']);
  assert.deepEqual(parseStaticUrl(parseDiscoveryUrl('static://h:1/')).addresses, ['h:1']);
});

test('static resolver - bad URLs are INVALID_OPTIONS', () => {
  for (const bad of [
    'static://',
    'static://host',
    'static://h:0',
    'static://h:99999',
    'static://h:1,h',
    'static://h:1/path',
    'static://h:1?servce=echo',
    'static://h:1?service=',
    'static://h:1?tls=maybe',
    'static://user@h:1',
    'static://h_-:1',
  ]) {
    assert.throws(() => resolverFor(bad), invalidOptions(/static|discovery URL/), bad);
  }
});

test('static resolver - an empty service name is INVALID_OPTIONS', async () => {
  const r = staticResolver('static://127.0.0.1:1');
  assert.throws(() => r.watch(''), invalidOptions(/service/));
  await assert.rejects(r.list(''), invalidOptions(/service/));
  await r.close();
});
