/**
 * multicast:// — zero-config discovery over loopback multicast, with real processes:
 * registrars in child processes, a resolver here. Every test uses its own UDP port and
 * service name, so parallel runs (and other tests) never see each other's datagrams.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { ErrorCode, isSkeinError } from '../../src/errors.js';
import {
  decodeMulticastMessage,
  encodeMulticastMessage,
  MulticastRegistrar,
  MulticastResolver,
  MAX_DATAGRAM_BYTES,
  parseDiscoveryUrl,
  parseMulticastUrl,
  registrarFor,
  resolverFor,
  setupDiscovery,
  DEFAULT_MULTICAST_GROUP,
  DEFAULT_MULTICAST_PORT,
} from '../../src/discovery/index.js';
import type { Instance, Resolver, ResolverEvent } from '../../src/discovery/index.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { freeUdpPort } from '../helpers/udp.js';

setupDiscovery();

const GROUP = '239.255.77.77';
const INDEX_MODULE = new URL('../../src/discovery/index.js', import.meta.url).href;


async function setupGroup(): Promise<{ url: string; port: number; service: string }> {
  const port = await freeUdpPort();
  return { url: `multicast://${GROUP}:${port}`, port, service: `svc-${randomBytes(4).toString('hex')}` };
}

/** Follows a watch: the current set by id, every event, and a bounded wait on conditions. */
class Tracker extends EventEmitter {
  readonly instances = new Map<string, Instance>();
  readonly events: ResolverEvent[] = [];
  readonly #ac = new AbortController();
  readonly done: Promise<void>;

  constructor(resolver: Resolver, service: string) {
    super();
    this.done = (async () => {
      for await (const ev of resolver.watch(service, { signal: this.#ac.signal })) {
        if (ev.type === 'snapshot') {
          this.instances.clear();
          for (const i of ev.instances) this.instances.set(i.id, i);
        } else if (ev.type === 'added' || ev.type === 'updated') this.instances.set(ev.instance.id, ev.instance);
        else if (ev.type === 'removed') this.instances.delete(ev.instance.id);
        this.events.push(ev);
        this.emit('change', ev);
      }
    })();
  }

  ids(): string[] {
    return [...this.instances.keys()].sort();
  }

  /** Resolve when `cond()` holds (checked now and after every event), within `ms`. */
  until(cond: () => boolean, ms: number, what: string): Promise<void> {
    if (cond()) return Promise.resolve();
    return withTimeout(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (cond()) {
            this.off('change', check);
            resolve();
          }
        };
        this.on('change', check);
      }),
      ms,
      `${what} (have ${JSON.stringify(this.ids())})`,
    );
  }

  async stop(): Promise<void> {
    this.#ac.abort();
    await withTimeout(this.done, 2000, 'the watch to end');
  }
}

/**
 * The registrar process: registers one instance, watches the same service with its own
 * resolver and prints `saw ID` / `lost ID` for the others; `deregister` on stdin says
 * goodbye and exits; EOF on stdin (the test process went away) exits too.
 */
const CHILD = `
const { setupDiscovery, registrarFor, resolverFor } = await import(process.env.SKEIN_INDEX);
setupDiscovery();
const { MC_URL: url, MC_SERVICE: service, MC_ID: id } = process.env;
const registrar = registrarFor(url);
const registration = await registrar.register({ service, id, address: process.env.MC_ADDRESS, metadata: { pid: String(process.pid) } }, { ttlMs: Number(process.env.MC_TTL) });
const resolver = resolverFor(url);
const ac = new AbortController();
const seen = (i) => { if (i.id !== id) console.log('saw ' + i.id); };
(async () => {
  for await (const ev of resolver.watch(service, { signal: ac.signal })) {
    if (ev.type === 'snapshot') ev.instances.forEach(seen);
    else if (ev.type === 'added') seen(ev.instance);
    else if (ev.type === 'removed' && ev.instance.id !== id) console.log('lost ' + ev.instance.id);
  }
})();
console.log('registered ' + id);
let input = '';
const quit = async () => { ac.abort(); await registration.deregister(); await resolver.close(); await registrar.close(); console.log('deregistered'); process.exit(0); };
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => { input += d; if (input.includes('deregister\\n')) void quit(); });
process.stdin.on('end', () => void quit());
`;

