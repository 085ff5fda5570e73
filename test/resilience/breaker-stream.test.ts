/**
 * Circuit breakers on server-streaming and bidi calls (`breaker({ streams: true })`), over
 * real TCP (127.0.0.1, port 0), the open time on a fake clock: failing streams open the
 * circuit; an open circuit fails a stream on its first read without sending it (the
 * server's counts prove it); a probe stream read to its end closes the circuit; a probe
 * the caller gives up (`break`, `cancel()`, its signal) frees the probe slot without a
 * verdict; without `streams: true` streams pass through. No timing assertions; every wait
 * is bounded.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { after, describe, it } from 'node:test';
import { bidi, ErrorCode, implement, serverStream, service, SkeinError, unary, type ClientOptions, type ResponseStream } from '../../src/index.js';
import { breaker, BREAKER_CHANNEL, BreakerState, type BreakerEvent } from '../../src/resilience/index.js';
import { FakeClock } from '../helpers/clock.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { assertStatus, Cleanup, collect, rejection, settleTurns } from '../integration/_harness.js';

const Feed = service('breaker-feed', {
  watch: serverStream<{ n: number }, { i: number }>(),
  chat: bidi<{ text: string }, { text: string }>(),
  get: unary<{ id: string }, { id: string }>(),
});

/** The server's side: calls seen per method, and how it fails ('fail': streams after one reply, and unary calls; 'missing': NOT_FOUND after one reply). */
class Backend {
  watch = 0;
  chat = 0;
  get = 0;
  mode: 'ok' | 'fail' | 'missing' = 'ok';
  cancelled = 0;
}

function impl(b: Backend) {
  return implement(Feed, {
    async *watch({ n }, ctx) {
      b.watch++;
      try {
        yield { i: 1 };
        if (b.mode === 'fail') throw new SkeinError('UNAVAILABLE', 'feed down on purpose');
        if (b.mode === 'missing') throw new SkeinError('NOT_FOUND', 'no such feed');
        for (let i = 2; i <= n; i++) yield { i };
      } finally {
        if (ctx.signal.aborted) b.cancelled++;
      }
    },
    async *chat(requests) {
      b.chat++;
      if (b.mode === 'fail') throw new SkeinError('INTERNAL', 'chat broken on purpose');
      for await (const m of requests) yield m;
    },
    get({ id }) {
      b.get++;
      if (b.mode === 'fail') throw new SkeinError('UNAVAILABLE', 'down on purpose');
      return { id };
    },
  });
}

const cleanup = new Cleanup();
after(() => cleanup.run());

async function setup(b: Backend, options: Omit<ClientOptions, 'target'>) {
  const server = cleanup.server().add(impl(b));
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  const client = cleanup.client(Feed, { target: `127.0.0.1:${port}`, ...options });
  await client.ready({ timeout: 5000 });
  return client;
}

function subscribe(): BreakerEvent[] {
  const events: BreakerEvent[] = [];
  const onEvent = (m: unknown): void => void events.push(m as BreakerEvent);
  diagnostics.subscribe(BREAKER_CHANNEL, onEvent);
  cleanup.add(() => diagnostics.unsubscribe(BREAKER_CHANNEL, onEvent));
  return events;
}

