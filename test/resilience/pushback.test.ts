/**
 * Issue 4, item 10: a rate-limited caller, and a client that waits the server's retry-after.
 *
 * A server with `createServer({ resilience: { rateLimit: { perCaller } } })` (the default
 * server chain plus a per-caller token bucket) and a client with the DEFAULT chain (no retry
 * settings). A burst beyond the bucket is refused with RESOURCE_EXHAUSTED + `retry-after-ms`;
 * the default retry sends each refused attempt again, for any method (no handler ran), after
 * at least that long:
 *   - every 'pushback' event on `skein:resilience:retry` waits (delayMs) at least the
 *     retry-after of the refusal it follows;
 *   - on the server, each retry arrives at least retry-after after the refusal it follows;
 *   - a non-idempotent call refused by the limiter runs exactly once when it succeeds in the
 *     end, never when it was still refused.
 * With `resilience: false` the caller gets the refusal itself, with the trailer.
 *
 * Server-side arrival times are taken in the limiter's `callerKey` hook (called for every
 * arriving call, before its bucket is checked), with `performance.now()`: the clients and
 * the server share this process, so the times are comparable. Lower bounds only.
 */
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { performance } from 'node:perf_hooks';
import { after, afterEach, describe, it } from 'node:test';
import { implement, isSkeinError, service, unary, type CallContext, type ClientInterceptor, type SkeinError } from '../../src/index.js';
import { defaultCallerKey, RETRY_CHANNEL, type RetryEvent } from '../../src/resilience/index.js';
import { withTimeout } from '../helpers/wait.js';
import { Cleanup, rejection } from '../integration/_harness.js';
import { subscribe } from './_load.js';

const Api = service('pushback-api', {
  get: unary<{ id: string }, { id: string }>({ idempotent: true }),
  /** Not idempotent: each execution is counted per id. */
  put: unary<{ id: string }, { id: string }>(),
});

/** The bucket: 10 calls/s (one token every 100 ms), 3 at once. */
const RATE = 10;
const BURST = 3;
/**
 * Node's timers have a 1 ms resolution (libuv's loop clock is whole milliseconds): a wait of
 * N ms may end up to 1 ms short of N measured with `performance.now()`.
 */
const TIMER_SLACK_MS = 1;

let cleanup = new Cleanup();
afterEach(async () => {
  const c = cleanup;
  cleanup = new Cleanup();
  await c.run();
});
after(() => cleanup.run());

/** One attempt as the server and the client saw it. */
interface Attempt {
  /** performance.now() when it reached the server's limiter. */
  arrivedAt?: number;
  /** The refusal's retry-after (ms), when it was refused. */
  retryAfterMs?: number;
  ok?: boolean;
}

/** What one test saw: attempts per call id (index = attempt − 1), executions per id. */
class Record {
  readonly attempts = new Map<string, Attempt[]>();
  readonly executed = new Map<string, number>();
  readonly retryEvents: Array<RetryEvent & { call: string | undefined }> = [];

  attempt(call: string, n: number): Attempt {
    let list = this.attempts.get(call);
    if (list === undefined) this.attempts.set(call, (list = []));
    return (list[n - 1] ??= {});
  }
}

/** The call id of the caller's async context (set around each call: retry events carry none). */
const callId = new AsyncLocalStorage<string>();

async function start(rec: Record, clientResilience: false | undefined, rate = RATE) {
  const server = cleanup.server({
    resilience: {
      rateLimit: {
        perCaller: { rate, burst: BURST },
        // Called for every arriving call before its bucket is checked: the arrival time.
        callerKey: (ctx: CallContext) => {
          const call = String(ctx.metadata['x-call']);
          rec.attempt(call, Number(String(ctx.metadata['x-attempt']))).arrivedAt = performance.now();
          return defaultCallerKey(ctx);
        },
      },
    },
  });
  server.add(
    implement(Api, {
      get: ({ id }) => ({ id }),
      put: ({ id }) => {
        rec.executed.set(id, (rec.executed.get(id) ?? 0) + 1);
        return { id };
      },
    }),
  );
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });

  // Innermost (inside the default chain): numbers each attempt of a call, and notes how it ended.
  const tag: ClientInterceptor = (next) => async (call) => {
    const id = String(call.options.metadata?.['x-call']);
    const n = (rec.attempts.get(id) ?? []).length + 1;
    const a = rec.attempt(id, n);
    try {
      const reply = await next({ ...call, options: { ...call.options, metadata: { ...call.options.metadata, 'x-attempt': String(n) } } });
      a.ok = true;
      return reply;
    } catch (err) {
      a.ok = false;
      const ra = isSkeinError(err) ? err.metadata['retry-after-ms'] : undefined;
      if (ra !== undefined) a.retryAfterMs = Number(String(ra));
      throw err;
    }
  };
  cleanup.add(
    subscribe<RetryEvent>(RETRY_CHANNEL, (e) => {
      if (e.service === Api.name) rec.retryEvents.push({ ...e, call: callId.getStore() });
    }),
  );
  const client = cleanup.client(Api, { target: `127.0.0.1:${port}`, timeout: 5000, interceptors: [tag], ...(clientResilience === false ? { resilience: false as const } : {}) });
  await client.ready({ timeout: 5000 });
  return client;
}

type Outcome = { id: string; ok: true } | { id: string; ok: false; err: SkeinError };

