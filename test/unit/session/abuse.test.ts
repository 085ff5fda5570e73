/**
 * A misbehaving peer is cut off instead of costing unbounded memory or being mistaken for
 * a clean close: a PING flood from a peer that never reads, and a FIN in the middle of a frame.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode } from '../../../src/errors.js';
import { Session } from '../../../src/session/session.js';
import { encodeFrame, FrameType, GoawayReason, PREFACE } from '../../../src/wire/frame.js';
import { decodeGoaway, encodeJson } from '../../../src/wire/payloads.js';
import { duplexPair } from '../../helpers/duplex-pair.js';
import { waitFor, withTimeout } from '../../helpers/wait.js';
import { rawClient, sessionPair } from './_pair.js';

const HELLO = { codecs: ['msgpack'], compression: [], maxFrameSize: 65536, streamWindow: 65536, connectionWindow: 1 << 20, heartbeatMs: 0 };

describe('session abuse', () => {
  it('ping flood - a peer that sends PINGs and never reads the PONGs is cut off', async () => {
    const [a, b] = duplexPair();
    const server = Session.accept({ socket: b, peer: { transport: 'memory', address: 'memory:flood' }, local: 'memory:flood' }, { heartbeatMs: 0 });
    // `a` never reads: no 'data' listener, so PONGs back up in the server's socket.
    a.write(Buffer.concat([PREFACE, encodeFrame(FrameType.HELLO, 0, 0, encodeJson(HELLO))]));
    const batch = Buffer.concat(Array.from({ length: 1000 }, () => encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(8))));
    for (let i = 0; i < 20; i++) a.write(batch);
    const reason = await withTimeout(server.closed, 5000, 'the server to cut the flood off');
    assert.equal(reason?.code, ErrorCode.PROTOCOL);
    assert.match(reason!.message, /PINGs without reading/);
    a.destroy();
  });

  it('ping flood - a peer that reads its PONGs may ping as much as it likes', async () => {
    const p = await sessionPair();
    try {
      for (let round = 0; round < 5; round++) {
        const rtts = await withTimeout(Promise.all(Array.from({ length: 2000 }, () => p.client.ping())), 10_000, 'two thousand PONGs');
        assert.equal(rtts.length, 2000);
      }
      assert.equal(p.server.state, 'READY');
    } finally {
      await p.close();
    }
  });

  it('half-close - a FIN in the middle of a frame is a protocol error answered with GOAWAY(PROTOCOL_ERROR)', async () => {
    const raw = rawClient();
    await waitFor(() => raw.received.some((f) => f.type === FrameType.HELLO_ACK), { what: 'the handshake' });
    raw.socket.end(encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(8)).subarray(0, 7));
    const reason = await withTimeout(raw.server.closed, 5000, 'the server to close');
    assert.equal(reason?.code, ErrorCode.PROTOCOL);
    await waitFor(() => raw.received.some((f) => f.type === FrameType.GOAWAY), { what: 'a GOAWAY' });
    assert.equal(decodeGoaway(raw.received.find((f) => f.type === FrameType.GOAWAY)!.payload).reason, GoawayReason.PROTOCOL_ERROR);
  });

  it('half-close - a FIN between frames is a lost connection, not a protocol error', async () => {
    const raw = rawClient();
    await waitFor(() => raw.received.some((f) => f.type === FrameType.HELLO_ACK), { what: 'the handshake' });
    raw.socket.end();
    const reason = await withTimeout(raw.server.closed, 5000, 'the server to close');
    assert.equal(reason?.code, ErrorCode.CONNECTION_LOST);
  });
});
