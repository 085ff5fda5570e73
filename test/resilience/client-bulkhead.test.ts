/**
 * Client-side bulkhead over real TCP (127.0.0.1, port 0): the overflow of a burst fails
 * locally with SKEIN_ERR_LIMITED and the server's counts prove it was never sent; queue
 * timeouts (on a fake clock), deadlines and aborts end a queue wait; streaming calls hold
 * their slot until their stream is over, on every path (read to the end, `break`,
 * `cancel()`, failure, never read). Through `connect(..., { resilience: { bulkhead } })`
 * and standalone (`resilience: false, interceptors: [clientBulkhead()]`). Every wait is
 * for an event or a bounded condition; no timing assertions.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { after, describe, it } from 'node:test';
import { bidi, connect, ErrorCode, implement, serverStream, service, SkeinError, unary, type CallContext, type ClientInterceptor, type ClientOptions, type OutgoingCall, type ResponseStream } from '../../src/index.js';
import { CLIENT_BULKHEAD_CHANNEL, ClientBulkheadDefaults, clientBulkhead, type ClientBulkheadEvent, type ClientBulkheadInterceptor } from '../../src/resilience/index.js';
import { FakeClock } from '../helpers/clock.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { assertStatus, Cleanup, collect, rejection, settleTurns } from '../integration/_harness.js';
import { gate } from './_helpers.js';

const Slow = service('client-bulkhead', {
  hold: unary<{ id: number }, { id: number }>(),
  other: unary<{ id: number }, { id: number }>(),
  watch: serverStream<{ n: number; fail?: boolean }, { i: number }>(),
  chat: bidi<{ text: string }, { text: string }>(),
});

/** What the server saw: every call by method, and a gate that held unary calls wait on. */
class Seen {
  hold: number[] = [];
  other: number[] = [];
  watch = 0;
  chat = 0;
  watchAborted = 0;
  deadlines: Array<number | undefined> = [];
  release = gate();
}

function untilAborted(signal: AbortSignal): Promise<'aborted'> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve('aborted');
    else signal.addEventListener('abort', () => resolve('aborted'), { once: true });
  });
}

function impl(seen: Seen) {
  return implement(Slow, {
    async hold({ id }, ctx: CallContext) {
      seen.hold.push(id);
      seen.deadlines.push(ctx.deadline);
      if ((await Promise.race([seen.release.promise, untilAborted(ctx.signal)])) === 'aborted') throw new SkeinError('CANCELLED', 'held call cancelled');
      return { id };
    },
    other({ id }) {
      seen.other.push(id);
      return { id };
    },
    async *watch({ n, fail }, ctx) {
      seen.watch++;
      try {
        for (let i = 1; i <= n; i++) {
          if (fail === true && i === 2) throw new SkeinError('INTERNAL', 'stream broke on purpose');
          yield { i };
        }
      } finally {
        if (ctx.signal.aborted) seen.watchAborted++;
      }
    },
    async *chat(requests) {
      seen.chat++;
      for await (const m of requests) yield m;
    },
  });
}

const cleanup = new Cleanup();
after(() => cleanup.run());

async function start(seen: Seen): Promise<string> {
  const server = cleanup.server().add(impl(seen));
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  return `127.0.0.1:${port}`;
}

async function clientTo(target: string, options: Omit<ClientOptions, 'target'>) {
  const client = cleanup.client(Slow, { target, ...options });
  await client.ready({ timeout: 5000 });
  return client;
}

function subscribe(): ClientBulkheadEvent[] {
  const events: ClientBulkheadEvent[] = [];
  const onEvent = (m: unknown): void => void events.push(m as ClientBulkheadEvent);
  diagnostics.subscribe(CLIENT_BULKHEAD_CHANNEL, onEvent);
  cleanup.add(() => diagnostics.unsubscribe(CLIENT_BULKHEAD_CHANNEL, onEvent));
  return events;
}

function idle(bh: ClientBulkheadInterceptor): void {
  const s = bh.stats();
  assert.equal(s.running, 0, 'no slot held');
  assert.equal(s.waiting, 0, 'nobody waiting');
}

