/**
 * Circuit breakers: the state machine with a fake clock (every transition, the rate window,
 * half-open probes, the growing open time), and the interceptor over real TCP (fail fast
 * once open: the server stops seeing calls; recovery through a half-open probe). No timing
 * assertions; every wait is bounded.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { after, describe, it } from 'node:test';
import { createError, ErrorCode, implement, SkeinError, service, Status, unary, type OutgoingCall } from '../../src/index.js';
import { breaker, BREAKER_CHANNEL, BreakerState, CircuitBreaker, type BreakerEvent } from '../../src/resilience/index.js';
import { FakeClock } from '../helpers/clock.js';
import { withTimeout } from '../helpers/wait.js';
import { Cleanup, rejection } from '../integration/_harness.js';

function fail(b: CircuitBreaker, n: number): void {
  for (let i = 0; i < n; i++) {
    assert.ok(b.tryAcquire());
    b.onFailure();
  }
}

describe('circuit breaker state machine', () => {
  it('breaker - opens after N consecutive failures; a success resets the count', () => {
    const clock = new FakeClock();
    const b = new CircuitBreaker({ consecutiveFailures: 3, clock });
    fail(b, 2);
    assert.ok(b.tryAcquire());
    b.onSuccess();
    fail(b, 2);
    assert.equal(b.state, BreakerState.CLOSED);
    fail(b, 1);
    assert.equal(b.state, BreakerState.OPEN);
    assert.equal(b.tryAcquire(), false);
    assert.equal(b.probeInMs, 5000);
  });

  it('breaker - opens on a failure rate over the window once it holds minimumCalls', () => {
    const clock = new FakeClock();
    const b = new CircuitBreaker({ consecutiveFailures: 100, failureRate: 0.5, minimumCalls: 10, windowMs: 1000, clock });
    // 4 successes and 4 failures, alternating: never 2 in a row, and below minimumCalls.
    for (let i = 0; i < 4; i++) {
      b.tryAcquire();
      b.onSuccess();
      fail(b, 1);
    }
    assert.equal(b.state, BreakerState.CLOSED);
    b.tryAcquire();
    b.onSuccess();
    fail(b, 1); // 10 calls, 5 failures: 50 %
    assert.equal(b.state, BreakerState.OPEN);
  });

  it('breaker - the rate window slides: old calls no longer count', () => {
    const clock = new FakeClock();
    const b = new CircuitBreaker({ consecutiveFailures: 100, failureRate: 0.5, minimumCalls: 10, windowMs: 1000, clock });
    for (let i = 0; i < 9; i++) fail(b, 1);
    assert.deepEqual(b.window(), { calls: 9, failures: 9 });
    clock.advance(1500);
    assert.deepEqual(b.window(), { calls: 0, failures: 0 });
    fail(b, 1);
    assert.equal(b.state, BreakerState.CLOSED, 'only 1 call in the window');
  });

  it('breaker - half-open after openMs lets `probes` calls through; success closes', () => {
    const clock = new FakeClock();
    const changes: string[] = [];
    const b = new CircuitBreaker({ consecutiveFailures: 1, openMs: 100, probes: 1, clock, onStateChange: (f, t, r) => changes.push(`${f}>${t}:${r}`) });
    fail(b, 1);
    clock.advance(99);
    assert.equal(b.tryAcquire(), false);
    clock.advance(1);
    assert.equal(b.state, BreakerState.HALF_OPEN);
    assert.equal(b.tryAcquire(), true);
    assert.equal(b.tryAcquire(), false, 'one probe at a time');
    b.onSuccess();
    assert.equal(b.state, BreakerState.CLOSED);
    assert.deepEqual(changes, ['closed>open:consecutive-failures', 'open>half-open:open-elapsed', 'half-open>closed:probe-succeeded']);
  });

  it('breaker - a failed probe re-opens for twice as long, capped at maxOpenMs; a close resets it', () => {
    const clock = new FakeClock();
    const b = new CircuitBreaker({ consecutiveFailures: 1, openMs: 100, maxOpenMs: 300, clock });
    fail(b, 1);
    assert.equal(b.probeInMs, 100);
    clock.advance(100);
    fail(b, 1); // the probe fails
    assert.equal(b.state, BreakerState.OPEN);
    assert.equal(b.probeInMs, 200);
    clock.advance(200);
    fail(b, 1);
    assert.equal(b.probeInMs, 300, 'capped');
    clock.advance(300);
    assert.ok(b.tryAcquire());
    b.onSuccess();
    fail(b, 1);
    assert.equal(b.probeInMs, 100, 'back to openMs after a close');
  });

  it('breaker - a cancelled probe frees its slot', () => {
    const clock = new FakeClock();
    const b = new CircuitBreaker({ consecutiveFailures: 1, openMs: 10, clock });
    fail(b, 1);
    clock.advance(10);
    assert.ok(b.tryAcquire());
    b.onIgnored();
    assert.ok(b.tryAcquire());
  });

  it('breaker - bad options are refused at once', () => {
    assert.throws(() => breaker({ failureRate: 2 }), /failureRate/);
    assert.throws(() => breaker({ consecutiveFailures: 0 }), /consecutiveFailures/);
  });
});

const Flaky = service('breaker-flaky', {
  get: unary<{ id: string }, { id: string }>({ idempotent: true }),
  find: unary<{ id: string }, { id: string }>(),
});

const cleanup = new Cleanup();
after(() => cleanup.run());

describe('circuit breaker: what counts', () => {
  const call = (n: number): OutgoingCall => ({ service: 's', method: 'm', kind: 'unary', idempotent: false, request: n, options: {} });
  const failing = (err: SkeinError) => breaker({ consecutiveFailures: 3 })(() => Promise.reject(err));

  for (const code of [ErrorCode.CANCELLED, ErrorCode.NOT_READY, ErrorCode.CONNECT_FAILED, ErrorCode.CONNECTION_LOST, ErrorCode.KEEPALIVE_TIMEOUT, ErrorCode.GOAWAY]) {
    it(`breaker - ${code} (the caller or the transport, not the service) never opens the circuit`, async () => {
      const send = failing(createError(code, 'x'));
      for (let i = 0; i < 10; i++) {
        const err = await rejection(send(call(i)) as Promise<unknown>);
        assert.equal(err.code, code, `call ${i} failed with its own error, not a fail-fast`);
      }
    });
  }

  it('breaker - RESOURCE_EXHAUSTED (a limiter asking for less) counts as an answer, not a failure', async () => {
    const send = failing(createError(ErrorCode.REMOTE, 'slow down', { status: Status.RESOURCE_EXHAUSTED }));
    for (let i = 0; i < 10; i++) assert.equal((await rejection(send(call(i)) as Promise<unknown>)).statusName, 'RESOURCE_EXHAUSTED');
  });

  it('breaker - the service answering UNAVAILABLE opens it: the 4th call fails fast', async () => {
    const send = failing(createError(ErrorCode.REMOTE, 'down', { status: Status.UNAVAILABLE }));
    for (let i = 0; i < 3; i++) assert.equal((await rejection(send(call(i)) as Promise<unknown>)).code, ErrorCode.REMOTE);
    assert.equal((await rejection(send(call(3)) as Promise<unknown>)).code, ErrorCode.CIRCUIT_OPEN);
  });
});

describe('circuit breaker over TCP', () => {
  it('breaker - after the threshold calls fail fast with UNAVAILABLE "circuit open"; the server sees no more calls; a probe recovers', async () => {
    const state = { calls: 0, failing: true };
    const server = cleanup.server().add(
      implement(Flaky, {
        async get({ id }) {
          state.calls++;
          if (state.failing) throw new SkeinError('UNAVAILABLE', 'down on purpose');
          return { id };
        },
        async find() {
          state.calls++;
          throw new SkeinError('NOT_FOUND', 'no such thing');
        },
      }),
    );
    const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
    const clock = new FakeClock();
    const events: BreakerEvent[] = [];
    const onEvent = (m: unknown): void => void events.push(m as BreakerEvent);
    diagnostics.subscribe(BREAKER_CHANNEL, onEvent);
    cleanup.add(() => diagnostics.unsubscribe(BREAKER_CHANNEL, onEvent));
    const br = breaker({ consecutiveFailures: 5, openMs: 1000, clock });
    const client = cleanup.client(Flaky, { target: `127.0.0.1:${port}`, resilience: false, interceptors: [br] });

    // NOT_FOUND is the server answering: never opens the circuit.
    for (let i = 0; i < 10; i++) await rejection(client.find({ id: 'x' }, { timeout: 5000 }));
    assert.equal(br.stats().states['breaker-flaky'], BreakerState.CLOSED);

    for (let i = 0; i < 5; i++) {
      const e = await rejection(client.get({ id: `g${i}` }, { timeout: 5000 }));
      assert.equal(e.statusName, 'UNAVAILABLE');
    }
    const seen = state.calls;
    for (let i = 0; i < 20; i++) {
      const e = await rejection(client.get({ id: `f${i}` }, { timeout: 5000 }));
      assert.equal(e.statusName, 'UNAVAILABLE');
      assert.match(e.message, /circuit open for breaker-flaky.*next probe in \d+ms/);
    }
    assert.equal(state.calls, seen, 'no call reached the server while open');
    assert.equal(br.stats().rejected, 20);

    state.failing = false;
    clock.advance(1000);
    const res = await withTimeout(client.get({ id: 'ok' }, { timeout: 5000 }), 5000, 'the probe');
    assert.deepEqual(res, { id: 'ok' });
    assert.equal(br.stats().states['breaker-flaky'], BreakerState.CLOSED);
    for (let i = 0; i < 5; i++) await withTimeout(client.get({ id: `r${i}` }, { timeout: 5000 }), 5000, 'a call after recovery');
    assert.deepEqual(
      events.filter((e) => e.key === 'breaker-flaky').map((e) => e.to),
      ['open', 'half-open', 'closed'],
    );
  });

  it("breaker - scope 'method' keeps one method's open circuit from failing another", async () => {
    const server = cleanup.server().add(
      implement(Flaky, {
        async get() {
          throw new SkeinError('INTERNAL', 'broken');
        },
        async find({ id }) {
          return { id };
        },
      }),
    );
    const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
    const br = breaker({ consecutiveFailures: 2, scope: 'method', clock: new FakeClock() });
    const client = cleanup.client(Flaky, { target: `127.0.0.1:${port}`, resilience: false, interceptors: [br] });
    for (let i = 0; i < 3; i++) await rejection(client.get({ id: 'x' }, { timeout: 5000 }));
    assert.equal(br.stats().states['breaker-flaky.get'], BreakerState.OPEN);
    assert.deepEqual(await withTimeout(client.find({ id: 'y' }, { timeout: 5000 }), 5000, 'find'), { id: 'y' });
  });
});
