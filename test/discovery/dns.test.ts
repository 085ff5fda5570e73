/**
 * dns:// — SRV first, else A/AAAA with the URL's port; periodic re-resolution emitting
 * diffs; DNS failures as 'error' events that keep the last set. The logic runs against
 * injected lookups and a fake clock; one test resolves `localhost` for real.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, isSkeinError } from '../../src/errors.js';
import { DnsResolver, parseDiscoveryUrl, parseDnsUrl, resolverFor, setupDiscovery, DEFAULT_DNS_PORT } from '../../src/discovery/index.js';
import type { DnsAddress, DnsResolverOptions, DnsSrvRecord, Instance, ResolverEvent } from '../../src/discovery/index.js';
import { FakeClock } from '../helpers/clock.js';
import { withTimeout } from '../helpers/wait.js';

setupDiscovery();

type Answer<T> = T[] | { code: string } | 'hang';

/** Programmable DNS: answers by name, every call recorded. */
class FakeDns {
  srv = new Map<string, Answer<DnsSrvRecord>>();
  a = new Map<string, Answer<DnsAddress>>();
  calls: string[] = [];

  #answer<T>(kind: string, table: Map<string, Answer<T>>, name: string): Promise<T[]> {
    this.calls.push(`${kind} ${name}`);
    const answer = table.get(name) ?? { code: 'ENOTFOUND' };
    if (answer === 'hang') return new Promise<T[]>(() => {});
    if (Array.isArray(answer)) return Promise.resolve(answer.map((x) => ({ ...x })));
    return Promise.reject(Object.assign(new Error(`query ${answer.code} ${name}`), { code: answer.code }));
  }

  options(clock: FakeClock, extra: DnsResolverOptions = {}): DnsResolverOptions {
    return {
      clock,
      backoff: { jitter: 0 },
      resolveSrv: (name) => this.#answer('SRV', this.srv, name),
      lookup: (name) => this.#answer('A', this.a, name),
      ...extra,
    };
  }
}

function srv(name: string, port: number, priority = 0, weight = 0): DnsSrvRecord {
  return { name, port, priority, weight };
}

function v4(address: string): DnsAddress {
  return { address, family: 4 };
}

function resolver(url: string, dns: FakeDns, clock: FakeClock, extra?: DnsResolverOptions): DnsResolver {
  return new DnsResolver(parseDiscoveryUrl(url), dns.options(clock, extra));
}

/** A watch with bounded `next()`. */
function watcher(r: DnsResolver, service: string, signal?: AbortSignal): { next(what?: string): Promise<ResolverEvent>; end(): Promise<void> } {
  const it = r.watch(service, signal === undefined ? {} : { signal })[Symbol.asyncIterator]();
  return {
    async next(what = 'the next event') {
      const res = await withTimeout(it.next(), 2000, what);
      assert.equal(res.done, false, `the watch ended while waiting for ${what}`);
      return res.value as ResolverEvent;
    },
    async end() {
      await it.return?.();
    },
  };
}

function addresses(instances: Instance[]): string[] {
  return instances.map((i) => i.address).sort();
}

test('dns resolver - SRV records become instances with priority and weight', async () => {
  const dns = new FakeDns();
  dns.srv.set('echo.service.consul', [srv('node1.example.', 7001, 10, 5), srv('node2.example', 7002, 20, 1)]);
  const r = resolver('dns://echo.service.consul', dns, new FakeClock());
  assert.deepEqual(await r.list('echo'), [
    { service: 'echo', id: 'node1.example:7001', address: 'node1.example:7001', metadata: { priority: '10', weight: '5' } },
    { service: 'echo', id: 'node2.example:7002', address: 'node2.example:7002', metadata: { priority: '20', weight: '1' } },
  ]);
  assert.deepEqual(dns.calls, ['SRV echo.service.consul']);
  await r.close();
});

