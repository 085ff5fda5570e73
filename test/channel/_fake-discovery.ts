/**
 * An in-memory discovery plugin for channel and server tests, registered under the
 * `fake:` scheme. Each URL host is a separate namespace (`fake://t1`, `fake://t2`), so
 * tests do not see each other's instances.
 *
 * A namespace holds instances per service and drives every open watch: `add()`,
 * `update()`, `remove()` push the change; `outage()` makes the source unreachable (open
 * watches get an 'error' event, `list()` and registrations fail) until `recover()`;
 * `breakWatches()` makes every open watch iterator throw (a resolver that gives up), so the
 * channel has to start a new one. Registrations are recorded in `log` in order, with a
 * hook (`onDeregister`) to look at the world at the moment a server deregisters.
 */
import { EventEmitter } from 'node:events';
import { createError, ErrorCode, registerDiscovery, type DiscoveryPlugin, type Instance, type Registrar, type Registration, type Resolver, type ResolverEvent, type SkeinError } from '../../src/index.js';

export const FAKE_SCHEME = 'fake';

interface Watch {
  service: string;
  push(ev: ResolverEvent | Error): void;
  wake(): void;
}

export class FakeNamespace {
  readonly instances = new Map<string, Map<string, Instance>>();
  readonly watches = new Set<Watch>();
  /** 'register SERVICE ADDRESS ttl=MS' / 'deregister SERVICE ADDRESS' in order. */
  readonly log: string[] = [];
  readonly registrations = new Set<FakeRegistration>();
  down: SkeinError | undefined;
  /** Called (awaited) inside every deregister(), before the instance goes. */
  onDeregister: ((reg: FakeRegistration) => void | Promise<void>) | undefined;
  /** Fail the next register() calls with this error. */
  failRegister: SkeinError | undefined;
  watchesStarted = 0;
  resolversClosed = 0;

  list(service: string): Instance[] {
    return [...(this.instances.get(service)?.values() ?? [])];
  }

  add(inst: Omit<Instance, 'id' | 'metadata'> & { id?: string; metadata?: Record<string, string> }): Instance {
    const full: Instance = { service: inst.service, address: inst.address, id: inst.id ?? inst.address, metadata: { ...inst.metadata } };
    let m = this.instances.get(full.service);
    if (m === undefined) this.instances.set(full.service, (m = new Map()));
    const existed = m.has(full.id);
    m.set(full.id, full);
    this.emit(full.service, { type: existed ? 'updated' : 'added', instance: full });
    return full;
  }

  update(inst: Instance): void {
    this.add(inst);
  }

  remove(service: string, id: string): void {
    const inst = this.instances.get(service)?.get(id);
    if (inst === undefined) return;
    this.instances.get(service)!.delete(id);
    this.emit(service, { type: 'removed', instance: inst });
  }

  /** The source becomes unreachable: watches get an 'error' event (and keep going). */
  outage(message = 'fake registry unreachable'): void {
    this.down = createError(ErrorCode.CONNECT_FAILED, message);
    for (const w of this.watches) w.push({ type: 'error', error: this.down });
  }

  /** Reachable again: open watches get a fresh snapshot (a resync). */
  recover(): void {
    this.down = undefined;
    for (const w of this.watches) w.push({ type: 'snapshot', instances: this.list(w.service) });
  }

  /** Every open watch iterator throws (a resolver giving up); channels must watch again. */
  breakWatches(): void {
    for (const w of [...this.watches]) w.push(new Error('watch broken on purpose'));
  }

  private emit(service: string, ev: ResolverEvent): void {
    if (this.down !== undefined) return; // unreachable: nobody hears about it (yet)
    for (const w of this.watches) if (w.service === service) w.push(ev);
  }
}

class FakeResolver implements Resolver {
  closed = false;
  readonly mine = new Set<Watch>();
  constructor(private readonly ns: FakeNamespace) {}

  watch(service: string, options: { signal?: AbortSignal } = {}): AsyncIterable<ResolverEvent> {
    return { [Symbol.asyncIterator]: () => this.run(service, options) };
  }