class Child {
  readonly proc: ChildProcess;
  readonly lines: string[] = [];
  readonly #events = new EventEmitter();
  #stderr = '';

  constructor(url: string, service: string, id: string, ttlMs: number) {
    this.proc = spawn(process.execPath, ['--input-type=module', '-e', CHILD], {
      env: { ...process.env, SKEIN_INDEX: INDEX_MODULE, MC_URL: url, MC_SERVICE: service, MC_ID: id, MC_ADDRESS: `127.0.0.1:${id.length + 7000}`, MC_TTL: String(ttlMs) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let buf = '';
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        this.lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        this.#events.emit('line');
      }
    });
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.#stderr += d));
  }

  /** Resolve when a line equal to `line` has been printed, within `ms`. */
  waitLine(line: string, ms = 5000): Promise<void> {
    if (this.lines.includes(line)) return Promise.resolve();
    return withTimeout(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (this.lines.includes(line)) {
            this.#events.off('line', check);
            resolve();
          }
        };
        this.#events.on('line', check);
      }),
      ms,
      `child line ${JSON.stringify(line)} (got ${JSON.stringify(this.lines)}; stderr ${JSON.stringify(this.#stderr.slice(0, 500))})`,
    );
  }

  exited(ms = 5000): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return Promise.resolve(this.proc.exitCode);
    return withTimeout(new Promise<number | null>((resolve) => this.proc.once('exit', (code) => resolve(code))), ms, 'the child to exit');
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

/** A raw socket that sends datagrams to the group over loopback, as a misbehaving peer would. */
async function rawSender(): Promise<{ socket: Socket; send(port: number, data: Buffer | string): Promise<void>; close(): Promise<void> }> {
  const socket = createSocket({ type: 'udp4', reuseAddr: true });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  socket.setMulticastInterface('127.0.0.1');
  socket.setMulticastLoopback(true);
  socket.setMulticastTTL(0);
  return {
    socket,
    send: (port, data) => new Promise<void>((resolve, reject) => socket.send(typeof data === 'string' ? Buffer.from(data) : data, port, GROUP, (err) => (err ? reject(err) : resolve()))),
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

function announce(service: string, id: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ magic: 'skein-discovery', v: 1, type: 'announce', service, id, address: `127.0.0.1:${id.length}`, metadata: {}, ttlMs: 60_000, ...extra });
}

test('multicast - two registrars in separate processes and a resolver find each other', async (t) => {
  const { url, service } = await setupGroup();
  const resolver = resolverFor(url);
  const tracker = new Tracker(resolver, service);
  const a = new Child(url, service, 'a', 10_000);
  const b = new Child(url, service, 'b', 10_000);
  t.after(async () => {
    a.kill();
    b.kill();
    await tracker.stop();
    await resolver.close();
  });
  await Promise.all([a.waitLine('registered a'), b.waitLine('registered b')]);
  await tracker.until(() => tracker.instances.has('a') && tracker.instances.has('b'), 5000, 'both instances in the resolver');
  await Promise.all([a.waitLine('saw b'), b.waitLine('saw a')]);
  const ia = tracker.instances.get('a')!;
  assert.equal(ia.service, service);
  assert.equal(ia.address, '127.0.0.1:7001');
  assert.equal(ia.metadata.pid, String(a.proc.pid));
});

