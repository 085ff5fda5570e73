/**
 * Client-side retries end to end over real TCP (127.0.0.1, port 0): an idempotent method
 * retried on UNAVAILABLE, a non-idempotent one not retried after its handler ran but retried
 * after a server-side refusal (executed exactly once), the budget with every server failing,
 * and three replicas behind discovery with one closed under load. Assertions are on what
 * ran where (counted on the servers), never on timings; every wait is bounded.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { after, describe, it } from 'node:test';
import { connect, implement, SkeinError, service, unary, type Server } from '../../src/index.js';
import { rateLimit, retry, retryBudget, RETRY_CHANNEL, type RetryEvent } from '../../src/resilience/index.js';
import { FakeClock } from '../helpers/clock.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { abortableSleep, Cleanup, rejection } from '../integration/_harness.js';

const Store = service('retry-store', {
  /** Idempotent read; fails with UNAVAILABLE while `failGets` > 0 (or always with `failAll`). */
  get: unary<{ id: string; ms?: number }, { id: string; by: string }>({ idempotent: true }),
  /** Not idempotent: each execution is counted per id. */
  put: unary<{ id: string; ms?: number; fail?: boolean }, { id: string; by: string }>(),
});

/** What the servers of one test did. */
class Tally {
  gets = 0;
  puts = new Map<string, number>();
  failGets = 0;
  failAll = false;
  get putExecutions(): number {
    let n = 0;
    for (const v of this.puts.values()) n += v;
    return n;
  }
}

function impl(t: Tally, name: string) {
  return implement(Store, {
    async get({ id, ms }, ctx) {
      t.gets++;
      if (t.failAll || t.failGets > 0) {
        t.failGets--;
        throw new SkeinError('UNAVAILABLE', `${name} failing on purpose`);
      }
      if (ms !== undefined) await abortableSleep(ms, ctx.signal);
      return { id, by: name };
    },
    async put({ id, ms, fail }, ctx) {
      t.puts.set(id, (t.puts.get(id) ?? 0) + 1);
      if (fail === true) throw new SkeinError('UNAVAILABLE', `${name} failing on purpose`);
      if (ms !== undefined) await abortableSleep(ms, ctx.signal);
      return { id, by: name };
    },
  });
}

const cleanup = new Cleanup();
after(() => cleanup.run());

async function serve(t: Tally, name: string, options: Parameters<Cleanup['server']>[0] = {}): Promise<{ server: Server; address: string }> {
  const server = cleanup.server(options).add(impl(t, name));
  const b = await server.listen({ host: '127.0.0.1', port: 0 });
  return { server, address: `127.0.0.1:${b.port}` };
}

function listen(): { events: RetryEvent[]; stop: () => void } {
  const events: RetryEvent[] = [];
  const fn = (m: unknown): void => void events.push(m as RetryEvent);
  diagnostics.subscribe(RETRY_CHANNEL, fn);
  return { events, stop: () => diagnostics.unsubscribe(RETRY_CHANNEL, fn) };
}

/** Wait (bounded) until the channel has `n` READY instances. */
function readyInstances(channel: { readonly readySubchannels: readonly unknown[] }, n: number): Promise<void> {
  return waitFor(() => channel.readySubchannels.length >= n, { what: `${n} ready instances` });
}

