/**
 * The `skein.health` service: statuses per service once listening, check and watch, and
 * the drain order (NOT_SERVING first, in-flight calls finish, then the connection goes).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, Health, HealthService, implement, service, unary, type SkeinError, type StateChange } from '../../src/index.js';
import { once, waitFor, withTimeout } from '../helpers/wait.js';

const Slow = service('slow', {
  wait: unary<{ ms: number }, { done: boolean }>(),
  ping: unary<Record<string, never>, { pong: true }>({ idempotent: true }),
});

function slowImpl(started: () => void) {
  return implement(Slow, {
    async wait({ ms }) {
      started();
      await new Promise((r) => setTimeout(r, ms));
      return { done: true };
    },
    ping: () => ({ pong: true as const }),
  });
}

describe('health', () => {
  test('health - SERVING for every service once listening; check and watch answer; unknown names', async () => {
    const server = createServer().add(slowImpl(() => {}));
    assert.equal(server.health!.get('slow'), 'NOT_SERVING', 'not before listen()');
    const { address } = await server.listen({ host: '127.0.0.1', port: 0 });
    const health = connect(Health, { target: address });
    try {
      assert.deepEqual(await health.check({ service: 'slow' }), { status: 'SERVING' });
      assert.deepEqual(await health.check({ service: '' }), { status: 'SERVING' });
      assert.deepEqual(await health.check({}), { status: 'SERVING' });
      await assert.rejects(health.check({ service: 'nope' }), (e: SkeinError) => e.statusName === 'NOT_FOUND');
      assert.equal(server.health!.services.has('skein.health'), false, 'the health service does not report on itself');

      const ac = new AbortController();
      const seen: string[] = [];
      const watching = (async () => {
        for await (const { status } of health.watch({ service: 'later' }, { signal: ac.signal })) seen.push(status);
      })().catch(() => {});
      await waitFor(() => seen.length === 1, { what: 'the first watch message' });
      assert.deepEqual(seen, ['SERVICE_UNKNOWN']);
      server.health!.set('later', 'SERVING');
      server.health!.set('later', 'SERVING'); // no change, no message
      await waitFor(() => seen.length === 2, { what: 'SERVING on the watch' });
      server.health!.set('later', 'NOT_SERVING');
      await waitFor(() => seen.length === 3, { what: 'NOT_SERVING on the watch' });
      assert.deepEqual(seen, ['SERVICE_UNKNOWN', 'SERVING', 'NOT_SERVING']);
      ac.abort();
      await withTimeout(watching, 2000, 'the watch to end');
      await waitFor(() => server.health!.watcherCount === 0, { what: 'the server to drop the watcher' });
    } finally {
      await health.close();
      await server.close(0);
    }
  });

  test('health - a draining server reports NOT_SERVING first; its in-flight calls finish', async () => {
    let started!: () => void;
    const inFlight = new Promise<void>((r) => (started = r));
    const server = createServer().add(slowImpl(() => started()));
    const { address } = await server.listen({ host: '127.0.0.1', port: 0 });
    const client = connect(Slow, { target: address });
    const health = connect(Health, { target: address });
    const events: string[] = [];
    try {
      const watching = (async () => {
        for await (const { status } of health.watch({ service: 'slow' })) events.push(`health ${status}`);
        events.push('health watch ended');
      })();
      await waitFor(() => events.length === 1, { what: 'SERVING from the watch' });
      // What the server reported when the connection went away (its GOAWAY arrived).
      health.connection.on('state', (c: StateChange) => events.push(`connection ${c.state} (server health then: ${server.health!.get('slow')})`));
      const call = client.wait({ ms: 300 });
      await withTimeout(inFlight, 5000, 'the slow call to start');
      const closed = server.close(5000);
      assert.deepEqual(await withTimeout(call, 5000, 'the in-flight call'), { done: true }, 'the in-flight call finishes');
      await withTimeout(watching, 5000, 'the watch to end');
      await withTimeout(closed, 5000, 'close()');
      // The watch got NOT_SERVING and then ended with OK: the server sent NOT_SERVING and
      // closed the watch before the connection closed (a cut connection fails the watch).
      assert.deepEqual(
        events.filter((e) => e.startsWith('health ')),
        ['health SERVING', 'health NOT_SERVING', 'health watch ended'],
      );
      const left = events.find((e) => e.startsWith('connection '));
      assert.ok(left === undefined || left.endsWith('(server health then: NOT_SERVING)'), `NOT_SERVING was set before the GOAWAY: ${events.join(', ')}`);
      await assert.rejects(client.ping({}), (e: SkeinError) => e.statusName === 'UNAVAILABLE', 'new calls are refused');
    } finally {
      await client.close();
      await health.close();
    }
  });

  test('health - health: false serves no health service', async () => {
    const server = createServer({ health: false }).add(slowImpl(() => {}));
    const { address } = await server.listen({ host: '127.0.0.1', port: 0 });
    const health = connect(Health, { target: address });
    try {
      assert.equal(server.health, undefined);
      await assert.rejects(health.check({}), (e: SkeinError) => e.statusName === 'UNIMPLEMENTED');
    } finally {
      await health.close();
      await server.close(0);
    }
  });

  test('health - HealthService on its own: events, setAll, remove, shutdown with no watchers', async () => {
    const h = new HealthService();
    const changes: string[] = [];
    h.on('change', (s, st) => changes.push(`${s}=${st}`));
    h.set('a', 'SERVING');
    h.set('', 'SERVING');
    h.setAll('NOT_SERVING');
    assert.deepEqual(changes, ['a=SERVING', '=SERVING', 'a=NOT_SERVING', '=NOT_SERVING']);
    h.remove('a');
    assert.equal(h.get('a'), 'SERVICE_UNKNOWN');
    await withTimeout(h.shutdown(), 1000, 'shutdown() with no watchers');
    const ev = once(h, 'change');
    h.set('b', 'SERVING');
    assert.deepEqual(await ev, ['b', 'SERVING']);
  });
});
