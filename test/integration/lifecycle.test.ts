/**
 * Connection and server lifecycle: graceful drain, drain expiry, a cut connection and
 * reconnection (observed as connectivity states), fail-fast and wait-for-ready, the
 * server's stream limit, idle timeout and ping.
 */
import assert from 'node:assert/strict';
import { createServer as createNetServer } from 'node:net';
import { after, describe, it } from 'node:test';
import { ConnectivityState, ErrorCode, implement, isSkeinError, pushable, Status, type StateChange } from '../../src/index.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { once, waitFor, withTimeout } from '../helpers/wait.js';
import { abortableSleep, aborted, assertStatus, Cleanup, collect, deferred, Echo, echoImpl, listenOn, rejection } from './_harness.js';

const fastBackoff = { initialMs: 50, maxMs: 200 };

/** A port nothing listens on right now (bound on 127.0.0.1 then released). */
async function reservePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen({ host: '127.0.0.1', port: 0 }, r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Resolve with `release`, or reject with the signal's reason once it aborts (no timer: the test bounds its own waits). */
function releasedOrAborted(release: Promise<void>, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    void release.then(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}

/** Echo handlers whose `sleep` waits for the test (tracking how many run at once). */
function heldEcho() {
  let release = deferred();
  const started: AbortSignal[] = [];
  let running = 0;
  let maxRunning = 0;
  const impl = implement(Echo, {
    ...echoImpl().handlers,
    async sleep({ ms }, ctx) {
      started.push(ctx.signal);
      running++;
      maxRunning = Math.max(maxRunning, running);
      try {
        if (ms < 0) await releasedOrAborted(release.promise, ctx.signal);
        else await abortableSleep(ms, ctx.signal);
      } finally {
        running--;
      }
      return { slept: ms };
    },
  });
  return {
    impl,
    started,
    get maxRunning() {
      return maxRunning;
    },
    release() {
      release.resolve();
      release = deferred();
    },
  };
}

describe('lifecycle', () => {
  const cleanup = new Cleanup();
  after(() => cleanup.run());

  it('drain - in-flight calls finish OK while new calls fail UNAVAILABLE', async () => {
    const held = heldEcho();
    const server = cleanup.server().add(held.impl);
    const l = await listenOn(server, 'tcp');
    const client = cleanup.client(Echo, { target: l.target, backoff: fastBackoff });
    await client.ready({ timeout: 5000 });
    const session = client.connection.session!;
    const inflight = [client.sleep({ ms: -1 }), client.sleep({ ms: -1 }), client.sleep({ ms: -1 })];
    await waitFor(() => held.started.length === 3, { what: 'three calls to start' });
    const goaway = once(session, 'goaway');
    const closing = server.close(10_000);
    const [info] = (await goaway) as [{ lastStreamId: number; reason: string }];
    assert.equal(info.reason, 'NO_ERROR');
    // The draining connection takes no new call...
    assert.throws(
      () => session.openStream({ codec: 0, timeoutMs: 0, path: Echo.paths.say }),
      (e: unknown) => isSkeinError(e) && e.code === ErrorCode.GOAWAY && e.status === Status.UNAVAILABLE,
    );
    // ...and the client's next call finds no server to go to.
    const err = await rejection(client.say({ text: 'late' }));
    assertStatus(err, 'UNAVAILABLE', [ErrorCode.GOAWAY, ErrorCode.NOT_READY, ErrorCode.CONNECT_FAILED]);
    held.release();
    assert.deepEqual(await withTimeout(Promise.all(inflight), 5000, 'the in-flight calls'), [{ slept: -1 }, { slept: -1 }, { slept: -1 }]);
    await withTimeout(closing, 5000, 'server.close()');
    assert.equal(server.connectionCount, 0);
  });

  it('drain - a call still running when the grace period ends is reset with UNAVAILABLE', async () => {
    const held = heldEcho();
    const server = cleanup.server().add(held.impl);
    const l = await listenOn(server, 'tcp');
    const client = cleanup.client(Echo, { target: l.target });
    const call = client.sleep({ ms: -1 });
    await waitFor(() => held.started.length === 1, { what: 'the call to start' });
    const closing = server.close(200);
    const err = await rejection(call);
    assertStatus(err, 'UNAVAILABLE');
    const reason = await aborted(held.started[0]!, 'the handler to be stopped');
    assert.ok(isSkeinError(reason) && reason.status === Status.UNAVAILABLE, `handler saw ${String(reason)}`);
    await withTimeout(closing, 5000, 'server.close()');
  });

  it('reconnect - a cut connection fails every in-flight call at once and the client reconnects', async () => {
    const held = heldEcho();
    const server = cleanup.server().add(held.impl);
    const l = await listenOn(server, 'tcp');
    const proxy = await startFaultProxy({ target: l.target });
    cleanup.add(() => proxy.close());
    const client = cleanup.client(Echo, { target: proxy.address, eager: false, backoff: fastBackoff });
    const events: string[] = [];
    client.connection.on('state', (c: StateChange) => events.push(c.state));
    const iterated: string[] = [];
    const status = client.status();
    const watching = (async () => {
      for await (const c of status) {
        iterated.push(c.state);
        if (iterated.filter((s) => s === ConnectivityState.READY).length === 2) break;
      }
    })();
    await client.ready({ timeout: 5000 });
    // One call of every shape, all in flight on the connection that is about to be cut.
    const requests = pushable<{ n: number }>();
    const chat = pushable<{ text: string }>();
    await requests.push({ n: 1 });
    const calls: Array<Promise<unknown>> = [client.sleep({ ms: -1 }), client.sleep({ ms: -1 }), collect(client.count({ n: 1e9 }), 5000), client.sum(requests), collect(client.chat(chat), 5000)];
    await waitFor(() => held.started.length === 2, { what: 'the unary calls to start' });
    await waitFor(() => server.connectionCount === 1 && proxy.bytesDown > 1000, { what: 'the streams to get going' });
    proxy.cutAll();
    const errors = await withTimeout(Promise.all(calls.map((c) => rejection(c))), 5000, 'every call to fail');
    for (const e of errors) assertStatus(e, 'UNAVAILABLE', ErrorCode.CONNECTION_LOST);
    for (const signal of held.started) await aborted(signal, 'the server handlers to see the loss');
    await withTimeout(watching, 8000, 'the client to be READY again');
    const expected = [ConnectivityState.CONNECTING, ConnectivityState.READY, ConnectivityState.TRANSIENT_FAILURE, ConnectivityState.CONNECTING, ConnectivityState.READY];
    assert.deepEqual(iterated, expected);
    assert.deepEqual(events.slice(0, 5), expected);
    assert.deepEqual(await client.say({ text: 'again' }), { text: 'again' });
    assert.equal(proxy.connections, 2);
  });

  it('fail-fast - calls while the server is down fail quickly with UNAVAILABLE', async () => {
    const port = await reservePort();
    const client = cleanup.client(Echo, { target: `127.0.0.1:${port}`, backoff: { initialMs: 60_000, maxMs: 60_000 } });
    // The first call waits for the first attempt, which fails; later ones fail at once.
    for (let k = 0; k < 3; k++) {
      const err = await rejection(client.say({ text: 'x' }, { timeout: 30_000 }), 5000, 'a fail-fast error');
      assertStatus(err, 'UNAVAILABLE', ErrorCode.NOT_READY);
    }
    assert.equal(client.state, ConnectivityState.TRANSIENT_FAILURE);
  });

  it('wait-for-ready - a call made while the server is down succeeds once it starts', async () => {
    const port = await reservePort();
    const client = cleanup.client(Echo, { target: `127.0.0.1:${port}`, backoff: fastBackoff });
    const failing = deferred();
    client.connection.on('state', (c: StateChange) => {
      if (c.state === ConnectivityState.TRANSIENT_FAILURE) failing.resolve();
    });
    await failing.wait('the first connection attempt to fail');
    const call = client.say({ text: 'patient' }, { waitForReady: true, timeout: 10_000 });
    assertStatus(await rejection(client.say({ text: 'impatient' })), 'UNAVAILABLE', ErrorCode.NOT_READY);
    const server = cleanup.server().add(echoImpl());
    await server.listen({ host: '127.0.0.1', port });
    assert.deepEqual(await withTimeout(call, 8000, 'the waiting call'), { text: 'patient' });
  });

  it('stream limit - ten calls against maxConcurrentStreams 2 all succeed, never more than two at once', async () => {
    const held = heldEcho();
    const server = cleanup.server({ maxConcurrentStreams: 2 }).add(held.impl);
    const l = await listenOn(server, 'tcp');
    const client = cleanup.client(Echo, { target: l.target });
    await client.ready({ timeout: 5000 });
    const calls = Array.from({ length: 10 }, (_, k) => client.sleep({ ms: 5 + (k % 3) }));
    const results = await withTimeout(Promise.all(calls), 10_000, 'all ten calls');
    assert.equal(results.length, 10);
    assert.equal(held.started.length, 10);
    assert.equal(held.maxRunning, 2);
  });

  it('idle timeout - an idle connection is closed and the next call reconnects transparently', async () => {
    // A heartbeat far longer than the idle timeout: idleness must be noticed on its own clock.
    const server = cleanup.server({ idleTimeoutMs: 300, heartbeatMs: 60_000 }).add(echoImpl());
    const l = await listenOn(server, 'tcp');
    const client = cleanup.client(Echo, { target: l.target, session: { heartbeatMs: 60_000 } });
    assert.deepEqual(await client.say({ text: 'one' }), { text: 'one' });
    const first = client.connection.session!;
    const [info] = (await once(first, 'goaway', 5000)) as [{ reason: string }];
    assert.equal(info.reason, 'IDLE_TIMEOUT');
    await withTimeout(first.closed, 5000, 'the idle session to close');
    assert.equal(client.state, ConnectivityState.IDLE);
    assert.deepEqual(await client.say({ text: 'two' }), { text: 'two' });
    assert.notEqual(client.connection.session, first);
  });

  it('idle timeout - a connection with a call in flight is not idle', async () => {
    const held = heldEcho();
    const server = cleanup.server({ idleTimeoutMs: 100 }).add(held.impl);
    const l = await listenOn(server, 'tcp');
    const client = cleanup.client(Echo, { target: l.target });
    const call = client.sleep({ ms: 500 });
    await waitFor(() => held.started.length === 1, { what: 'the call to start' });
    const session = client.connection.session!;
    assert.deepEqual(await withTimeout(call, 5000, 'the long call'), { slept: 500 });
    assert.equal(session.state === 'CLOSED' ? 'closed' : 'open', 'open', 'still open right after the call');
  });

  it('ping - returns a round-trip time', async () => {
    const server = cleanup.server().add(echoImpl());
    const l = await listenOn(server, 'tcp');
    const client = cleanup.client(Echo, { target: l.target });
    await client.ready({ timeout: 5000 });
    const session = client.connection.session!;
    const rtt = await withTimeout(session.ping(), 5000, 'a PONG');
    assert.equal(typeof rtt, 'number');
    assert.ok(rtt > 0 && Number.isFinite(rtt), `rtt ${rtt}`);
    assert.equal(session.rttMs, rtt);
    const ac = new AbortController();
    const p = session.ping(ac.signal);
    ac.abort(new Error('stop'));
    await assert.rejects(p, /stop/);
  });
});
