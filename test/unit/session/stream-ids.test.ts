/**
 * Stream ids (docs/protocol.md §5): clients use odd ids, each larger than the last, also
 * for streams that waited for a slot; a server refuses a CALL that reuses or goes below an
 * id, or uses an even one.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode } from '../../../src/errors.js';
import { FrameType, GoawayReason } from '../../../src/wire/frame.js';
import { decodeGoaway, encodeCall, encodeCallPath } from '../../../src/wire/payloads.js';
import { waitFor, withTimeout } from '../../helpers/wait.js';
import { head, rawClient, sessionPair } from './_pair.js';

describe('session stream ids', () => {
  it('stream ids - client stream ids are odd and increasing, and CALL frames go out in that order', async () => {
    const p = await sessionPair();
    try {
      const ids: number[] = [];
      for (let k = 0; k < 5; k++) ids.push(p.client.openStream(head()).id);
      assert.deepEqual(ids, [1, 3, 5, 7, 9]);
      await waitFor(() => p.incoming.length === 5, { what: 'five calls at the server' });
      // Finished streams free nothing in the id space: the next ids continue upwards.
      for (const r of p.incoming) r.stream.end(0);
      await withTimeout(p.client.ping(), 5000, 'a ping round trip');
      assert.equal(p.client.activeStreams, 0);
      ids.push(p.client.openStream(head()).id, p.client.openStream(head()).id);
      assert.deepEqual(ids.slice(5), [11, 13]);
      await waitFor(() => p.incoming.length === 7, { what: 'seven calls at the server' });
      const calls = p.toServer.filter((f) => f.type === FrameType.CALL).map((f) => f.id);
      assert.deepEqual(calls, [1, 3, 5, 7, 9, 11, 13]);
      assert.deepEqual(
        p.incoming.map((r) => r.stream.id),
        calls,
      );
    } finally {
      await p.close();
    }
  });

  it('stream ids - streams queued behind max concurrent streams get their ids in order when they start', async () => {
    const p = await sessionPair({}, { maxConcurrentStreams: 1 });
    try {
      const a = p.client.openStream(head());
      const b = p.client.openStream(head());
      const c = p.client.openStream(head());
      assert.deepEqual([a.id, b.id, c.id], [1, 0, 0], 'queued streams have no id yet');
      await waitFor(() => p.incoming.length === 1, { what: 'the first call' });
      p.incoming[0]!.stream.end(0);
      await waitFor(() => p.incoming.length === 2, { what: 'the second call' });
      assert.deepEqual([b.id, c.id], [3, 0]);
      p.incoming[1]!.stream.end(0);
      await waitFor(() => p.incoming.length === 3, { what: 'the third call' });
      assert.equal(c.id, 5);
    } finally {
      await p.close();
    }
  });

  for (const [what, second] of [
    ['reuses an id', 3],
    ['goes below the last id', 1],
    ['uses an even id', 4],
  ] as const) {
    it(`stream ids - a CALL that ${what} is a protocol error`, async () => {
      const raw = rawClient();
      const call = encodeCall(1, 0, encodeCallPath('svc', 'm'), undefined);
      raw.write(FrameType.CALL, 0, 3, call);
      raw.write(FrameType.CALL, 0, second, call);
      const reason = await withTimeout(raw.server.closed, 5000, 'the server to close');
      assert.equal(reason?.code, ErrorCode.PROTOCOL);
      assert.deepEqual(raw.streams, [3], 'only the valid stream was opened');
      await waitFor(() => raw.received.some((f) => f.type === FrameType.GOAWAY), { what: 'a GOAWAY' });
      const g = decodeGoaway(raw.received.find((f) => f.type === FrameType.GOAWAY)!.payload);
      assert.equal(g.reason, GoawayReason.PROTOCOL_ERROR);
      assert.equal(g.lastStreamId, 3);
    });
  }
});
