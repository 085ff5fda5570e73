/**
 * Load reports end to end (issue 4, `load` picker): servers on 127.0.0.1 report their load
 * on the `skein.health.watch` stream, a channel with `balancer: 'load'` keeps each report as
 * `subchannel.load` and picks by it.
 *
 *   - every subchannel of three gets reports; a round-robin channel asks for none;
 *   - a replica genuinely busy (60 calls held open by its handler, from another client)
 *     gets a clearly smaller share of the calls than the idle ones;
 *   - servers without load reports (an older health service that ignores the field, or
 *     `health: false`) keep working next to one with them;
 *   - `healthCheck: false` still gets reports; a report goes when its connection does;
 *   - picker unit checks: `usesLoad`, `loadReportMs` validation, staleness = 3 intervals.
 *
 * Every wait is bounded and waits for an event or a state; assertions compare counts of
 * calls, never durations.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { connect, createServer, Health, implement, service, unary, type HealthReply, type HealthRequest, type Server, type ServerOptions, type SkeinError } from '../../src/index.js';
import { load, loadReportMsOf, STALE_REPORTS, type LoadPicker } from '../../src/balance/picker-load.js';
import { countPicks, MockSubchannel, seededRandom } from '../helpers/mock-subchannel.js';
import { once, waitFor, withTimeout } from '../helpers/wait.js';
import { spread } from './_who.js';

const Who = service('who', {
  ask: unary<{ n: number }, { by: string }>({ idempotent: true }),
  hold: unary<Record<string, never>, { by: string }>(),
});

interface Replica {
  name: string;
  server: Server;
  address: string;
  /** `hold` calls waiting on this server. */
  held(): number;
  /** Answer every waiting `hold` call. */
  release(): void;
}

async function startWho(name: string, options: ServerOptions = {}, setup?: (s: Server) => void): Promise<Replica> {
  let waiting: Array<() => void> = [];
  const server = createServer({ drainGraceMs: 1000, ...options }).add(
    implement(Who, {
      ask: () => ({ by: name }),
      hold: () => new Promise<{ by: string }>((resolve) => waiting.push(() => resolve({ by: name }))),
    }),
  );
  setup?.(server);
  const { address } = await server.listen({ host: '127.0.0.1', port: 0 });
  return {
    name,
    server,
    address,
    held: () => waiting.length,
    release: () => {
      const w = waiting;
      waiting = [];
      for (const r of w) r();
    },
  };
}



