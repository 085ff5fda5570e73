/**
 * The etcd adapter (src/engines/etcd.ts) against a real etcd started here (Debian's
 * etcd-server, on free loopback ports with a temp data dir; test/helpers/etcd.ts):
 *  - the registry compliance suite (test/compliance/registry.ts), each test under a key
 *    prefix of its own;
 *  - an etcd restart: the resolver's view matches etcd again within 2 s;
 *  - a fault proxy between the adapter and etcd: cut connections (the watch resumes from its
 *    revision, no gap, no duplicate), a stall longer than the TTL (the registrar says 'lost'
 *    within one TTL and registers again once the stall ends), compaction while the watch is
 *    cut off (a fresh snapshot);
 *  - an owner process killed with SIGKILL: its instance is gone within TTL + 1 s.
 *
 * Without an etcd binary the file is skipped with a reason, except under CI (CI=true), where
 * it fails: `.ci/run` installs etcd-server.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import type { IOptions } from 'etcd3';
import { isSkeinError, Status } from '../../src/errors.js';
import { parseDiscoveryUrl } from '../../src/discovery/registry.js';
import type { Instance, Registration, Resolver, ResolverEvent } from '../../src/discovery/types.js';
import { createEtcdDiscovery, etcdDiscovery, parseEtcdUrl, type EtcdRegistrar, type EtcdRegistration } from '../../src/engines/etcd.js';
import { registryCompliance } from '../compliance/registry.js';
import { etcdAvailable, startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

/** Extra time for every bounded wait on a loaded CI machine. */
const SLACK_MS = 2000;
const TTL_MS = 2000;
const TEST_TIMEOUT_MS = 30_000;

const skip = !etcdAvailable() && process.env['CI'] === undefined ? 'etcd is not installed (apt-get install etcd-server; CI installs it)' : false;

let server: Promise<EtcdServer> | undefined;
/** The file's etcd, started on first use. */
function etcd(): Promise<EtcdServer> {
  return (server ??= startEtcd());
}

const clients: Etcd3[] = [];
const proxies: FaultProxy[] = [];

after(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) await p.close();
  if (server !== undefined) await (await server.catch(() => undefined))?.close();
});

type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;
const direct: Policy = { execute: (fn: (ctx: { signal: AbortSignal }) => unknown) => Promise.resolve().then(() => fn({ signal: new AbortController().signal })) } as unknown as Policy;

/** A plain etcd3 client straight to etcd, to write and read behind the adapter's back. */
async function admin(): Promise<Etcd3> {
  const e = await etcd();
  const c = new Etcd3({
    hosts: `http://${e.endpoint}`,
    faultHandling: { host: () => direct, global: direct },
    grpcOptions: { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 500 },
  });
  clients.push(c);
  return c;
}

async function proxyTo(e: EtcdServer): Promise<FaultProxy> {
  const p = await startFaultProxy({ target: e.endpoint });
  proxies.push(p);
  return p;
}

let prefixes = 0;
function freshPrefix(tag: string): string {
  return `/skein-test/${tag}-${process.pid}-${++prefixes}/`;
}

const buf = (s: string): Buffer => Buffer.from(s, 'utf8');
function prefixEnd(p: string): Buffer {
  const b = buf(p);
  b[b.length - 1] = b[b.length - 1]! + 1;
  return b;
}

/** What etcd holds under `prefix + service + '/'`, as instances by id. */
async function truth(c: Etcd3, prefix: string, service: string): Promise<Map<string, Instance>> {
  const key = `${prefix}${service}/`;
  const res = await c.kv.range({ key: buf(key), range_end: prefixEnd(key) }, { deadline: Date.now() + 1000 });
  const out = new Map<string, Instance>();
  for (const kv of res.kvs) {
    const id = kv.key.toString('utf8').slice(key.length);
    const v = JSON.parse(kv.value.toString('utf8')) as { address: string; metadata?: Record<string, string> };
    out.set(id, { service, id, address: v.address, metadata: v.metadata ?? {} });
  }
  return out;
}