test('dns resolver - a name without SRV records falls back to A/AAAA with the URL port', async () => {
  const dns = new FakeDns();
  dns.srv.set('web.example', { code: 'ENODATA' });
  dns.a.set('web.example', [v4('10.0.0.1'), { address: 'fd00::1', family: 6 }, v4('10.0.0.1')]);
  const r = resolver('dns://web.example:9000', dns, new FakeClock());
  assert.deepEqual(addresses(await r.list('echo')), ['10.0.0.1:9000', '[fd00::1]:9000']);
  assert.deepEqual(dns.calls, ['SRV web.example', 'A web.example']);

  const d = resolver('dns://web.example', dns, new FakeClock());
  assert.deepEqual(addresses(await d.list('echo')), [`10.0.0.1:${DEFAULT_DNS_PORT}`, `[fd00::1]:${DEFAULT_DNS_PORT}`]);
  assert.equal(DEFAULT_DNS_PORT, 7700);
  await Promise.all([r.close(), d.close()]);
});

test('dns resolver - a SRV failure other than "no record" is an error, not a fallback', async () => {
  const dns = new FakeDns();
  dns.srv.set('web.example', { code: 'ESERVFAIL' });
  dns.a.set('web.example', [v4('10.0.0.1')]);
  const r = resolver('dns://web.example', dns, new FakeClock());
  await assert.rejects(r.list('echo'), (err: unknown) => {
    assert.ok(isSkeinError(err));
    assert.equal(err.code, ErrorCode.CONNECT_FAILED);
    assert.equal(err.statusName, 'UNAVAILABLE');
    assert.match(err.message, /SRV web\.example failed: ESERVFAIL/);
    return true;
  });
  assert.deepEqual(dns.calls, ['SRV web.example']);
  await r.close();
});

test('dns resolver - ?srv=off, IP literals and localhost skip the SRV lookup', async () => {
  const dns = new FakeDns();
  dns.a.set('web.example', [v4('10.0.0.1')]);
  dns.a.set('localhost', [v4('127.0.0.1')]);
  const clock = new FakeClock();
  const a = resolver('dns://web.example:1?srv=off', dns, clock);
  assert.deepEqual(addresses(await a.list('echo')), ['10.0.0.1:1']);
  const b = resolver('dns://localhost:2', dns, clock);
  assert.deepEqual(addresses(await b.list('echo')), ['127.0.0.1:2']);
  const c = resolver('dns://192.0.2.7:3', dns, clock);
  assert.deepEqual(addresses(await c.list('echo')), ['192.0.2.7:3']);
  const d = resolver('dns://[::1]:4', dns, clock);
  assert.deepEqual(addresses(await d.list('echo')), ['[::1]:4']);
  assert.deepEqual(dns.calls, ['A web.example', 'A localhost']);
  await Promise.all([a.close(), b.close(), c.close(), d.close()]);
});

test('dns resolver - {service} in the name and in ?srv= is the service being resolved', async () => {
  const dns = new FakeDns();
  dns.srv.set('_grpc._tcp.echo.ns.svc', [srv('pod-1.echo', 50051)]);
  dns.srv.set('greeter.service.consul', [srv('n1', 7001)]);
  const clock = new FakeClock();
  const k8s = resolver('dns://cluster.local?srv=_grpc._tcp.{service}.ns.svc', dns, clock);
  assert.deepEqual(addresses(await k8s.list('echo')), ['pod-1.echo:50051']);
  const consul = resolver('dns://{service}.service.consul', dns, clock);
  assert.deepEqual(addresses(await consul.list('greeter')), ['n1:7001']);
  assert.deepEqual(await consul.list(), [], 'a templated name lists only the watched services');
  await Promise.all([k8s.close(), consul.close()]);
});

test('dns resolver - ?tls gives tls:// addresses', async () => {
  const dns = new FakeDns();
  dns.srv.set('x.example', [srv('h', 1)]);
  const r = resolver('dns://x.example?tls', dns, new FakeClock());
  assert.deepEqual(addresses(await r.list('echo')), ['tls://h:1']);
  await r.close();
});