describe('circuit breaker on streams over TCP', () => {
  it('breaker streams - failing streams open the circuit; open fails a stream on its first read, unsent; a probe read to its end closes it', async () => {
    const b = new Backend();
    const clock = new FakeClock();
    const events = subscribe();
    const br = breaker({ consecutiveFailures: 3, openMs: 1000, clock, streams: true });
    const client = await setup(b, { resilience: false, interceptors: [br] });

    b.mode = 'fail';
    for (let k = 0; k < 2; k++) assertStatus(await rejection(collect(client.watch({ n: 5 }))), 'UNAVAILABLE');
    assertStatus(await rejection(collect(client.chat([{ text: 'x' }]))), 'INTERNAL');
    assert.equal(br.stats().states['breaker-feed'], BreakerState.OPEN);
    const sent = { watch: b.watch, chat: b.chat, get: b.get };

    const fast: Array<ResponseStream<unknown>> = [client.watch({ n: 5 }), client.chat([{ text: 'y' }])];
    for (const stream of fast) {
      const e = await rejection(collect(stream), 5000, 'the stream to fail fast');
      assertStatus(e, 'UNAVAILABLE', ErrorCode.CIRCUIT_OPEN);
      assert.match(e.message, /circuit open for breaker-feed.*next probe in \d+ms/);
      assert.deepEqual((e.details as { reason: string }).reason, 'circuit-open');
      await assert.rejects(stream.trailers, (err: unknown) => (err as SkeinError).code === ErrorCode.CIRCUIT_OPEN);
    }
    assertStatus(await rejection(client.get({ id: 'z' })), 'UNAVAILABLE', ErrorCode.CIRCUIT_OPEN);
    await settleTurns();
    assert.deepEqual({ watch: b.watch, chat: b.chat, get: b.get }, sent, 'nothing was sent while open');
    assert.equal(br.stats().rejected, 3);

    b.mode = 'ok';
    clock.advance(1000);
    assert.deepEqual(await collect(client.watch({ n: 3 })), [{ i: 1 }, { i: 2 }, { i: 3 }]);
    assert.equal(br.stats().states['breaker-feed'], BreakerState.CLOSED);
    assert.deepEqual(await collect(client.chat([{ text: 'back' }])), [{ text: 'back' }]);
    assert.deepEqual(
      events.filter((e) => e.key === 'breaker-feed').map((e) => `${e.to}:${e.reason}`),
      ['open:consecutive-failures', 'half-open:open-elapsed', 'closed:probe-succeeded'],
    );
  });

  it('breaker streams - a failed probe stream re-opens the circuit', async () => {
    const b = new Backend();
    const clock = new FakeClock();
    const br = breaker({ consecutiveFailures: 1, openMs: 100, clock, streams: true });
    const client = await setup(b, { resilience: false, interceptors: [br] });
    b.mode = 'fail';
    await rejection(collect(client.watch({ n: 2 })));
    clock.advance(100);
    assert.equal(br.breakerFor('breaker-feed')!.state, BreakerState.HALF_OPEN);
    assertStatus(await rejection(collect(client.watch({ n: 2 }))), 'UNAVAILABLE', ErrorCode.REMOTE);
    assert.equal(br.breakerFor('breaker-feed')!.state, BreakerState.OPEN);
    assert.equal(br.breakerFor('breaker-feed')!.probeInMs, 200, 'twice as long');
  });

  it('breaker streams - a probe given up early (break, cancel(), its signal) frees the probe slot without a verdict', async () => {
    const b = new Backend();
    const clock = new FakeClock();
    const br = breaker({ consecutiveFailures: 1, openMs: 100, clock, streams: true });
    const client = await setup(b, { resilience: false, interceptors: [br] });
    const cb = () => br.breakerFor('breaker-feed')!;
    b.mode = 'fail';
    await rejection(collect(client.watch({ n: 2 })));
    assert.equal(cb().state, BreakerState.OPEN);
    b.mode = 'ok';
    clock.advance(100);

    // 1. The probe is a long stream; the caller breaks out after one reply.
    const probe = client.watch({ n: 1e9 });
    const blocked = await rejection(collect(client.watch({ n: 1 })), 5000, 'a second call while the probe is out');
    assert.match(blocked.message, /a probe is in flight/);
    for await (const m of probe) {
      assert.deepEqual(m, { i: 1 });
      break;
    }
    assert.equal(cb().state, BreakerState.HALF_OPEN, 'given up: no verdict');
    await waitFor(() => b.cancelled === 1, { what: 'the server to see the probe cancelled' });

    // 2. The next probe is cancelled before it is read.
    const second = client.watch({ n: 1e9 });
    second.cancel('not needed');
    assert.equal(cb().state, BreakerState.HALF_OPEN);

    // 3. The next probe's signal aborts.
    const ac = new AbortController();
    const third = client.chat([{ text: 'q' }], { signal: ac.signal });
    ac.abort();
    assertStatus(await rejection(collect(third)), 'CANCELLED');
    assert.equal(cb().state, BreakerState.HALF_OPEN);

    // The slot is free each time: a probe read to its end closes the circuit.
    assert.deepEqual(await withTimeout(collect(client.watch({ n: 2 })), 5000, 'the last probe'), [{ i: 1 }, { i: 2 }]);
    assert.equal(cb().state, BreakerState.CLOSED);
  });

  it('breaker streams - a stream the server answers with a non-failure status counts as a success; a cancelled one as nothing', async () => {
    const b = new Backend();
    const br = breaker({ consecutiveFailures: 1, clock: new FakeClock(), streams: true });
    const client = await setup(b, { resilience: false, interceptors: [br] });
    b.mode = 'missing';
    for (let k = 0; k < 3; k++) assertStatus(await rejection(collect(client.watch({ n: 2 }))), 'NOT_FOUND');
    b.mode = 'ok';
    for (let k = 0; k < 3; k++) {
      const s = client.watch({ n: 1e9 });
      for await (const _ of s) break;
    }
    assert.equal(br.stats().states['breaker-feed'], BreakerState.CLOSED);
    assert.equal(br.stats().opened, 0);
  });

  it('breaker streams - through the default chain: `resilience: { breaker: { streams: true } }`', async () => {
    const b = new Backend();
    const client = await setup(b, { resilience: { breaker: { streams: true, consecutiveFailures: 2, openMs: 60_000 } } });
    b.mode = 'fail';
    for (let k = 0; k < 2; k++) await rejection(collect(client.watch({ n: 2 })));
    const seen = b.watch;
    assertStatus(await rejection(collect(client.watch({ n: 2 }))), 'UNAVAILABLE', ErrorCode.CIRCUIT_OPEN);
    assert.equal(b.watch, seen, 'not sent');
  });

  it('breaker streams - without `streams: true` streams pass through, even with the circuit open', async () => {
    const b = new Backend();
    const br = breaker({ consecutiveFailures: 1, clock: new FakeClock() });
    const client = await setup(b, { resilience: false, interceptors: [br] });
    b.mode = 'fail';
    await rejection(collect(client.watch({ n: 2 })));
    assert.equal(br.stats().states['breaker-feed'], undefined, 'a stream is not judged');
    assertStatus(await rejection(client.get({ id: 'x' })), 'UNAVAILABLE', ErrorCode.REMOTE);
    assert.equal(br.stats().states['breaker-feed'], BreakerState.OPEN);
    b.mode = 'ok';
    assert.deepEqual(await collect(client.watch({ n: 2 })), [{ i: 1 }, { i: 2 }]);
  });
});