describe('load reports through a channel', () => {
  const replicas: Replica[] = [];
  const clients: Array<{ close(): Promise<void> }> = [];
  after(async () => {
    for (const r of replicas) r.release();
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(replicas.map((r) => r.server.close(0)));
  });
  async function start(name: string, options: ServerOptions = {}, setup?: (s: Server) => void): Promise<Replica> {
    const r = await startWho(name, options, setup);
    replicas.push(r);
    return r;
  }

  test('load reports through a channel - balancer load: every one of three subchannels gets reports; round-robin asks for none', async () => {
    const rs = [await start('a'), await start('b'), await start('c')];
    const url = `static://${rs.map((r) => r.address).join(',')}`;
    const client = connect(Who, { discovery: url, balancer: 'load', balancerConfig: { loadReportMs: 100 } });
    clients.push(client);
    await waitFor(() => client.channel.readySubchannels.length === 3, { what: 'three READY subchannels' });
    await waitFor(() => client.channel.subchannels.every((s) => s.load !== undefined), { what: 'a load report on every subchannel' });
    for (const s of client.channel.subchannels) {
      assert.equal(s.loadReportMs, 100);
      const l = s.load!;
      for (const k of ['cpu', 'mem'] as const) assert.ok(l[k] >= 0 && l[k] <= 1, `${s.address} ${k} ${l[k]}`);
      assert.ok(l.inflight >= 0 && l.latencyMs >= 0 && l.at <= Date.now(), JSON.stringify(l));
    }
    for (const r of rs) assert.equal(r.server.health!.loadWatcherCount, 1, `${r.name} has one load watch`);
    // A 'load' event per report, the report being the subchannel's `load`.
    const sub = client.channel.subchannels[0]!;
    const [report] = await once<[unknown]>(sub, 'load');
    assert.equal(report, sub.load);
    const counts = await spread(client, 60, 3);
    assert.equal([...counts.values()].reduce((x, y) => x + y, 0), 60);

    const rr = connect(Who, { discovery: url, balancer: 'round-robin' });
    clients.push(rr);
    await waitFor(() => rr.channel.readySubchannels.length === 3, { what: 'three READY subchannels (round-robin)' });
    await waitFor(() => rs.every((r) => r.server.health!.watcherCount === 2), { what: 'the round-robin channel\'s health watches' });
    assert.ok(rs.every((r) => r.server.health!.loadWatcherCount === 1), 'round-robin asks for no load reports');
    assert.ok(rr.channel.subchannels.every((s) => s.loadReportMs === undefined && s.load === undefined));
  });

  test('load reports through a channel - a replica with 60 calls held open gets a clearly smaller share than the idle ones', async (t) => {
    const a = await start('a');
    const b = await start('b');
    const busy = await start('busy');
    // Make `busy` genuinely busy: another client holds 60 calls open on it.
    const other = connect(Who, { target: busy.address });
    clients.push(other);
    const held = Array.from({ length: 60 }, () => other.hold({}, { timeout: 30_000 }).catch(() => undefined));
    await waitFor(() => busy.held() === 60, { what: '60 held calls on busy' });
    assert.equal(busy.server.inflight, 60);

    // maxAgeMs is raised so a slow test machine cannot make the reports stale.
    const client = connect(Who, { discovery: `static://${a.address},${b.address},${busy.address}`, balancer: 'load', balancerConfig: { loadReportMs: 100, maxAgeMs: 60_000 } });
    clients.push(client);
    await waitFor(() => client.channel.readySubchannels.length === 3, { what: 'three READY subchannels' });
    const subOf = (r: Replica) => client.channel.subchannels.find((s) => s.address === r.address)!;
    await waitFor(() => subOf(busy).load !== undefined && subOf(busy).load!.inflight >= 60 && subOf(a).load !== undefined && subOf(b).load !== undefined, { what: 'reports from all three, busy with 60 calls in flight' });

    const total = 600;
    const counts = await spread(client, total, 4);
    t.diagnostic(`${JSON.stringify(Object.fromEntries(counts))}; loads ${JSON.stringify(client.channel.subchannels.map((s) => s.load))}`);
    assert.equal([...counts.values()].reduce((x, y) => x + y, 0), total);
    const nBusy = counts.get('busy') ?? 0;
    assert.ok(nBusy / total < 0.2, `busy got ${nBusy} of ${total}`);
    assert.ok((counts.get('a') ?? 0) > 2 * nBusy && (counts.get('b') ?? 0) > 2 * nBusy, JSON.stringify(Object.fromEntries(counts)));

    busy.release();
    await withTimeout(Promise.all(held), 5000, 'the held calls');
  });

  test('load reports through a channel - servers without load reports (older health service, health: false) keep working next to one with them', async () => {
    const asked: HealthRequest[] = [];
    const modern = await start('modern');
    // An older server: its health watch predates load reports and ignores the field.
    const older = await start('older', { health: false }, (s) =>
      s.add(
        implement(Health, {
          check: () => ({ status: 'SERVING' as const }),
          async *watch(req: HealthRequest, ctx) {
            asked.push(req);
            yield { status: 'SERVING' as const } satisfies HealthReply;
            await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
          },
        }),
      ),
    );
    const bare = await start('bare', { health: false });
    const client = connect(Who, { discovery: `static://${modern.address},${older.address},${bare.address}`, balancer: 'load', balancerConfig: { loadReportMs: 100 } });
    clients.push(client);
    await waitFor(() => client.channel.readySubchannels.length === 3, { what: 'three READY subchannels' });
    const subOf = (r: Replica) => client.channel.subchannels.find((s) => s.address === r.address)!;
    // Two reports from the modern server; the others still have none.
    let reports = 0;
    subOf(modern).on('load', () => reports++);
    await waitFor(() => reports >= 2, { what: 'two load reports from the modern server' });
    assert.equal(subOf(older).load, undefined);
    assert.equal(subOf(bare).load, undefined);
    assert.equal(subOf(older).health, 'SERVING');
    assert.equal(asked[0]?.loadReportMs, 100, 'the older server was asked, and ignored it');

    const counts = await spread(client, 90, 3);
    assert.equal([...counts.values()].reduce((x, y) => x + y, 0), 90);
    for (const name of ['modern', 'older', 'bare']) assert.ok((counts.get(name) ?? 0) > 0, `${name} got calls: ${JSON.stringify(Object.fromEntries(counts))}`);
  });

  test('load reports through a channel - healthCheck: false still gets reports; the report goes with the connection', async () => {
    const r = await start('solo');
    const client = connect(Who, { discovery: `static://${r.address}`, balancer: 'load', healthCheck: false, balancerConfig: { loadReportMs: 100 } });
    clients.push(client);
    await waitFor(() => client.channel.subchannels[0]?.load !== undefined, { what: 'a load report without health checking' });
    const sub = client.channel.subchannels[0]!;
    assert.equal(sub.health, undefined, 'statuses are not applied');
    assert.deepEqual(await client.ask({ n: 1 }), { by: 'solo' });
    await r.server.close(0);
    await waitFor(() => sub.load === undefined, { what: 'the report to be dropped with the connection' });
  });
});