describe('client bulkhead over TCP', () => {
  it('client bulkhead - maxConcurrent 2 / maxQueue 2: exactly the overflow of 6 calls fails locally and is never sent', async () => {
    const seen = new Seen();
    const target = await start(seen);
    const events = subscribe();
    const client = await clientTo(target, { resilience: { bulkhead: { maxConcurrent: 2, maxQueue: 2, queueTimeoutMs: 60_000 } } });

    const calls = [1, 2, 3, 4, 5, 6].map((id) => client.hold({ id }, { timeout: 10_000 }));
    const settled = calls.map((p) => p.then((v) => ({ ok: v }), (err: unknown) => ({ err })));
    // The two beyond 2 running + 2 queued fail at once, before anything else happens.
    for (const id of [5, 6]) {
      const r = await withTimeout(settled[id - 1]!, 5000, `call ${id} to be refused`);
      assert.ok('err' in r, `call ${id} should be refused`);
      const e = r.err as SkeinError;
      assertStatus(e, 'RESOURCE_EXHAUSTED', ErrorCode.LIMITED);
      assert.deepEqual(e.details, { reason: 'bulkhead-full', retryAfterMs: ClientBulkheadDefaults.retryAfterMs });
      assert.equal(e.metadata['retry-after-ms'], String(ClientBulkheadDefaults.retryAfterMs));
      assert.match(e.message, /client bulkhead full for client-bulkhead\.hold: the call was not sent/);
    }
    await waitFor(() => seen.hold.length === 2, { what: 'the first two calls to reach the server' });
    await settleTurns();
    assert.deepEqual(seen.hold, [1, 2], 'the queued calls wait, the refused ones are never sent');

    // Another method has a limit of its own ('method' key).
    assert.deepEqual(await withTimeout(client.other({ id: 7 }), 5000, 'another method'), { id: 7 });

    seen.release.resolve();
    const results = await withTimeout(Promise.all(settled.slice(0, 4)), 5000, 'the admitted calls');
    assert.deepEqual(results, [1, 2, 3, 4].map((id) => ({ ok: { id } })));
    assert.deepEqual([...seen.hold].sort(), [1, 2, 3, 4], 'the server saw exactly the four admitted calls');
    assert.deepEqual(
      events.filter((e) => e.key === 'client-bulkhead.hold').map((e) => e.reason),
      ['queued', 'queued', 'bulkhead-full', 'bulkhead-full'],
    );
    // Nothing leaked: two calls are again admitted at once, nothing queues.
    const before = events.length;
    const again = [8, 9].map((id) => client.hold({ id }, { timeout: 10_000 }));
    assert.deepEqual(await withTimeout(Promise.all(again), 5000, 'two more calls'), [{ id: 8 }, { id: 9 }]);
    assert.equal(events.length, before, 'no call had to queue');
  });

  it('client bulkhead - a waiter is refused after queueTimeoutMs (fake clock); the server never sees it', async () => {
    const seen = new Seen();
    const target = await start(seen);
    const clock = new FakeClock();
    const bh = clientBulkhead({ maxConcurrent: 1, maxQueue: 1, queueTimeoutMs: 50, clock });
    const client = await clientTo(target, { resilience: false, interceptors: [bh] });

    const first = client.hold({ id: 1 }, { timeout: 10_000 });
    const second = client.hold({ id: 2 }, { timeout: 10_000 });
    assert.equal(bh.stats().waiting, 1);
    await waitFor(() => seen.hold.length === 1, { what: 'the first call to reach the server' });
    clock.advance(49);
    await settleTurns();
    assert.equal(bh.stats().waiting, 1, 'still waiting before queueTimeoutMs');
    clock.advance(1);
    const e = await rejection(second);
    assertStatus(e, 'RESOURCE_EXHAUSTED', ErrorCode.LIMITED);
    assert.equal((e.details as { reason: string }).reason, 'queue-timeout');
    assert.match(e.message, /queue timeout after 50ms/);
    seen.release.resolve();
    assert.deepEqual(await withTimeout(first, 5000, 'the first call'), { id: 1 });
    assert.deepEqual(seen.hold, [1]);
    assert.deepEqual(bh.stats(), { admitted: 1, queued: 1, refusedFull: 0, refusedTimeout: 1, cancelledInQueue: 0, running: 0, waiting: 0 });
  });

  it("client bulkhead - the call's deadline and AbortSignal end a queue wait; nothing is sent", async () => {
    const seen = new Seen();
    const target = await start(seen);
    const bh = clientBulkhead({ maxConcurrent: 1, maxQueue: 4, queueTimeoutMs: 60_000, clock: new FakeClock() });
    const events = subscribe();
    const client = await clientTo(target, { resilience: false, interceptors: [bh] });

    const first = client.hold({ id: 1 }, { timeout: 10_000 });
    await waitFor(() => seen.hold.length === 1, { what: 'the first call to reach the server' });
    const late = client.hold({ id: 2 }, { timeout: 30 });
    const ac = new AbortController();
    const aborted = client.hold({ id: 3 }, { signal: ac.signal, timeout: 10_000 });
    assert.equal(bh.stats().waiting, 2);
    assertStatus(await rejection(late), 'DEADLINE_EXCEEDED', ErrorCode.DEADLINE);
    ac.abort();
    assertStatus(await rejection(aborted), 'CANCELLED', ErrorCode.CANCELLED);
    // A signal aborted before the call even queued fails it at once.
    assertStatus(await rejection(client.hold({ id: 4 }, { signal: AbortSignal.abort() })), 'CANCELLED', ErrorCode.CANCELLED);
    assert.equal(bh.stats().waiting, 0);
    assert.equal(bh.stats().cancelledInQueue, 2);
    assert.deepEqual(
      events.filter((e) => e.key === 'client-bulkhead.hold').map((e) => e.reason),
      ['queued', 'queued', 'cancelled', 'cancelled'],
    );
    seen.release.resolve();
    assert.deepEqual(await withTimeout(first, 5000, 'the first call'), { id: 1 });
    assert.deepEqual(seen.hold, [1], 'no call that left the queue was sent');
    idle(bh);
  });

  it('client bulkhead - a call that waited is sent with its deadline fixed at arrival (the wait counts against its timeout)', async () => {
    const seen = new Seen();
    const target = await start(seen);
    const bh = clientBulkhead({ maxConcurrent: 1, maxQueue: 1, queueTimeoutMs: 60_000, clock: new FakeClock() });
    const sent: OutgoingCall[] = [];
    const capture: ClientInterceptor = (next) => (call) => {
      sent.push(call);
      return next(call);
    };
    const client = await clientTo(target, { resilience: false, interceptors: [bh, capture] });
    const first = client.hold({ id: 1 }, { timeout: 10_000 });
    await waitFor(() => seen.hold.length === 1, { what: 'the first call to reach the server' });
    const queued = client.hold({ id: 2 }, { timeout: 10_000 });
    const arrived = Date.now();
    seen.release.resolve();
    await withTimeout(Promise.all([first, queued]), 5000, 'both calls');
    assert.equal(sent[0]!.options.timeout, 10_000, 'a call admitted at once is passed on untouched');
    const o = sent[1]!.options;
    assert.equal(o.timeout, undefined);
    assert.ok(o.deadline !== undefined && o.deadline <= arrived + 10_000, `deadline ${o.deadline} counted from the arrival (${arrived})`);
    idle(bh);
  });

  it('client bulkhead - bad options are refused at once', () => {
    assert.throws(() => clientBulkhead({ maxConcurrent: 0 }), /maxConcurrent/);
    assert.throws(() => clientBulkhead({ maxQueue: -1 }), /maxQueue/);
    assert.throws(() => clientBulkhead({ queueTimeoutMs: 0 }), /queueTimeoutMs/);
    assert.throws(() => clientBulkhead({ key: 'instance' as 'method' }), /key/);
  });
});