/** Put an instance straight into etcd (no lease); resolves with the revision. */
async function putRaw(c: Etcd3, prefix: string, service: string, id: string, address: string): Promise<number> {
  const res = await c.kv.put({ key: buf(`${prefix}${service}/${id}`), value: buf(JSON.stringify({ service, id, address, metadata: {} })) }, { deadline: Date.now() + 2000 });
  return Number(res.header.revision);
}

async function deleteRaw(c: Etcd3, prefix: string, service: string, id: string): Promise<number> {
  const res = await c.kv.deleteRange({ key: buf(`${prefix}${service}/${id}`) }, { deadline: Date.now() + 2000 });
  return Number(res.header.revision);
}

/** A watch consumed in the background: every event, and the view (by id) they build. */
class Watcher {
  readonly events: ResolverEvent[] = [];
  readonly view = new Map<string, Instance>();
  readonly #ac = new AbortController();
  readonly #done: Promise<void>;

  constructor(resolver: Resolver, service: string) {
    const it = resolver.watch(service, { signal: this.#ac.signal });
    this.#done = (async () => {
      for await (const ev of it) {
        this.events.push(ev);
        if (ev.type === 'snapshot') {
          this.view.clear();
          for (const i of ev.instances) this.view.set(i.id, i);
        } else if (ev.type === 'added' || ev.type === 'updated') this.view.set(ev.instance.id, ev.instance);
        else if (ev.type === 'removed') this.view.delete(ev.instance.id);
      }
    })();
  }

  changes(): Array<Extract<ResolverEvent, { instance: Instance }>> {
    return this.events.filter((e): e is Extract<ResolverEvent, { instance: Instance }> => e.type === 'added' || e.type === 'updated' || e.type === 'removed');
  }

  until(cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
    return waitFor(cond, { what: `${what} (events: ${this.describe()})`, timeoutMs, intervalMs: 5 }).catch((err: Error) => {
      throw new Error(`${err.message}; events now: ${this.describe()}`);
    });
  }

  describe(): string {
    return JSON.stringify(this.events.map((e) => (e.type === 'snapshot' ? `snapshot[${e.instances.map((i) => i.id).join(',')}]@${e.revision}` : e.type === 'error' ? `error(${e.error.code})` : `${e.type}:${e.instance.id}@${e.revision}`)));
  }

