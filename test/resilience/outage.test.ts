/**
 * Issue 4, item 10: every replica down, then back, under a steady load through a discovery
 * client with the DEFAULT client chain (retry → breaker; only the open time is shortened).
 *
 * Three real servers on 127.0.0.1, each behind its own fault proxy; the client lists the
 * three proxies (`static://`). What the clients sent, what the servers received and what
 * the breaker decided are written to one journal (all in this process, so its order is the
 * event loop's order), and the assertions are made on that record:
 *
 *   - the handlers answer UNAVAILABLE (a switch): the breaker opens, calls fail fast with
 *     SKEIN_ERR_CIRCUIT_OPEN, nothing is sent while it is open (and the servers receive
 *     nothing sent after it opened), the retries stay within the budget (counted on the
 *     servers), and once the replicas answer again a half-open probe closes the circuit;
 *   - the proxies stall (calls reach their deadline): the breaker opens on
 *     DEADLINE_EXCEEDED, nothing is sent while it is open, and a probe recovers;
 *   - the processes are gone (the proxies refuse connections): calls fail fast with
 *     SKEIN_ERR_NOT_READY (never a deadline: nothing hangs), and traffic recovers when the
 *     replicas are back.
 *
 * No upper-bound timing assertion; every wait is bounded.
 */
import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import { connect, ErrorCode, implement, SkeinError, service, unary, type ChannelClient, type ClientInterceptor } from '../../src/index.js';
import { BREAKER_CHANNEL, RETRY_CHANNEL, type BreakerEvent, type RetryEvent } from '../../src/resilience/index.js';
import { ConnectivityState } from '../../src/session/connectivity.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { waitFor } from '../helpers/wait.js';
import { Cleanup } from '../integration/_harness.js';
import { describeErrors, Journal, Load, subscribe } from './_load.js';

const Store = service('outage-store', {
  /** Idempotent read: retried on UNAVAILABLE by the default chain. */
  get: unary<{ id: string }, { id: string; by: string }>({ idempotent: true }),
});
type StoreMethods = (typeof Store)['methods'];

const WORKERS = 4;
/** The client's call timeout (ms): short, so a stalled call ends soon. */
const CALL_TIMEOUT_MS = 1000;

interface Arrival {
  /** The attempt's sequence number (x-seq, set by the client's innermost interceptor). */
  seq: number;
  server: string;
  pos: number;
}

interface Sent {
  seq: number;
  pos: number;
  /** The breaker's state as its last event said when the attempt was sent. */
  breaker: string;
}

interface Rig {
  journal: Journal;
  proxies: FaultProxy[];
  /** The handlers' switch: true = answer UNAVAILABLE. */
  state: { down: boolean };
  arrivals: Arrival[];
  sends: Sent[];
  breakerEvents: Array<BreakerEvent & { pos: number }>;
  retryEvents: Array<RetryEvent & { pos: number }>;
  client: ChannelClient<StoreMethods>;
  load: Load;
  /** Date.now() when the client (and its retry budget) was made. */
  createdAt: number;
}

let cleanup = new Cleanup();
afterEach(async () => {
  const c = cleanup;
  cleanup = new Cleanup();
  await c.run();
});
after(() => cleanup.run());