describe('client retries over TCP', () => {
  it('retries an idempotent method on UNAVAILABLE: the 2nd attempt succeeds', async () => {
    const t = new Tally();
    t.failGets = 1;
    const { address } = await serve(t, 'a');
    const r = retry();
    const client = cleanup.client(Store, { target: address, resilience: false, interceptors: [r] });
    const res = await withTimeout(client.get({ id: 'x' }, { timeout: 5000 }), 5000, 'the get');
    assert.deepEqual(res, { id: 'x', by: 'a' });
    assert.equal(t.gets, 2);
    assert.equal(r.stats().retries, 1);
    assert.equal(r.stats().recovered, 1);
  });

  it('does not retry a non-idempotent method whose handler failed with UNAVAILABLE (ran once)', async () => {
    const t = new Tally();
    const { address } = await serve(t, 'a');
    const r = retry();
    const client = cleanup.client(Store, { target: address, resilience: false, interceptors: [r] });
    const err = await rejection(client.put({ id: 'p1', fail: true }, { timeout: 5000 }));
    assert.equal(err.statusName, 'UNAVAILABLE');
    assert.equal(t.puts.get('p1'), 1);
    assert.equal(r.stats().retries, 0);
  });

  it('retries a non-idempotent method refused by a server rate limit (pushback), and it runs exactly once', async () => {
    const t = new Tally();
    // One call per 50 ms for everyone: the second call right after the first is refused with retry-after.
    const { address } = await serve(t, 'a', { interceptors: [rateLimit({ perCaller: { rate: 20, burst: 1 } })] });
    const ev = listen();
    try {
      const r = retry({ maxAttempts: 5 });
      const client = cleanup.client(Store, { target: address, resilience: false, interceptors: [r] });
      await withTimeout(client.put({ id: 'p1' }, { timeout: 5000 }), 5000, 'the first put');
      const res = await withTimeout(client.put({ id: 'p2' }, { timeout: 5000 }), 5000, 'the second put');
      assert.equal(res.id, 'p2');
      assert.equal(t.puts.get('p1'), 1);
      assert.equal(t.puts.get('p2'), 1, 'executed exactly once');
      const retries = ev.events.filter((e) => e.method === 'put');
      assert.ok(retries.length >= 1, 'the refusal was retried');
      for (const e of retries) {
        assert.equal(e.reason, 'pushback');
        assert.ok(e.delayMs >= 1, 'waited for the retry-after');
      }
    } finally {
      ev.stop();
    }
  });

  it('retries a non-idempotent call refused by a draining server on another instance (executed once)', async () => {
    const t = new Tally();
    const a = await serve(t, 'a');
    const b = await serve(t, 'b');
    const r = retry();
    const client = connect(Store, { discovery: `static://${a.address},${b.address}`, balancer: 'round-robin', resilience: false, interceptors: [r] });
    cleanup.add(() => client.close());
    await withTimeout(client.ready({ timeout: 5000 }), 5000, 'the channel');
    await readyInstances(client.channel, 2);
    // Keep a drain in progress on 'a' (a slow call in flight), then call: nothing may run twice.
    const slow = client.put({ id: 'slow', ms: 300 }, { timeout: 5000 }).catch(() => undefined);
    const closing = a.server.close(2000);
    const results = await withTimeout(Promise.allSettled(Array.from({ length: 10 }, (_, i) => client.put({ id: `d${i}` }, { timeout: 5000 }))), 5000, 'the puts');
    await withTimeout(Promise.all([slow, closing]), 5000, 'the drain');
    for (let i = 0; i < 10; i++) assert.ok((t.puts.get(`d${i}`) ?? 0) <= 1, `d${i} ran at most once`);
    assert.ok(results.every((x) => x.status === 'fulfilled'), 'a refusal before the handler is retried elsewhere');
    assert.ok(r.stats().retries >= 1, 'calls refused by the draining server were retried');
  });

  it('with every server failing, retries stay within 20 % of calls + 10/s (counted on the servers)', async () => {
    const t = new Tally();
    t.failAll = true;
    const { address } = await serve(t, 'a');
    // Time stands still for the budget: only its first second's 10 retries plus 20 % of calls.
    const r = retry({ budget: retryBudget({ clock: new FakeClock() }), backoff: { initialMs: 0, maxMs: 0 } });
    const client = cleanup.client(Store, { target: address, resilience: false, interceptors: [r] });
    const calls = 60;
    for (let i = 0; i < calls; i++) await rejection(client.get({ id: `g${i}` }, { timeout: 5000 }));
    const retries = t.gets - calls;
    assert.ok(retries <= calls * 0.2 + 10, `${retries} retries for ${calls} calls`);
    assert.ok(r.stats().budgetRefused > 0, 'the budget refused some');
    assert.equal(r.stats().retries, retries);
  });
});