test('multicast - a goodbye removes the instance at once', async (t) => {
  const { url, service } = await setupGroup();
  const resolver = resolverFor(url);
  const tracker = new Tracker(resolver, service);
  // A long TTL: removal within the test's bound can only come from the goodbye.
  const a = new Child(url, service, 'a', 60_000);
  const b = new Child(url, service, 'b', 60_000);
  t.after(async () => {
    a.kill();
    b.kill();
    await tracker.stop();
    await resolver.close();
  });
  await tracker.until(() => tracker.ids().join() === 'a,b', 5000, 'a and b');
  await Promise.all([a.waitLine('saw b'), b.waitLine('saw a')]);
  a.proc.stdin!.write('deregister\n');
  await a.waitLine('deregistered');
  await tracker.until(() => !tracker.instances.has('a'), 2000, 'a removed by its goodbye');
  assert.deepEqual(tracker.ids(), ['b']);
  await b.waitLine('lost a', 2000);
  assert.equal(await a.exited(), 0);
  const removed = tracker.events.filter((e) => e.type === 'removed');
  assert.equal(removed.length, 1);
});

test('multicast - kill -9 of a registrar process removes its instance after its TTL', async (t) => {
  const { url, service } = await setupGroup();
  const resolver = resolverFor(url);
  const tracker = new Tracker(resolver, service);
  const ttlMs = 1000;
  const a = new Child(url, service, 'a', ttlMs);
  const b = new Child(url, service, 'b', ttlMs);
  t.after(async () => {
    a.kill();
    b.kill();
    await tracker.stop();
    await resolver.close();
  });
  await tracker.until(() => tracker.ids().join() === 'a,b', 5000, 'a and b');
  // Refreshes every ttl/3 keep both alive well past one TTL.
  const settled = tracker.events.length;
  await b.waitLine('saw a');
  const killedAt = Date.now();
  a.kill();
  await tracker.until(() => !tracker.instances.has('a'), ttlMs + 1500, 'a expired');
  const elapsed = Date.now() - killedAt;
  assert.ok(elapsed >= ttlMs / 3, `removed after ${elapsed} ms: too early for a ${ttlMs} ms TTL refreshed every ${ttlMs / 3} ms`);
  assert.ok(elapsed <= ttlMs + 1000, `removed after ${elapsed} ms (TTL ${ttlMs} ms)`);
  assert.deepEqual(tracker.ids(), ['b'], 'b, still announcing, stays');
  assert.deepEqual(
    tracker.events.slice(settled).map((e) => e.type),
    ['removed'],
    'no flapping of b while a expired',
  );
  await b.waitLine('lost a', 2000);
});

test('multicast - a late resolver gets the full set at once through its query', async (t) => {
  const { url, service } = await setupGroup();
  // TTL 60 s: the next periodic refresh is 20 s away, so only answers to the query can fill the snapshot.
  const a = new Child(url, service, 'a', 60_000);
  const b = new Child(url, service, 'b', 60_000);
  const late: { resolver?: Resolver } = {};
  t.after(async () => {
    a.kill();
    b.kill();
    await late.resolver?.close();
  });
  await Promise.all([a.waitLine('saw b'), b.waitLine('saw a')]);
  const resolver = (late.resolver = resolverFor(url));
  const started = Date.now();
  const it = resolver.watch(service)[Symbol.asyncIterator]();
  const first = await withTimeout(it.next(), 3000, 'the first snapshot');
  const elapsed = Date.now() - started;
  const ev = first.value as ResolverEvent;
  assert.equal(ev.type, 'snapshot');
  assert.deepEqual(ev.type === 'snapshot' ? ev.instances.map((i) => i.id).sort() : [], ['a', 'b']);
  assert.ok(elapsed < 2000, `snapshot after ${elapsed} ms`);
  assert.deepEqual((await resolver.list(service)).map((i) => i.id).sort(), ['a', 'b']);
  await it.return?.();
});

