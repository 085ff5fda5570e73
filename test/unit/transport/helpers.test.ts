/** Tests for the shared test helpers in test/helpers/ (everything else relies on them). */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { systemClock } from '../../../src/util/clock.js';
import { FakeClock } from '../../helpers/clock.js';
import { duplexPair } from '../../helpers/duplex-pair.js';
import { startFakePeer } from '../../helpers/fake-peer.js';
import { tlsFixtures } from '../../helpers/tls.js';
import { closed, once, readAll, readBytes, waitFor, withTimeout } from '../../helpers/wait.js';

describe('wait helpers', () => {
  it('waitFor - resolves as soon as the condition holds', async () => {
    let n = 0;
    await waitFor(() => ++n >= 3, { intervalMs: 1 });
    assert.equal(n, 3);
    await waitFor(async () => true);
  });

  it('waitFor - fails with a message naming what it waited for', async () => {
    await assert.rejects(waitFor(() => false, { timeoutMs: 30, what: 'the moon' }), /timed out after 30ms waiting for the moon/);
  });

  it('waitFor - passes on what the condition throws', async () => {
    await assert.rejects(
      waitFor(() => {
        throw new Error('bad condition');
      }),
      /bad condition/,
    );
  });

  it('once - resolves with the event arguments and removes its listeners', async () => {
    const e = new EventEmitter();
    const p = once<[number, string]>(e, 'thing');
    e.emit('thing', 1, 'two');
    assert.deepEqual(await p, [1, 'two']);
    assert.equal(e.listenerCount('thing'), 0);
    assert.equal(e.listenerCount('error'), 0);
  });

  it('once - rejects on error and on timeout', async () => {
    const e = new EventEmitter();
    const p = once(e, 'thing');
    e.emit('error', new Error('broken'));
    await assert.rejects(p, /broken/);
    await assert.rejects(once(e, 'never', 20), /timed out after 20ms waiting for "never" event/);
    assert.equal(e.listenerCount('never'), 0);
  });

  it('withTimeout - passes the result through, or fails naming what it waited for', async () => {
    assert.equal(await withTimeout(Promise.resolve(7), 100, 'seven'), 7);
    await assert.rejects(withTimeout(new Promise(() => {}), 20, 'nothing'), /timed out after 20ms waiting for nothing/);
  });

  it('readAll, readBytes, closed - read a stream by bytes and to its end', async () => {
    const [a, b] = duplexPair();
    a.write('0123456789');
    assert.equal((await readBytes(b, 4)).toString(), '0123');
    assert.equal((await readBytes(b, 3)).toString(), '456');
    a.end('abc');
    assert.equal((await readAll(b)).toString(), '789abc');
    await closed(b);
    await closed(b);
  });
});

describe('FakeClock', () => {
  it('FakeClock - fires timers in due order as time advances', () => {
    const clock = new FakeClock(1000);
    const fired: string[] = [];
    clock.setTimeout(() => fired.push(`b@${clock.now()}`), 20);
    clock.setTimeout(() => fired.push(`a@${clock.now()}`), 10);
    clock.setTimeout(() => fired.push(`c@${clock.now()}`), 20);
    clock.advance(5);
    assert.deepEqual(fired, []);
    assert.equal(clock.now(), 1005);
    clock.advance(15);
    assert.deepEqual(fired, ['a@1010', 'b@1020', 'c@1020']);
    assert.equal(clock.pending, 0);
  });

  it('FakeClock - clearTimeout cancels, and timers set while advancing fire within the window', () => {
    const clock = new FakeClock();
    const fired: number[] = [];
    const h = clock.setTimeout(() => fired.push(-1), 5);
    clock.clearTimeout(h);
    clock.clearTimeout('not a handle');
    clock.setTimeout(() => {
      fired.push(clock.now());
      clock.setTimeout(() => fired.push(clock.now()), 10);
    }, 10);
    clock.advance(25);
    assert.deepEqual(fired, [10, 20]);
    assert.equal(clock.nextDue(), undefined);
  });

  it('FakeClock - advanceAsync lets async code schedule its next timer', async () => {
    const clock = new FakeClock();
    const sleep = (ms: number): Promise<void> => new Promise((resolve) => clock.setTimeout(resolve, ms));
    const ticks: number[] = [];
    const loop = (async () => {
      for (let i = 0; i < 3; i++) {
        await sleep(100);
        ticks.push(clock.now());
      }
    })();
    await clock.advanceAsync(300);
    await loop;
    assert.deepEqual(ticks, [100, 200, 300]);
  });

  it('FakeClock - runAll stops runaway rescheduling', () => {
    const clock = new FakeClock();
    const again = (): void => void clock.setTimeout(again, 1);
    clock.setTimeout(again, 1);
    assert.throws(() => clock.runAll(50), /still 1 timer/);
  });

  it('systemClock - is monotonic and its timers fire', async () => {
    const t0 = systemClock.now();
    await new Promise<void>((resolve) => systemClock.setTimeout(resolve, 1));
    assert.ok(systemClock.now() >= t0);
    let fired = false;
    const h = systemClock.setTimeout(() => (fired = true), 1);
    systemClock.clearTimeout(h);
    // A later timer firing means the cleared one would have fired by now.
    await new Promise<void>((resolve) => systemClock.setTimeout(resolve, 2));
    assert.equal(fired, false);
  });
});

describe('fake peer', () => {
  it('fake peer - records bytes per connection and writes scripted replies', async () => {
    const peer = await startFakePeer();
    try {
      assert.match(peer.address, /^127\.0\.0\.1:\d+$/);
      const first = connect({ host: '127.0.0.1', port: peer.port });
      const second = connect({ host: '127.0.0.1', port: peer.port });
      await Promise.all([once(first, 'connect'), once(second, 'connect')]);
      const a = await peer.nextConnection();
      const b = await peer.nextConnection();
      // Connections are handed out in accept order; find which is which by content.
      first.write('from first');
      second.write('from second');
      await a.waitFor((r) => r.toString().startsWith('from'));
      await b.waitFor((r) => r.toString().startsWith('from'));
      const [conn1, conn2] = a.received().toString() === 'from first' ? [a, b] : [b, a];
      assert.equal(conn2.received().toString(), 'from second');
      conn1.write(Buffer.from([1, 2, 3]));
      assert.deepEqual([...(await readBytes(first, 3))], [1, 2, 3]);
      assert.equal(conn1.bytesReceived, 10);
      first.end();
      await conn1.ended;
      await conn1.closed;
      assert.equal(conn1.isClosed, true);
      second.destroy();
    } finally {
      await peer.close();
    }
  });

  it('fake peer - waitFor fails when the connection closes first, or on timeout', async () => {
    const peer = await startFakePeer();
    try {
      const client = connect({ host: '127.0.0.1', port: peer.port });
      client.on('error', () => {});
      const conn = await peer.nextConnection();
      await assert.rejects(conn.waitFor(100, 20), /timed out after 20ms waiting for 100 bytes/);
      const waiting = conn.waitFor(100);
      client.end('short');
      await assert.rejects(waiting, /closed after 5 bytes/);
      await assert.rejects(peer.nextConnection(20), /timed out after 20ms waiting for fake peer connection #1/);
    } finally {
      await peer.close();
    }
  });
});

describe('tls fixtures', () => {
  it('tls fixtures - load as PEM', () => {
    const f = tlsFixtures();
    for (const [name, pem] of Object.entries(f)) assert.match(pem, /^-----BEGIN [A-Z ]+-----/, name);
  });
});
