/**
 * Registry compliance suite: the behaviour every discovery backend WITH a registrar must
 * have (the embedded `skein://` registry, the etcd adapter), written once against the
 * interfaces of src/discovery/types.ts and run against each backend.
 *
 *   registryCompliance('etcd', async () => ({
 *     plugin: etcdDiscovery, url: new URL(`etcd://${endpoint}?prefix=/t1/`),
 *     teardown: async () => {}, simulateCrash: async (r) => (r as EtcdRegistrar).abandon(),
 *   }));
 *
 * `setup` runs once per test and must hand out an isolated namespace (a fresh key prefix, a
 * fresh registry): every test also uses service names of its own. Every registrar,
 * resolver and watch a test opens is closed after it, then `teardown` runs.
 *
 * Timing: every wait is bounded, by the contract where there is one (an owner that stops
 * keeping its lease alive is gone within TTL + 1 s) plus `slackMs` for a loaded CI machine,
 * else by `slackMs`-based bounds that only keep a broken backend from hanging the suite.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isSkeinError, type SkeinError } from '../../src/errors.js';
import type { DiscoveryPlugin, Instance, Registrar, Registration, Resolver, ResolverEvent } from '../../src/discovery/types.js';
import { withTimeout } from '../helpers/wait.js';

export interface RegistryTestSetup {
  plugin: DiscoveryPlugin;
  /** The backend's URL for this test (isolated: a prefix or a registry of its own). */
  url: URL;
  /** Runs after the test, after everything the test opened is closed. */
  teardown(): Promise<void>;
  /**
   * Make `registrar` stop keeping its leases alive WITHOUT deregistering, as if its process
   * were killed with SIGKILL: timers stopped, connections dropped, nothing more sent.
   */
  simulateCrash(registrar: Registrar): Promise<void>;
  /**
   * Make the backend drop the leases of every instance under `url` now, as expiry would,
   * while their owners go on (etcd: revoke them). The "re-register after 'lost'" test is
   * skipped without it.
   */
  expireLeases?(): Promise<void>;
  /**
   * Stop the backend and start it again with its state, at the same address. The "watch
   * survives a restart" test is skipped without it.
   */
  restart?(): Promise<void>;
  /** TTL to register with, ms (etcd grants at least 2 s with its default timings). @default 2000 */
  ttlMs?: number;
  /** Extra time granted to every bounded wait on a loaded machine, ms. @default 2000 */
  slackMs?: number;
}

const TEST_TIMEOUT_MS = 30_000;

type Change = Exclude<ResolverEvent, { type: 'snapshot' } | { type: 'error' }>;

function isChange(e: ResolverEvent): e is Change {
  return e.type === 'added' || e.type === 'updated' || e.type === 'removed';
}

function byId(a: Instance, b: Instance): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * Consumes one watch in the background, keeping every event and the view they build
 * (instances by id). Waits are event-driven and bounded.
 */
class Recorder {
  readonly events: ResolverEvent[] = [];
  readonly view = new Map<string, Instance>();
  failure: unknown;
  ended = false;
  readonly #ac: AbortController;
  readonly #done: Promise<void>;
  readonly #waiters = new Set<() => void>();

  constructor(resolver: Resolver, service: string) {
    this.#ac = new AbortController();
    const iterable = resolver.watch(service, { signal: this.#ac.signal });
    this.#done = (async () => {
      try {
        for await (const ev of iterable) {
          this.events.push(ev);
          if (ev.type === 'snapshot') {
            this.view.clear();
            for (const i of ev.instances) this.view.set(i.id, i);
          } else if (ev.type === 'added' || ev.type === 'updated') this.view.set(ev.instance.id, ev.instance);
          else if (ev.type === 'removed') this.view.delete(ev.instance.id);
          this.#notify();
        }
      } catch (err) {
        this.failure = err;
      } finally {
        this.ended = true;
        this.#notify();
      }
    })();
  }

