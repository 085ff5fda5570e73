/**
 * Child-process plumbing for the orchestrator (bench/run.ts, bench/idle.ts).
 *
 * Every child is a separate Node process started with `process.execPath`. It talks to
 * the orchestrator through line-oriented stdout (results, `ready HOST:PORT`) and stdin
 * (commands such as `rss`). Children exit by themselves when their stdin closes, and the
 * orchestrator SIGKILLs whatever is still registered when it exits or is interrupted, so
 * no process outlives a run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const live = new Set<ChildProcess>();
let hooked = false;

function killAll(): void {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

function hookCleanup(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      killAll();
      process.stderr.write(`\nbench: ${sig}, children killed\n`);
      process.exit(130);
    });
  }
  process.on('uncaughtException', (err) => {
    killAll();
    process.stderr.write(`bench: uncaught ${String(err && (err as Error).stack ? (err as Error).stack : err)}\n`);
    process.exit(1);
  });
}

/** Absolute path of a compiled bench script, given its path relative to dist/bench/. */
export function benchScript(rel: string): string {
  return fileURLToPath(new URL(`../${rel}`, import.meta.url));
}

interface Waiter {
  pred: (line: string) => boolean;
  resolve: (line: string) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export interface SpawnOptions {
  /** Extra flags for node itself, e.g. ['--expose-gc']. */
  nodeArgs?: string[];
  /** Forward the child's stderr live (otherwise only its tail is kept for error messages). */
  verbose?: boolean;
}

/** A spawned Node child with line-based stdout and a stdin command channel. */
export class Child {
  readonly proc: ChildProcess;
  readonly name: string;
  private readonly buffered: string[] = [];
  private readonly waiters: Waiter[] = [];
  private stderrTail = '';
  private exitError: Error | null = null;
  private readonly exited: Promise<void>;

  constructor(name: string, script: string, args: string[], opts: SpawnOptions = {}) {
    hookCleanup();
    this.name = name;
    this.proc = spawn(process.execPath, [...(opts.nodeArgs ?? []), script, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    live.add(this.proc);
    const verbose = opts.verbose ?? process.env.BENCH_VERBOSE === '1';
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (s: string) => {
      this.stderrTail = (this.stderrTail + s).slice(-4000);
      if (verbose) process.stderr.write(`[${name}] ${s}`);
    });
    // A child that dies early closes its stdin; ignore EPIPE on our side.
    this.proc.stdin!.on('error', () => {});
    const rl = createInterface({ input: this.proc.stdout! });
    rl.on('line', (line) => this.onLine(line));
    this.exited = new Promise((resolve) => {
      this.proc.on('error', (err) => {
        this.fail(new Error(`${name}: spawn failed: ${err.message}`));
        live.delete(this.proc);
        resolve();
      });
      this.proc.on('exit', (code, signal) => {
        live.delete(this.proc);
        this.fail(new Error(`${name} exited (code ${code}, signal ${signal})${this.tail()}`));
        resolve();
      });
    });
  }

  private tail(): string {
    const t = this.stderrTail.trim();
    return t ? `\n--- ${this.name} stderr (tail) ---\n${t}` : '';
  }

  private onLine(line: string): void {
    if (process.env.BENCH_VERBOSE === '1') process.stderr.write(`[${this.name}>] ${line}\n`);
    const i = this.waiters.findIndex((w) => w.pred(line));
    if (i >= 0) {
      const [w] = this.waiters.splice(i, 1);
      clearTimeout(w!.timer);
      w!.resolve(line);
    } else {
      this.buffered.push(line);
    }
  }

  private fail(err: Error): void {
    this.exitError ??= err;
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
  }

  /** Resolve with the next stdout line matching `pred` (already-buffered lines count). */
  waitLine(pred: (line: string) => boolean, timeoutMs: number, what: string): Promise<string> {
    const i = this.buffered.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.buffered.splice(i, 1)[0]!);
    if (this.exitError) return Promise.reject(this.exitError);
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        pred,
        resolve,
        reject,
        timer: setTimeout(() => {
          const idx = this.waiters.indexOf(w);
          if (idx >= 0) this.waiters.splice(idx, 1);
          reject(new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what}${this.tail()}`));
        }, timeoutMs),
      };
      this.waiters.push(w);
    });
  }

  /** Wait for a line `PREFIX rest` and return `rest`. */
  async waitPrefixed(prefix: string, timeoutMs: number): Promise<string> {
    const line = await this.waitLine((l) => l.startsWith(prefix + ' '), timeoutMs, `"${prefix} ..."`);
    return line.slice(prefix.length + 1);
  }

  /** Write one command line to the child's stdin. */
  send(line: string): void {
    if (this.proc.stdin && !this.proc.stdin.destroyed) this.proc.stdin.write(line + '\n');
  }

  /** Close stdin, then SIGTERM, then SIGKILL; resolves once the process is gone. */
  async stop(graceMs = 2000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.stdin?.end();
    const gone = await Promise.race([this.exited.then(() => true), sleep(Math.min(500, graceMs)).then(() => false)]);
    if (gone) return;
    this.proc.kill('SIGTERM');
    const gone2 = await Promise.race([this.exited.then(() => true), sleep(graceMs).then(() => false)]);
    if (gone2) return;
    this.proc.kill('SIGKILL');
    await Promise.race([this.exited, sleep(graceMs)]);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Start a bench server script and wait for its `ready HOST:PORT` line. */
export async function startServer(name: string, script: string, timeoutMs = 20_000): Promise<{ child: Child; target: string }> {
  const child = new Child(name, script, [], { nodeArgs: ['--expose-gc'] });
  try {
    const target = await child.waitPrefixed('ready', timeoutMs);
    return { child, target: target.trim() };
  } catch (err) {
    await child.stop();
    throw err;
  }
}

/** Server memory as reported by the `rss` stdin command (see lib/child.ts). */
export interface MemReport {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  connections: number;
}

export async function queryMem(server: Child, timeoutMs = 10_000): Promise<MemReport> {
  server.send('rss');
  return JSON.parse(await server.waitPrefixed('rss', timeoutMs)) as MemReport;
}
