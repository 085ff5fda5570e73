/**
 * GOAWAY semantics (docs/protocol.md §4.10): `lastStreamId` is the highest stream the
 * sender processed; streams at or below it run to completion, streams above it were never
 * seen and fail retry-safe (SKEIN_ERR_GOAWAY, UNAVAILABLE), and nothing new is opened.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isSkeinError, Status, type SkeinError } from '../../../src/errors.js';
import { FrameType, GoawayReason } from '../../../src/wire/frame.js';
import { decodeGoaway } from '../../../src/wire/payloads.js';
import { once, waitFor, withTimeout } from '../../helpers/wait.js';
import { head, sessionPair } from './_pair.js';

describe('session GOAWAY', () => {
  it('goaway - lastStreamId is the last stream processed; those streams finish, new ones are refused', async () => {
    const p = await sessionPair();
    try {
      const streams = [p.client.openStream(head()), p.client.openStream(head()), p.client.openStream(head())];
      const ends: Array<number | null> = [];
      for (const s of streams) s.onEnd = (info) => ends.push(info?.status ?? null);
      for (const s of streams) s.send(Buffer.from('req'), true);
      await waitFor(() => p.incoming.length === 3 && p.incoming.every((r) => r.ended), { what: 'three calls at the server' });
      const goaway = once(p.client, 'goaway');
      const drained = p.server.drain(5000);
      const [info] = (await goaway) as [{ lastStreamId: number; reason: string }];
      assert.equal(info.lastStreamId, 5);
      assert.equal(info.reason, 'NO_ERROR');
      assert.equal(p.client.state, 'DRAINING');
      assert.throws(
        () => p.client.openStream(head()),
        (e: unknown) => isSkeinError(e) && e.code === ErrorCode.GOAWAY && e.status === Status.UNAVAILABLE,
      );
      // The streams the server saw still complete.
      for (const r of p.incoming) {
        r.stream.send(Buffer.from('reply'));
        r.stream.end(0);
      }
      await withTimeout(drained, 5000, 'the drain to finish');
      await withTimeout(p.client.closed, 5000, 'the client session to close');
      assert.deepEqual(ends, [0, 0, 0]);
    } finally {
      await p.close();
    }
  });

  it('goaway - a stream opened while the GOAWAY was in flight fails with GOAWAY and never reaches a handler', async () => {
    const p = await sessionPair();
    try {
      const first = p.client.openStream(head());
      first.send(Buffer.from('req'), true);
      await waitFor(() => p.incoming.length === 1, { what: 'the first call at the server' });
      // The CALL for stream 3 and the server's GOAWAY(lastStreamId 1) cross on the wire.
      const late = p.client.openStream(head());
      let lateErr: SkeinError | undefined;
      late.onAbort = (e) => (lateErr = e);
      late.send(Buffer.from('req'), true);
      void p.server.drain(5000);
      await waitFor(() => lateErr !== undefined, { what: 'the late stream to fail' });
      assert.equal(late.id, 3);
      assert.equal(lateErr!.code, ErrorCode.GOAWAY);
      assert.equal(lateErr!.status, Status.UNAVAILABLE);
      const g = decodeGoaway(p.toClient.find((f) => f.type === FrameType.GOAWAY)!.payload);
      assert.equal(g.lastStreamId, 1);
      assert.equal(g.reason, GoawayReason.NO_ERROR);
      // The server refused stream 3 rather than running it.
      await waitFor(() => p.toServer.some((f) => f.type === FrameType.CALL && f.id === 3), { what: 'the CALL to reach the server' });
      assert.equal(p.incoming.length, 1);
      // The first call is unaffected.
      let status: number | undefined;
      first.onEnd = (info) => (status = info?.status);
      p.incoming[0]!.stream.end(0);
      await waitFor(() => status === 0, { what: 'the first call to end OK' });
    } finally {
      await p.close();
    }
  });

  it('goaway - with no stream ever opened, lastStreamId is 0', async () => {
    const p = await sessionPair();
    try {
      const goaway = once(p.client, 'goaway');
      void p.server.drain(5000);
      const [info] = (await goaway) as [{ lastStreamId: number }];
      assert.equal(info.lastStreamId, 0);
      await withTimeout(p.server.closed, 5000, 'the idle server session to close');
    } finally {
      await p.close();
    }
  });

  it('goaway - a session drained by its peer still honours its own drain grace period', async () => {
    const p = await sessionPair();
    try {
      const s = p.client.openStream(head());
      let err: SkeinError | undefined;
      s.onAbort = (e) => (err = e);
      s.send(Buffer.from('req'), true);
      await waitFor(() => p.incoming.length === 1, { what: 'the call at the server' });
      const goaway = once(p.client, 'goaway');
      void p.server.drain(60_000);
      await goaway;
      assert.equal(p.client.state, 'DRAINING');
      // The client gives its open stream 50 ms more, then resets it and closes.
      await withTimeout(p.client.drain(50), 5000, 'the client drain to give up');
      await waitFor(() => err !== undefined, { what: 'the stream to fail' });
      assert.equal(err!.status, Status.UNAVAILABLE);
      await waitFor(() => p.incoming[0]!.aborted !== undefined, { what: 'the server side to be reset' });
    } finally {
      await p.close();
    }
  });

  it('goaway - drain grace expiry resets open streams with UNAVAILABLE', async () => {
    const p = await sessionPair();
    try {
      const s = p.client.openStream(head());
      let err: SkeinError | undefined;
      s.onAbort = (e) => (err = e);
      s.send(Buffer.from('req'), true);
      await waitFor(() => p.incoming.length === 1, { what: 'the call at the server' });
      await withTimeout(p.server.drain(50), 5000, 'the drain to give up');
      await waitFor(() => err !== undefined, { what: 'the client stream to fail' });
      assert.equal(err!.status, Status.UNAVAILABLE);
      assert.ok(p.incoming[0]!.aborted !== undefined, 'the server side was told too');
    } finally {
      await p.close();
    }
  });
});