/** Three servers behind three proxies, a default-chain discovery client, and a running load. */
async function rig(): Promise<Rig> {
  const journal = new Journal();
  const state = { down: false };
  const arrivals: Arrival[] = [];
  const sends: Sent[] = [];
  const breakerEvents: Rig['breakerEvents'] = [];
  const retryEvents: Rig['retryEvents'] = [];
  let breakerState = 'closed';
  cleanup.add(
    subscribe<BreakerEvent>(BREAKER_CHANNEL, (e) => {
      if (e.key !== Store.name) return;
      breakerState = e.to;
      breakerEvents.push({ ...e, pos: journal.tick() });
    }),
  );
  cleanup.add(
    subscribe<RetryEvent>(RETRY_CHANNEL, (e) => {
      if (e.service === Store.name) retryEvents.push({ ...e, pos: journal.tick() });
    }),
  );

  const proxies: FaultProxy[] = [];
  for (const name of ['a', 'b', 'c']) {
    const server = cleanup.server().add(
      implement(Store, {
        get({ id }, ctx) {
          arrivals.push({ seq: Number(String(ctx.metadata['x-seq'])), server: name, pos: journal.tick() });
          if (state.down) throw new SkeinError('UNAVAILABLE', `${name} down on purpose`);
          return { id, by: name };
        },
      }),
    );
    const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
    const proxy = await startFaultProxy({ target: `127.0.0.1:${port}` });
    cleanup.add(() => proxy.close());
    proxies.push(proxy);
  }

  // The innermost interceptor (user interceptors go inside the default chain): it sees every
  // attempt the breaker let through, and numbers it for the servers.
  let seq = 0;
  const tag: ClientInterceptor = (next) => (call) => {
    const n = ++seq;
    sends.push({ seq: n, pos: journal.tick(), breaker: breakerState });
    return next({ ...call, options: { ...call.options, metadata: { ...call.options.metadata, 'x-seq': String(n) } } });
  };
  const createdAt = Date.now();
  const client = connect(Store, {
    discovery: `static://${proxies.map((p) => p.address).join(',')}`,
    timeout: CALL_TIMEOUT_MS,
    // Reconnect soon after the replicas come back (the connection's own backoff, not the chain).
    backoff: { initialMs: 50, maxMs: 250 },
    // The default chain (retry → breaker, default budget), with a short open time.
    resilience: { breaker: { openMs: 300, maxOpenMs: 600 } },
    interceptors: [tag],
  });
  cleanup.add(() => client.close());
  await client.ready({ timeout: 5000 });
  await waitFor(() => client.channel.readySubchannels.length === 3, { what: 'three ready replicas' });

  const load = new Load(journal, (id) => client.get({ id }), { workers: WORKERS, paceMs: 5 }).start();
  cleanup.add(() => load.stop()); // runs first (cleanup runs in reverse)
  await load.until(() => load.results.filter((r) => r.ok).length >= 30, 'healthy traffic');
  return { journal, proxies, state, arrivals, sends, breakerEvents, retryEvents, client, load, createdAt };
}

/** Position of the first breaker event after `pos` going to `to` (waits for it, bounded). */
async function breakerEvent(r: Rig, pos: number, pred: (e: BreakerEvent) => boolean, what: string, ms = 5000): Promise<number> {
  const find = () => r.breakerEvents.find((e) => e.pos > pos && pred(e));
  await waitFor(() => find() !== undefined, { what, timeoutMs: ms });
  return find()!.pos;
}

/** The breaker's path is connected: each event leaves the state the previous one entered. */
function assertBreakerPath(events: readonly BreakerEvent[]): void {
  let at = 'closed';
  for (const e of events) {
    assert.equal(e.from, at, `breaker event ${e.from} → ${e.to} after ${at}`);
    at = e.to;
  }
}

/** The "open" intervals of the journal: [open event, next half-open event (or end)). */
function openIntervals(r: Rig): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let i = 0; i < r.breakerEvents.length; i++) {
    const e = r.breakerEvents[i]!;
    if (e.to !== 'open') continue;
    const next = r.breakerEvents.slice(i + 1).find((x) => x.to !== 'open');
    out.push([e.pos, next?.pos ?? Infinity]);
  }
  return out;
}

/**
 * While the circuit is open nothing is sent, and the servers receive nothing that was sent
 * after it opened (only attempts already in flight may still arrive).
 */
function assertNothingSentWhileOpen(r: Rig): void {
  const leaked = r.sends.filter((s) => s.breaker === 'open');
  assert.deepEqual(leaked, [], 'attempts sent while the breaker was open');
  const sentAt = new Map(r.sends.map((s) => [s.seq, s.pos]));
  for (const [from, to] of openIntervals(r)) {
    const late = r.arrivals.filter((a) => a.pos > from && a.pos < to && (sentAt.get(a.seq) ?? Infinity) > from);
    assert.deepEqual(late, [], `the servers received attempts sent after the circuit opened (open at ${from})`);
  }
}