  #notify(): void {
    for (const w of [...this.#waiters]) w();
  }

  /** Resolve once `cond()` holds (checked now and after every event), within `timeoutMs`. */
  until(cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
    let check: (() => void) | undefined;
    const met = new Promise<void>((resolve, reject) => {
      check = (): void => {
        if (this.failure !== undefined) reject(new Error(`the watch failed while waiting for ${what}: ${String(this.failure)}`));
        else if (cond()) resolve();
        else if (this.ended) reject(new Error(`the watch ended while waiting for ${what}`));
      };
      this.#waiters.add(check);
      check();
    });
    return withTimeout(met, timeoutMs, what)
      .catch((err: Error) => {
        throw new Error(`${err.message}; events so far: ${this.describe()}`);
      })
      .finally(() => this.#waiters.delete(check!));
  }

  /** The first event at index >= `from` matching `pred`, within `timeoutMs`. */
  async next(pred: (e: ResolverEvent) => boolean, what: string, timeoutMs: number, from = 0): Promise<ResolverEvent> {
    let found: ResolverEvent | undefined;
    await this.until(
      () => {
        found = this.events.slice(from).find(pred);
        return found !== undefined;
      },
      what,
      timeoutMs,
    );
    return found!;
  }

  snapshot(timeoutMs: number): Promise<Extract<ResolverEvent, { type: 'snapshot' }>> {
    return this.next((e) => e.type === 'snapshot', 'the first snapshot', timeoutMs) as Promise<Extract<ResolverEvent, { type: 'snapshot' }>>;
  }

  changes(): Change[] {
    return this.events.filter(isChange);
  }

  describe(): string {
    return JSON.stringify(this.events.map((e) => (e.type === 'snapshot' ? `snapshot[${e.instances.map((i) => i.id).join(',')}]@${e.revision}` : e.type === 'error' ? `error(${e.error.code})` : `${e.type}:${e.instance.id}@${e.revision}`)));
  }

  /** Abort the watch; resolves once the iterator has ended (bounded). */
  async stop(): Promise<void> {
    this.#ac.abort();
    await withTimeout(this.#done, 5000, 'the watch iterator to end after its signal aborted');
  }
}

/** Per-test harness: everything opened is closed at the end. */
class Harness {
  readonly setup: RegistryTestSetup;
  readonly ttlMs: number;
  readonly slackMs: number;
  readonly #resolvers: Resolver[] = [];
  readonly #registrars: Registrar[] = [];
  readonly #recorders: Recorder[] = [];
  static #n = 0;
  readonly #tag = `${process.pid}-${Date.now().toString(36)}`;

  constructor(setup: RegistryTestSetup) {
    this.setup = setup;
    this.ttlMs = setup.ttlMs ?? 2000;
    this.slackMs = setup.slackMs ?? 2000;
  }

  /** A service name no other test uses. */
  service(name: string): string {
    return `${name}-${this.#tag}-${++Harness.#n}`;
  }

  resolver(): Resolver {
    const r = this.setup.plugin.resolver(this.setup.url);
    this.#resolvers.push(r);
    return r;
  }

  registrar(): Registrar {
    assert.equal(typeof this.setup.plugin.registrar, 'function', `the ${this.setup.plugin.scheme}: plugin has no registrar`);
    const r = this.setup.plugin.registrar!(this.setup.url);
    this.#registrars.push(r);
    return r;
  }

  watch(resolver: Resolver, service: string): Recorder {
    const rec = new Recorder(resolver, service);
    this.#recorders.push(rec);
    return rec;
  }

  /** Bound for things that have no contract deadline (a healthy backend does them at once). */
  get quickMs(): number {
    return 3000 + this.slackMs;
  }

  /** The contract's bound for an abandoned lease: TTL + 1 s (+ slack). */
  expiryMs(registration: Registration): number {
    return registration.ttlMs + 1000 + this.slackMs;
  }

  async cleanup(): Promise<void> {
    const errors: unknown[] = [];
    const attempt = async (fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    };
    for (const rec of this.#recorders) await attempt(() => rec.stop());
    for (const r of this.#registrars) await attempt(() => withTimeout(r.close(), 15_000, 'registrar.close()'));
    for (const r of this.#resolvers) await attempt(() => withTimeout(r.close(), 5000, 'resolver.close()'));
    await attempt(() => this.setup.teardown());
    if (errors.length > 0) throw errors[0];
  }
}

/** Wait for one event of a registration, bounded. */
function onceEvent<T>(registration: Registration, event: 'lost' | 'registered', timeoutMs: number): Promise<T> {
  let listener: ((arg: T) => void) | undefined;
  return withTimeout(
    new Promise<T>((resolve) => {
      listener = resolve;
      registration.on(event as 'lost', listener as unknown as (err: SkeinError) => void);
    }),
    timeoutMs,
    `the registration's '${event}' event`,
  ).finally(() => {
    if (listener !== undefined) registration.off(event, listener);
  });
}

function instance(service: string, address: string, extra: Partial<Instance> = {}): Instance {
  return { service, id: extra.id ?? address, address, metadata: extra.metadata ?? {} };
}

/** Run the registry compliance suite against the backend made by `setup`. */
export function registryCompliance(name: string, setup: () => Promise<RegistryTestSetup>): void {
  const test = (title: string, fn: (h: Harness) => Promise<void>, skip?: (s: RegistryTestSetup) => string | false): void => {
    it(title, { timeout: TEST_TIMEOUT_MS }, async (t) => {
      const s = await setup();
      const h = new Harness(s);
      const why = skip?.(s);
      try {
        if (typeof why === 'string') {
          t.skip(why);
          return;
        }
        await fn(h);
      } finally {
        await h.cleanup();
      }
    });
  };

  describe(`registry compliance: ${name}`, () => {
    test('register - the instance shows in list() and in watches (snapshot, then added)', async (h) => {
      const svc = h.service('echo');
      const resolver = h.resolver();
      const registrar = h.registrar();
      const before = h.watch(resolver, svc);
      assert.deepEqual((await before.snapshot(h.quickMs)).instances, [], 'snapshot of a service nobody registered');
      const reg = await registrar.register({ service: svc, address: '127.0.0.1:7001' }, { ttlMs: h.ttlMs });
      const expected = instance(svc, '127.0.0.1:7001');
      assert.deepEqual(reg.instance, expected, 'the registration holds the instance, id defaulting to the address');
      assert.ok(reg.ttlMs >= h.ttlMs, `granted TTL ${reg.ttlMs} ms is at least the ${h.ttlMs} ms asked for`);
      await onceEvent(reg, 'registered', h.quickMs);
      const added = await before.next((e) => e.type === 'added', "an 'added' event", h.quickMs);
      assert.deepEqual(added.type === 'added' && added.instance, expected);
      assert.deepEqual(await resolver.list(svc), [expected]);
      const after = h.watch(resolver, svc);
      assert.deepEqual((await after.snapshot(h.quickMs)).instances, [expected], 'a watch started later gets it in its snapshot');
      assert.equal(after.events[0]?.type, 'snapshot', 'a watch starts with its snapshot');
    });

    test('register - metadata and an explicit id round-trip through list() and watch()', async (h) => {
      const svc = h.service('meta');
      const metadata = {
        version: '1.2.3',
        zone: 'eu-west-1a',
        weight: '10',
        tags: 'a,b,c',
        empty: '',
        unicode: 'ünïcødé ✓ 😀',
        'x-odd.key:chars/slash': 'v=1&w=2 "quoted" \\ back',
      };
      const resolver = h.resolver();
      const registrar = h.registrar();
      await registrar.register({ service: svc, id: 'node-1', address: '127.0.0.1:7002', metadata }, { ttlMs: h.ttlMs });
      const expected = instance(svc, '127.0.0.1:7002', { id: 'node-1', metadata });
      assert.deepEqual(await resolver.list(svc), [expected]);
      const w = h.watch(resolver, svc);
      assert.deepEqual((await w.snapshot(h.quickMs)).instances, [expected]);
    });

    test('register - two instances of one service are both listed and watched', async (h) => {
      const svc = h.service('pair');
      const resolver = h.resolver();
      const registrar = h.registrar();
      const w = h.watch(resolver, svc);
      await w.snapshot(h.quickMs);
      await registrar.register({ service: svc, address: '127.0.0.1:7011', metadata: { zone: 'a' } }, { ttlMs: h.ttlMs });
      await registrar.register({ service: svc, address: '127.0.0.1:7012', metadata: { zone: 'b' } }, { ttlMs: h.ttlMs });
      const expected = [instance(svc, '127.0.0.1:7011', { metadata: { zone: 'a' } }), instance(svc, '127.0.0.1:7012', { metadata: { zone: 'b' } })];
      assert.deepEqual((await resolver.list(svc)).sort(byId), expected);
      await w.until(() => w.view.size === 2, 'both instances in the watch', h.quickMs);
      assert.deepEqual([...w.view.values()].sort(byId), expected);
      assert.deepEqual(
        w.changes().map((e) => [e.type, e.instance.id]),
        [
          ['added', '127.0.0.1:7011'],
          ['added', '127.0.0.1:7012'],
        ],
      );
      const later = h.watch(resolver, svc);
      assert.deepEqual((await later.snapshot(h.quickMs)).instances.sort(byId), expected);
    });

    test("deregister - 'removed' reaches watchers, list() forgets it, and a second call is a no-op", async (h) => {
      const svc = h.service('dereg');
      const resolver = h.resolver();
      const registrar = h.registrar();
      const w = h.watch(resolver, svc);
      await w.snapshot(h.quickMs);
      const keep = await registrar.register({ service: svc, address: '127.0.0.1:7021' }, { ttlMs: h.ttlMs });
      const reg = await registrar.register({ service: svc, address: '127.0.0.1:7022' }, { ttlMs: h.ttlMs });
      await w.until(() => w.view.size === 2, 'both added', h.quickMs);
      await reg.deregister();
      assert.deepEqual(await resolver.list(svc), [keep.instance], 'list() right after deregister() resolved');
      const removed = await w.next((e) => e.type === 'removed', "a 'removed' event", h.quickMs);
      assert.deepEqual(removed.type === 'removed' && removed.instance, reg.instance);
      await reg.deregister();
      assert.deepEqual([...w.view.values()], [keep.instance]);
    });

    test('expiry - an owner that stops keeping its lease alive (crash) vanishes within TTL + 1 s', async (h) => {
      const svc = h.service('crash');
      const resolver = h.resolver();
      const owner = h.registrar();
      const w = h.watch(resolver, svc);
      await w.snapshot(h.quickMs);
      const reg = await owner.register({ service: svc, address: '127.0.0.1:7031' }, { ttlMs: h.ttlMs });
      await w.until(() => w.view.has(reg.instance.id), 'the instance added', h.quickMs);
      await h.setup.simulateCrash(owner);
      await w.until(() => !w.view.has(reg.instance.id), `the crashed owner's instance removed within TTL (${reg.ttlMs} ms) + 1 s`, h.expiryMs(reg));
      assert.deepEqual(await resolver.list(svc), []);
    });

    test('watch - two watchers see the same events in the same order', async (h) => {
      const svc = h.service('order');
      const resolver1 = h.resolver();
      const resolver2 = h.resolver();
      const registrar = h.registrar();
      const w1 = h.watch(resolver1, svc);
      const w2 = h.watch(resolver2, svc);
      await w1.snapshot(h.quickMs);
      await w2.snapshot(h.quickMs);
      const a = await registrar.register({ service: svc, address: '127.0.0.1:7041' }, { ttlMs: h.ttlMs });
      const b = await registrar.register({ service: svc, address: '127.0.0.1:7042' }, { ttlMs: h.ttlMs });
      await a.deregister();
      const c = await registrar.register({ service: svc, address: '127.0.0.1:7043' }, { ttlMs: h.ttlMs });
      await b.deregister();
      await c.deregister();
      const expected = [
        ['added', a.instance.id],
        ['added', b.instance.id],
        ['removed', a.instance.id],
        ['added', c.instance.id],
        ['removed', b.instance.id],
        ['removed', c.instance.id],
      ];
      for (const w of [w1, w2]) await w.until(() => w.changes().length >= expected.length, 'all six changes', h.quickMs);
      const key = (e: Change): [string, string, number | undefined] => [e.type, e.instance.id, e.revision];
      assert.deepEqual(
        w1.changes().map((e) => [e.type, e.instance.id]),
        expected,
        'the changes, in the order they were made',
      );
      assert.deepEqual(w2.changes().map(key), w1.changes().map(key), 'both watchers saw the same sequence');
    });

    test('watch - revisions, when given, strictly increase from the snapshot on', async (h) => {
      const svc = h.service('rev');
      const resolver = h.resolver();
      const registrar = h.registrar();
      const w = h.watch(resolver, svc);
      await w.snapshot(h.quickMs);
      const regs: Registration[] = [];
      for (let i = 0; i < 3; i++) regs.push(await registrar.register({ service: svc, address: `127.0.0.1:705${i}` }, { ttlMs: h.ttlMs }));
      for (const r of regs) await r.deregister();
      await w.until(() => w.changes().length >= 6, 'six changes', h.quickMs);
      const revisions = w.events.filter((e) => e.type !== 'error').map((e) => (e as { revision?: number }).revision);
      if (revisions.every((r) => r === undefined)) return; // the backend gives none: nothing to check
      assert.ok(
        revisions.every((r) => typeof r === 'number' && Number.isSafeInteger(r)),
        `every event carries a revision once any does: ${JSON.stringify(revisions)}`,
      );
      for (let i = 1; i < revisions.length; i++) assert.ok(revisions[i]! > revisions[i - 1]!, `revisions strictly increase: ${JSON.stringify(revisions)}`);
      const later = h.watch(resolver, svc);
      const snap = await later.snapshot(h.quickMs);
      assert.ok(snap.revision === undefined || snap.revision >= revisions.at(-1)!, `a later snapshot's revision ${snap.revision} is not behind ${revisions.at(-1)}`);
    });

    test('list - without a service it returns the instances of every service', async (h) => {
      const a = h.service('all-a');
      const b = h.service('all-b');
      const resolver = h.resolver();
      const registrar = h.registrar();
      await registrar.register({ service: a, address: '127.0.0.1:7061' }, { ttlMs: h.ttlMs });
      await registrar.register({ service: b, address: '127.0.0.1:7062', metadata: { k: 'v' } }, { ttlMs: h.ttlMs });
      const all = await resolver.list();
      assert.deepEqual(
        all.filter((i) => i.service === a || i.service === b).sort((x, y) => (x.service < y.service ? -1 : 1)),
        [instance(a, '127.0.0.1:7061'), instance(b, '127.0.0.1:7062', { metadata: { k: 'v' } })],
      );
      assert.deepEqual(await resolver.list(h.service('nobody')), [], 'an unknown service lists nothing');
    });

    test("lease - a registration whose lease is lost says 'lost', registers again and says 'registered'", async (h) => {
      const svc = h.service('relost');
      const resolver = h.resolver();
      const registrar = h.registrar();
      const w = h.watch(resolver, svc);
      await w.snapshot(h.quickMs);
      const reg = await registrar.register({ service: svc, address: '127.0.0.1:7071', metadata: { v: '1' } }, { ttlMs: h.ttlMs });
      await onceEvent(reg, 'registered', h.quickMs);
      await w.until(() => w.view.has(reg.instance.id), 'the instance added', h.quickMs);
      const lost = onceEvent<SkeinError>(reg, 'lost', reg.ttlMs + h.slackMs);
      const registered = onceEvent<Instance>(reg, 'registered', reg.ttlMs + h.quickMs + h.slackMs);
      await h.setup.expireLeases!();
      const err = await lost;
      assert.ok(isSkeinError(err), `'lost' carries a SkeinError, got ${String(err)}`);
      assert.deepEqual(await registered, reg.instance, "'registered' carries the instance");
      assert.deepEqual(await resolver.list(svc), [reg.instance], "list() once 'registered' has fired");
      await w.until(() => w.events.some((e) => e.type === 'removed') && w.view.has(reg.instance.id), "the watch saw it removed, then back", h.quickMs);
      assert.deepEqual(w.view.get(reg.instance.id), reg.instance);
    }, (s) => (s.expireLeases === undefined ? 'the setup cannot expire leases (no expireLeases hook)' : false));

    test('close - a registrar deregisters its instances when closed', async (h) => {
      const svc = h.service('close');
      const resolver = h.resolver();
      const registrar = h.registrar();
      const w = h.watch(resolver, svc);
      await w.snapshot(h.quickMs);
      await registrar.register({ service: svc, address: '127.0.0.1:7081' }, { ttlMs: h.ttlMs });
      await registrar.register({ service: svc, address: '127.0.0.1:7082' }, { ttlMs: h.ttlMs });
      await w.until(() => w.view.size === 2, 'both added', h.quickMs);
      await registrar.close();
      assert.deepEqual(await resolver.list(svc), [], 'list() right after close() resolved');
      await w.until(() => w.view.size === 0, 'both removed', h.quickMs);
    });

    test('watch - the iterator ends when its signal aborts, at once when already aborted', async (h) => {
      const svc = h.service('abort');
      const resolver = h.resolver();
      const aborted = new AbortController();
      aborted.abort();
      const seen: ResolverEvent[] = [];
      await withTimeout(
        (async () => {
          for await (const e of resolver.watch(svc, { signal: aborted.signal })) seen.push(e);
        })(),
        h.quickMs,
        'a watch with an aborted signal to end',
      );
      assert.deepEqual(seen, [], 'no events after the signal aborted');
      const ac = new AbortController();
      const it = resolver.watch(svc, { signal: ac.signal })[Symbol.asyncIterator]();
      const first = await withTimeout(it.next(), h.quickMs, 'the first event');
      assert.equal(first.done, false);
      assert.equal(first.value?.type, 'snapshot');
      const pending = it.next();
      ac.abort();
      const end = await withTimeout(pending, h.quickMs, 'the watch to end after abort');
      assert.equal(end.done, true, 'the iterator is done after its signal aborted');
    });

    test('restart - a watch and a registration outlive a restart of the backend', async (h) => {
      const svc = h.service('restart');
      const resolver = h.resolver();
      const registrar = h.registrar();
      const w = h.watch(resolver, svc);
      await w.snapshot(h.quickMs);
      const a = await registrar.register({ service: svc, address: '127.0.0.1:7091' }, { ttlMs: h.ttlMs });
      await w.until(() => w.view.has(a.instance.id), 'a added', h.quickMs);
      await h.setup.restart!();
      const other = h.registrar();
      const b = await withTimeout(other.register({ service: svc, address: '127.0.0.1:7092' }, { ttlMs: h.ttlMs }), h.quickMs + h.slackMs, 'a registration after the restart');
      // a: kept, or lost and registered again by itself; b: new. The watch follows both.
      await w.until(() => w.view.has(a.instance.id) && w.view.has(b.instance.id), 'the watch to show a and b after the restart', a.ttlMs + h.quickMs + h.slackMs);
      assert.deepEqual([...w.view.values()].sort(byId), [a.instance, b.instance]);
      assert.deepEqual((await resolver.list(svc)).sort(byId), [a.instance, b.instance]);
      await b.deregister();
      await w.until(() => !w.view.has(b.instance.id), 'b removed after the restart', h.quickMs);
    }, (s) => (s.restart === undefined ? 'the setup cannot restart the backend (no restart hook)' : false));
  });
}
