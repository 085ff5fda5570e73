/**
 * Load reporting, server side (src/observe/load.ts, src/observe/health.ts):
 *
 *   - the sampler and the call counters, with an injected clock and source;
 *   - HealthService on its own with a fake sampler: a watch with `loadReportMs` gets the
 *     status, then reports; one timer, only while such a watch is open;
 *   - a real server on 127.0.0.1: its watch reports calls in flight (held open by a
 *     handler), a watch without the field gets status messages only, skein.health calls
 *     do not count, and draining still sends NOT_SERVING and ends the watch.
 *
 * Every wait is bounded and waits for an event or a state; nothing asserts on durations.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connect, createServer, Health, implement, service, unary, type HealthReply, type Server } from '../../src/index.js';
import { HealthService } from '../../src/observe/health.js';
import { CallLoad, LATENCY_EWMA_ALPHA, LoadSampler, MAX_LOAD_REPORT_MS, MIN_LOAD_REPORT_MS, processLoadSource, reportInterval, type LoadSample, type LoadSource } from '../../src/observe/load.js';
import type { CallContext } from '../../src/rpc/types.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

/** A LoadSource whose numbers the test sets. */
class FakeSource implements LoadSource {
  t = 1000;
  cpuUs = 0;
  coreCount = 4;
  used = 0;
  limit = 1000;
  now(): number {
    return this.t;
  }
  cpuMicros(): number {
    return this.cpuUs;
  }
  cores(): number {
    return this.coreCount;
  }
  memUsed(): number {
    return this.used;
  }
  memLimit(): number {
    return this.limit;
  }
}

const close = (a: number, b: number): boolean => Math.abs(a - b) < 1e-9;

describe('load sampler', () => {
  test('load sampler - cpu is the CPU time since the previous sample over wall time and cores, clamped to 0..1', () => {
    const src = new FakeSource();
    const sampler = new LoadSampler({ inflight: 0, latencyMs: 0 }, { source: src });
    src.t += 1000;
    src.cpuUs += 2_000_000; // 2 s of CPU in 1 s on 4 cores
    assert.ok(close(sampler.sample().cpu, 0.5));
    src.t += 500;
    src.cpuUs += 500_000; // 0.5 s in 0.5 s: one core of four
    assert.ok(close(sampler.sample().cpu, 0.25));
    src.t += 100;
    src.cpuUs += 10_000_000; // more than every core: clamped
    assert.equal(sampler.sample().cpu, 1);
    src.t += 100;
    src.cpuUs -= 1; // a source going backwards: 0, not negative
    assert.equal(sampler.sample().cpu, 0);
  });

  test('load sampler - a sample within minWindowMs of the last window repeats its cpu and keeps the window open', () => {
    const src = new FakeSource();
    src.coreCount = 1;
    const sampler = new LoadSampler({ inflight: 0, latencyMs: 0 }, { source: src, minWindowMs: 50 });
    src.t += 100;
    src.cpuUs += 50_000;
    assert.ok(close(sampler.sample().cpu, 0.5));
    src.t += 10;
    src.cpuUs += 10_000; // 100 % over 10 ms: too short a window to report
    assert.ok(close(sampler.sample().cpu, 0.5), 'the last window stands');
    src.t += 90;
    src.cpuUs += 0; // the window is 100 ms now, with 10 ms of CPU in it
    assert.ok(close(sampler.sample().cpu, 0.1));
  });

  test('load sampler - mem is used / limit (clamped); inflight and latency come from the call counters', () => {
    const src = new FakeSource();
    const calls = { inflight: 7, latencyMs: 12.5 };
    const sampler = new LoadSampler(calls, { source: src });
    src.used = 250;
    assert.deepEqual(sampler.sample(), { cpu: 0, mem: 0.25, inflight: 7, latencyMs: 12.5 });
    src.used = 5000;
    calls.inflight = 0;
    assert.equal(sampler.sample().mem, 1);
    assert.equal(sampler.sample().inflight, 0);
    src.limit = 0;
    assert.equal(new LoadSampler(calls, { source: src }).sample().mem, 0, 'no limit known: 0, not Infinity');
    src.coreCount = 0;
    src.limit = 1000;
    const noCores = new LoadSampler(calls, { source: src });
    src.t += 100;
    src.cpuUs += 50_000;
    assert.ok(close(noCores.sample().cpu, 0.5), 'a source reporting 0 cores counts as 1');
  });

  test('load sampler - CallLoad counts calls running and averages unary durations (EWMA)', () => {
    const load = new CallLoad();
    load.start();
    load.start();
    load.start();
    assert.equal(load.inflight, 3);
    load.finish(10);
    assert.equal(load.latencyMs, 10, 'the first duration is taken as is');
    load.finish(30);
    assert.ok(close(load.latencyMs, 10 + LATENCY_EWMA_ALPHA * (30 - 10)));
    const before = load.latencyMs;
    load.finish(undefined); // a stream, or a cancelled call: not measured
    assert.equal(load.latencyMs, before);
    assert.equal(load.inflight, 0);
    assert.equal(load.measured, 2);
  });

  test('load sampler - reportInterval: absent, 0, negative or not a number mean no reports; others are clamped', () => {
    for (const v of [undefined, null, 0, -5, 'x', Number.NaN, Infinity, {}]) assert.equal(reportInterval(v), undefined, String(v));
    assert.equal(reportInterval(1), MIN_LOAD_REPORT_MS);
    assert.equal(reportInterval(250.4), 250);
    assert.equal(reportInterval(1e12), MAX_LOAD_REPORT_MS);
  });

  test('load sampler - the process source gives sane numbers', () => {
    assert.ok(processLoadSource.cores() >= 1);
    assert.ok(processLoadSource.memLimit() > 0);
    assert.ok(processLoadSource.memUsed() > 0);
    const s = new LoadSampler({ inflight: 0, latencyMs: 0 }, { minWindowMs: 0 }).sample();
    for (const k of ['cpu', 'mem'] as const) assert.ok(s[k] >= 0 && s[k] <= 1, `${k} ${s[k]}`);
  });
});