describe('client bulkhead and streams', () => {
  it('client bulkhead - a stream holds its slot until it ends: read to the end, failed, cancelled, never read', async () => {
    const seen = new Seen();
    const target = await start(seen);
    const bh = clientBulkhead({ maxConcurrent: 1, maxQueue: 0 });
    const client = await clientTo(target, { resilience: false, interceptors: [bh] });

    // Read to the end.
    const s1 = client.watch({ n: 3 });
    assert.equal(bh.stats().running, 1);
    const refused = client.watch({ n: 1 });
    const e = await rejection(collect(refused), 5000, 'the refused stream to fail on its first read');
    assertStatus(e, 'RESOURCE_EXHAUSTED', ErrorCode.LIMITED);
    await assert.rejects(refused.trailers, (err: unknown) => (err as SkeinError).code === ErrorCode.LIMITED);
    assert.deepEqual(await collect(s1), [{ i: 1 }, { i: 2 }, { i: 3 }]);
    idle(bh);

    // Failed with an error status.
    const s2 = client.watch({ n: 5, fail: true });
    assertStatus(await rejection(collect(s2)), 'INTERNAL');
    idle(bh);

    // Cancelled.
    const s3 = client.watch({ n: 1e9 });
    const it3 = s3[Symbol.asyncIterator]();
    assert.deepEqual(await withTimeout(it3.next(), 5000, 'a first reply'), { done: false, value: { i: 1 } });
    s3.cancel('enough');
    idle(bh);
    assertStatus(await rejection(it3.next()), 'CANCELLED');

    // Never read: the server ends it, the trailers resolve, the slot is free.
    const s4 = client.watch({ n: 2 });
    assert.equal(bh.stats().running, 1);
    await withTimeout(s4.trailers, 5000, 'the unread stream to end');
    idle(bh);

    assert.equal(seen.watch, 4, 'the refused stream was never sent');
    assert.equal(bh.stats().refusedFull, 1);
  });

  it('client bulkhead - breaking out of `for await` releases the slot to the next stream in the queue (default chain, bidi too)', async () => {
    const seen = new Seen();
    const target = await start(seen);
    const events = subscribe();
    const client = await clientTo(target, { resilience: { bulkhead: { maxConcurrent: 1, maxQueue: 1, key: 'service' } } });

    const long = client.watch({ n: 1e9 });
    const queued = client.chat([{ text: 'a' }, { text: 'b' }]);
    assert.deepEqual(
      events.filter((e) => e.key === 'client-bulkhead').map((e) => e.reason),
      ['queued'],
    );
    let got = 0;
    await withTimeout(
      (async () => {
        for await (const m of long) {
          assert.equal(m.i, ++got);
          if (got === 3) break;
        }
      })(),
      5000,
      'three replies of the long stream',
    );
    // The queued bidi call got the slot and runs to its end.
    assert.deepEqual(await collect(queued), [{ text: 'a' }, { text: 'b' }]);
    await waitFor(() => seen.watchAborted === 1, { what: 'the server to see the long stream cancelled' });
    assert.equal(seen.chat, 1);
    // Nothing leaked: a stream of the same service is admitted at once.
    const before = events.length;
    assert.deepEqual(await collect(client.watch({ n: 2 })), [{ i: 1 }, { i: 2 }]);
    assert.equal(events.length, before, 'no call had to queue');
  });

  it('client bulkhead - a queued stream cancelled (or aborted) before it got a slot is never sent', async () => {
    const seen = new Seen();
    const target = await start(seen);
    const bh = clientBulkhead({ maxConcurrent: 1, maxQueue: 2, key: 'service', clock: new FakeClock() });
    const client = await clientTo(target, { resilience: false, interceptors: [bh] });

    const running = client.watch({ n: 1e9 });
    const it = running[Symbol.asyncIterator]();
    await withTimeout(it.next(), 5000, 'a first reply');
    const cancelled = client.watch({ n: 1 });
    const ac = new AbortController();
    const aborted = client.chat([{ text: 'x' }], { signal: ac.signal });
    assert.equal(bh.stats().waiting, 2);
    cancelled.cancel('changed my mind');
    ac.abort();
    assertStatus(await rejection(collect(cancelled)), 'CANCELLED', ErrorCode.CANCELLED);
    assertStatus(await rejection(collect(aborted)), 'CANCELLED', ErrorCode.CANCELLED);
    await assert.rejects(cancelled.trailers);
    assert.equal(bh.stats().waiting, 0);
    assert.equal(bh.stats().cancelledInQueue, 2);
    await it.return!();
    idle(bh);
    assert.equal(seen.watch, 1);
    assert.equal(seen.chat, 0, 'the aborted call was never sent');
  });

  it('client bulkhead - a stream an async interceptor hands back (a promise of a stream) is held and released too', async () => {
    const seen = new Seen();
    const target = await start(seen);
    const bh = clientBulkhead({ maxConcurrent: 1, maxQueue: 1 });
    const later: ClientInterceptor = (next) => async (call) => {
      await Promise.resolve();
      return next(call);
    };
    const client = await clientTo(target, { resilience: false, interceptors: [bh, later] });
    const first = client.watch({ n: 1e9 });
    const second = client.watch({ n: 2 });
    assert.equal(bh.stats().waiting, 1);
    for await (const m of first) {
      assert.deepEqual(m, { i: 1 });
      break;
    }
    assert.deepEqual(await collect(second), [{ i: 1 }, { i: 2 }]);
    idle(bh);
    // Cancelled while the interceptor is still working: cancelled as soon as it arrives.
    const third = client.watch({ n: 1e9 });
    third.cancel('too late');
    assertStatus(await rejection(collect(third)), 'CANCELLED');
    await waitFor(() => bh.stats().running === 0, { what: 'the slot of the cancelled stream' });
    idle(bh);
  });

  it('client bulkhead - a queued stream through a discovery channel gets its slot when the running one ends', async () => {
    const seen = new Seen();
    const target = await start(seen);
    const bh = clientBulkhead({ maxConcurrent: 1, maxQueue: 1 });
    const client = connect(Slow, { discovery: `static://${target}`, resilience: false, interceptors: [bh] });
    cleanup.add(() => client.close());
    await client.ready({ timeout: 5000 });
    const first: ResponseStream<{ i: number }> = client.watch({ n: 2 });
    const second = client.watch({ n: 3 });
    assert.equal(bh.stats().waiting, 1);
    assert.deepEqual(await collect(first), [{ i: 1 }, { i: 2 }]);
    assert.deepEqual(await collect(second), [{ i: 1 }, { i: 2 }, { i: 3 }]);
    idle(bh);
    assert.equal(seen.watch, 2);
  });
});
