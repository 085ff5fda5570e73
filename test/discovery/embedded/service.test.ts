/**
 * The registry service and the `skein://` plugin in one process over real TCP on
 * 127.0.0.1: watch/list/register, keepalive streams and lost leases, request validation,
 * resuming through a fault proxy, errors while the registry is unreachable, resync after
 * compaction, slow watchers bounded by the stream's backpressure.
 */
import { after, describe, it } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { connect, pushable, Status, type SkeinError } from '../../../src/index.js';
import type { Instance } from '../../../src/discovery/types.js';
import { discoveryFor } from '../../../src/discovery/registry.js';
import { RegistryService, type WatchMessage } from '../../../src/discovery/embedded/api.js';
import { createEmbeddedDiscovery, EmbeddedRegistrar, EmbeddedResolver, embeddedDiscovery, registryTarget, setup } from '../../../src/discovery/embedded/plugin.js';
import { openRegistry, type Registry, type RegistryOptions } from '../../../src/discovery/embedded/service.js';
import { startFaultProxy } from '../../helpers/fault-proxy.js';
import { once, waitFor, withTimeout } from '../../helpers/wait.js';
import { EventLog, revisionGaps } from './_helpers.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

async function startRegistry(options: RegistryOptions = {}): Promise<{ registry: Registry; target: string; url: URL }> {
  const registry = await openRegistry(options);
  const { port } = await registry.listen({ host: '127.0.0.1', port: 0 });
  cleanups.push(() => registry.close(0));
  return { registry, target: `127.0.0.1:${port}`, url: new URL(`skein://127.0.0.1:${port}`) };
}

function resolverFor(target: string): EmbeddedResolver {
  const r = new EmbeddedResolver(target, { backoff: { initialMs: 20, maxMs: 200 } });
  cleanups.push(() => r.close());
  return r;
}

function registrarFor(target: string): EmbeddedRegistrar {
  const r = new EmbeddedRegistrar(target, { backoff: { initialMs: 20, maxMs: 200 } });
  cleanups.push(() => r.close());
  return r;
}

function rawClient(target: string) {
  const c = connect(RegistryService, { target, waitForReady: true, timeout: 5000 });
  cleanups.push(() => c.close());
  return c;
}

