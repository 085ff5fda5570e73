/**
 * The server-side resilience interceptors end to end over real TCP (127.0.0.1, port 0):
 * rate limits (per caller, per method) with the retry-after trailer, a bulkhead refusing
 * exactly its overflow, a streaming slot released when the client cancels, load shedding
 * under 3x overload, and fallbacks. Assertions are on structure (who was refused, what ran,
 * how many ran at once), never on timings.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { after, describe, it } from 'node:test';
import { implement, isSkeinError, serverStream, service, unary, type ServerInterceptor } from '../../src/index.js';
import { bulkhead, fallback, rateLimit, ResilienceChannel, serverResilience, shed, type ResilienceEvent } from '../../src/resilience/index.js';
import { waitFor } from '../helpers/wait.js';
import { abortableSleep, assertStatus, Cleanup, deferred, listenOn, rejection } from '../integration/_harness.js';

const Res = service('res', {
  ping: unary<{ n: number }, { n: number }>(),
  other: unary<{ n: number }, { n: number }>(),
  /** Blocks until the test opens `gateOpen`. */
  slow: unary<{ n: number }, { n: number; fallback?: boolean }>(),
  /** A fixed service time. */
  work: unary<{ ms: number }, { ok: true }>(),
  /** Replies until cancelled. */
  tail: serverStream<{ everyMs: number }, { i: number }>(),
});

/** Handler counts and concurrency, shared by a test and its server. */
class Probe {
  calls = { ping: 0, other: 0, slow: 0, work: 0, tail: 0 };
  running = 0;
  maxRunning = 0;
  gate = deferred();
  enter(): void {
    if (++this.running > this.maxRunning) this.maxRunning = this.running;
  }
}

function impl(p: Probe) {
  return implement(Res, {
    ping: (req) => {
      p.calls.ping++;
      return req;
    },
    other: (req) => {
      p.calls.other++;
      return req;
    },
    async slow(req) {
      p.calls.slow++;
      p.enter();
      try {
        await p.gate.promise;
        return req;
      } finally {
        p.running--;
      }
    },
    async work({ ms }, ctx) {
      p.calls.work++;
      p.enter();
      try {
        await abortableSleep(ms, ctx.signal);
        return { ok: true as const };
      } finally {
        p.running--;
      }
    },
    async *tail({ everyMs }, ctx) {
      p.calls.tail++;
      p.enter();
      try {
        for (let i = 0; ; i++) {
          yield { i };
          await abortableSleep(everyMs, ctx.signal);
        }
      } finally {
        p.running--;
      }
    },
  });
}

const cleanup = new Cleanup();
after(() => cleanup.run());

async function start(interceptors: ServerInterceptor[]) {
  const probe = new Probe();
  const server = cleanup.server({ resilience: false, interceptors }).add(impl(probe));
  const { target } = await listenOn(server, 'tcp');
  return { probe, server, client: cleanup.client(Res, { target, resilience: false }) };
}