  private async *run(service: string, options: { signal?: AbortSignal }): AsyncGenerator<ResolverEvent> {
    const ns = this.ns;
    const queue: Array<ResolverEvent | Error> = [];
    let wake: (() => void) | undefined;
    const w: Watch = {
      service,
      push(ev) {
        queue.push(ev);
        wake?.();
      },
      wake() {
        wake?.();
      },
    };
    const onAbort = (): void => wake?.();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    ns.watches.add(w);
    this.mine.add(w);
    ns.watchesStarted++;
    try {
      if (ns.down !== undefined) queue.push({ type: 'error', error: ns.down });
      else queue.push({ type: 'snapshot', instances: ns.list(service) });
      for (;;) {
        if (options.signal?.aborted || this.closed) return;
        const ev = queue.shift();
        if (ev === undefined) {
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
          continue;
        }
        if (ev instanceof Error) throw ev;
        yield ev;
      }
    } finally {
      ns.watches.delete(w);
      this.mine.delete(w);
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  async list(service?: string): Promise<Instance[]> {
    if (this.ns.down !== undefined) throw this.ns.down;
    if (service !== undefined) return this.ns.list(service);
    return [...this.ns.instances.values()].flatMap((m) => [...m.values()]);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.ns.resolversClosed++;
    for (const w of this.mine) w.wake();
  }
}

export class FakeRegistration extends EventEmitter implements Registration {
  deregistered = false;
  constructor(
    private readonly ns: FakeNamespace,
    readonly instance: Instance,
    readonly ttlMs: number,
  ) {
    super();
  }

  async deregister(): Promise<void> {
    if (this.deregistered) return;
    this.deregistered = true;
    await this.ns.onDeregister?.(this);
    this.ns.log.push(`deregister ${this.instance.service} ${this.instance.address}`);
    this.ns.registrations.delete(this);
    this.ns.remove(this.instance.service, this.instance.id);
  }

  /** Simulate a lost lease: 'lost', the instance vanishes, then it is registered again. */
  loseLease(): void {
    this.emit('lost', createError(ErrorCode.CONNECTION_LOST, 'lease expired (fake)'));
    this.ns.remove(this.instance.service, this.instance.id);
    this.ns.add(this.instance);
    this.emit('registered', this.instance);
  }
}

class FakeRegistrar implements Registrar {
  closed = false;
  constructor(private readonly ns: FakeNamespace) {}

  async register(inst: Omit<Instance, 'id' | 'metadata'> & { id?: string; metadata?: Record<string, string> }, options: { ttlMs?: number } = {}): Promise<Registration> {
    if (this.ns.failRegister !== undefined) throw this.ns.failRegister;
    if (this.ns.down !== undefined) throw this.ns.down;
    const ttlMs = options.ttlMs ?? 10000;
    this.ns.log.push(`register ${inst.service} ${inst.address} ttl=${ttlMs}`);
    const full = this.ns.add(inst);
    const reg = new FakeRegistration(this.ns, full, ttlMs);
    this.ns.registrations.add(reg);
    return reg;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.ns.log.push('registrar closed');
  }
}

class FakeDiscovery implements DiscoveryPlugin {
  readonly scheme = FAKE_SCHEME;
  private readonly namespaces = new Map<string, FakeNamespace>();

  ns(name: string): FakeNamespace {
    let ns = this.namespaces.get(name);
    if (ns === undefined) this.namespaces.set(name, (ns = new FakeNamespace()));
    return ns;
  }

  resolver(url: URL): Resolver {
    return new FakeResolver(this.ns(url.host));
  }

  registrar(url: URL): Registrar {
    return new FakeRegistrar(this.ns(url.host));
  }
}

let plugin: FakeDiscovery | undefined;
let counter = 0;

/** A fresh namespace of the fake plugin (registered on first use) and its URL. */
export function fakeNamespace(): { ns: FakeNamespace; url: string } {
  if (plugin === undefined) {
    plugin = new FakeDiscovery();
    registerDiscovery(plugin, { replace: true });
  }
  const name = `ns${process.pid}x${++counter}`;
  return { ns: plugin.ns(name), url: `${FAKE_SCHEME}://${name}` };
}