describe('all replicas down, then back (default client chain)', () => {
  it('outage - handlers answer UNAVAILABLE: the breaker opens and fails fast, retries stay within the budget, a half-open probe recovers', async () => {
    const r = await rig();
    const downAt = r.journal.tick();
    r.state.down = true;

    // (a) The breaker opens; every worker then gets the fail-fast error.
    const openAt = await breakerEvent(r, downAt, (e) => e.to === 'open', 'the breaker to open');
    await r.load.until(() => new Set(r.load.since(openAt).filter((x) => x.err?.code === ErrorCode.CIRCUIT_OPEN).map((x) => x.worker)).size === WORKERS, 'every worker to fail fast');
    // A probe while the replicas are still down fails and re-opens the circuit.
    await breakerEvent(r, openAt, (e) => e.reason === 'probe-failed', 'a failed half-open probe');

    // (c) The replicas come back: a probe closes the circuit, then calls succeed.
    const upAt = r.journal.tick();
    r.state.down = false;
    const closedAt = await breakerEvent(r, upAt, (e) => e.to === 'closed', 'the breaker to close');
    await r.load.until(() => r.load.since(closedAt).length >= 30, '30 calls after the circuit closed');
    await r.load.stop();
    const elapsedS = (Date.now() - r.createdAt) / 1000;

    // (a) fail fast with SKEIN_ERR_CIRCUIT_OPEN; nothing sent, nothing new received, while open.
    const fastFails = r.load.results.filter((x) => x.err?.code === ErrorCode.CIRCUIT_OPEN);
    assert.ok(fastFails.length >= WORKERS, `${fastFails.length} calls failed fast`);
    for (const x of fastFails) {
      assert.equal(x.err!.statusName, 'UNAVAILABLE');
      assert.match(x.err!.message, /circuit open for outage-store/);
    }
    const outage = r.load.results.filter((x) => x.startedAt > downAt && x.endedAt < upAt);
    for (const x of outage) {
      assert.ok(x.err?.code === ErrorCode.CIRCUIT_OPEN || x.err?.statusName === 'UNAVAILABLE', `${x.id} during the outage: ${x.ok ? 'ok' : `${x.err?.code}: ${x.err?.message}`}`);
    }
    assertNothingSentWhileOpen(r);

    // (b) the budget: attempts counted on the servers ≤ calls + 20 % of calls + 10/s.
    const calls = r.load.started;
    const attempts = r.arrivals.length;
    const bound = calls + 0.2 * calls + 10 * (elapsedS + 1);
    assert.ok(attempts <= bound, `${attempts} attempts on the servers for ${calls} calls in ${elapsedS}s (bound ${bound})`);
    // The same bound on the client's retries (those to the servers, and those of fail-fast
    // refusals, which also draw from the budget): the budget was the limit, it ran out.
    const retries = r.retryEvents.filter((e) => e.reason !== 'budget-exhausted');
    assert.ok(retries.length <= 0.2 * calls + 10 * (elapsedS + 1), `${retries.length} retries for ${calls} calls in ${elapsedS}s`);
    assert.ok(retries.some((e) => e.reason === 'status'), 'UNAVAILABLE answers of the idempotent method were retried');
    assert.ok(r.retryEvents.some((e) => e.reason === 'budget-exhausted'), 'the budget refused retries');
    // Every attempt the client sent reached a server (nothing was lost on the way).
    assert.equal(attempts, r.sends.length);

    // (c) open → (half-open → open)* → half-open → closed; then every call succeeds.
    assertBreakerPath(r.breakerEvents);
    const path = r.breakerEvents.map((e) => `${e.to}:${e.reason}`);
    assert.equal(path[0], 'open:consecutive-failures', path.join(', '));
    assert.deepEqual(path.slice(-2), ['half-open:open-elapsed', 'closed:probe-succeeded'], path.join(', '));
    const recovered = r.load.since(closedAt);
    assert.ok(recovered.length >= 30);
    assert.equal(recovered.filter((x) => !x.ok).length, 0, `calls failed after recovery: ${describeErrors(recovered)}`);
    assert.ok(r.arrivals.filter((a) => a.pos > closedAt).length >= recovered.length, 'the servers served the calls after recovery');
  });

  it('outage - proxies stall so calls reach their deadline: the breaker opens on DEADLINE_EXCEEDED, sends nothing while open, and a probe recovers', async () => {
    const r = await rig();
    const downAt = r.journal.tick();
    for (const p of r.proxies) p.stall(true);

    const openAt = await breakerEvent(r, downAt, (e) => e.to === 'open', 'the breaker to open', 4 * CALL_TIMEOUT_MS + 5000);
    await r.load.until(() => r.load.since(openAt).filter((x) => x.err?.code === ErrorCode.CIRCUIT_OPEN).length >= WORKERS, 'calls to fail fast', 5000);

    const upAt = r.journal.tick();
    for (const p of r.proxies) p.stall(false);
    const closedAt = await breakerEvent(r, upAt, (e) => e.to === 'closed', 'the breaker to close', 5000);
    await r.load.until(() => r.load.since(closedAt).length >= 20, '20 calls after the circuit closed');
    await r.load.stop();

    const timedOut = r.load.results.filter((x) => x.startedAt > downAt && x.err?.statusName === 'DEADLINE_EXCEEDED');
    assert.ok(timedOut.length >= 1, 'stalled calls reached their deadline');
    const fastFails = r.load.results.filter((x) => x.startedAt > openAt && x.err?.code === ErrorCode.CIRCUIT_OPEN);
    assert.ok(fastFails.length >= WORKERS, `${fastFails.length} calls failed fast`);
    // Nothing was sent while the circuit was open. (No count on the servers here: the stalled
    // proxies deliver what they held, late, once released.)
    assert.deepEqual(
      r.sends.filter((s) => s.breaker === 'open'),
      [],
      'attempts sent while the breaker was open',
    );
    assertBreakerPath(r.breakerEvents);
    const path = r.breakerEvents.map((e) => `${e.to}:${e.reason}`);
    assert.equal(path[0], 'open:consecutive-failures', path.join(', '));
    assert.deepEqual(path.slice(-2), ['half-open:open-elapsed', 'closed:probe-succeeded'], path.join(', '));
    const recovered = r.load.since(closedAt);
    assert.equal(recovered.filter((x) => !x.ok).length, 0, `calls failed after recovery: ${describeErrors(recovered)}`);
  });

  it('outage - the processes are gone (proxies refuse connections): calls fail fast with NOT_READY, never hang, and recover when they return', async () => {
    const r = await rig();
    const downAt = r.journal.tick();
    for (const p of r.proxies) {
      p.refuse(true);
      p.cutAll();
    }
    await waitFor(() => r.client.channel.readySubchannels.length === 0, { what: 'no ready replica' });
    const goneAt = r.journal.tick();
    await r.load.until(() => r.load.since(goneAt).filter((x) => x.err?.code === ErrorCode.NOT_READY).length >= 20, '20 calls to fail with NOT_READY');

    const upAt = r.journal.tick();
    for (const p of r.proxies) p.refuse(false);
    await waitFor(() => r.client.channel.state === ConnectivityState.READY, { what: 'the channel to be ready again' });
    const firstOk = () => r.load.since(upAt).find((x) => x.ok);
    await r.load.until(() => firstOk() !== undefined && r.load.since(firstOk()!.endedAt).length >= 20, '20 calls after the first success');
    await r.load.stop();

    // While gone: every call failed fast — NOT_READY (no connection; the breaker ignores it),
    // or CIRCUIT_OPEN if the calls cut off in flight opened the circuit — never a deadline.
    const gone = r.load.results.filter((x) => x.startedAt > goneAt && x.endedAt < upAt);
    assert.ok(gone.length >= 20);
    for (const x of gone) {
      assert.ok(!x.ok, `${x.id} succeeded with every replica gone`);
      assert.ok(x.err!.code === ErrorCode.NOT_READY || x.err!.code === ErrorCode.CIRCUIT_OPEN, `${x.id} while gone: ${x.err!.code}: ${x.err!.message}`);
    }
    assert.equal(r.load.results.filter((x) => x.startedAt > downAt && x.err?.statusName === 'DEADLINE_EXCEEDED').length, 0, 'no call hung until its deadline');
    // Nothing reached a server while the proxies refused.
    assert.equal(r.arrivals.filter((a) => a.pos > goneAt && a.pos < upAt).length, 0);
    assert.ok(r.proxies.every((p) => p.connections > 1), 'the client kept redialing');

    // Back: after the first success every call succeeds.
    const recovered = r.load.since(firstOk()!.endedAt);
    assert.ok(recovered.length >= 20);
    assert.equal(recovered.filter((x) => !x.ok).length, 0, `calls failed after the replicas returned: ${describeErrors(recovered)}`);
  });
});
