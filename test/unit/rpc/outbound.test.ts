/**
 * pumpSource: feeds an iterable into a stream as credit allows, never holds the event loop
 * for long, and stops when told.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DrainGate, pumpSource } from '../../../src/rpc/outbound.js';
import type { Stream } from '../../../src/session/stream.js';
import { waitFor, withTimeout } from '../../helpers/wait.js';

/** A stand-in stream: `send` answers what `credit()` says and records payloads. */
function fakeStream(credit: () => boolean) {
  const sent: Buffer[] = [];
  const stream = {
    onDrain: () => {},
    send(payload: Buffer) {
      sent.push(payload);
      return credit();
    },
  };
  return { stream, sent, asStream: stream as unknown as Stream };
}

describe('rpc outbound pump', () => {
  it('pump - a producer that never awaits still lets the event loop run', async () => {
    const { asStream, sent } = fakeStream(() => true);
    const total = 200_000;
    function* many() {
      for (let i = 0; i < total; i++) yield i;
    }
    const payload = Buffer.alloc(16);
    const pump = pumpSource(many(), asStream, new DrainGate(), () => payload, () => false);
    // Runs on the next turn of the event loop: before the pump ends only if the pump yields.
    const atFirstTurn = await new Promise<number>((r) => setImmediate(() => r(sent.length)));
    await withTimeout(pump, 10_000, 'the pump');
    assert.equal(sent.length, total);
    assert.ok(atFirstTurn > 0 && atFirstTurn < total, `${atFirstTurn} of ${total} messages were sent before the loop got a turn`);
  });

  it('pump - waits for onDrain when send() reports no credit, then goes on', async () => {
    let credit = true;
    const { asStream, sent } = fakeStream(() => credit);
    const gate = new DrainGate();
    credit = false;
    const pump = pumpSource([1, 2, 3], asStream, gate, (v) => Buffer.from([v]), () => false);
    await waitFor(() => sent.length === 1, { what: 'the first message' });
    // Stalled on the gate until the stream drains.
    await new Promise<void>((r) => setImmediate(r));
    assert.equal(sent.length, 1);
    credit = true;
    gate.open(); // what the call's stream handler does in onDrain
    await withTimeout(pump, 5000, 'the pump');
    assert.deepEqual(
      sent.map((b) => b[0]),
      [1, 2, 3],
    );
  });

  it('pump - stops pulling and closes the source once stopped() is true', async () => {
    const { asStream, sent } = fakeStream(() => true);
    let closed = false;
    let stop = false;
    function* source() {
      try {
        for (let i = 0; ; i++) {
          if (i === 5) stop = true;
          yield i;
        }
      } finally {
        closed = true;
      }
    }
    await withTimeout(
      pumpSource(source(), asStream, new DrainGate(), () => Buffer.alloc(1), () => stop),
      5000,
      'the pump',
    );
    assert.equal(sent.length, 5);
    assert.equal(closed, true, 'the source iterator was closed');
  });
});