test('multicast - malformed datagrams are ignored and counted, never fatal', async (t) => {
  const { url, port, service } = await setupGroup();
  const resolver = new MulticastResolver(parseDiscoveryUrl(url), { settleMs: 0 });
  const registrar = new MulticastRegistrar(parseDiscoveryUrl(url));
  const tracker = new Tracker(resolver, service);
  const raw = await rawSender();
  t.after(async () => {
    await tracker.stop();
    await Promise.all([resolver.close(), registrar.close(), raw.close()]);
  });
  await registrar.register({ service, id: 'good', address: '127.0.0.1:1' });
  await tracker.until(() => tracker.instances.has('good'), 3000, 'the registered instance');
  const before = { resolver: resolver.stats(), registrar: registrar.stats() };

  const garbage: Array<string | Buffer> = [
    'not json at all',
    '{"magic":"skein-discovery"',
    '[1,2,3]',
    'null',
    Buffer.from([0xff, 0xfe, 0x00, 0x7b]),
    Buffer.alloc(0),
    JSON.stringify({ magic: 'other', v: 1, type: 'announce', service, id: 'x', address: 'h:1', ttlMs: 1000 }),
    announce(service, 'v2', { v: 2 }),
    announce(service, 'no-type', { type: 'shout' }),
    announce(service, 'no-address', { address: '' }),
    announce(service, 'bad-ttl', { ttlMs: -5 }),
    announce(service, 'float-ttl', { ttlMs: 1.5 }),
    announce(service, 'bad-meta', { metadata: { n: 1 } }),
    announce(service, 'array-meta', { metadata: ['x'] }),
    announce('', 'empty-service'),
    JSON.stringify({ magic: 'skein-discovery', v: 1, type: 'goodbye', service }),
    JSON.stringify({ magic: 'skein-discovery', v: 1, type: 'query', service: 42 }),
    `{"magic":"skein-discovery","v":1,"type":"announce","service":"${service}","id":"big","address":"h:1","ttlMs":1000,"metadata":{"x":"${'y'.repeat(MAX_DATAGRAM_BYTES)}"}}`,
    '{"__proto__":{"polluted":true},"magic":"skein-discovery","v":1}',
  ];
  for (const g of garbage) await raw.send(port, g);
  // Datagrams from one socket over loopback arrive in order: once this one is in, all the garbage was seen.
  await raw.send(port, announce(service, 'last'));
  await tracker.until(() => tracker.instances.has('last'), 3000, 'the valid announcement after the garbage');

  // Each socket gets its copy in order, but not at the same moment as the others: wait for the registrar's too.
  await waitFor(() => registrar.stats().malformed - before.registrar.malformed >= garbage.length, { timeoutMs: 3000, what: "the registrar's copies of the garbage" });
  const after = { resolver: resolver.stats(), registrar: registrar.stats() };
  assert.equal(after.resolver.malformed - before.resolver.malformed, garbage.length);
  assert.equal(after.registrar.malformed - before.registrar.malformed, garbage.length);
  assert.deepEqual(tracker.ids(), ['good', 'last'], 'nothing malformed got into the table');
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  // And both still work: a query is still answered.
  const late = new MulticastResolver(parseDiscoveryUrl(url));
  t.after(() => late.close());
  assert.deepEqual((await late.list(service)).map((i) => i.id), ['good']);
});

test('multicast - a changed announcement is an update; a goodbye or an expired TTL removes', async (t) => {
  const { url, port, service } = await setupGroup();
  const resolver = new MulticastResolver(parseDiscoveryUrl(url), { settleMs: 0 });
  const tracker = new Tracker(resolver, service);
  const raw = await rawSender();
  t.after(async () => {
    await tracker.stop();
    await Promise.all([resolver.close(), raw.close()]);
  });
  await tracker.until(() => tracker.events.length > 0, 2000, 'the snapshot');
  await raw.send(port, announce(service, 'x', { metadata: { version: '1' } }));
  await tracker.until(() => tracker.instances.get('x')?.metadata.version === '1', 2000, 'x added');
  await raw.send(port, announce(service, 'x', { metadata: { version: '1' } })); // same: a refresh only
  await raw.send(port, announce(service, 'x', { metadata: { version: '2' } }));
  await tracker.until(() => tracker.instances.get('x')?.metadata.version === '2', 2000, 'x updated');
  assert.deepEqual(tracker.events.map((e) => e.type), ['snapshot', 'added', 'updated']);

  await raw.send(port, JSON.stringify({ magic: 'skein-discovery', v: 1, type: 'goodbye', service, id: 'x' }));
  await tracker.until(() => !tracker.instances.has('x'), 2000, 'x gone after its goodbye');

  await raw.send(port, announce(service, 'short', { ttlMs: 300 }));
  await tracker.until(() => tracker.instances.has('short'), 2000, 'short added');
  const addedAt = Date.now();
  await tracker.until(() => !tracker.instances.has('short'), 3000, 'short expired');
  assert.ok(Date.now() - addedAt >= 250, 'not before its TTL');
  assert.deepEqual(tracker.events.map((e) => e.type), ['snapshot', 'added', 'updated', 'removed', 'added', 'removed']);
  // Other services are tracked too, and listed.
  await raw.send(port, announce(`${service}-other`, 'o'));
  await waitFor(async () => (await resolver.list()).some((i) => i.id === 'o' && i.service === `${service}-other`), { timeoutMs: 2000, what: 'the other service listed' });
});