describe('resilience over TCP', () => {
  it('rate limit - a limited caller gets RESOURCE_EXHAUSTED with a retry-after-ms trailer; the handler does not run', async () => {
    const rl = rateLimit({ perCaller: { rate: 0.1, burst: 3 } });
    const { probe, client } = await start([rl]);
    for (let n = 0; n < 3; n++) assert.deepEqual(await client.ping({ n }), { n });
    const err = await rejection(client.ping({ n: 3 }));
    assertStatus(err, 'RESOURCE_EXHAUSTED');
    const trailer = err.metadata['retry-after-ms'];
    assert.equal(typeof trailer, 'string');
    const ms = Number(trailer);
    assert.ok(Number.isInteger(ms) && ms > 0 && ms <= 10_000, `retry-after-ms: ${String(trailer)}`);
    assert.deepEqual(err.details, { reason: 'caller-limit', retryAfterMs: ms });
    await rejection(client.other({ n: 4 }));
    assert.equal(probe.calls.ping + probe.calls.other, 3, 'no refused call reached a handler');
    assert.equal(rl.stats().refusedCaller, 2);
  });

  it('rate limit - per-method limits apply to their method only', async () => {
    const rl = rateLimit({ perMethod: { 'res.ping': { rate: 0.1, burst: 2 } } });
    const { probe, client } = await start([rl]);
    await client.ping({ n: 1 });
    await client.ping({ n: 2 });
    const err = await rejection(client.ping({ n: 3 }));
    assertStatus(err, 'RESOURCE_EXHAUSTED');
    assert.equal((err.details as { reason: string }).reason, 'method-limit');
    for (let n = 0; n < 10; n++) await client.other({ n });
    assert.deepEqual([probe.calls.ping, probe.calls.other], [2, 10]);
  });

  it('bulkhead - maxConcurrent 2 / maxQueue 2 and 10 concurrent slow calls: exactly the overflow is refused fast', async () => {
    const bh = bulkhead({ maxConcurrent: 2, maxQueue: 2, queueTimeoutMs: 60_000 });
    const { probe, client } = await start([bh]);
    const outcomes = Array.from({ length: 10 }, (_, n) =>
      client.slow({ n }).then(
        () => 'ok',
        (err: unknown) => (isSkeinError(err) ? err : Promise.reject(err)),
      ),
    );
    // The refusals arrive while every admitted call is still blocked in its handler.
    let refused = 0;
    for (const o of outcomes) {
      void o.then((v) => {
        if (v !== 'ok') refused++;
      });
    }
    await waitFor(() => refused === 6, { what: '6 refusals while the handlers are blocked' });
    assert.equal(probe.calls.slow, 2);
    assert.deepEqual({ running: bh.stats().running, waiting: bh.stats().waiting }, { running: 2, waiting: 2 });
    probe.gate.resolve();
    const results = await Promise.all(outcomes);
    assert.equal(results.filter((r) => r === 'ok').length, 4);
    for (const r of results) {
      if (typeof r === 'string') continue;
      assertStatus(r, 'RESOURCE_EXHAUSTED');
      assert.match(r.message, /bulkhead full/);
      assert.ok(Number(r.metadata['retry-after-ms']) >= 0);
    }
    assert.equal(probe.calls.slow, 4);
    assert.equal(probe.maxRunning, 2);
    assert.equal(bh.stats().running, 0);
  });

  it('bulkhead - a streaming call cancelled by the client gives its slot back', async () => {
    const bh = bulkhead({ maxConcurrent: 1 });
    const { probe, client } = await start([bh]);
    for (let round = 0; round < 3; round++) {
      const stream = client.tail({ everyMs: 5 });
      for await (const { i } of stream) {
        if (i === 2) break; // ends the iteration: cancels the call
      }
      await waitFor(() => bh.stats().running === 0, { what: `the slot to be released (round ${round})` });
    }
    assert.equal(probe.calls.tail, 3);
    // Exactly one slot: two streams at once still get one refusal.
    const first = client.tail({ everyMs: 5 });
    const it1 = first[Symbol.asyncIterator]();
    await it1.next();
    const err = await rejection((async () => {
      for await (const _ of client.tail({ everyMs: 5 })) break;
    })());
    assertStatus(err, 'RESOURCE_EXHAUSTED');
    first.cancel();
    await waitFor(() => bh.stats().running === 0 && probe.running === 0, { what: 'the last slot to be released' });
  });

  it('shed - under 3x overload, refusals happen, every admitted call succeeds, concurrency stays within the limit', async () => {
    const maxLimit = 4;
    const sh = shed({ initialLimit: maxLimit, maxLimit });
    const events: ResilienceEvent[] = [];
    const onEvent = (m: unknown) => events.push(m as ResilienceEvent);
    diagnostics.subscribe(ResilienceChannel.SHED, onEvent);
    try {
      const { probe, client } = await start([sh]);
      let ok = 0;
      const refusals: unknown[] = [];
      const others: unknown[] = [];
      const worker = async () => {
        for (let k = 0; k < 6; k++) {
          try {
            await client.work({ ms: 10 });
            ok++;
          } catch (err) {
            if (isSkeinError(err) && err.statusName === 'RESOURCE_EXHAUSTED' && err.metadata['retry-after-ms'] !== undefined) refusals.push(err);
            else others.push(err);
          }
        }
      };
      await Promise.all(Array.from({ length: 3 * maxLimit }, worker));
      assert.deepEqual(others, [], 'only refusals failed');
      assert.ok(refusals.length > 0, 'overload was refused');
      assert.equal(ok, probe.calls.work, 'every admitted call succeeded');
      assert.ok(probe.maxRunning <= maxLimit, `at most ${maxLimit} handlers at once, saw ${probe.maxRunning}`);
      const st = sh.stats();
      assert.ok(st.peakInflight <= maxLimit);
      assert.equal(st.refused, refusals.length);
      assert.equal(st.admitted, ok);
      assert.equal(st.inflight, 0);
      assert.equal(events.length, refusals.length, 'one event per refusal');
    } finally {
      diagnostics.unsubscribe(ResilienceChannel.SHED, onEvent);
    }
  });

  it('fallback - answers a bulkhead refusal with the fallback reply', async () => {
    const fb = fallback({ 'res.slow': (_err, call) => ({ n: (call.request as { n: number }).n, fallback: true }) });
    const { probe, client } = await start([fb, bulkhead({ maxConcurrent: 1 })]);
    const first = client.slow({ n: 1 });
    await waitFor(() => probe.calls.slow === 1, { what: 'the first call to run' });
    assert.deepEqual(await client.slow({ n: 2 }), { n: 2, fallback: true });
    probe.gate.resolve();
    assert.deepEqual(await first, { n: 1 });
    assert.equal(fb.stats().served, 1);
  });

  it('server resilience - the default chain (shed only) leaves ordinary traffic alone', async () => {
    const chain = serverResilience();
    assert.equal(chain.length, 1);
    const { probe, client } = await start(chain);
    const replies = await Promise.all(Array.from({ length: 15 }, (_, n) => client.ping({ n })));
    assert.equal(replies.length, 15);
    assert.equal(probe.calls.ping, 15);
  });
});