test('dns resolver - a watch snapshots, then re-resolves every refresh and emits the diff', async () => {
  const dns = new FakeDns();
  const clock = new FakeClock();
  dns.srv.set('echo.example', [srv('a', 1), srv('b', 2, 0, 1)]);
  const r = resolver('dns://echo.example?refresh=1000', dns, clock);
  const w = watcher(r, 'echo');
  const snap = await w.next('the snapshot');
  assert.equal(snap.type, 'snapshot');
  assert.deepEqual(addresses(snap.type === 'snapshot' ? snap.instances : []), ['a:1', 'b:2']);

  dns.srv.set('echo.example', [srv('b', 2, 0, 5), srv('c', 3)]);
  await clock.advanceAsync(999);
  assert.equal(dns.calls.length, 1, 'no re-resolution before the refresh interval');
  await clock.advanceAsync(1);
  assert.equal(dns.calls.length, 2);
  // Additions and updates (in answer order) come before removals.
  assert.deepEqual(await w.next('updated b'), { type: 'updated', instance: { service: 'echo', id: 'b:2', address: 'b:2', metadata: { priority: '0', weight: '5' } } });
  assert.deepEqual(await w.next('added c'), { type: 'added', instance: { service: 'echo', id: 'c:3', address: 'c:3', metadata: { priority: '0', weight: '0' } } });
  assert.deepEqual(await w.next('removed a'), { type: 'removed', instance: { service: 'echo', id: 'a:1', address: 'a:1', metadata: { priority: '0', weight: '0' } } });

  // Nothing changes: no events, and the loop goes on.
  await clock.advanceAsync(1000);
  assert.equal(dns.calls.length, 3);
  dns.srv.set('echo.example', [srv('c', 3)]);
  await clock.advanceAsync(1000);
  assert.deepEqual(await w.next('removed b'), { type: 'removed', instance: { service: 'echo', id: 'b:2', address: 'b:2', metadata: { priority: '0', weight: '5' } } });
  await w.end();
  await r.close();
});

test('dns resolver - a DNS failure is an error event, the last set stays, retries back off, recovery diffs', async () => {
  const dns = new FakeDns();
  const clock = new FakeClock();
  dns.srv.set('echo.example', [srv('a', 1)]);
  const r = resolver('dns://echo.example?refresh=10000', dns, clock, { backoff: { initialMs: 100, multiplier: 2, jitter: 0 } });
  const w = watcher(r, 'echo');
  assert.equal((await w.next('the snapshot')).type, 'snapshot');

  dns.srv.set('echo.example', { code: 'ETIMEOUT' });
  await clock.advanceAsync(10_000);
  const e1 = await w.next('the error');
  assert.equal(e1.type, 'error');
  assert.ok(e1.type === 'error' && e1.error.code === ErrorCode.CONNECT_FAILED && /ETIMEOUT/.test(e1.error.message));
  assert.deepEqual(addresses(await r.list('echo').catch(() => [])), [], 'list() re-resolves while the watch is failing');

  const before = dns.calls.length;
  await clock.advanceAsync(100); // first retry after 100 ms
  assert.equal(dns.calls.length, before + 1);
  assert.equal((await w.next('the second error')).type, 'error');
  await clock.advanceAsync(199);
  assert.equal(dns.calls.length, before + 1, 'the second retry waits 200 ms');
  dns.srv.set('echo.example', [srv('a', 1), srv('b', 2)]);
  await clock.advanceAsync(1);
  assert.equal(dns.calls.length, before + 2);
  // Recovery: only what changed against the last good set.
  assert.deepEqual(await w.next('added b'), { type: 'added', instance: { service: 'echo', id: 'b:2', address: 'b:2', metadata: { priority: '0', weight: '0' } } });
  // Back to the normal interval.
  await clock.advanceAsync(9_999);
  assert.equal(dns.calls.length, before + 2);
  await clock.advanceAsync(1);
  assert.equal(dns.calls.length, before + 3);
  await w.end();
  await r.close();
});

test('dns resolver - when the first resolution fails, the watch yields an empty snapshot, then the error', async () => {
  const dns = new FakeDns();
  const clock = new FakeClock();
  const r = resolver('dns://nowhere.example?refresh=5000', dns, clock, { backoff: { initialMs: 100, jitter: 0 } });
  const w = watcher(r, 'echo');
  assert.deepEqual(await w.next('the snapshot'), { type: 'snapshot', instances: [] });
  const err = await w.next('the error');
  assert.ok(err.type === 'error' && /A\/AAAA nowhere\.example failed: ENOTFOUND/.test(err.error.message));
  dns.a.set('nowhere.example', [v4('10.1.1.1')]);
  await clock.advanceAsync(100);
  assert.deepEqual(await w.next('added'), { type: 'added', instance: { service: 'echo', id: '10.1.1.1:7700', address: '10.1.1.1:7700', metadata: {} } });
  await w.end();
  await r.close();
});