describe('rate-limited caller: the default client chain waits the retry-after', () => {
  it('pushback - a burst of non-idempotent calls beyond the limit: retried after at least the retry-after, each run exactly once (never when still refused)', async () => {
    const rec = new Record();
    const client = await start(rec, undefined);
    const N = 10;
    const ids = Array.from({ length: N }, (_, i) => `p${i}`);
    const outcomes: Outcome[] = await withTimeout(
      Promise.all(
        ids.map((id) =>
          callId.run(id, () =>
            client.put({ id }, { metadata: { 'x-call': id } }).then(
              (): Outcome => ({ id, ok: true }),
              (err: SkeinError): Outcome => ({ id, ok: false, err }),
            ),
          ),
        ),
      ),
      10_000,
      'the burst',
    );

    // The limiter refused part of the burst, and refused attempts were retried.
    const refused = [...rec.attempts.values()].flat().filter((a) => a.retryAfterMs !== undefined);
    assert.ok(refused.length >= 1, 'the limiter refused part of the burst');
    const pushbacks = rec.retryEvents.filter((e) => e.reason === 'pushback');
    assert.ok(pushbacks.length >= 1, 'refused attempts were retried');
    assert.deepEqual(
      rec.retryEvents.filter((e) => e.reason !== 'pushback' && e.reason !== 'budget-exhausted'),
      [],
      'no other kind of retry',
    );

    // Client side: each pushback retry waited at least the refusal's retry-after.
    for (const e of pushbacks) {
      assert.ok(e.call !== undefined, 'the event belongs to a call');
      const failed = rec.attempts.get(e.call)![e.attempt - 1]!;
      assert.ok(failed.retryAfterMs !== undefined && failed.retryAfterMs > 0, `${e.call} attempt ${e.attempt} was refused with a retry-after`);
      assert.ok(e.delayMs >= failed.retryAfterMs, `${e.call}: waited ${e.delayMs} ms after a retry-after of ${failed.retryAfterMs} ms`);
    }

    // Server side: each retry arrived at least retry-after after the refusal it follows.
    let retriesSeen = 0;
    for (const [id, list] of rec.attempts) {
      for (let i = 1; i < list.length; i++) {
        const prev = list[i - 1]!;
        const cur = list[i]!;
        assert.ok(prev.retryAfterMs !== undefined, `${id}: attempt ${i + 1} follows a refusal`);
        assert.ok(prev.arrivedAt !== undefined && cur.arrivedAt !== undefined, `${id}: both attempts reached the server`);
        const gap = cur.arrivedAt - prev.arrivedAt;
        assert.ok(gap >= prev.retryAfterMs - TIMER_SLACK_MS, `${id}: attempt ${i + 1} arrived ${gap.toFixed(2)} ms after a refusal with retry-after ${prev.retryAfterMs} ms`);
        retriesSeen++;
      }
    }
    assert.equal(retriesSeen, pushbacks.length, 'every retry reached the server');

    // Exactly once when it succeeded, never when it was still refused.
    for (const o of outcomes) {
      const n = rec.executed.get(o.id) ?? 0;
      if (o.ok) assert.equal(n, 1, `${o.id} succeeded and ran ${n} times`);
      else {
        assert.equal(o.err.statusName, 'RESOURCE_EXHAUSTED', `${o.id}: ${o.err.code}: ${o.err.message}`);
        assert.equal(n, 0, `${o.id} was refused in the end and ran ${n} times`);
      }
    }
    // At least one call refused at first succeeded on a retry (the first retry after the
    // retry-after finds a token: only this client's retries compete for it).
    const recovered = outcomes.filter((o) => o.ok && rec.attempts.get(o.id)!.length > 1);
    assert.ok(recovered.length >= 1, 'a refused call succeeded after waiting');
    assert.ok(outcomes.filter((o) => o.ok && rec.attempts.get(o.id)!.length === 1).length >= BURST, 'the bucket admitted its burst at once');
  });

  it('pushback - with resilience: false the caller gets RESOURCE_EXHAUSTED with retry-after-ms, and nothing is retried', async () => {
    const rec = new Record();
    // A slow refill (one token per 10 s): the bucket stays empty for the whole test.
    const client = await start(rec, false, 0.1);
    for (let i = 0; i < BURST; i++) await client.put({ id: `ok${i}` }, { metadata: { 'x-call': `ok${i}` } });
    const err = await rejection(client.put({ id: 'over' }, { metadata: { 'x-call': 'over' } }));
    assert.equal(err.statusName, 'RESOURCE_EXHAUSTED');
    const trailer = err.metadata['retry-after-ms'];
    assert.equal(typeof trailer, 'string');
    const ms = Number(trailer);
    assert.ok(Number.isInteger(ms) && ms > 0, `retry-after-ms: ${String(trailer)}`);
    assert.deepEqual(err.details, { reason: 'caller-limit', retryAfterMs: ms });
    assert.equal(rec.attempts.get('over')!.length, 1, 'one attempt');
    assert.equal(rec.executed.get('over'), undefined, 'the handler did not run');
    assert.deepEqual(rec.retryEvents, []);
    // An idempotent call is not retried either.
    const err2 = await rejection(client.get({ id: 'g' }, { metadata: { 'x-call': 'g' } }));
    assert.equal(err2.statusName, 'RESOURCE_EXHAUSTED');
    assert.equal(rec.attempts.get('g')!.length, 1);
  });
});