test('multicast - registrations in one process: register, registered event, duplicate refused, deregister', async (t) => {
  const { url, service } = await setupGroup();
  const registrar = registrarFor(url);
  const resolver = resolverFor(url);
  const tracker = new Tracker(resolver, service);
  t.after(async () => {
    await tracker.stop();
    await Promise.all([registrar.close(), resolver.close()]);
  });
  const reg = await registrar.register({ service, address: '127.0.0.1:7700', metadata: { zone: 'a' } }, { ttlMs: 5000 });
  assert.deepEqual(reg.instance, { service, id: '127.0.0.1:7700', address: '127.0.0.1:7700', metadata: { zone: 'a' } });
  assert.equal(reg.ttlMs, 5000);
  const registered = await withTimeout(new Promise<Instance>((resolve) => reg.on('registered', resolve)), 2000, "the 'registered' event");
  assert.equal(registered.id, '127.0.0.1:7700');
  await assert.rejects(registrar.register({ service, address: '127.0.0.1:7700' }), (err: unknown) => isSkeinError(err) && err.code === ErrorCode.INVALID_OPTIONS && /already registered/.test(err.message));
  await tracker.until(() => tracker.instances.has('127.0.0.1:7700'), 3000, 'the instance');
  await reg.deregister();
  await reg.deregister(); // idempotent
  await tracker.until(() => tracker.instances.size === 0, 2000, 'the goodbye');
  // The same instance may register again after deregistering.
  const again = await registrar.register({ service, address: '127.0.0.1:7700' }, { ttlMs: 5000 });
  await tracker.until(() => tracker.instances.has('127.0.0.1:7700'), 3000, 'the re-registration');
  await registrar.close();
  await tracker.until(() => tracker.instances.size === 0, 2000, 'the goodbye on close');
  await again.deregister();
  await assert.rejects(registrar.register({ service, address: 'h:1' }), (err: unknown) => isSkeinError(err) && err.code === ErrorCode.CLOSED);
});

test('multicast - bad registrations are INVALID_OPTIONS', async (t) => {
  const { url } = await setupGroup();
  const registrar = new MulticastRegistrar(parseDiscoveryUrl(url));
  t.after(() => registrar.close());
  const invalid = (pattern: RegExp) => (err: unknown) => isSkeinError(err) && err.code === ErrorCode.INVALID_OPTIONS && pattern.test(err.message);
  await assert.rejects(registrar.register({ service: '', address: 'h:1' }), invalid(/service/));
  await assert.rejects(registrar.register({ service: 's', address: '' }), invalid(/address/));
  await assert.rejects(registrar.register({ service: 's', address: 'h:1', metadata: { n: 1 as unknown as string } }), invalid(/metadata "n"/));
  await assert.rejects(registrar.register({ service: 's', address: 'h:1' }, { ttlMs: 50 }), invalid(/ttlMs/));
  await assert.rejects(registrar.register({ service: 's', address: 'h:1', metadata: { big: 'x'.repeat(MAX_DATAGRAM_BYTES) } }), invalid(/datagram limit/));
  await assert.rejects(registrar.register({ service: 's', address: 'h:1' }, { signal: AbortSignal.abort() }), (err: unknown) => (err as Error).name === 'AbortError');
});

