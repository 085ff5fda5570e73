/**
 * Helpers for the embedded registry tests (not a test file): following a resolver's
 * events with bounded waits, checking revision sequences, and running `skein registry`
 * and owner processes as real children.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Instance, ResolverEvent } from '../../../src/discovery/types.js';
import { CLI } from '../../cli/run.js';

/** Collects a resolver watch in the background; every wait is bounded. */
export class EventLog {
  readonly events: ResolverEvent[] = [];
  /** The instances the events describe now (snapshot + changes), by id. */
  readonly view = new Map<string, Instance>();
  readonly done: Promise<void>;
  private readonly watchers = new Set<() => void>();
  failure: unknown;

  constructor(source: AsyncIterable<ResolverEvent>) {
    this.done = (async () => {
      try {
        for await (const e of source) {
          this.events.push(e);
          if (e.type === 'snapshot') {
            this.view.clear();
            for (const i of e.instances) this.view.set(i.id, i);
          } else if (e.type === 'added' || e.type === 'updated') this.view.set(e.instance.id, e.instance);
          else if (e.type === 'removed') this.view.delete(e.instance.id);
          for (const w of [...this.watchers]) w();
        }
      } catch (err) {
        this.failure = err;
      }
      for (const w of [...this.watchers]) w();
    })();
  }

  /** Events other than 'error'. */
  get changes(): ResolverEvent[] {
    return this.events.filter((e) => e.type !== 'error');
  }

  count(type: ResolverEvent['type']): number {
    return this.events.filter((e) => e.type === type).length;
  }

  /** Resolve with the first event (seen or to come, from index `from`) matching `pred`. */
  waitFor(pred: (e: ResolverEvent) => boolean, what: string, timeoutMs = 5000, from = 0): Promise<ResolverEvent> {
    return new Promise<ResolverEvent>((resolve, reject) => {
      const check = (): void => {
        const found = this.events.slice(from).find(pred);
        if (found !== undefined) {
          cleanup();
          resolve(found);
        } else if (this.failure !== undefined) {
          cleanup();
          reject(new Error(`the watch failed while waiting for ${what}: ${String(this.failure)}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs}ms waiting for ${what}; events: ${describe(this.events)}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.watchers.delete(check);
      };
      this.watchers.add(check);
      check();
    });
  }
}

/** A short text of events for failure messages. */
export function describe(events: ResolverEvent[]): string {
  return events
    .map((e) => (e.type === 'snapshot' ? `snapshot@${e.revision}[${e.instances.map((i) => i.id).join(',')}]` : e.type === 'error' ? `error(${e.error.statusName})` : `${e.type}@${e.revision}:${e.instance.id}`))
    .slice(-40)
    .join(' ');
}

/**
 * The revisions of the non-error events must be: a snapshot, then changes each exactly one
 * above the one before (only valid when the watch sees every change of the registry, i.e.
 * one service is all there is). Returns a message when they are not.
 */
export function revisionGaps(events: ResolverEvent[]): string | undefined {
  let last: number | undefined;
  for (const e of events) {
    if (e.type === 'error') continue;
    if (e.type === 'snapshot') {
      if (last !== undefined && e.revision! < last) return `snapshot at ${e.revision} after ${last}`;
      last = e.revision!;
      continue;
    }
    if (last === undefined) return `change ${e.revision} before any snapshot`;
    if (e.revision !== last + 1) return `revision ${e.revision} after ${last} (${e.revision! <= last ? 'duplicate' : 'gap'}) in ${describe(events)}`;
    last = e.revision;
  }
  return undefined;
}

// ------------------------------------------------------------------ child processes

/** A child process whose stdout lines are watched. */
export class Child {
  readonly lines: string[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly watchers = new Set<() => void>();

  constructor(
    readonly child: ChildProcess,
    readonly name: string,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      this.lines.push(line);
      for (const w of [...this.watchers]) w();
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    child.stdin?.on('error', () => {});
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The first stdout line from index `from` matching `pred`, bounded; rejects if the process exits first. */
  waitLine(pred: (line: string) => boolean, what: string, timeoutMs = 10000, from = 0): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      const check = (): void => {
        const found = this.lines.slice(from).find(pred);
        if (found !== undefined) {
          cleanup();
          resolve(found);
        }
      };
      const onExit = (): void => {
        // Lines may still be in flight: one last look.
        setImmediate(() => {
          check();
          cleanup();
          reject(new Error(`${this.name} exited while waiting for ${what}; stdout: ${JSON.stringify(this.lines)}; stderr:\n${this.stderr}`));
        });
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs}ms waiting for ${what} from ${this.name}; stdout: ${JSON.stringify(this.lines)}; stderr:\n${this.stderr}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.watchers.delete(check);
        this.child.off('exit', onExit);
      };
      this.watchers.add(check);
      this.child.once('exit', onExit);
      check();
    });
  }

  /** Send `signal` (default SIGTERM) and wait for the exit; SIGKILL and fail after `timeoutMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) {
      this.child.kill('SIGCONT');
      this.child.kill(signal);
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.exited,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            this.child.kill('SIGKILL');
            reject(new Error(`${this.name} did not exit within ${timeoutMs} ms of ${signal}; stderr:\n${this.stderr}`));
          }, timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** kill -9 and wait for the exit (bounded). */
  kill9(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.stop('SIGKILL');
  }
}

/** A running `skein registry`. */
export interface RegistryProcess extends Child {
  /** HOST:PORT from the ready line. */
  address: string;
  port: number;
  url: string;
}

/** Start `skein registry --port PORT [--data DIR] ...extra` and wait (bounded) for its ready line. */
export async function startRegistry(options: { port?: number; data?: string; extra?: string[] } = {}): Promise<RegistryProcess> {
  const args = [CLI, 'registry', '--port', String(options.port ?? 0)];
  if (options.data !== undefined) args.push('--data', options.data);
  args.push(...(options.extra ?? []));
  const child = new Child(spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] }), 'skein registry') as RegistryProcess;
  try {
    const line = await child.waitLine((l) => l.startsWith('ready registry '), 'the ready line', 15000);
    child.address = line.slice('ready registry '.length).trim();
    child.port = Number(child.address.slice(child.address.lastIndexOf(':') + 1));
    child.url = `skein://${child.address}`;
    return child;
  } catch (err) {
    child.child.kill('SIGKILL');
    throw err;
  }
}

const OWNER = fileURLToPath(new URL('./_owner.js', import.meta.url));

/** Start an owner process: an echo server registered as `service` with `ttlMs` (see _owner.ts). */
export async function startOwner(url: string, service: string, ttlMs: number, id?: string): Promise<Child & { address: string }> {
  const args = [OWNER, url, service, String(ttlMs)];
  if (id !== undefined) args.push(id);
  const child = new Child(spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] }), `owner ${service}/${id ?? ''}`) as Child & { address: string };
  try {
    const line = await child.waitLine((l) => l.startsWith('registered '), 'the owner to register', 15000);
    child.address = line.split(' ')[2]!;
    return child;
  } catch (err) {
    child.child.kill('SIGKILL');
    throw err;
  }
}