type WatchFn = (req: { service?: string; loadReportMs?: number }, ctx: CallContext) => AsyncGenerator<HealthReply>;

function watchOf(h: HealthService, req: { service?: string; loadReportMs?: number }, signal: AbortSignal): AsyncGenerator<HealthReply> {
  return (h.impl.handlers.watch as unknown as WatchFn)(req, { signal } as CallContext);
}

describe('health load reports (HealthService alone)', () => {
  test('health load reports - status first, then reports every interval; one timer, stopped with the last watch', async () => {
    let n = 0;
    const h = new HealthService({ load: { sample: (): LoadSample => ({ cpu: 0.5, mem: 0.25, inflight: ++n, latencyMs: 3 }) } });
    h.set('', 'SERVING');
    const ac = new AbortController();
    const w = watchOf(h, { service: '', loadReportMs: 100 }, ac.signal);
    assert.deepEqual((await withTimeout(w.next(), 5000, 'the first message')).value, { status: 'SERVING' }, 'the first message has no load');
    assert.equal(h.loadWatcherCount, 1);
    assert.equal(h.loadTimerActive, true);
    const first = (await withTimeout(w.next(), 5000, 'a load report')).value as HealthReply;
    assert.equal(first.status, 'SERVING');
    assert.equal(first.load?.cpu, 0.5);
    assert.equal(first.load?.mem, 0.25);
    const second = (await withTimeout(w.next(), 5000, 'a second load report')).value as HealthReply;
    assert.ok(second.load!.inflight > first.load!.inflight, 'a new sample each interval');
    // A status change between reports is sent as such (no load).
    const third = withTimeout(w.next(), 5000, 'the next message');
    h.set('', 'NOT_SERVING');
    const r = (await third).value as HealthReply;
    assert.equal(r.status, 'NOT_SERVING');
    ac.abort();
    assert.equal((await withTimeout(w.next(), 5000, 'the watch to end')).done, true);
    assert.equal(h.loadWatcherCount, 0);
    assert.equal(h.loadTimerActive, false, 'no timer once nobody asks for reports');
  });

  test('health load reports - without a load source, or without the field, a watch gets status messages only', async () => {
    const plain = new HealthService();
    plain.set('', 'SERVING');
    const ac = new AbortController();
    const w = watchOf(plain, { loadReportMs: 100 }, ac.signal);
    assert.deepEqual((await w.next()).value, { status: 'SERVING' });
    assert.equal(plain.loadWatcherCount, 0);
    assert.equal(plain.loadTimerActive, false);
    ac.abort();
    assert.equal((await withTimeout(w.next(), 5000, 'the watch to end')).done, true);

    const h = new HealthService({ load: { sample: () => ({ cpu: 0, mem: 0, inflight: 0, latencyMs: 0 }) } });
    h.set('', 'SERVING');
    const ac2 = new AbortController();
    const w2 = watchOf(h, {}, ac2.signal);
    assert.deepEqual((await w2.next()).value, { status: 'SERVING' });
    assert.equal(h.loadWatcherCount, 0);
    assert.equal(h.loadTimerActive, false);
    ac2.abort();
    assert.equal((await withTimeout(w2.next(), 5000, 'the watch to end')).done, true);
  });

  test('health load reports - shutdown sends NOT_SERVING, ends the watch and stops the timer', async () => {
    const h = new HealthService({ load: { sample: () => ({ cpu: 0, mem: 0, inflight: 0, latencyMs: 0 }) } });
    h.set('', 'SERVING');
    const w = watchOf(h, { loadReportMs: 100 }, new AbortController().signal);
    assert.deepEqual((await w.next()).value, { status: 'SERVING' });
    const reading = (async () => {
      const out: HealthReply[] = [];
      for (let r = await w.next(); !r.done; r = await w.next()) out.push(r.value);
      return out;
    })();
    const down = h.shutdown(1000);
    const rest = await withTimeout(reading, 5000, 'the watch to end');
    await withTimeout(down, 5000, 'shutdown()');
    assert.equal(rest.at(-1)?.status, 'NOT_SERVING', JSON.stringify(rest));
    assert.ok(rest.every((m) => m.status === 'NOT_SERVING' || m.load !== undefined), 'nothing but reports before NOT_SERVING');
    assert.equal(h.loadTimerActive, false);
    assert.equal(h.loadWatcherCount, 0);
  });
});

