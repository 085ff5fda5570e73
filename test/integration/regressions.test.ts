/**
 * Regressions found in review of the session and RPC layers: connection-window credit held
 * by abandoned streams, invalid or oversized trailers and metadata, refused streams, and
 * GOAWAY with an error reason. Each test failed before its fix.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { ConnectivityState, ErrorCode, implement, service, serverStream, Status, unary } from '../../src/index.js';
import { Cleanup, collect, echoPair, listenOn, rejection, assertStatus } from './_harness.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { startFakePeer } from '../helpers/fake-peer.js';
import { GoawayReason, FrameType, HEADER_SIZE, PREFACE, ResetFlags, encodeFrame } from '../../src/wire/frame.js';
import { encodeGoaway, encodeReset } from '../../src/wire/payloads.js';

const KiB = 1024;

const Svc = service('reg', {
  pour: serverStream<{ n: number; size: number }, { pad: string }>(),
  trailer: unary<{ key: string }, { ok: boolean }>(),
  hold: unary<{ id: number }, { id: number }>(),
});

describe('regressions', () => {
  const cleanup = new Cleanup();
  after(() => cleanup.run());

  it('flow control - abandoned server streams give their connection credit back', async () => {
    // Small windows: two abandoned streams holding unread messages would use up the whole
    // connection window if their held bytes were never returned.
    const server = cleanup.server({ streamWindow: 32 * KiB, connectionWindow: 64 * KiB }).add(
      implement(Svc, {
        async *pour({ n, size }) {
          for (let i = 0; i < n; i++) yield { pad: 'x'.repeat(size) };
        },
        trailer: () => ({ ok: true }),
        hold: (r) => r,
      }),
    );
    const l = await listenOn(server, 'tcp');
    const client = cleanup.client(Svc, { target: l.target, session: { streamWindow: 32 * KiB, connectionWindow: 64 * KiB } });
    for (let round = 0; round < 6; round++) {
      // Read one message, then walk away while the server keeps pushing 8 KiB messages.
      const first = async () => {
        for await (const m of client.pour({ n: 100, size: 8 * KiB })) return m;
        return undefined;
      };
      const m = await withTimeout(first(), 5000, `the first message of stream ${round}`);
      assert.equal(m?.pad.length, 8 * KiB);
    }
    // The connection still carries a full stream.
    const all = await collect(client.pour({ n: 40, size: 8 * KiB }));
    assert.equal(all.length, 40);
  });

  it('trailers - invalid trailer keys from a handler fail that call with INTERNAL, not the connection', async () => {
    const server = cleanup.server().add(
      implement(Svc, {
        async *pour() {},
        trailer: ({ key }, ctx) => {
          ctx.trailers[key] = 'v';
          return { ok: true };
        },
        hold: (r) => r,
      }),
    );
    const l = await listenOn(server, 'tcp');
    const client = cleanup.client(Svc, { target: l.target });
    const err = await rejection(client.trailer({ key: 'Bad Key' }));
    assertStatus(err, 'INTERNAL');
    assert.match(err.message, /invalid trailers/);
    assert.deepEqual(await client.trailer({ key: 'good-key' }), { ok: true });
    assert.equal(client.state, ConnectivityState.READY);
  });

  it('metadata - call metadata larger than the peer accepts fails the call with RESOURCE_EXHAUSTED, the connection lives', async () => {
    const { client } = await echoPair(cleanup, 'tcp', { maxFrameSize: 16 * KiB });
    await client.say({ text: 'warm' });
    const err = await rejection(client.say({ text: 'x' }, { metadata: { big: 'y'.repeat(20 * KiB) } }));
    assertStatus(err, 'RESOURCE_EXHAUSTED', ErrorCode.MESSAGE_TOO_LARGE);
    assert.deepEqual(await client.say({ text: 'after' }), { text: 'after' });
  });

  it('stream limit - a stream the server refuses with RESET(REFUSED) fails as SKEIN_ERR_STREAM_LIMIT, safe to retry', async () => {
    // A scripted server: it accepts the handshake, then refuses the first call as over its limit.
    // No default policies: this is about how the refusal surfaces, not the retry it allows.
    const peer = await startFakePeer();
    cleanup.add(() => peer.close());
    const client = cleanup.client(Svc, { target: peer.address, resilience: false });
    const conn = await peer.nextConnection();
    await conn.waitFor((b) => b.length > PREFACE.length + HEADER_SIZE);
    const ack = { codecs: ['msgpack'], compression: null, maxFrameSize: 65536, streamWindow: 65536, connectionWindow: 1 << 20, heartbeatMs: 0, maxConcurrentStreams: 100 };
    conn.write(Buffer.concat([PREFACE, encodeFrame(FrameType.HELLO_ACK, 0, 0, Buffer.from(JSON.stringify(ack)))]));
    const call = client.hold({ id: 1 });
    const before = conn.received().length;
    await conn.waitFor((b) => b.length > before);
    conn.write(encodeFrame(FrameType.RESET, ResetFlags.REFUSED, 1, encodeReset(Status.RESOURCE_EXHAUSTED, 'refused: more than 100 concurrent streams')));
    const err = await rejection(call);
    assertStatus(err, 'RESOURCE_EXHAUSTED', ErrorCode.STREAM_LIMIT);
  });

  it('goaway - an error GOAWAY from the server puts the client in TRANSIENT_FAILURE with the reason, not IDLE', async () => {
    const peer = await startFakePeer();
    cleanup.add(() => peer.close());
    const client = cleanup.client(Svc, { target: peer.address, backoff: { initialMs: 60_000 } });
    const conn = await peer.nextConnection();
    await conn.waitFor((b) => b.length >= PREFACE.length);
    const states: string[] = [];
    client.connection.on('state', (c) => states.push(c.state));
    conn.write(Buffer.concat([PREFACE, encodeFrame(FrameType.GOAWAY, 0, 0, encodeGoaway(0, GoawayReason.PROTOCOL_ERROR, 'you sent garbage'))]));
    await waitFor(() => client.state === ConnectivityState.TRANSIENT_FAILURE, { what: 'TRANSIENT_FAILURE' });
    assert.ok(!states.includes(ConnectivityState.IDLE), `states: ${states.join(',')}`);
    assert.match(client.connection.lastError?.message ?? '', /PROTOCOL_ERROR/);
    const err = await withTimeout(rejection(client.hold({ id: 1 })), 5000, 'fail-fast call');
    assertStatus(err, 'UNAVAILABLE', ErrorCode.NOT_READY);
  });
});
