/**
 * Flow control end to end: a slow reader stalls its sender, so the sender's memory stays
 * bounded by the windows (docs/protocol.md §6), and reading again delivers everything.
 *
 * "Produced" counts what the sending application handed to skein (a generator's yields).
 * Once the window is used up, the pump stops pulling from the generator, so production
 * stops growing; the tests wait for that (bounded) and check the bound, which must hold at
 * every moment, then resume reading.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { clientStream, implement, service, serverStream } from '../../src/index.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { Cleanup, collect, deferred, listenOn } from './_harness.js';

const KiB = 1024;

const Flow = service('flow', {
  pour: serverStream<{ id: number; count: number; size: number }, { i: number; pad: string }>(),
  drink: clientStream<{ i: number; pad: string }, { count: number; bytes: number }>(),
});

/** Resolve with the value of `read()` once it has been >= `atLeast` and unchanged for `polls` checks in a row. */
async function stableValue(read: () => number, atLeast: number, what: string, polls = 10): Promise<number> {
  let last = -1;
  let same = 0;
  await waitFor(
    () => {
      const v = read();
      if (v === last && v >= atLeast) same++;
      else {
        same = 0;
        last = v;
      }
      return same >= polls;
    },
    { what: `${what} to stop growing (at >= ${atLeast}; last ${last})`, intervalMs: 10, timeoutMs: 10_000 },
  );
  return last;
}

function makeServer(cleanup: Cleanup, options: Parameters<Cleanup['server']>[0], hooks: { drinkGate?: Promise<void> }) {
  const produced = new Map<number, number>();
  const server = cleanup.server(options).add(
    implement(Flow, {
      async *pour({ id, count, size }) {
        const pad = 'f'.repeat(size);
        for (let i = 0; i < count; i++) {
          produced.set(id, (produced.get(id) ?? 0) + size);
          yield { i, pad };
        }
      },
      async drink(requests) {
        let count = 0;
        let bytes = 0;
        for await (const m of requests) {
          assert.equal(m.i, count);
          count++;
          bytes += m.pad.length;
          if (count === 1) await hooks.drinkGate;
        }
        return { count, bytes };
      },
    }),
  );
  const total = () => {
    let t = 0;
    for (const v of produced.values()) t += v;
    return t;
  };
  return { server, produced, total };
}

describe('flow control', () => {
  const cleanup = new Cleanup();
  after(() => cleanup.run());

  const streamWindow = 256 * KiB;
  const maxFrameSize = 128 * KiB;
  const msg = 64 * KiB;

  it('flow control - a slow reader of a server stream bounds what the handler produces, then gets everything', async () => {
    const { server, produced } = makeServer(cleanup, {}, {});
    const l = await listenOn(server, 'tcp');
    // The client's windows are what limit the server's sending.
    const client = cleanup.client(Flow, { target: l.target, session: { streamWindow, maxFrameSize } });
    const count = 40; // 2.5 MiB, ten windows
    const it = client.pour({ id: 1, count, size: msg })[Symbol.asyncIterator]();
    const first = await withTimeout(it.next(), 5000, 'the first message');
    assert.equal(first.value.i, 0);
    const stalled = await stableValue(() => produced.get(1) ?? 0, streamWindow, 'the handler');
    assert.ok(stalled <= streamWindow + 2 * maxFrameSize, `produced ${stalled} bytes with a ${streamWindow}-byte window`);
    const rest: number[] = [];
    for (;;) {
      const r = await withTimeout(it.next(), 5000, `message ${rest.length + 1}`);
      if (r.done) break;
      rest.push(r.value.i);
    }
    assert.deepEqual(rest, Array.from({ length: count - 1 }, (_, k) => k + 1));
    assert.equal(produced.get(1), count * msg);
  });

  it('flow control - a slow reader of a client stream bounds what the client produces, then gets everything', async () => {
    const gate = deferred();
    const { server } = makeServer(cleanup, { streamWindow, maxFrameSize }, { drinkGate: gate.promise });
    const l = await listenOn(server, 'tcp');
    const client = cleanup.client(Flow, { target: l.target });
    const count = 40;
    let producedBytes = 0;
    const pad = 'c'.repeat(msg);
    async function* source() {
      for (let i = 0; i < count; i++) {
        producedBytes += msg;
        yield { i, pad };
      }
    }
    const reply = client.drink(source());
    const stalled = await stableValue(() => producedBytes, streamWindow, 'the client source');
    assert.ok(stalled <= streamWindow + 2 * maxFrameSize, `produced ${stalled} bytes with a ${streamWindow}-byte window`);
    gate.resolve();
    assert.deepEqual(await withTimeout(reply, 10_000, 'the reply'), { count, bytes: count * msg });
  });

  it('flow control - 100 streams with slow readers stay within the connection window in total', async () => {
    const { server, produced, total } = makeServer(cleanup, {}, {});
    const l = await listenOn(server, 'tcp');
    // Through a proxy, to count the bytes the server actually put on the wire.
    const proxy = await startFaultProxy({ target: l.target });
    cleanup.add(() => proxy.close());
    const connectionWindow = 1024 * KiB;
    const perStreamWindow = 64 * KiB;
    const frame = 16 * KiB;
    const size = 8 * KiB;
    const client = cleanup.client(Flow, { target: proxy.address, session: { connectionWindow, streamWindow: perStreamWindow, maxFrameSize: frame } });
    await client.ready({ timeout: 5000 });
    const downAtStart = proxy.bytesDown;
    const streams = 100;
    const count = 12; // 96 KiB per stream (more than a stream window), 9.4 MiB in all
    const calls = Array.from({ length: streams }, (_, id) => client.pour({ id, count, size }));
    await waitFor(() => produced.size === streams, { what: 'every handler to start' });
    const stalled = await stableValue(total, connectionWindow, 'the handlers');
    const onWire = proxy.bytesDown - downAtStart;
    // DATA may overshoot a window by less than one frame; the rest is frame headers.
    assert.ok(onWire <= connectionWindow + frame + 16 * KiB, `${onWire} bytes on the wire with a ${connectionWindow}-byte connection window`);
    // Each handler holds at most one message beyond what the windows let through.
    assert.ok(stalled <= connectionWindow + frame + streams * size, `handlers produced ${stalled} bytes`);
    const results = await withTimeout(Promise.all(calls.map((c) => collect(c, 20_000))), 20_000, 'every stream to finish');
    for (const r of results) assert.deepEqual(r.map((m) => m.i), Array.from({ length: count }, (_, k) => k));
    assert.equal(total(), streams * count * size);
  });
});