test('dns resolver - a resolution that hangs times out as an error', async () => {
  const dns = new FakeDns();
  const clock = new FakeClock();
  dns.srv.set('slow.example', 'hang');
  const r = resolver('dns://slow.example?timeout=300', dns, clock);
  const w = watcher(r, 'echo');
  const snapshot = w.next('the snapshot'); // the first next() starts the resolution
  await clock.advanceAsync(299);
  assert.equal(dns.calls.length, 1);
  await clock.advanceAsync(1);
  assert.deepEqual(await snapshot, { type: 'snapshot', instances: [] });
  const err = await w.next('the timeout');
  assert.ok(err.type === 'error' && /SRV slow\.example timed out after 300 ms/.test(err.error.message), JSON.stringify(err));
  await w.end();
  await r.close();
});

test('dns resolver - watches of one service share a polling loop that stops with the last watch', async () => {
  const dns = new FakeDns();
  const clock = new FakeClock();
  dns.srv.set('echo.example', [srv('a', 1)]);
  const r = resolver('dns://echo.example?refresh=1000', dns, clock);
  const w1 = watcher(r, 'echo');
  assert.equal((await w1.next()).type, 'snapshot');
  const ac = new AbortController();
  const w2 = watcher(r, 'echo', ac.signal);
  const s2 = await w2.next('the late snapshot');
  assert.deepEqual(s2.type === 'snapshot' ? addresses(s2.instances) : [], ['a:1']);
  assert.equal(dns.calls.length, 1, 'the late watch got the current set without a lookup');
  await clock.advanceAsync(1000);
  assert.equal(dns.calls.length, 2, 'one lookup per interval for both watches');
  ac.abort();
  await w1.end();
  assert.equal(clock.pending, 0, 'no timer left once no one watches');
  await clock.advanceAsync(5000);
  assert.equal(dns.calls.length, 2);
  await r.close();
});

test('dns resolver - close ends every watch and clears the timers', async () => {
  const dns = new FakeDns();
  const clock = new FakeClock();
  dns.srv.set('echo.example', [srv('a', 1)]);
  const r = resolver('dns://echo.example', dns, clock);
  const it = r.watch('echo')[Symbol.asyncIterator]();
  assert.equal((await withTimeout(it.next(), 2000, 'the snapshot')).done, false);
  const pending = it.next();
  await r.close();
  assert.equal((await withTimeout(pending, 2000, 'the end')).done, true);
  assert.equal(clock.pending, 0);
  await assert.rejects(r.list('echo'), (err: unknown) => isSkeinError(err) && err.code === ErrorCode.CLOSED);
});

test('dns resolver - bad URLs are INVALID_OPTIONS', () => {
  for (const bad of [
    'dns://',
    'dns://a.example,b.example',
    'dns://a.example/path',
    'dns://a.example?refresh=soon',
    'dns://a.example?refresh=10',
    'dns://a.example?timeout=0',
    'dns://a.example?retry=1',
    'dns://a.example?srv=bad%20name',
    'dns://bad..name!',
    'dns://u:p@a.example',
  ]) {
    assert.throws(
      () => resolverFor(bad),
      (err: unknown) => isSkeinError(err) && err.code === ErrorCode.INVALID_OPTIONS,
      bad,
    );
  }
  const c = parseDnsUrl(parseDiscoveryUrl('dns://a.example:53?refresh=2000&timeout=100'));
  assert.deepEqual({ ...c }, { name: 'a.example', port: 53, srv: 'a.example', tls: false, refreshMs: 2000, timeoutMs: 100 });
});

test('dns resolver - dns://localhost resolves through the system resolver', async () => {
  const r = resolverFor('dns://localhost:7123?refresh=60000');
  const ac = new AbortController();
  const it = r.watch('echo', { signal: ac.signal })[Symbol.asyncIterator]();
  const first = await withTimeout(it.next(), 5000, 'the localhost snapshot');
  const ev = first.value as ResolverEvent;
  assert.equal(ev.type, 'snapshot', JSON.stringify(ev));
  const got = ev.type === 'snapshot' ? addresses(ev.instances) : [];
  assert.ok(got.length > 0, 'localhost has an address');
  for (const a of got) assert.ok(a === '127.0.0.1:7123' || a === '[::1]:7123', `unexpected ${a}`);
  assert.deepEqual(addresses(await r.list('other')), got);
  ac.abort();
  assert.equal((await withTimeout(it.next(), 2000, 'the end')).done, true);
  await r.close();
});
