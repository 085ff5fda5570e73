/**
 * Issue 4, item 10: kill -9 of a replica under load, with the DEFAULT client chain.
 *
 * Three replicas of `Kv` run as child processes (fixtures/kv-replica.ts); each reports every
 * execution (`get <id>`, `put <id>`) on its stdout before replying. A discovery client
 * (`static://` of the three) drives a steady load of idempotent `get`s and non-idempotent
 * `put`s, one replica is SIGKILLed, and the load goes on. Then, counted on the replicas:
 *   - every idempotent call succeeded (the ones cut off by the kill were retried elsewhere);
 *   - no `put` executed twice, and every `put` that succeeded executed exactly once.
 *
 * Tests 1 and 2 keep at most 4 calls in flight, below the breaker's consecutiveFailures (5);
 * test 1 also makes the victim hold a get and a put until the kill (round-robin picker), so
 * calls of both kinds are certainly cut off by it, and checks what became of those.
 *
 * Test 3 holds 6 calls on the victim: more than the breaker's consecutiveFailures. Each
 * fails at once with SKEIN_ERR_CONNECTION_LOST when it dies; the service-wide breaker of
 * the default chain must not count that one transport event as failures of the SERVICE
 * (it did once: one replica's crash then failed every call to the healthy two for 5 s).
 * The children are killed in cleanup whatever happens (and on process exit as a last resort).
 * No timing assertion; every wait is bounded.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { connect, ErrorCode } from '../../src/index.js';
import { BREAKER_CHANNEL, RETRY_CHANNEL, type BreakerEvent, type RetryEvent } from '../../src/resilience/index.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { Cleanup } from '../integration/_harness.js';
import { Journal, Load, subscribe } from './_load.js';
import { Kv } from './fixtures/kv.js';

const SCRIPT = fileURLToPath(new URL('./fixtures/kv-replica.js', import.meta.url));

/** Every child started by this file: killed on exit even if cleanup never ran. */
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** One replica process: its address, its executions (from stdout), and ways to end it. */
class Replica {
  readonly executed: Array<{ kind: 'get' | 'put'; id: string }> = [];
  address = '';
  /** `executed.length` when the replica said `held` (executions from there on never reply). */
  heldFrom: number | undefined;
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  readonly #stdoutDone: Promise<void>;

