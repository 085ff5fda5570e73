/**
 * Deadlines and cancellation across the wire: a deadline reaches the handler as an aborted
 * signal, a client's cancellation reaches the handler, and `ctx.forward()` carries both
 * down a chain of services.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ErrorCode, implement, isSkeinError, service, serverStream, Status, unary, type CallContext } from '../../src/index.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { abortableSleep, aborted, assertStatus, Cleanup, deferred, Echo, listenOn, rejection } from './_harness.js';

const Slow = service('slow', {
  sleep: unary<{ ms: number }, { slept: number }>(),
  ticks: serverStream<{ size?: number }, { i: number; pad?: string }>(),
});

describe('deadlines', () => {
  const cleanup = new Cleanup();
  let target = '';
  let onCall: (ctx: CallContext) => void = () => {};
  let produced = 0;
  before(async () => {
    const server = cleanup.server().add(
      implement(Slow, {
        async sleep({ ms }, ctx) {
          onCall(ctx);
          await abortableSleep(ms, ctx.signal);
          return { slept: ms };
        },
        async *ticks({ size }, ctx) {
          onCall(ctx);
          const pad = size === undefined ? undefined : 'p'.repeat(size);
          for (let i = 0; ; i++) {
            produced++;
            yield pad === undefined ? { i } : { i, pad };
          }
        },
      }),
    );
    target = (await listenOn(server, 'tcp')).target;
  });
  after(() => cleanup.run());

  it('deadline - a sleeping handler times out with DEADLINE_EXCEEDED and its signal aborts', async () => {
    const client = cleanup.client(Slow, { target });
    const started = deferred<CallContext>();
    onCall = (ctx) => started.resolve(ctx);
    const call = client.sleep({ ms: 60_000 }, { timeout: 150 });
    const ctx = await started.wait('the handler to start');
    assert.ok(ctx.deadline !== undefined, 'the handler knows its deadline');
    const err = await rejection(call);
    // The client's timer and the server's (which ends the call with END(DEADLINE_EXCEEDED))
    // expire together: either may be first.
    assertStatus(err, 'DEADLINE_EXCEEDED', [ErrorCode.DEADLINE, ErrorCode.REMOTE]);
    const reason = await aborted(ctx.signal);
    assert.ok(isSkeinError(reason), 'the abort reason is a SkeinError');
    assert.equal(reason.status, Status.DEADLINE_EXCEEDED, `handler saw ${reason.code}: ${reason.message}`);
  });

  it('deadline - a call whose deadline has already passed fails without reaching a handler', async () => {
    const client = cleanup.client(Slow, { target });
    await client.ready({ timeout: 5000 });
    let called = false;
    onCall = () => (called = true);
    assertStatus(await rejection(client.sleep({ ms: 1 }, { deadline: Date.now() - 1 })), 'DEADLINE_EXCEEDED', ErrorCode.DEADLINE);
    assert.equal(called, false);
  });

  it('cancel - aborting the signal mid server-stream reaches the handler and the client gets CANCELLED', async () => {
    const client = cleanup.client(Slow, { target });
    const started = deferred<CallContext>();
    onCall = (ctx) => started.resolve(ctx);
    const ac = new AbortController();
    const it = client.ticks({}, { signal: ac.signal })[Symbol.asyncIterator]();
    for (let k = 0; k < 5; k++) assert.equal((await withTimeout(it.next(), 5000, `message ${k}`)).value.i, k);
    const ctx = await started.wait('the handler to start');
    ac.abort();
    const err = await rejection(drain(it));
    assertStatus(err, 'CANCELLED', ErrorCode.CANCELLED);
    const reason = await aborted(ctx.signal);
    assert.ok(isSkeinError(reason) && reason.status === Status.CANCELLED, `handler saw ${String(reason)}`);
  });

  it('cancel - breaking out of for-await over a server stream cancels the handler', async () => {
    const client = cleanup.client(Slow, { target });
    const started = deferred<CallContext>();
    onCall = (ctx) => started.resolve(ctx);
    let seen = 0;
    await withTimeout(
      (async () => {
        for await (const m of client.ticks({ size: 1000 })) {
          assert.equal(m.i, seen);
          if (++seen === 10) break;
        }
      })(),
      5000,
      'ten messages',
    );
    const ctx = await started.wait('the handler to start');
    const reason = await aborted(ctx.signal, 'the handler to see the cancellation');
    assert.ok(isSkeinError(reason) && reason.status === Status.CANCELLED, `handler saw ${String(reason)}`);
    // The connection is still good for other calls.
    onCall = () => {};
    assert.deepEqual(await client.sleep({ ms: 0 }), { slept: 0 });
    assert.ok(produced > 0);
  });

  it('deadline - a call queued behind max concurrent streams does not gain time while it waits', async () => {
    // One stream at a time: the second call waits on the client until the first ends.
    const server = cleanup.server({ maxConcurrentStreams: 1 });
    let firstReturned = 0;
    const seen: Array<{ deadline: number | undefined; entry: number }> = [];
    server.add(
      implement(Slow, {
        async sleep({ ms }, ctx) {
          seen.push({ deadline: ctx.deadline, entry: Date.now() });
          if (ms > 0) {
            // The first call does some work while the second waits in the client's queue.
            await abortableSleep(ms, ctx.signal);
            firstReturned = Date.now();
          }
          return { slept: ms };
        },
        ticks: () => [],
      }),
    );
    const l = await listenOn(server, 'tcp');
    const client = cleanup.client(Slow, { target: l.target });
    await client.ready({ timeout: 5000 });
    const first = client.sleep({ ms: 250 });
    await waitFor(() => seen.length === 1, { what: 'the first call to start' });
    const deadline2 = Date.now() + 4000;
    const second = client.sleep({ ms: 0 }, { deadline: deadline2 });
    await withTimeout(Promise.all([first, second]), 5000, 'both calls');
    const s = seen[1]!;
    assert.ok(s.deadline !== undefined);
    // The server's deadline is the client's, plus at most the time between the slot
    // freeing (>= firstReturned) and the handler starting: queueing time is not added.
    assert.ok(s.deadline <= deadline2 + (s.entry - firstReturned), `server deadline ${s.deadline - deadline2} ms after the client's (handler started ${s.entry - firstReturned} ms after the slot freed)`);
  });
});

const Hop = service('hop', {
  relay: unary<{ sleepAtLeaf: number }, { path: string[] }>(),
});

interface HopRecord {
  deadline: number | undefined;
  /** ctx.deadline - Date.now() when the handler started. */
  remaining: number;
  entry: number;
  /** When the handler called the next hop. */
  calledNext: number;
  signal: AbortSignal;
}