  async stop(): Promise<void> {
    this.#ac.abort();
    await withTimeout(this.#done, 5000, 'the watch to end');
  }
}

function onceEvent<T>(registration: Registration, event: 'lost' | 'registered', timeoutMs: number): Promise<T> {
  let listener: ((arg: T) => void) | undefined;
  return withTimeout(
    new Promise<T>((resolve) => {
      listener = resolve;
      registration.on(event as 'lost', listener as never);
    }),
    timeoutMs,
    `the registration's '${event}' event`,
  ).finally(() => {
    if (listener !== undefined) registration.off(event, listener);
  });
}

function sameMap(a: Map<string, Instance>, b: Map<string, Instance>): boolean {
  if (a.size !== b.size) return false;
  for (const [id, i] of a) {
    const j = b.get(id);
    if (j === undefined || JSON.stringify(j) !== JSON.stringify(i)) return false;
  }
  return true;
}

/** A loopback port with nothing listening on it. */
async function deadPort(): Promise<number> {
  const { createServer } = await import('node:net');
  const s = createServer();
  await new Promise<void>((r) => s.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('etcd adapter', { skip }, () => {
  registryCompliance('etcd', async () => {
    const e = await etcd();
    const prefix = freshPrefix('compliance');
    return {
      plugin: etcdDiscovery,
      url: new URL(`etcd://${e.endpoint}?prefix=${prefix}`),
      teardown: async () => {},
      simulateCrash: async (r) => (r as EtcdRegistrar).abandon(),
      expireLeases: async () => {
        const c = await admin();
        const res = await c.kv.range({ key: buf(prefix), range_end: prefixEnd(prefix) }, { deadline: Date.now() + 2000 });
        const leases = new Set(res.kvs.map((kv) => kv.lease).filter((l) => l !== '0'));
        for (const ID of leases) await c.leaseClient.leaseRevoke({ ID }, { deadline: Date.now() + 2000 });
      },
      restart: () => e.restart(),
      ttlMs: TTL_MS,
      slackMs: SLACK_MS,
    };
  });

  describe('etcd - URLs', () => {
    it('etcd - URLs: hosts, default port, host lists and ?prefix=', () => {
      assert.deepEqual(parseEtcdUrl(new URL('etcd://127.0.0.1:2380')), { endpoints: ['127.0.0.1:2380'], prefix: '/skein/' });
      assert.deepEqual(parseEtcdUrl(new URL('etcd://etcd.local')), { endpoints: ['etcd.local:2379'], prefix: '/skein/' });
      assert.deepEqual(parseEtcdUrl(new URL('etcd://[::1]:23?prefix=/apps')), { endpoints: ['[::1]:23'], prefix: '/apps/' });
      assert.deepEqual(parseEtcdUrl(parseDiscoveryUrl('etcd://h1:1,h2,h3:3?prefix=/x/')), { endpoints: ['h1:1', 'h2:2379', 'h3:3'], prefix: '/x/' });
      assert.deepEqual(parseEtcdUrl(new URL('etcd://h:1/'), '/other'), { endpoints: ['h:1'], prefix: '/other/' });
    });

    it('etcd - URLs: a path, an unknown option, an empty prefix or another scheme are refused', () => {
      for (const bad of ['etcd://h:1/path', 'etcd://h:1?prefx=/a/', 'etcd://h:1?prefix=', 'skein://h:1', 'etcd://h:1,h:99999', 'etcd://?prefix=/a/']) {
        assert.throws(
          () => parseEtcdUrl(parseDiscoveryUrl(bad)),
          (err: unknown) => isSkeinError(err) && err.code === 'SKEIN_ERR_INVALID_OPTIONS',
          bad,
        );
      }
    });

    it("etcd - no module outside src/engines/ imports 'etcd3'", () => {
      const root = fileURLToPath(new URL('../../../src/', import.meta.url));
      const offenders: string[] = [];
      (function walk(dir: string): void {
        for (const name of readdirSync(dir)) {
          const p = join(dir, name);
          if (statSync(p).isDirectory()) {
            if (p !== join(root, 'engines')) walk(p);
          } else if (name.endsWith('.ts') && /from\s+['"]etcd3['"]|import\(\s*['"]etcd3['"]|require\(\s*['"]etcd3['"]/.test(readFileSync(p, 'utf8'))) offenders.push(p);
        }
      })(root);
      assert.deepEqual(offenders, []);
    });
  });

  it('etcd - after etcd is killed (-9) and restarted, the resolver view matches etcd again within 2 s, and the lease is kept or renewed', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const e = await etcd();
    const c = await admin();
    const prefix = freshPrefix('restart');
    const url = new URL(`etcd://${e.endpoint}?prefix=${prefix}`);
    const resolver = etcdDiscovery.resolver(url);
    const registrar = etcdDiscovery.registrar(url);
    const w = new Watcher(resolver, 'svc');
    try {
      const reg = (await registrar.register({ service: 'svc', address: '127.0.0.1:9001' }, { ttlMs: 3000 })) as EtcdRegistration;
      await putRaw(c, prefix, 'svc', 'gone-later', '127.0.0.1:9002');
      await w.until(() => w.view.size === 2, 'the first two instances', 5000);
      // The compliance suite restarts etcd gracefully (SIGTERM); here it crashes.
      await e.kill9();
      await e.start();
      const t0 = performance.now();
      // etcd changes right after it is back: the view must catch up with them.
      await putRaw(c, prefix, 'svc', 'new', '127.0.0.1:9003');
      await deleteRaw(c, prefix, 'svc', 'gone-later');
      const expected = await truth(c, prefix, 'svc');
      assert.deepEqual([...expected.keys()].sort(), ['127.0.0.1:9001', 'new']);
      await w.until(() => sameMap(w.view, expected), "the view to match etcd's content", 2000 + SLACK_MS);
      t.diagnostic(`view matched etcd ${Math.round(performance.now() - t0)} ms after etcd served again`);
      // The registration: its key is on the lease it keeps alive now (the same one, or a new one).
      await waitFor(
        async () => {
          const res = await c.kv.range({ key: buf(`${prefix}svc/127.0.0.1:9001`) }, { deadline: Date.now() + 1000 });
          return reg.registered && res.kvs[0] !== undefined && res.kvs[0].lease === reg.leaseId;
        },
        { what: "the registration's key on its live lease", timeoutMs: 2000 + SLACK_MS, intervalMs: 50 },
      );
      const ka = await c.leaseClient.leaseTimeToLive({ ID: reg.leaseId! }, { deadline: Date.now() + 1000 });
      assert.ok(Number(ka.TTL) > 0, 'the lease is alive in etcd');
    } finally {
      await w.stop();
      await registrar.close();
      await resolver.close();
    }
  });

  it('etcd - a watch whose connection is cut resumes from its revision: no gap, no duplicate', { timeout: TEST_TIMEOUT_MS }, async () => {
    const e = await etcd();
    const c = await admin();
    const proxy = await proxyTo(e);
    const prefix = freshPrefix('cut');
    const plugin = createEtcdDiscovery({ callTimeoutMs: 1000 });
    const resolver = plugin.resolver(new URL(`etcd://${proxy.address}?prefix=${prefix}`));
    const w = new Watcher(resolver, 'svc');
    try {
      await w.until(() => w.events.some((ev) => ev.type === 'snapshot'), 'the snapshot', 5000);
      const expected: Array<[string, string, number]> = [];
      const present = new Set<string>();
      for (let i = 0; i < 40; i++) {
        const id = `k${i % 4}`;
        if (i % 5 === 4 && present.has(id)) {
          expected.push(['removed', id, await deleteRaw(c, prefix, 'svc', id)]);
          present.delete(id);
        } else {
          expected.push([present.has(id) ? 'updated' : 'added', id, await putRaw(c, prefix, 'svc', id, `127.0.0.1:${9100 + i}`)]);
          present.add(id);
        }
        if (i === 7 || i === 19 || i === 30) proxy.cutAll({ reset: i === 19 });
      }
      // A last change after everything: once it arrives, nothing before it can still be pending.
      expected.push(['added', 'sentinel', await putRaw(c, prefix, 'svc', 'sentinel', '127.0.0.1:9999')]);
      await w.until(() => w.view.has('sentinel'), 'the last change', 5000 + SLACK_MS);
      assert.deepEqual(
        w.changes().map((ev) => [ev.type, ev.instance.id, ev.revision]),
        expected,
        'the watch delivered exactly the changes etcd made, in order, each once',
      );
      assert.equal(w.events.filter((ev) => ev.type === 'snapshot').length, 1, 'resumed without a resync');
      assert.ok(proxy.connections >= 2, `the adapter reconnected through the proxy (${proxy.connections} connections)`);
      assert.ok(w.events.some((ev) => ev.type === 'error'), 'the cuts were reported as error events');
    } finally {
      await w.stop();
      await resolver.close();
    }
  });

  it("etcd - a stall longer than the TTL: 'lost' within one TTL, then registered again once it clears", { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const e = await etcd();
    const proxy = await proxyTo(e);
    const prefix = freshPrefix('stall');
    const plugin = createEtcdDiscovery({ callTimeoutMs: 1000 });
    const registrar = plugin.registrar(new URL(`etcd://${proxy.address}?prefix=${prefix}`));
    const resolver = plugin.resolver(new URL(`etcd://${e.endpoint}?prefix=${prefix}`));
    const w = new Watcher(resolver, 'svc');
    try {
      const reg = await registrar.register({ service: 'svc', address: '127.0.0.1:9201' }, { ttlMs: TTL_MS });
      await onceEvent(reg, 'registered', 5000);
      await w.until(() => w.view.has('127.0.0.1:9201'), 'the instance', 5000);
      const lost = onceEvent<Error>(reg, 'lost', reg.ttlMs + 1000 + SLACK_MS);
      proxy.stall(true);
      const t0 = performance.now();
      const err = await lost;
      t.diagnostic(`'lost' ${Math.round(performance.now() - t0)} ms into the stall (TTL ${reg.ttlMs} ms): ${err.message}`);
      assert.ok(isSkeinError(err) && err.status === Status.NOT_FOUND, `'lost' carries a NOT_FOUND SkeinError: ${String(err)}`);
      // etcd, which never heard from the owner, expired the lease: the instance is gone.
      await w.until(() => !w.view.has('127.0.0.1:9201'), 'the instance removed by etcd', reg.ttlMs + 1000 + SLACK_MS);
      const registered = onceEvent<Instance>(reg, 'registered', 5000 + SLACK_MS);
      proxy.stall(false);
      assert.deepEqual(await registered, reg.instance);
      await w.until(() => w.view.has('127.0.0.1:9201'), 'the instance back', 2000 + SLACK_MS);
    } finally {
      proxy.stall(false);
      await w.stop();
      await registrar.close();
      await resolver.close();
    }
  });

  it('etcd - a watch gone silent (stalled connection) is detected by its progress probe and rebuilt: no gap, no duplicate', { timeout: TEST_TIMEOUT_MS }, async () => {
    const e = await etcd();
    const c = await admin();
    const proxy = await proxyTo(e);
    const prefix = freshPrefix('silent');
    const resolver = createEtcdDiscovery({ callTimeoutMs: 500, watchCheckMs: 500 }).resolver(new URL(`etcd://${proxy.address}?prefix=${prefix}`));
    const w = new Watcher(resolver, 'svc');
    try {
      await w.until(() => w.events.some((ev) => ev.type === 'snapshot'), 'the snapshot', 5000);
      const expected: Array<[string, string, number]> = [];
      expected.push(['added', 'a', await putRaw(c, prefix, 'svc', 'a', '127.0.0.1:9351')]);
      await w.until(() => w.view.has('a'), 'a', 5000);
      proxy.stall(true);
      expected.push(['added', 'b', await putRaw(c, prefix, 'svc', 'b', '127.0.0.1:9352')]);
      expected.push(['removed', 'a', await deleteRaw(c, prefix, 'svc', 'a')]);
      // Nothing reaches the watch now; only its own probe can tell the stream is dead.
      await w.until(() => w.events.some((ev) => ev.type === 'error' && ev.error.code === 'SKEIN_ERR_KEEPALIVE_TIMEOUT'), 'the silent stream reported', 500 + 500 + SLACK_MS);
      assert.equal(w.view.has('b'), false, 'no event passed the stall');
      proxy.stall(false);
      expected.push(['added', 'sentinel', await putRaw(c, prefix, 'svc', 'sentinel', '127.0.0.1:9359')]);
      await w.until(() => w.view.has('sentinel'), 'the changes after the stall', 5000 + SLACK_MS);
      assert.deepEqual(
        w.changes().map((ev) => [ev.type, ev.instance.id, ev.revision]),
        expected,
      );
      assert.equal(w.events.filter((ev) => ev.type === 'snapshot').length, 1, 'resumed without a resync');
    } finally {
      proxy.stall(false);
      await w.stop();
      await resolver.close();
    }
  });

  it('etcd - a registration whose key is deleted behind its back puts it back within one TTL', { timeout: TEST_TIMEOUT_MS }, async () => {
    const e = await etcd();
    const c = await admin();
    const prefix = freshPrefix('deleted');
    const url = new URL(`etcd://${e.endpoint}?prefix=${prefix}`);
    const resolver = etcdDiscovery.resolver(url);
    const registrar = etcdDiscovery.registrar(url);
    const w = new Watcher(resolver, 'svc');
    try {
      const reg = await registrar.register({ service: 'svc', address: '127.0.0.1:9601' }, { ttlMs: TTL_MS });
      await onceEvent(reg, 'registered', 5000);
      await w.until(() => w.view.has('127.0.0.1:9601'), 'the instance', 5000);
      const lost = onceEvent<Error>(reg, 'lost', reg.ttlMs + 1000 + SLACK_MS);
      const back = onceEvent<Instance>(reg, 'registered', reg.ttlMs + 1000 + SLACK_MS);
      await deleteRaw(c, prefix, 'svc', '127.0.0.1:9601');
      await lost;
      assert.deepEqual(await back, reg.instance);
      await w.until(() => w.view.has('127.0.0.1:9601'), 'the instance back', 2000 + SLACK_MS);
      assert.deepEqual(
        w.changes().map((ev) => ev.type),
        ['added', 'removed', 'added'],
      );
    } finally {
      await w.stop();
      await registrar.close();
      await resolver.close();
    }
  });

  it('etcd - a watch cut off while etcd compacts its revision starts over with a fresh snapshot', { timeout: TEST_TIMEOUT_MS }, async () => {
    const e = await etcd();
    const c = await admin();
    const proxy = await proxyTo(e);
    const prefix = freshPrefix('compact');
    const resolver = createEtcdDiscovery({ callTimeoutMs: 1000 }).resolver(new URL(`etcd://${proxy.address}?prefix=${prefix}`));
    const w = new Watcher(resolver, 'svc');
    try {
      await putRaw(c, prefix, 'svc', 'a', '127.0.0.1:9301');
      await w.until(() => w.view.has('a'), 'a', 5000);
      proxy.refuse(true);
      proxy.cutAll();
      await w.until(() => w.events.at(-1)?.type === 'error', 'an error event after the cut', 5000);
      await putRaw(c, prefix, 'svc', 'b', '127.0.0.1:9302');
      await deleteRaw(c, prefix, 'svc', 'a');
      const rev = await putRaw(c, prefix, 'svc', 'c', '127.0.0.1:9303');
      await c.kv.compact({ revision: rev, physical: true }, { deadline: Date.now() + 5000 });
      const snapshots = w.events.filter((ev) => ev.type === 'snapshot').length;
      proxy.refuse(false);
      await w.until(() => w.events.filter((ev) => ev.type === 'snapshot').length > snapshots, 'a second snapshot', 5000 + SLACK_MS);
      const snap = w.events.filter((ev) => ev.type === 'snapshot').at(-1) as Extract<ResolverEvent, { type: 'snapshot' }>;
      assert.deepEqual(snap.instances.map((i) => i.id).sort(), ['b', 'c']);
      assert.ok(snap.revision! >= rev, `the resync snapshot is at or after the compaction (${snap.revision} >= ${rev})`);
      const d = await putRaw(c, prefix, 'svc', 'd', '127.0.0.1:9304');
      await w.until(() => w.view.has('d'), 'd after the resync', 5000);
      assert.deepEqual(
        w.changes().filter((ev) => (ev.revision ?? 0) > snap.revision!).map((ev) => [ev.type, ev.instance.id, ev.revision]),
        [['added', 'd', d]],
      );
    } finally {
      await w.stop();
      await resolver.close();
    }
  });

  it('etcd - an owner process killed with SIGKILL: its instance is gone within TTL + 1 s', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const e = await etcd();
    const prefix = freshPrefix('kill9');
    const url = `etcd://${e.endpoint}?prefix=${prefix}`;
    const resolver = etcdDiscovery.resolver(new URL(url));
    const w = new Watcher(resolver, 'svc');
    const script = fileURLToPath(new URL('./_etcd-owner.js', import.meta.url));
    const child = spawn(process.execPath, [script, url, 'svc', '127.0.0.1:9401', String(TTL_MS)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    try {
      const line = await withTimeout(
        new Promise<string>((resolve, reject) => {
          createInterface({ input: child.stdout! }).on('line', (l) => l.startsWith('registered ') && resolve(l));
          child.once('exit', (code) => reject(new Error(`the owner exited (code ${code}) before registering`)));
        }),
        10_000,
        "the owner's 'registered' line",
      );
      t.diagnostic(line);
      await w.until(() => w.view.has('127.0.0.1:9401'), 'the instance', 5000);
      child.kill('SIGKILL');
      await w.until(() => !w.view.has('127.0.0.1:9401'), 'the instance gone', TTL_MS + 1000 + SLACK_MS);
    } finally {
      child.kill('SIGKILL');
      await withTimeout(exited, 5000, 'the owner to exit');
      await w.stop();
      await resolver.close();
    }
  });

  it('etcd - with one endpoint down of two, list, watch and register use the other', { timeout: TEST_TIMEOUT_MS }, async () => {
    const e = await etcd();
    const prefix = freshPrefix('failover');
    const url = parseDiscoveryUrl(`etcd://127.0.0.1:${await deadPort()},${e.endpoint}?prefix=${prefix}`);
    const plugin = createEtcdDiscovery({ callTimeoutMs: 1000 });
    const resolver = plugin.resolver(url);
    const registrar = plugin.registrar(url);
    const w = new Watcher(resolver, 'svc');
    try {
      for (let i = 0; i < 5; i++) await registrar.register({ service: 'svc', address: `127.0.0.1:950${i}` }, { ttlMs: TTL_MS });
      for (let i = 0; i < 5; i++) assert.equal((await resolver.list('svc')).length, 5);
      await w.until(() => w.view.size === 5, 'the five instances', 5000 + SLACK_MS);
    } finally {
      await w.stop();
      await registrar.close();
      await resolver.close();
    }
  });

  it('etcd - with etcd unreachable: list() fails as UNAVAILABLE, a watch reports errors and keeps going, register() waits for its signal', { timeout: TEST_TIMEOUT_MS }, async () => {
    const url = new URL(`etcd://127.0.0.1:${await deadPort()}?prefix=/none/`);
    const plugin = createEtcdDiscovery({ callTimeoutMs: 500 });
    const resolver = plugin.resolver(url);
    const registrar = plugin.registrar(url);
    const w = new Watcher(resolver, 'svc');
    try {
      await assert.rejects(
        withTimeout(resolver.list('svc'), 5000, 'list() to fail'),
        (err: unknown) => isSkeinError(err) && (err.status === Status.UNAVAILABLE || err.status === Status.DEADLINE_EXCEEDED),
      );
      await w.until(() => w.events.filter((ev) => ev.type === 'error').length >= 2, 'two error events', 5000);
      assert.ok(
        w.events.every((ev) => ev.type === 'error'),
        'nothing but errors',
      );
      await assert.rejects(
        withTimeout(registrar.register({ service: 'svc', address: '127.0.0.1:1' }, { signal: AbortSignal.timeout(700) }), 5000, 'register() to give up'),
        (err: unknown) => isSkeinError(err) && err.status === Status.CANCELLED,
      );
    } finally {
      await w.stop();
      await registrar.close();
      await resolver.close();
    }
  });

  it('etcd - registration arguments are checked before anything is sent', async () => {
    const registrar = etcdDiscovery.registrar(new URL('etcd://127.0.0.1:1'));
    const resolver = etcdDiscovery.resolver(new URL('etcd://127.0.0.1:1'));
    try {
      const bad = [
        { service: 'a/b', address: 'h:1' },
        { service: '', address: 'h:1' },
        { service: 's', address: '' },
        { service: 's', address: 'h:1', id: '' },
        { service: 's', address: 'h:1', metadata: { n: 1 as unknown as string } },
      ];
      for (const input of bad) {
        await assert.rejects(registrar.register(input), (err: unknown) => isSkeinError(err) && err.code === 'SKEIN_ERR_INVALID_OPTIONS', JSON.stringify(input));
      }
      await assert.rejects(registrar.register({ service: 's', address: 'h:1' }, { ttlMs: 0 }), (err: unknown) => isSkeinError(err) && err.code === 'SKEIN_ERR_INVALID_OPTIONS');
      assert.throws(() => resolver.watch('x/y'), (err: unknown) => isSkeinError(err) && err.code === 'SKEIN_ERR_INVALID_OPTIONS');
    } finally {
      await registrar.close();
      await resolver.close();
    }
  });
});
