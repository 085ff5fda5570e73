/**
 * Keepalive: a peer that stops answering (a stalled network, a frozen process) is detected
 * by the heartbeat, the calls on it fail with UNAVAILABLE instead of hanging, and the
 * client reconnects once the peer answers again.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { ConnectivityState, ErrorCode, type StateChange } from '../../src/index.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { startSleepServer, type FixtureProcess } from './_child.js';
import { Sleepy } from './fixtures/sleepy.js';
import { assertStatus, Cleanup, Echo, echoPair, rejection } from './_harness.js';

const heartbeat = { heartbeatMs: 200, keepaliveMisses: 3 };

/** Resolve with the first state change to `state` (bounded). */
function nextState(conn: { on: (e: 'state', f: (c: StateChange) => void) => unknown; off: (e: 'state', f: (c: StateChange) => void) => unknown }, state: string, ms = 5000): Promise<StateChange> {
  let listener: ((c: StateChange) => void) | undefined;
  return withTimeout(
    new Promise<StateChange>((resolve) => {
      listener = (c) => {
        if (c.state === state) resolve(c);
      };
      conn.on('state', listener);
    }),
    ms,
    `state ${state}`,
  ).finally(() => conn.off('state', listener!));
}

describe('keepalive', () => {
  const cleanup = new Cleanup();
  let fixture: FixtureProcess | undefined;
  after(async () => {
    await fixture?.kill();
    await cleanup.run();
  });

  it('keepalive - a stalled network fails in-flight calls with UNAVAILABLE, then the client reconnects', async () => {
    const { listening } = await echoPair(cleanup, 'tcp');
    const proxy = await startFaultProxy({ target: listening.target });
    cleanup.add(() => proxy.close());
    const client = cleanup.client(Echo, {
      target: proxy.address,
      session: { ...heartbeat, handshakeTimeoutMs: 2000 },
      backoff: { initialMs: 50, maxMs: 200 },
    });
    await client.ready({ timeout: 5000 });
    const conn = client.connection;
    const firstSession = conn.session;
    const call = client.sleep({ ms: 60_000 });
    const failure = nextState(conn, ConnectivityState.TRANSIENT_FAILURE);
    proxy.stall(true);
    const err = await rejection(call, 5000, 'keepalive to fail the call');
    assertStatus(err, 'UNAVAILABLE', [ErrorCode.KEEPALIVE_TIMEOUT, ErrorCode.CONNECTION_LOST]);
    const tf = await failure;
    assert.equal(tf.error?.code, ErrorCode.KEEPALIVE_TIMEOUT);
    const ready = nextState(conn, ConnectivityState.READY, 8000);
    proxy.stall(false);
    await ready;
    assert.notEqual(conn.session, firstSession, 'a new connection');
    assert.deepEqual(await client.say({ text: 'back' }), { text: 'back' });
  });

  it('keepalive - a frozen server process (SIGSTOP) fails in-flight calls with UNAVAILABLE', async () => {
    fixture = await startSleepServer();
    const client = cleanup.client(Sleepy, { target: fixture.address, session: heartbeat, backoff: { initialMs: 50, maxMs: 200 } });
    const { pid } = await withTimeout(client.pid({}), 5000, 'the fixture to answer');
    assert.equal(pid, fixture.child.pid);
    const calls = [client.sleep({ ms: 60_000 }), client.sleep({ ms: 60_000 }), client.sleep({ ms: 60_000 })];
    const f = fixture;
    await waitFor(() => f.lines.filter((l) => l.startsWith('started ')).length === 3, { what: 'three calls to start in the fixture' });
    const failure = nextState(client.connection, ConnectivityState.TRANSIENT_FAILURE);
    assert.ok(fixture.child.kill('SIGSTOP'));
    const errors = await withTimeout(Promise.all(calls.map((c) => rejection(c, 5000, 'keepalive to fail the call'))), 6000, 'every call to fail');
    for (const err of errors) assertStatus(err, 'UNAVAILABLE', ErrorCode.KEEPALIVE_TIMEOUT);
    assert.equal((await failure).error?.code, ErrorCode.KEEPALIVE_TIMEOUT);
    // Thaw it: the client finds its way back.
    const ready = nextState(client.connection, ConnectivityState.READY, 8000);
    fixture.child.kill('SIGCONT');
    await ready;
    assert.deepEqual(await withTimeout(client.sleep({ ms: 1 }), 5000, 'a call after SIGCONT'), { slept: 1 });
    await fixture.kill();
    fixture = undefined;
  });
});