  constructor() {
    this.#child = spawn(process.execPath, [SCRIPT], { stdio: ['pipe', 'pipe', 'inherit'] });
    children.add(this.#child);
    this.#exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
    void this.#exited.then(() => children.delete(this.#child));
    const rl = createInterface({ input: this.#child.stdout! });
    this.#stdoutDone = new Promise<void>((resolve) => rl.once('close', () => resolve()));
    rl.on('line', (line) => {
      const [kind, rest] = [line.slice(0, line.indexOf(' ')), line.slice(line.indexOf(' ') + 1)];
      if (line === 'held') this.heldFrom = this.executed.length;
      else if (kind === 'ready') this.address = rest;
      else if (kind === 'get' || kind === 'put') this.executed.push({ kind, id: rest });
    });
  }

  get pid(): number {
    return this.#child.pid!;
  }

  get exited(): boolean {
    return this.#child.exitCode !== null || this.#child.signalCode !== null;
  }

  async ready(): Promise<void> {
    await waitFor(() => this.address !== '' || this.exited, { what: 'the replica to be ready', timeoutMs: 10_000 });
    if (this.address === '') throw new Error('the replica exited before it was ready');
  }

  /** From now on its handlers report their execution and never reply (bounded wait for the ack). */
  async hold(): Promise<void> {
    this.#child.stdin!.write('hold\n');
    await waitFor(() => this.heldFrom !== undefined, { what: 'the replica to hold its calls' });
  }

  /** Executions that started after hold() (in flight until the process dies). */
  get held(): Array<{ kind: 'get' | 'put'; id: string }> {
    return this.heldFrom === undefined ? [] : this.executed.slice(this.heldFrom);
  }

  /** kill -9, then wait (bounded) until it is gone and all it wrote has been read. */
  async kill9(): Promise<void> {
    if (!this.exited) this.#child.kill('SIGKILL');
    await withTimeout(Promise.all([this.#exited, this.#stdoutDone]), 5000, `replica ${this.pid} to die`);
  }

  /** A clean stop (stdin ends: the replica closes and exits), then everything it wrote is read. */
  async stop(): Promise<void> {
    if (!this.exited) this.#child.stdin!.end();
    try {
      await withTimeout(Promise.all([this.#exited, this.#stdoutDone]), 5000, `replica ${this.pid} to stop`);
    } catch (err) {
      await this.kill9();
      throw err;
    }
  }
}

const cleanup = new Cleanup();
after(() => cleanup.run());

interface Outcome {
  kind: 'get' | 'put';
  ok: boolean;
  code: string | undefined;
}

interface KillOptions {
  /** Workers of the load. */
  workers: number;
  /** Calls each worker makes at once (alternating gets and puts). */
  perWorker: number;
  /** The channel's picker (the default is p2c-ewma). */
  balancer?: string;
  /**
   * Before the kill, make the victim hold its calls until it has at least this many gets and
   * puts in flight (executed, never answered): the kill then certainly cuts them off.
   */
  hold?: { gets: number; puts: number };
}

/**
 * Three replicas, a default-chain discovery client and a load of gets and puts; kill -9 one
 * replica once every replica has served 20 calls; 200 more calls; then stop everything and
 * check what the replicas executed against what the client saw.
 */
async function killUnderLoad(o: KillOptions): Promise<void> {
  const replicas = [new Replica(), new Replica(), new Replica()];
  for (const r of replicas) cleanup.add(() => r.kill9());
  await Promise.all(replicas.map((r) => r.ready()));

  const breakerEvents: BreakerEvent[] = [];
  const retryEvents: RetryEvent[] = [];
  cleanup.add(subscribe<BreakerEvent>(BREAKER_CHANNEL, (e) => void (e.key === Kv.name && breakerEvents.push(e))));
  cleanup.add(subscribe<RetryEvent>(RETRY_CHANNEL, (e) => void (e.service === Kv.name && retryEvents.push(e))));

  // The default chain: no `resilience` option at all.
  const client = connect(Kv, { discovery: `static://${replicas.map((r) => r.address).join(',')}`, timeout: 5000, ...(o.balancer !== undefined ? { balancer: o.balancer } : {}) });
  cleanup.add(() => client.close());
  await client.ready({ timeout: 5000 });
  await waitFor(() => client.channel.readySubchannels.length === 3, { what: 'three ready replicas' });

  // Handlers take 10 ms, so that calls are in flight on the replica when it is killed.
  const journal = new Journal();
  const outcomes = new Map<string, Outcome>();
  let n = 0;
  const one = async (id: string): Promise<void> => {
    const kind = n++ % 2 === 0 ? 'get' : 'put';
    const key = `${kind}-${id}`;
    try {
      await (kind === 'get' ? client.get({ id: key, ms: 10 }) : client.put({ id: key, ms: 10 }));
      outcomes.set(key, { kind, ok: true, code: undefined });
    } catch (err) {
      outcomes.set(key, { kind, ok: false, code: (err as { code?: string }).code });
    }
  };
  const load = new Load(journal, (id) => Promise.all(Array.from({ length: o.perWorker }, (_, k) => one(`${id}.${k}`))), { workers: o.workers, paceMs: 2 }).start();
  cleanup.add(() => load.stop());

  const victim = replicas[2]!;
  await waitFor(() => replicas.every((r) => r.executed.length >= 20), { what: 'load on every replica' });
  if (o.hold !== undefined) {
    const { gets: g, puts: p } = o.hold;
    await victim.hold();
    const count = (kind: string) => victim.held.filter((e) => e.kind === kind).length;
    await waitFor(() => count('get') >= g && count('put') >= p, { what: `${g} gets and ${p} puts held by the victim`, timeoutMs: 3000 });
  }
  const killedAt = journal.tick();
  await victim.kill9();
  await load.until(() => load.since(killedAt).length * o.perWorker >= 200, '200 calls after the kill', 8000);
  await load.stop();
  // Everything the survivors wrote has been read once they have stopped.
  await Promise.all(replicas.slice(0, 2).map((r) => r.stop()));

  const breakerNote = breakerEvents.length > 0 ? `; breaker: ${breakerEvents.map((e) => `${e.to}:${e.reason}`).join(', ')}` : '';
  const cutOff = retryEvents.filter((e) => e.code === ErrorCode.CONNECTION_LOST).length;
  const context = `(${outcomes.size} calls, ${cutOff} gets cut off by the kill and retried${breakerNote})`;

  // Every idempotent call succeeded, those cut off by the kill included.
  const gets = [...outcomes].filter(([, x]) => x.kind === 'get');
  const failedGets = gets.filter(([, x]) => !x.ok);
  assert.ok(gets.length >= 100);
  assert.deepEqual(failedGets.slice(0, 5), [], `${failedGets.length} of ${gets.length} idempotent calls failed ${context}`);

  // Counted on the replicas: no put twice; each successful put exactly once.
  const execs = new Map<string, number>();
  for (const r of replicas) for (const e of r.executed) if (e.kind === 'put') execs.set(e.id, (execs.get(e.id) ?? 0) + 1);
  assert.deepEqual([...execs].filter(([, k]) => k > 1), [], 'puts executed more than once');
  for (const [id, x] of outcomes) {
    if (x.kind !== 'put') continue;
    const k = execs.get(id) ?? 0;
    if (x.ok) assert.equal(k, 1, `${id} succeeded but executed ${k} times`);
    else assert.ok(k <= 1, `${id} failed (${x.code}) and executed ${k} times`);
  }
  // Every put the replicas executed was one the client made (nothing invented or replayed).
  for (const id of execs.keys()) assert.ok(outcomes.get(id)?.kind === 'put', `unknown put ${id}`);
  // The kill happened under load: the victim had served calls, the survivors went on.
  assert.ok(victim.executed.length >= 20);
  assert.ok(replicas.slice(0, 2).every((r) => r.executed.length > 20));

  if (o.hold !== undefined) {
    // The calls certainly in flight on the victim when it died (executed there, never answered):
    const survivors = replicas.slice(0, 2).flatMap((r) => r.executed);
    for (const h of victim.held) {
      const x = outcomes.get(h.id);
      assert.ok(x !== undefined, `${h.id} has an outcome`);
      if (h.kind === 'get') {
        // an idempotent one was retried on a survivor and succeeded;
        assert.ok(x.ok, `${h.id}, cut off by the kill, failed: ${x.code}`);
        assert.ok(survivors.some((e) => e.id === h.id), `${h.id} was retried on a survivor`);
      } else {
        // a non-idempotent one failed (its handler may have run) and was never sent again.
        assert.equal(x.ok, false, `${h.id}, cut off by the kill, succeeded`);
        assert.equal(x.code, ErrorCode.CONNECTION_LOST);
        assert.ok(!survivors.some((e) => e.id === h.id), `${h.id} was not sent again`);
      }
    }
  }
}

describe('kill -9 of a replica under load (default client chain)', () => {
  it('kill9 - calls of both kinds cut off: every idempotent call succeeds; every non-idempotent call executes at most once (exactly once when it succeeded)', async () => {
    // 4 calls in flight at most: the kill fails at most 4 at once, below the breaker's default
    // consecutiveFailures (5) — see the known bug below. Round-robin keeps sending every third
    // call to the held victim (a latency-aware picker would avoid it), so a get and a put are
    // soon held there, and certainly in flight when it dies.
    await killUnderLoad({ workers: 4, perWorker: 1, balancer: 'round-robin', hold: { gets: 1, puts: 1 } });
  });

  it('kill9 - the same with the default picker and no hold (at most 4 calls in flight)', async () => {
    await killUnderLoad({ workers: 4, perWorker: 1 });
  });

  // Regression: the breaker once counted these lost calls as consecutive service failures.
  it(
    'kill9 - 6 calls in flight on the victim: every idempotent call succeeds; the service-wide breaker does not open on one replica\'s lost connection',
    async () => {
      await killUnderLoad({ workers: 8, perWorker: 1, balancer: 'round-robin', hold: { gets: 3, puts: 3 } });
    },
  );
});