describe('client retries across three replicas (static discovery, round-robin)', () => {
  for (const balancer of ['round-robin', 'ring-hash']) {
    it(`a retry goes to an instance the call has not tried (${balancer})`, async () => {
      // Three servers; the first get anywhere fails with UNAVAILABLE.
      let failed = false;
      const served: string[] = [];
      const servers = await Promise.all(
        ['a', 'b', 'c'].map(async (name) => {
          const server = cleanup.server().add(
            implement(Store, {
              get({ id }) {
                served.push(name);
                if (!failed) {
                  failed = true;
                  throw new SkeinError('UNAVAILABLE', `${name} failing once`);
                }
                return { id, by: name };
              },
              put: ({ id }) => ({ id, by: name }),
            }),
          );
          const b = await server.listen({ host: '127.0.0.1', port: 0 });
          return `127.0.0.1:${b.port}`;
        }),
      );
      const r = retry({ maxAttempts: 2 });
      const client = connect(Store, { discovery: `static://${servers.join(',')}`, balancer, resilience: false, interceptors: [r] });
      cleanup.add(() => client.close());
      await withTimeout(client.ready({ timeout: 5000 }), 5000, 'the channel');
      await readyInstances(client.channel, 3);
      // ring-hash with a fixed key would send every attempt to one instance without the hint.
      const res = await withTimeout(client.get({ id: 'k' }, { timeout: 5000, hashKey: 'same-key' }), 5000, 'the get');
      assert.equal(served.length, 2);
      assert.notEqual(served[0], served[1], `attempts went to ${served.join(', ')}`);
      assert.equal(res.by, served[1]);
    });
  }

  it('one replica closed under load: every idempotent call succeeds; each non-idempotent call runs at most once', async () => {
    const t = new Tally();
    const servers = [await serve(t, 'a'), await serve(t, 'b'), await serve(t, 'c')];
    const r = retry({ maxAttempts: 3 });
    const client = connect(Store, { discovery: `static://${servers.map((s) => s.address).join(',')}`, balancer: 'round-robin', resilience: false, interceptors: [r] });
    cleanup.add(() => client.close());
    await withTimeout(client.ready({ timeout: 5000 }), 5000, 'the channel');
    await readyInstances(client.channel, 3);

    const getResults: Array<Promise<unknown>> = [];
    const putResults: Array<Promise<unknown>> = [];
    let stop = false;
    const worker = async (w: number): Promise<void> => {
      for (let i = 0; !stop && i < 200; i++) {
        const g = client.get({ id: `g${w}-${i}`, ms: 20 }, { timeout: 5000 });
        const p = client.put({ id: `p${w}-${i}`, ms: 20 }, { timeout: 5000 });
        getResults.push(g);
        putResults.push(p.catch(() => undefined));
        await Promise.allSettled([g, p]);
      }
    };
    const workers = Array.from({ length: 8 }, (_, w) => worker(w));
    // Under load: wait until traffic flows to all three, then close one hard (no grace).
    await waitFor(() => t.gets >= 30, { what: 'load on the replicas' });
    await withTimeout(servers[2]!.server.close(0), 5000, 'closing replica c');
    const getsAtClose = t.gets;
    await waitFor(() => t.gets >= getsAtClose + 60, { what: 'load after the close' });
    stop = true;
    await withTimeout(Promise.all(workers), 10_000, 'the workers');

    const gets = await Promise.allSettled(getResults);
    const failed = gets.filter((x) => x.status === 'rejected');
    assert.equal(failed.length, 0, `idempotent calls failed: ${failed.map((x) => String((x as PromiseRejectedResult).reason)).slice(0, 3).join('; ')}`);
    await Promise.all(putResults);
    for (const [id, n] of t.puts) assert.ok(n <= 1, `${id} ran ${n} times`);
    assert.ok(r.stats().retries >= 1, 'calls cut off by the close were retried on the others');
  });
});
