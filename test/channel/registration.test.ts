/**
 * Servers register themselves (createServer({ discovery })): on listen, with the reachable
 * address and the TTL; lost/registered events; deregistration on close before the
 * listener stops; a channel following a draining server.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as netConnect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { createServer, implement, type Instance, type SkeinError } from '../../src/index.js';
import { advertiseAddress } from '../../src/rpc/server.js';
import { createError, ErrorCode } from '../../src/errors.js';
import { fakeNamespace } from './_fake-discovery.js';
import { channelClient, Echo, spread, startEcho, waitReady } from './_helpers.js';
import { once, waitFor, withTimeout } from '../helpers/wait.js';

const Other = Echo; // a second service under another name below

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('server registration', () => {
  test('server registration - every service (not skein.health) registered on listen, with the bound address and the TTL', async () => {
    const { ns, url } = fakeNamespace();
    const registered: Instance[] = [];
    const impl = implement(Echo, { say: (r) => ({ ...r, by: 's' }), async *count() {}, slow: () => ({ by: 's' }) });
    const server = createServer({ discovery: url, ttl: 3, metadata: { version: '1.2.0' } }).add(impl);
    server.add({ def: { ...Other, name: 'echo2' }, handlers: impl.handlers } as never);
    server.on('registered', (i) => registered.push(i));
    assert.deepEqual(ns.log, [], 'nothing before listen()');
    const bound = await server.listen({ host: '127.0.0.1', port: 0 });
    try {
      assert.equal(bound.advertised, bound.address);
      assert.deepEqual([...ns.log].sort(), [`register echo ${bound.address} ttl=3000`, `register echo2 ${bound.address} ttl=3000`]);
      assert.deepEqual(ns.list('echo'), [{ service: 'echo', id: bound.address, address: bound.address, metadata: { version: '1.2.0' } }]);
      assert.equal(ns.list('skein.health').length, 0);
      assert.deepEqual(registered.map((i) => i.service).sort(), ['echo', 'echo2']);
      assert.equal(server.registrations.length, 2);
    } finally {
      await server.close(0);
    }
    assert.deepEqual(ns.log.slice(2).sort(), [`deregister echo ${bound.address}`, `deregister echo2 ${bound.address}`, 'registrar closed'].sort());
    assert.equal(ns.log[ns.log.length - 1], 'registrar closed');
    assert.deepEqual(ns.list('echo'), []);
  });

  test('server registration - close() deregisters while still accepting, after NOT_SERVING, then stops listening', async () => {
    const { ns, url } = fakeNamespace();
    const s = await startEcho('s', { discovery: url });
    const seen: { accepting: boolean; health: string }[] = [];
    ns.onDeregister = async () => {
      seen.push({ accepting: await canConnect(s.port), health: s.server.health!.get('echo') });
    };
    await s.server.close(1000);
    assert.deepEqual(seen, [{ accepting: true, health: 'NOT_SERVING' }]);
    assert.equal(await canConnect(s.port), false, 'not listening after close()');
  });

  test('server registration - a channel moves off a server that drains, and its in-flight call finishes', async () => {
    const { url } = fakeNamespace();
    const a = await startEcho('a', { discovery: url });
    const b = await startEcho('b', { discovery: url });
    const client = channelClient(url);
    try {
      await waitReady(client, [a.address, b.address]);
      // A call in flight on a; then a drains.
      let onA: Promise<{ by: string }> | undefined;
      for (let k = 0; k < 2 && onA === undefined; k++) {
        const started = a.slowStarted();
        const p = client.slow({ ms: 200 });
        if (await Promise.race([started.then(() => true), p.then(() => false)])) onA = p;
        else await p;
      }
      assert.ok(onA !== undefined, 'a slow call landed on a');
      const closing = a.server.close(5000);
      await waitReady(client, [b.address]);
      assert.deepEqual(Object.fromEntries(await spread(client, 5)), { b: 5 });
      assert.deepEqual(await withTimeout(onA, 5000, 'the in-flight call on a'), { by: 'a' });
      await withTimeout(closing, 5000, 'a to close');
      await waitFor(() => client.channel.instances.length === 1, { what: 'a removed from the channel' });
    } finally {
      await client.close();
      await b.server.close(0);
    }
  });

  test('server registration - lost and registered again surface as server events', async () => {
    const { ns, url } = fakeNamespace();
    const s = await startEcho('s', { discovery: url });
    try {
      const lost = once(s.server, 'lost');
      const again = once(s.server, 'registered');
      [...ns.registrations][0]!.loseLease();
      const [err, inst] = (await lost) as [SkeinError, Instance];
      assert.match(err.message, /lease expired/);
      assert.equal(inst.address, s.address);
      const [back] = (await again) as [Instance];
      assert.equal(back.address, s.address);
    } finally {
      await s.server.close(0);
    }
  });

  test('server registration - a failed registration fails listen() and stops listening', async () => {
    const { ns, url } = fakeNamespace();
    ns.failRegister = createError(ErrorCode.CONNECT_FAILED, 'registry refused (fake)');
    const server = createServer({ discovery: url }).add(implement(Echo, { say: (r) => ({ ...r, by: 's' }), async *count() {}, slow: () => ({ by: 's' }) }));
    await assert.rejects(server.listen({ host: '127.0.0.1', port: 0 }), (e: SkeinError) => e.statusName === 'UNAVAILABLE' && /cannot register echo at 127\.0\.0\.1:\d+ in fake:\/\/.*registry refused/.test(e.message));
    assert.deepEqual(server.addresses, []);
    await server.close(0);
  });

  test('server registration - services added after listen() are registered too', async () => {
    const { ns, url } = fakeNamespace();
    const s = await startEcho('s', { discovery: url });
    try {
      const impl = implement(Echo, { say: (r) => ({ ...r, by: 's' }), async *count() {}, slow: () => ({ by: 's' }) });
      s.server.add({ def: { ...Echo, name: 'late' }, handlers: impl.handlers } as never);
      await waitFor(() => ns.list('late').length === 1, { what: 'late registered' });
      assert.equal(s.server.health!.get('late'), 'SERVING');
    } finally {
      await s.server.close(0);
    }
  });

  test('server registration - read-only discovery (static:) cannot register; bad ttl is refused', async () => {
    const server = createServer({ discovery: 'static://127.0.0.1:1' });
    await assert.rejects(server.listen({ host: '127.0.0.1', port: 0 }), /read-only/);
    await server.close(0);
    assert.throws(() => createServer({ ttl: 0 }), /ttl must be a positive number/);
  });

  test('server registration - the advertised address: advertise wins, wildcards pick a reachable address', () => {
    assert.equal(advertiseAddress({ address: '127.0.0.1:80', host: '127.0.0.1', port: 80 }, false, undefined), '127.0.0.1:80');
    assert.equal(advertiseAddress({ address: '127.0.0.1:80', host: '127.0.0.1', port: 80 }, true, undefined), 'tls://127.0.0.1:80');
    assert.equal(advertiseAddress({ address: '0.0.0.0:80', host: '0.0.0.0', port: 80 }, false, 'svc.example:8080'), 'svc.example:8080');
    assert.equal(advertiseAddress({ address: '0.0.0.0:80', host: '0.0.0.0', port: 80 }, true, 'svc.example:8080'), 'tls://svc.example:8080');
    assert.equal(advertiseAddress({ address: 'unix:/tmp/x.sock' }, false, undefined), 'unix:/tmp/x.sock');
    const external = Object.values(networkInterfaces())
      .flatMap((l) => l ?? [])
      .find((a) => !a.internal && a.family === 'IPv4')?.address;
    for (const host of ['0.0.0.0', '::']) {
      const got = advertiseAddress({ address: `${host}:80`, host, port: 80 }, false, undefined);
      assert.equal(got, `${external ?? '127.0.0.1'}:80`);
    }
  });
});