describe('embedded registry service and skein:// plugin', () => {
  it('plugin - skein:// URLs name the registry (port 7700 by default); setup() registers the scheme', () => {
    assert.equal(registryTarget(new URL('skein://127.0.0.1:9000')), '127.0.0.1:9000');
    assert.equal(registryTarget('skein://reg.local'), 'reg.local:7700');
    assert.equal(registryTarget('skein://[::1]:7701'), '[::1]:7701');
    assert.throws(() => registryTarget('skein://h:1/path'), /path/);
    assert.throws(() => registryTarget('etcd://h:1'), /not a skein/);
    setup();
    setup(); // idempotent
    assert.equal(discoveryFor('skein://127.0.0.1:1'), embeddedDiscovery);
    assert.equal(embeddedDiscovery.scheme, 'skein');
  });

  it('plugin - a watch gets a snapshot, then the registration and the deregistration; list() agrees', async () => {
    const { target, url } = await startRegistry();
    const plugin = createEmbeddedDiscovery({ backoff: { initialMs: 20, maxMs: 200 } });
    const resolver = plugin.resolver(url);
    const registrar = plugin.registrar(url);
    cleanups.push(() => resolver.close(), () => registrar.close());
    const ac = new AbortController();
    const log = new EventLog(resolver.watch('echo', { signal: ac.signal }));
    await log.waitFor((e) => e.type === 'snapshot', 'the snapshot');
    const reg = await registrar.register({ service: 'echo', address: '127.0.0.1:1234', metadata: { zone: 'z1' } }, { ttlMs: 3000 });
    const [registered] = await once(reg, 'registered');
    assert.deepEqual(registered, { service: 'echo', id: '127.0.0.1:1234', address: '127.0.0.1:1234', metadata: { zone: 'z1' } });
    const added = await log.waitFor((e) => e.type === 'added', 'the added event');
    assert.deepEqual(added.type === 'added' && added.instance, registered as Instance);
    assert.deepEqual(await resolver.list('echo'), [registered]);
    assert.deepEqual(await resolver.list(), [registered]);
    const detailed = await resolver.listDetailed('echo');
    assert.equal(detailed.instances[0]!.ttlMs, 3000);
    assert.ok(detailed.instances[0]!.leaseRemainingMs > 0 && detailed.instances[0]!.leaseRemainingMs <= 3000);
    await reg.deregister();
    await reg.deregister(); // idempotent
    await log.waitFor((e) => e.type === 'removed', 'the removed event');
    assert.deepEqual(await resolver.list('echo'), []);
    assert.equal(revisionGaps(log.events), undefined);
    ac.abort();
    await withTimeout(log.done, 2000, 'the watch to end on abort');
    const raw = rawClient(target);
    assert.equal((await raw.info({})).leases, 0, 'deregister revoked the lease');
  });

  it('service - keepAlive answers each ping with the time left and ends NOT_FOUND "lease lost" once the lease is revoked', async () => {
    const { target } = await startRegistry();
    const raw = rawClient(target);
    const { leaseId, ttlMs } = await raw.grant({ ttlMs: 5000 });
    assert.equal(ttlMs, 5000);
    const pings = pushable<{ leaseId: number }>();
    const replies = raw.keepAlive(pings);
    const it = replies[Symbol.asyncIterator]();
    await pings.push({ leaseId });
    assert.deepEqual((await withTimeout(it.next(), 2000, 'a keepalive reply')).value, { leaseId, ttlMs: 5000, remainingMs: 5000 });
    await raw.revoke({ leaseId });
    await assert.rejects(
      withTimeout(it.next(), 2000, 'the keepalive stream to end'),
      (e: SkeinError) => e.status === Status.NOT_FOUND && /lease lost/.test(e.message),
    );
    // A keepalive for a lease that does not exist ends at once.
    const replies2 = raw.keepAlive([{ leaseId: 999 }]);
    await assert.rejects(
      (async () => {
        for await (const _ of replies2) {
          // none
        }
      })(),
      (e: SkeinError) => e.status === Status.NOT_FOUND,
    );
  });

  it('service - malformed requests are INVALID_ARGUMENT; a put under an unknown lease is NOT_FOUND', async () => {
    const { target } = await startRegistry();
    const raw = rawClient(target);
    const { leaseId } = await raw.grant({ ttlMs: 5000 });
    const bad: Array<[string, () => Promise<unknown>]> = [
      ['no address', () => raw.put({ leaseId, instance: { service: 'a', id: 'x', metadata: {} } as unknown as Instance })],
      ['bad service name', () => raw.put({ leaseId, instance: { service: 'a b', id: 'x', address: 'h:1', metadata: {} } })],
      ['metadata not strings', () => raw.put({ leaseId, instance: { service: 'a', id: 'x', address: 'h:1', metadata: { n: 1 } as unknown as Record<string, string> } })],
      ['lease id not a number', () => raw.put({ leaseId: 'x' as unknown as number, instance: { service: 'a', id: 'x', address: 'h:1', metadata: {} } })],
      ['ttl missing', () => raw.grant({} as { ttlMs: number })],
      ['resume without epoch', async () => { for await (const _ of raw.watch({ service: 'a', fromRevision: 1 })) { /* none */ } }],
    ];
    for (const [what, call] of bad) await assert.rejects(call(), (e: SkeinError) => e.status === Status.INVALID_ARGUMENT, what);
    await assert.rejects(raw.put({ leaseId: 12345, instance: { service: 'a', id: 'x', address: 'h:1', metadata: {} } }), (e: SkeinError) => e.status === Status.NOT_FOUND);
    // id defaults to the address; metadata to {}
    await raw.put({ leaseId, instance: { service: 'a', address: 'h:1' } as Instance });
    assert.deepEqual((await raw.list({ service: 'a' })).instances.map((i) => [i.id, i.metadata]), [['h:1', {}]]);
  });

  it('plugin - a revoked lease: the registration hears "lost" and registers again under a new lease', async () => {
    const { target } = await startRegistry();
    const registrar = registrarFor(target);
    const resolver = resolverFor(target);
    const log = new EventLog(resolver.watch('svc'));
    const reg = await registrar.register({ service: 'svc', address: '127.0.0.1:2000' }, { ttlMs: 2000 });
    await once(reg, 'registered');
    const first = reg.leaseId!;
    const lost = once<[SkeinError]>(reg, 'lost', 5000);
    const again = once(reg, 'registered', 5000);
    await rawClient(target).revoke({ leaseId: first });
    const [err] = await lost;
    assert.equal(err.status, Status.NOT_FOUND);
    await again;
    assert.ok(reg.leaseId !== undefined && reg.leaseId !== first);
    await log.waitFor((e) => e.type === 'added' && e.revision! > 1, 'the instance back');
    assert.equal(log.view.size, 1);
    assert.equal(revisionGaps(log.events), undefined);
  });

  it('plugin - a watcher whose connection the proxy cuts resumes from its revision: no snapshot, no gap, no duplicate', async () => {
    const { target } = await startRegistry();
    const proxy = await startFaultProxy({ target });
    cleanups.push(() => proxy.close());
    const resolver = resolverFor(proxy.address);
    const registrar = registrarFor(target);
    const log = new EventLog(resolver.watch('svc'));
    await log.waitFor((e) => e.type === 'snapshot', 'the snapshot');
    const regs = [];
    for (let i = 0; i < 3; i++) regs.push(await registrar.register({ service: 'svc', address: `127.0.0.1:${3000 + i}` }, { ttlMs: 5000 }));
    await log.waitFor((e) => e.type === 'added' && e.instance.id === '127.0.0.1:3002', 'the third instance');
    // Cut, and keep the watcher out while things change.
    proxy.refuse(true);
    proxy.cutAll();
    const errorsFrom = log.events.length;
    await log.waitFor((e) => e.type === 'error', 'an error event for the cut', 5000, errorsFrom);
    await regs[0]!.deregister();
    regs.push(await registrar.register({ service: 'svc', address: '127.0.0.1:3010' }, { ttlMs: 5000 }));
    proxy.refuse(false);
    await log.waitFor((e) => e.type === 'added' && e.instance.id === '127.0.0.1:3010', 'the change made while cut off', 10000);
    assert.equal(log.count('snapshot'), 1, 'resumed, not resynced');
    assert.equal(revisionGaps(log.events), undefined);
    assert.deepEqual([...log.view.keys()].sort(), (await resolver.list('svc')).map((i) => i.id).sort());
  });

  it('plugin - while the registry is unreachable a watch yields error events and keeps trying; it ends when its signal aborts', async () => {
    const { target } = await startRegistry();
    const proxy = await startFaultProxy({ target });
    cleanups.push(() => proxy.close());
    proxy.refuse(true);
    const resolver = resolverFor(proxy.address);
    const ac = new AbortController();
    const log = new EventLog(resolver.watch('svc', { signal: ac.signal }));
    await log.waitFor((e) => e.type === 'error', 'a first error');
    const n = log.events.length;
    await log.waitFor((e) => e.type === 'error', 'a second error (still retrying)', 5000, n);
    assert.ok(log.events.every((e) => e.type === 'error' && e.error.status === Status.UNAVAILABLE));
    proxy.refuse(false);
    await log.waitFor((e) => e.type === 'snapshot', 'the snapshot once reachable', 10000);
    ac.abort();
    await withTimeout(log.done, 2000, 'the watch to end');
    assert.equal(log.failure, undefined);
  });

  it('plugin - a watch that cannot resume (history compacted meanwhile) starts over with a fresh snapshot', async () => {
    const { target } = await startRegistry({ store: { historyLimit: 2 } });
    const proxy = await startFaultProxy({ target });
    cleanups.push(() => proxy.close());
    const resolver = resolverFor(proxy.address);
    const registrar = registrarFor(target);
    const log = new EventLog(resolver.watch('svc'));
    await log.waitFor((e) => e.type === 'snapshot', 'the snapshot');
    proxy.refuse(true);
    proxy.cutAll();
    for (let i = 0; i < 5; i++) await registrar.register({ service: 'svc', address: `127.0.0.1:${4000 + i}` }, { ttlMs: 5000 });
    proxy.refuse(false);
    const snap = await log.waitFor((e) => e.type === 'snapshot' && e.instances.length === 5, 'a second snapshot with all five', 10000);
    assert.equal(snap.type === 'snapshot' && snap.revision, 5);
    assert.equal(log.count('snapshot'), 2);
  });

  it('service - a watcher that stops reading fills its stream window, then is ended with compacted (bounded memory)', async () => {
    const { target } = await startRegistry({ store: { watcherBufferLimit: 8 } });
    const raw = rawClient(target);
    const stream = raw.watch({ service: 'big' });
    const it = stream[Symbol.asyncIterator]();
    assert.equal(((await withTimeout(it.next(), 2000, 'the snapshot')).value as WatchMessage).type, 'snapshot');
    // The client does not read: ~1 MiB of stream window fills, then the registry queues 8 more.
    const { leaseId } = await raw.grant({ ttlMs: 60000 });
    const pad = 'x'.repeat(4000);
    for (let i = 0; i < 400; i++) await raw.put({ leaseId, instance: { service: 'big', id: `i${i}`, address: 'h:1', metadata: { pad } } });
    const info = await raw.info({});
    assert.equal(info.watchers, 0, 'the slow watcher was dropped');
    const seen: WatchMessage[] = [];
    for (;;) {
      const r = await withTimeout(it.next(), 5000, 'the rest of the stream');
      if (r.done === true) break;
      seen.push(r.value as WatchMessage);
    }
    const last = seen.at(-1)!;
    assert.equal(last.type, 'compacted');
    assert.ok(seen.length < 400, `${seen.length} messages: it was not cut short`);
    const revs = seen.slice(0, -1).map((m) => m.revision);
    assert.deepEqual(revs, revs.map((_, i) => i + 1), 'what it got before, it got in order');
  });

  it('plugin - register() rejects at once on a bad instance, and with CANCELLED when its signal aborts while the registry is unreachable', async () => {
    const { target } = await startRegistry();
    const registrar = registrarFor(target);
    await assert.rejects(registrar.register({ service: 'bad name', address: 'h:1' }), (e: SkeinError) => e.status === Status.INVALID_ARGUMENT);
    const proxy = await startFaultProxy({ target });
    cleanups.push(() => proxy.close());
    proxy.refuse(true);
    const unreachable = new EmbeddedRegistrar(proxy.address, { backoff: { initialMs: 20, maxMs: 100 }, callTimeoutMs: 200 });
    cleanups.push(() => unreachable.close());
    const ac = new AbortController();
    const pending = unreachable.register({ service: 'svc', address: 'h:1' }, { ttlMs: 1000, signal: ac.signal });
    await waitFor(() => proxy.connections >= 2, { what: 'a few attempts' });
    ac.abort();
    await assert.rejects(withTimeout(pending, 3000, 'register() to give up'), (e: SkeinError) => e.status === Status.CANCELLED);
  });

  it('plugin - a registry restarted gracefully with its data: the registration keeps its lease, the watch resumes without a resync', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'skein-registry-svc-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const first = await openRegistry({ dataDir: dir });
    const { port } = await first.listen({ host: '127.0.0.1', port: 0 });
    const target = `127.0.0.1:${port}`;
    const registrar = registrarFor(target);
    const resolver = resolverFor(target);
    const log = new EventLog(resolver.watch('svc'));
    const reg = await registrar.register({ service: 'svc', address: '127.0.0.1:5000' }, { ttlMs: 4000 });
    const leaseId = reg.leaseId;
    const lost: unknown[] = [];
    reg.on('lost', (e) => lost.push(e));
    await log.waitFor((e) => e.type === 'added', 'the registration');
    await first.close();
    await log.waitFor((e) => e.type === 'error', 'the watch to notice');

    const second = await openRegistry({ dataDir: dir });
    cleanups.push(() => second.close(0));
    let keepalives = 0;
    const keepAlive = second.store.keepAlive.bind(second.store);
    second.store.keepAlive = (id: number) => {
      if (id === leaseId) keepalives++;
      return keepAlive(id);
    };
    await second.listen({ host: '127.0.0.1', port });
    await waitFor(() => keepalives > 0, { what: 'the owner to keep its lease alive on the new registry', timeoutMs: 5000 });
    assert.equal(reg.leaseId, leaseId);
    assert.deepEqual(lost, []);
    const other = await registrar.register({ service: 'svc', address: '127.0.0.1:5001' }, { ttlMs: 4000 });
    await log.waitFor((e) => e.type === 'added' && e.instance.address === other.instance.address, 'a change after the restart');
    assert.equal(log.count('snapshot'), 1, 'resumed, not resynced');
    assert.equal(revisionGaps(log.events), undefined);
  });
});