describe('deadline propagation through a chain', () => {
  const cleanup = new Cleanup();
  const records: Record<string, HopRecord[]> = { a: [], b: [], c: [] };
  const leafStarted: Array<(ctx: CallContext) => void> = [];
  let entry = '';

  before(async () => {
    // C is the leaf; B calls C and A calls B, each with ctx.forward().
    const mk = (name: string, next: ((req: { sleepAtLeaf: number }, ctx: CallContext) => Promise<{ path: string[] }>) | undefined) =>
      cleanup.server().add(
        implement(Hop, {
          async relay(req, ctx) {
            const rec: HopRecord = { deadline: ctx.deadline, remaining: ctx.deadline === undefined ? NaN : ctx.deadline - Date.now(), entry: Date.now(), calledNext: 0, signal: ctx.signal };
            records[name]!.push(rec);
            if (next === undefined) {
              leafStarted.shift()?.(ctx);
              await abortableSleep(req.sleepAtLeaf, ctx.signal);
              return { path: [name] };
            }
            // Some work before the next hop, so the remaining time visibly shrinks.
            await abortableSleep(20, ctx.signal);
            rec.calledNext = Date.now();
            const r = await next(req, ctx);
            return { path: [name, ...r.path] };
          },
        }),
      );
    const c = mk('c', undefined);
    const cAddr = (await listenOn(c, 'tcp')).target;
    const toC = cleanup.client(Hop, { target: cAddr });
    const b = mk('b', (req, ctx) => toC.relay(req, ctx.forward()));
    const bAddr = (await listenOn(b, 'tcp')).target;
    const toB = cleanup.client(Hop, { target: bAddr });
    const a = mk('a', (req, ctx) => toB.relay(req, ctx.forward()));
    entry = (await listenOn(a, 'tcp')).target;
  });
  after(() => cleanup.run());

  it('forward - the deadline reaches the leaf and the remaining time shrinks at each hop', async () => {
    const client = cleanup.client(Hop, { target: entry });
    const deadline = Date.now() + 5000;
    const issued = Date.now();
    assert.deepEqual(await client.relay({ sleepAtLeaf: 0 }, { deadline }), { path: ['a', 'b', 'c'] });
    const [a, b, c] = [records.a.at(-1)!, records.b.at(-1)!, records.c.at(-1)!];
    for (const r of [a, b, c]) assert.ok(r.deadline !== undefined, 'every hop has a deadline');
    // Each hop's deadline is its caller's, extended by no more than the time the CALL took
    // to get there (a relative timeout cannot carry the caller's clock).
    assert.ok(a.deadline! <= deadline + (a.entry - issued), `A: ${a.deadline! - deadline} ms past the client's deadline`);
    assert.ok(b.deadline! <= a.deadline! + (b.entry - a.calledNext), `B: ${b.deadline! - a.deadline!} ms past A's`);
    assert.ok(c.deadline! <= b.deadline! + (c.entry - b.calledNext), `C: ${c.deadline! - b.deadline!} ms past B's`);
    assert.ok(c.deadline! <= a.deadline! + (b.entry - a.calledNext) + (c.entry - b.calledNext), "C's deadline is within A's");
    assert.ok(b.remaining < a.remaining, `remaining at B (${b.remaining}) < at A (${a.remaining})`);
    assert.ok(c.remaining < b.remaining, `remaining at C (${c.remaining}) < at B (${b.remaining})`);
  });

  it("forward - the leaf's signal aborts when the first client cancels", async () => {
    const client = cleanup.client(Hop, { target: entry });
    const atLeaf = deferred<CallContext>();
    leafStarted.push((ctx) => atLeaf.resolve(ctx));
    const ac = new AbortController();
    const call = client.relay({ sleepAtLeaf: 60_000 }, { signal: ac.signal, timeout: 30_000 });
    const leaf = await atLeaf.wait('the call to reach C');
    ac.abort();
    assertStatus(await rejection(call), 'CANCELLED', ErrorCode.CANCELLED);
    const reason = await aborted(leaf.signal, "C's signal to abort");
    assert.ok(isSkeinError(reason) && reason.status === Status.CANCELLED, `C saw ${String(reason)}`);
    await aborted(records.b.at(-1)!.signal, "B's signal to abort");
    await aborted(records.a.at(-1)!.signal, "A's signal to abort");
  });

  it("forward - the first client's deadline ends the whole chain", async () => {
    const client = cleanup.client(Hop, { target: entry });
    const atLeaf = deferred<CallContext>();
    leafStarted.push((ctx) => atLeaf.resolve(ctx));
    const call = client.relay({ sleepAtLeaf: 60_000 }, { timeout: 500 });
    const leaf = await atLeaf.wait('the call to reach C');
    // The client's own timer and the first hop's (which ends the call with
    // END(DEADLINE_EXCEEDED)) expire at the same moment: either may win the race.
    assertStatus(await rejection(call), 'DEADLINE_EXCEEDED', [ErrorCode.DEADLINE, ErrorCode.REMOTE]);
    const reason = await aborted(leaf.signal, "C's signal to abort");
    assert.ok(isSkeinError(reason) && (reason.status === Status.DEADLINE_EXCEEDED || reason.status === Status.CANCELLED), `C saw ${String(reason)}`);
  });
});

describe('deadlines on the echo service', () => {
  const cleanup = new Cleanup();
  after(() => cleanup.run());
  it('deadline - a server-stream call with a timeout fails mid-stream with DEADLINE_EXCEEDED', async () => {
    const server = cleanup.server().add(
      implement(Echo, {
        say: (r) => r,
        async *count(_req, ctx) {
          yield { i: 1 };
          await abortableSleep(60_000, ctx.signal);
        },
        sum: async () => ({ sum: 0, count: 0 }),
        chat: (r) => r,
        sleep: async () => ({ slept: 0 }),
      }),
    );
    const l = await listenOn(server, 'tcp');
    const client = cleanup.client(Echo, { target: l.target });
    const it = client.count({ n: 0 }, { timeout: 200 })[Symbol.asyncIterator]();
    assert.deepEqual((await withTimeout(it.next(), 5000, 'the first message')).value, { i: 1 });
    assertStatus(await rejection(it.next()), 'DEADLINE_EXCEEDED', [ErrorCode.DEADLINE, ErrorCode.REMOTE]);
  });
});

async function drain(it: AsyncIterator<unknown>): Promise<void> {
  for (;;) if ((await it.next()).done) return;
}