describe('load picker settings', () => {
  test('load picker settings - usesLoad; loadReportMs defaults to 1000 and must be >= 100', async () => {
    assert.equal(load.usesLoad, true);
    assert.equal(loadReportMsOf({}), 1000);
    assert.equal(loadReportMsOf({ config: { loadReportMs: 250 } }), 250);
    assert.throws(() => load.validate!({ config: { loadReportMs: 50 } }), (e: SkeinError) => e.code === 'SKEIN_ERR_INVALID_OPTIONS' && /loadReportMs/.test(e.message));
    assert.throws(() => connect(Who, { discovery: 'static://127.0.0.1:1', balancer: 'load', balancerConfig: { loadReportMs: 'often' } }), (e: SkeinError) => e.code === 'SKEIN_ERR_INVALID_OPTIONS');
  });

  test(`load picker settings - a report is stale after ${STALE_REPORTS} intervals unless maxAgeMs says otherwise`, () => {
    const now = 1_000_000;
    // a: busy, fresh; b: idle, 700 ms old.
    const subs = () => [new MockSubchannel('a', { load: { cpu: 0.9, at: now - 100 } }), new MockSubchannel('b', { load: { cpu: 0.05, at: now - 700 } })];
    const build = (config: Record<string, unknown>) => load.build(subs(), { config: { random: seededRandom(3), now: () => now, ...config } }, undefined) as LoadPicker;
    // Interval 200 ms: b's report (> 600 ms) is stale, b gets a's weight: an even spread.
    const stale = countPicks(build({ loadReportMs: 200 }), 2000);
    assert.ok(Math.abs(stale.get('a')! - stale.get('b')!) < 200, JSON.stringify([...stale]));
    // Interval 1000 ms (the default): both fresh, b (idle) is preferred.
    const fresh = countPicks(build({}), 2000);
    assert.ok(fresh.get('b')! > fresh.get('a')! * 3, JSON.stringify([...fresh]));
    // An explicit maxAgeMs wins.
    const explicit = countPicks(build({ loadReportMs: 200, maxAgeMs: 5000 }), 2000);
    assert.ok(explicit.get('b')! > explicit.get('a')! * 3, JSON.stringify([...explicit]));
  });
});
