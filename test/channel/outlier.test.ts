/**
 * Outlier ejection: the detector alone with a fake clock (success-rate detection, the
 * ejection percent limit), and channels over real TCP with three servers behind
 * `static://` (one failing: ejected, retries land elsewhere; two failing: at most half
 * ejected; the ejection time passes: the instance is probed, re-ejected, then back).
 * Assertions are on what ran where (counted on the servers), never on timings.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { after, describe, it } from 'node:test';
import { connect, implement, SkeinError, service, unary } from '../../src/index.js';
import { OutlierDetector, OUTLIER_CHANNEL, type OutlierEvent } from '../../src/channel/outlier.js';
import { createError, ErrorCode } from '../../src/errors.js';
import { retry } from '../../src/resilience/index.js';
import { FakeClock } from '../helpers/clock.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { Cleanup } from '../integration/_harness.js';

const unavailable = createError(ErrorCode.REMOTE, 'down', { status: 'UNAVAILABLE' });

describe('outlier detector', () => {
  it('outlier - success rate far below the others ejects at the end of the interval', () => {
    const clock = new FakeClock();
    let changes = 0;
    // One outlier among n rates sits sqrt(n - 1) stddevs below the mean: with the default
    // factor 1.9 it takes at least 5 busy instances to eject it (4 give 1.73).
    const d = new OutlierDetector('svc', { clock, intervalMs: 1000 }, () => 5, () => changes++);
    for (let i = 0; i < 20; i++) {
      for (const id of ['a', 'b', 'c', 'e']) d.record(id, id, undefined);
      d.record('d', 'd', i % 2 === 0 ? unavailable : undefined); // 50 %, never 5 in a row
    }
    assert.equal(d.isEjected('d'), false);
    clock.advance(1000);
    assert.equal(d.isEjected('d'), true);
    assert.deepEqual(d.stats().ejected, ['d']);
    assert.equal(changes, 1);
    d.close();
  });

  it('outlier - not judged on success rate with fewer than minimumHosts busy instances', () => {
    const clock = new FakeClock();
    const d = new OutlierDetector('svc', { clock, intervalMs: 1000 }, () => 3, () => {});
    for (let i = 0; i < 20; i++) {
      d.record('a', 'a', undefined);
      d.record('d', 'd', i % 2 === 0 ? unavailable : undefined);
    }
    clock.advance(1000);
    assert.equal(d.isEjected('d'), false);
    d.close();
  });

  it('outlier - cancellations and non-failure statuses count as nothing / success', () => {
    const d = new OutlierDetector('svc', { clock: new FakeClock() }, () => 3, () => {});
    for (let i = 0; i < 10; i++) {
      d.record('a', 'a', createError(ErrorCode.CANCELLED, 'cancelled'));
      d.record('a', 'a', createError(ErrorCode.REMOTE, 'nope', { status: 'NOT_FOUND' }));
    }
    assert.equal(d.isEjected('a'), false);
    d.close();
  });
});

const Store = service('outlier-store', {
  get: unary<{ id: string }, { id: string; by: string }>({ idempotent: true }),
});

const cleanup = new Cleanup();
after(() => cleanup.run());

interface Replica {
  name: string;
  address: string;
  calls: number;
  failing: boolean;
}

async function replica(name: string, failing = false): Promise<Replica> {
  const r: Replica = { name, address: '', calls: 0, failing };
  const server = cleanup.server().add(
    implement(Store, {
      async get({ id }) {
        r.calls++;
        if (r.failing) throw new SkeinError('UNAVAILABLE', `${name} failing on purpose`);
        return { id, by: name };
      },
    }),
  );
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  r.address = `127.0.0.1:${port}`;
  return r;
}

function events(): { list: OutlierEvent[] } {
  const list: OutlierEvent[] = [];
  const fn = (m: unknown): void => void list.push(m as OutlierEvent);
  diagnostics.subscribe(OUTLIER_CHANNEL, fn);
  cleanup.add(() => diagnostics.unsubscribe(OUTLIER_CHANNEL, fn));
  return { list };
}

async function channelTo(replicas: Replica[], outlierDetection: Record<string, unknown>) {
  const r = retry({ maxAttempts: 3, backoff: { initialMs: 0, maxMs: 0 } });
  const client = connect(Store, { discovery: `static://${replicas.map((x) => x.address).join(',')}`, balancer: 'round-robin', resilience: false, interceptors: [r], outlierDetection });
  cleanup.add(() => client.close());
  await withTimeout(client.ready({ timeout: 5000 }), 5000, 'the channel');
  const channel = (client as unknown as { channel: import('../../src/channel/channel.js').Channel }).channel;
  await waitFor(() => channel.readySubchannels.length >= replicas.length, { what: 'all instances ready' });
  return { client: client as unknown as { get(req: { id: string }, o: { timeout: number }): Promise<{ id: string; by: string }> }, channel, retry: r };
}

describe('outlier ejection over TCP (static discovery, round-robin)', () => {
  it('outlier - a replica failing every call is ejected; ≥ 99 % of idempotent calls succeed with retry()', async () => {
    const ev = events();
    const [a, b, bad] = [await replica('a'), await replica('b'), await replica('bad', true)];
    const { client, channel } = await channelTo([a, b, bad], {});
    let ok = 0;
    const total = 200;
    for (let i = 0; i < total; i++) {
      const res = await withTimeout(client.get({ id: `g${i}` }, { timeout: 5000 }).catch(() => undefined), 5000, 'a get');
      if (res !== undefined) ok++;
    }
    assert.ok(ok >= total * 0.99, `${ok} of ${total} succeeded`);
    assert.ok(channel.isEjected(channel.subchannels.find((s) => s.address === bad.address)!), 'bad is ejected');
    assert.deepEqual(channel.outlierStats()?.ejected.length, 1);
    const badCalls = bad.calls;
    for (let i = 0; i < 50; i++) await withTimeout(client.get({ id: `h${i}` }, { timeout: 5000 }), 5000, 'a get after the ejection');
    assert.equal(bad.calls, badCalls, 'no more calls reach the ejected replica');
    assert.ok(a.calls > 0 && b.calls > 0);
    const e = ev.list.find((x) => x.action === 'eject' && x.address === bad.address);
    assert.ok(e !== undefined && e.reason === 'consecutive-failures' && e.ejectionMs === 30_000, JSON.stringify(ev.list));
  });

  it('outlier - with two of three replicas failing, at most half (one) is ejected', async () => {
    const [a, bad1, bad2] = [await replica('a'), await replica('bad1', true), await replica('bad2', true)];
    const { client, channel } = await channelTo([a, bad1, bad2], {});
    for (let i = 0; i < 100; i++) await withTimeout(client.get({ id: `g${i}` }, { timeout: 5000 }).catch(() => undefined), 5000, 'a get');
    const s = channel.outlierStats()!;
    assert.equal(s.ejected.length, 1, JSON.stringify(s));
    assert.ok(s.skipped > 0, 'an ejection over the limit was skipped');
    assert.equal(channel.readySubchannels.length, 2);
  });

  it('outlier - after the ejection time the replica is probed: a failure re-ejects for longer, a success keeps it', async () => {
    const ev = events();
    const clock = new FakeClock();
    const [a, b, bad] = [await replica('a'), await replica('b'), await replica('bad', true)];
    const { client, channel } = await channelTo([a, b, bad], { clock, baseEjectionMs: 1000 });
    const badSub = channel.subchannels.find((s) => s.address === bad.address)!;
    for (let i = 0; i < 60 && !channel.isEjected(badSub); i++) await withTimeout(client.get({ id: `g${i}` }, { timeout: 5000 }).catch(() => undefined), 5000, 'a get');
    assert.ok(channel.isEjected(badSub));

    clock.advance(1000); // time up: back, on probation
    assert.equal(channel.isEjected(badSub), false);
    const before = bad.calls;
    for (let i = 0; i < 10 && !channel.isEjected(badSub); i++) await withTimeout(client.get({ id: `p${i}` }, { timeout: 5000 }), 5000, 'a get while probing');
    assert.equal(bad.calls, before + 1, 'one probe call, then re-ejected');
    assert.ok(channel.isEjected(badSub));
    const ejects = ev.list.filter((x) => x.action === 'eject' && x.address === bad.address);
    assert.deepEqual(
      ejects.map((x) => [x.reason, x.ejectionMs]),
      [
        ['consecutive-failures', 1000],
        ['probe-failed', 2000],
      ],
    );

    bad.failing = false;
    clock.advance(2000);
    assert.equal(channel.isEjected(badSub), false);
    const back = bad.calls;
    for (let i = 0; i < 30; i++) await withTimeout(client.get({ id: `r${i}` }, { timeout: 5000 }), 5000, 'a get after recovery');
    assert.ok(bad.calls > back + 1, 'the recovered replica serves again');
    assert.equal(channel.isEjected(badSub), false);
  });

  it('outlier - outlierDetection: false turns it off', async () => {
    const [a, bad] = [await replica('a'), await replica('bad', true)];
    const { client, channel } = await channelTo([a, bad], false as unknown as Record<string, unknown>);
    for (let i = 0; i < 30; i++) await withTimeout(client.get({ id: `g${i}` }, { timeout: 5000 }).catch(() => undefined), 5000, 'a get');
    assert.equal(channel.outlierStats(), undefined);
    assert.equal(channel.readySubchannels.length, 2);
  });
});
