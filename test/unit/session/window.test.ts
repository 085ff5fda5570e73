/**
 * Flow-control accounting of one session (docs/protocol.md §6): the sender stops at the
 * peer's window, the receiver returns credit with WINDOW_UPDATE once the application has
 * consumed half a window (stream and connection alike), and credit that comes back lets
 * queued data go and fires onDrain.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode } from '../../../src/errors.js';
import { FrameType, GoawayReason } from '../../../src/wire/frame.js';
import { decodeGoaway, decodeWindowUpdate } from '../../../src/wire/payloads.js';
import { waitFor, withTimeout } from '../../helpers/wait.js';
import { head, rawClient, sessionPair, type Frame } from './_pair.js';

const KiB = 1024;
const updates = (frames: Frame[], id: number) => frames.filter((f) => f.type === FrameType.WINDOW_UPDATE && f.id === id).map((f) => decodeWindowUpdate(f.payload));
const msg = (n: number) => Buffer.alloc(n, 0x61);

describe('session flow control', () => {
  it('window - WINDOW_UPDATE for a stream is sent once half its window is consumed', async () => {
    const p = await sessionPair({}, { streamWindow: 64 * KiB });
    try {
      const s = p.client.openStream(head());
      for (let k = 0; k < 6; k++) assert.equal(s.send(msg(8 * KiB)), true, `message ${k} fits the window`);
      await waitFor(() => p.incoming[0]?.messages.length === 6, { what: 'six messages at the server' });
      const rec = p.incoming[0]!;
      assert.equal(s.sendCredit, 16 * KiB);
      // 24 KiB consumed: under half the window, nothing is announced.
      for (let k = 0; k < 3; k++) rec.stream.consume(rec.sizes[k]!);
      await withTimeout(p.client.ping(), 5000, 'a ping round trip');
      assert.deepEqual(updates(p.toClient, s.id), []);
      // The fourth message reaches half the window: one update for all 32 KiB.
      rec.stream.consume(rec.sizes[3]!);
      await withTimeout(p.client.ping(), 5000, 'a ping round trip');
      assert.deepEqual(updates(p.toClient, s.id), [32 * KiB]);
      assert.equal(s.sendCredit, 48 * KiB);
      assert.equal(rec.stream.recvCredit, 64 * KiB - 48 * KiB + 32 * KiB);
      assert.deepEqual(updates(p.toClient, 0), [], 'the connection window (16 MiB) is far from half used');
    } finally {
      await p.close();
    }
  });

  it('window - the sender stops at the window and resumes (onDrain) when credit returns', async () => {
    const p = await sessionPair({}, { streamWindow: 32 * KiB });
    try {
      const s = p.client.openStream(head());
      let drained = 0;
      s.onDrain = () => drained++;
      const results = Array.from({ length: 6 }, () => s.send(msg(8 * KiB)));
      assert.deepEqual(results, [true, true, true, false, false, false], 'the fourth message uses up the window; later ones queue');
      await waitFor(() => p.incoming[0]?.messages.length === 4, { what: 'four messages at the server' });
      await withTimeout(p.client.ping(), 5000, 'a ping round trip');
      assert.equal(p.incoming[0]!.messages.length, 4, 'nothing beyond the window was sent');
      assert.equal(drained, 0);
      const rec = p.incoming[0]!;
      rec.stream.consume(rec.sizes[0]!);
      rec.stream.consume(rec.sizes[1]!);
      await waitFor(() => rec.messages.length === 6, { what: 'the queued messages to go' });
      await withTimeout(p.client.ping(), 5000, 'a ping round trip');
      assert.equal(drained, 0, 'the window is used up again by the two queued messages: no drain yet');
      for (let k = 2; k < 6; k++) rec.stream.consume(rec.sizes[k]!);
      await waitFor(() => drained === 1, { what: 'onDrain' });
      assert.equal(s.writable, true);
    } finally {
      await p.close();
    }
  });

  it('window - WINDOW_UPDATE for the connection is sent once half the connection window is consumed across streams', async () => {
    const p = await sessionPair({}, { streamWindow: 64 * KiB, connectionWindow: 64 * KiB });
    try {
      const a = p.client.openStream(head('a'));
      const b = p.client.openStream(head('b'));
      a.send(msg(12 * KiB));
      b.send(msg(12 * KiB));
      a.send(msg(12 * KiB));
      await waitFor(() => p.incoming.length === 2 && p.incoming[0]!.messages.length === 2 && p.incoming[1]!.messages.length === 1, { what: 'three messages at the server' });
      const [ra, rb] = p.incoming as [(typeof p.incoming)[0], (typeof p.incoming)[0]];
      ra.stream.consume(ra.sizes[0]!);
      rb.stream.consume(rb.sizes[0]!);
      await withTimeout(p.client.ping(), 5000, 'a ping round trip');
      assert.deepEqual(updates(p.toClient, 0), [], '24 KiB of 64 KiB consumed');
      ra.stream.consume(ra.sizes[1]!);
      await withTimeout(p.client.ping(), 5000, 'a ping round trip');
      assert.deepEqual(updates(p.toClient, 0), [36 * KiB]);
      assert.deepEqual(updates(p.toClient, a.id), [], 'no stream reached half its own window');
    } finally {
      await p.close();
    }
  });

  it('window - a stream blocked only by the connection window drains when the connection gets credit', async () => {
    // Each stream's window is big; the connection window (32 KiB) is the limit.
    const p = await sessionPair({}, { streamWindow: 256 * KiB, connectionWindow: 32 * KiB });
    try {
      const a = p.client.openStream(head('a'));
      const b = p.client.openStream(head('b'));
      let drainedA = 0;
      let drainedB = 0;
      a.onDrain = () => drainedA++;
      b.onDrain = () => drainedB++;
      assert.equal(a.send(msg(16 * KiB)), true);
      assert.equal(b.send(msg(16 * KiB)), false, 'the connection window is used up: sent, but no more');
      assert.equal(a.send(msg(1 * KiB)), false, 'queued behind the connection window');
      await waitFor(() => p.incoming.length === 2, { what: 'both streams at the server' });
      for (const r of p.incoming) r.stream.consume(r.sizes[0]!);
      await waitFor(() => drainedA === 1 && drainedB === 1, { what: 'both streams to drain', timeoutMs: 5000 });
      await waitFor(() => p.incoming[0]!.messages.length === 2, { what: 'the queued message' });
    } finally {
      await p.close();
    }
  });

  it('window - DATA beyond the window closes the connection with FLOW_CONTROL', async () => {
    const raw = rawClient({ streamWindow: 1024, maxFrameSize: 16 * KiB });
    const { encodeCall, encodeCallPath } = await import('../../../src/wire/payloads.js');
    raw.write(FrameType.CALL, 0, 1, encodeCall(1, 0, encodeCallPath('svc', 'm'), undefined));
    raw.write(FrameType.DATA, 0, 1, Buffer.alloc(1024));
    raw.write(FrameType.DATA, 0, 1, Buffer.alloc(1));
    const reason = await withTimeout(raw.server.closed, 5000, 'the server to close');
    assert.equal(reason?.code, ErrorCode.FLOW_CONTROL);
    await waitFor(() => raw.received.some((f) => f.type === FrameType.GOAWAY), { what: 'a GOAWAY' });
    const g = decodeGoaway(raw.received.find((f) => f.type === FrameType.GOAWAY)!.payload);
    assert.equal(g.reason, GoawayReason.FLOW_CONTROL_ERROR);
  });
});