test('multicast - URLs: defaults, options and errors', () => {
  const d = parseMulticastUrl(parseDiscoveryUrl('multicast://'));
  assert.deepEqual({ ...d }, { group: DEFAULT_MULTICAST_GROUP, port: DEFAULT_MULTICAST_PORT, iface: '127.0.0.1', hops: 1, settleMs: 250, maxInstances: 10_000 });
  assert.equal(DEFAULT_MULTICAST_GROUP, '239.255.77.77');
  assert.equal(DEFAULT_MULTICAST_PORT, 7707);
  const c = parseMulticastUrl(parseDiscoveryUrl('multicast://239.1.2.3:9999?iface=any&hops=4&settle=0'));
  assert.deepEqual({ ...c }, { group: '239.1.2.3', port: 9999, iface: undefined, hops: 4, settleMs: 0, maxInstances: 10_000 });
  assert.equal(parseMulticastUrl(parseDiscoveryUrl('multicast://239.1.2.3')).port, DEFAULT_MULTICAST_PORT);
  assert.equal(parseMulticastUrl(parseDiscoveryUrl('multicast://'), { port: 1234, iface: '10.0.0.1' }).iface, '10.0.0.1');
  for (const bad of ['multicast://10.0.0.1:7707', 'multicast://example.com', 'multicast://239.1.1.1:0', 'multicast://239.1.1.1?iface=eth0', 'multicast://239.1.1.1?hops=300', 'multicast://239.1.1.1?ttl=1', 'multicast://239.1.1.1/x', 'multicast://239.1.1.1:1,239.1.1.2:1']) {
    assert.throws(() => resolverFor(bad), (err: unknown) => isSkeinError(err) && err.code === ErrorCode.INVALID_OPTIONS, bad);
  }
});

test('multicast - a datagram round-trips through encode and decode', () => {
  const instance = { service: 'echo', id: 'i1', address: 'tls://h:1', metadata: { zone: 'z', tags: 'a,b' } };
  assert.deepEqual(decodeMulticastMessage(encodeMulticastMessage({ type: 'announce', instance, ttlMs: 1234 })), { type: 'announce', instance, ttlMs: 1234 });
  assert.deepEqual(decodeMulticastMessage(encodeMulticastMessage({ type: 'goodbye', service: 'echo', id: 'i1' })), { type: 'goodbye', service: 'echo', id: 'i1' });
  assert.deepEqual(decodeMulticastMessage(encodeMulticastMessage({ type: 'query', service: undefined })), { type: 'query', service: undefined });
  assert.deepEqual(decodeMulticastMessage(encodeMulticastMessage({ type: 'query', service: 'echo' })), { type: 'query', service: 'echo' });
  const wire = JSON.parse(encodeMulticastMessage({ type: 'goodbye', service: 's', id: 'i' }).toString()) as Record<string, unknown>;
  assert.equal(wire.magic, 'skein-discovery');
  assert.equal(wire.v, 1);
});

test('multicast - a resolver on an interface that is not local reports an error event and keeps the watch', async () => {
  const { port, service } = await setupGroup();
  // 192.0.2.123 (TEST-NET-1) is not an address of this host: joining the group on it fails.
  const resolver = new MulticastResolver(parseDiscoveryUrl(`multicast://${GROUP}:${port}?iface=192.0.2.123`));
  const it = resolver.watch(service)[Symbol.asyncIterator]();
  const first = (await withTimeout(it.next(), 3000, 'the first event')).value as ResolverEvent;
  assert.deepEqual(first, { type: 'snapshot', instances: [] });
  const second = (await withTimeout(it.next(), 3000, 'the error event')).value as ResolverEvent;
  assert.equal(second.type, 'error');
  assert.ok(second.type === 'error' && second.error.code === ErrorCode.INVALID_OPTIONS, JSON.stringify(second));
  await assert.rejects(resolver.list(service), (err: unknown) => isSkeinError(err) && /cannot join/.test(err.message));
  const pending = it.next();
  await resolver.close();
  assert.equal((await withTimeout(pending, 2000, 'the end')).done, true);
});