const Hold = service('hold', {
  hold: unary<Record<string, never>, { ok: true }>(),
  ping: unary<Record<string, never>, { ok: true }>({ idempotent: true }),
});

/** A server whose `hold` calls stay open until `release()`. */
async function startHold(): Promise<{ server: Server; address: string; release(): void; held(): number }> {
  let waiting: Array<() => void> = [];
  const server = createServer({ drainGraceMs: 2000 }).add(
    implement(Hold, {
      hold: () =>
        new Promise<{ ok: true }>((resolve) => {
          waiting.push(() => resolve({ ok: true }));
        }),
      ping: () => ({ ok: true as const }),
    }),
  );
  const { address } = await server.listen({ host: '127.0.0.1', port: 0 });
  return {
    server,
    address,
    release: () => {
      const w = waiting;
      waiting = [];
      for (const r of w) r();
    },
    held: () => waiting.length,
  };
}

describe('load reports over TCP', () => {
  test('load reports over TCP - a watch with loadReportMs reports calls in flight; one without gets status only; health calls do not count', async () => {
    const s = await startHold();
    const health = connect(Health, { target: s.address });
    const client = connect(Hold, { target: s.address });
    const ac = new AbortController();
    try {
      const reports: HealthReply[] = [];
      const plain: HealthReply[] = [];
      const loadWatch = (async () => {
        for await (const r of health.watch({ service: 'hold', loadReportMs: 100 }, { signal: ac.signal })) reports.push(r);
      })().catch(() => {});
      const plainWatch = (async () => {
        for await (const r of health.watch({ service: 'hold' }, { signal: ac.signal })) plain.push(r);
      })().catch(() => {});
      await waitFor(() => reports.some((r) => r.load !== undefined), { what: 'a first load report' });
      assert.equal(reports[0]!.load, undefined, 'the first message is the status alone');
      assert.equal(reports[0]!.status, 'SERVING');
      assert.equal(s.server.inflight, 0, 'open health watches are not calls in flight');
      assert.equal(s.server.health!.watcherCount, 2);
      assert.equal(s.server.health!.loadWatcherCount, 1);

      // Five calls held open on the server: the next reports say so.
      const calls = Array.from({ length: 5 }, () => client.hold({}, { timeout: 10_000 }));
      await waitFor(() => s.held() === 5, { what: 'five held calls' });
      assert.equal(s.server.inflight, 5);
      await waitFor(() => reports.at(-1)?.load?.inflight === 5, { what: 'a report of 5 calls in flight' });
      const busy = reports.at(-1)!;
      assert.equal(busy.status, 'SERVING');
      for (const k of ['cpu', 'mem'] as const) assert.ok(busy.load![k] >= 0 && busy.load![k] <= 1, `${k} ${busy.load![k]}`);
      s.release();
      await withTimeout(Promise.all(calls), 5000, 'the held calls');
      await waitFor(() => reports.at(-1)?.load?.inflight === 0, { what: 'a report of 0 calls in flight' });
      assert.ok(reports.at(-1)!.load!.latencyMs > 0, 'the held calls\' durations are in the latency average');
      assert.equal(s.server.load().inflight, 0);

      // Several reports later, the plain watch still has its one status message.
      const seen = reports.length;
      await waitFor(() => reports.length >= seen + 2, { what: 'two more load reports' });
      assert.deepEqual(plain, [{ status: 'SERVING' }]);
      ac.abort();
      await withTimeout(Promise.all([loadWatch, plainWatch]), 5000, 'the watches to end');
      await waitFor(() => s.server.health!.watcherCount === 0, { what: 'the server to drop the watches' });
      assert.equal(s.server.health!.loadTimerActive, false, 'the timer stops with the last load watch');
    } finally {
      ac.abort();
      s.release();
      await client.close();
      await health.close();
      await s.server.close(0);
    }
  });

  test('load reports over TCP - draining: the load watch gets NOT_SERVING and ends with OK, the timer stops', async () => {
    const s = await startHold();
    const health = connect(Health, { target: s.address });
    try {
      const reports: HealthReply[] = [];
      let ended = false;
      const watching = (async () => {
        for await (const r of health.watch({ service: 'hold', loadReportMs: 100 })) reports.push(r);
        ended = true;
      })();
      await waitFor(() => reports.some((r) => r.load !== undefined), { what: 'a load report' });
      await withTimeout(s.server.close(1000), 5000, 'close()');
      await withTimeout(watching, 5000, 'the watch to end');
      assert.equal(ended, true, 'the watch ended with OK (not cut)');
      assert.equal(reports.at(-1)!.status, 'NOT_SERVING', JSON.stringify(reports));
      assert.ok(reports.slice(0, -1).every((r) => r.status === 'SERVING'));
      assert.equal(s.server.health!.loadTimerActive, false);
    } finally {
      await health.close();
      await s.server.close(0);
    }
  });
});
