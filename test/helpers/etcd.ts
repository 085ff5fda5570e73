/**
 * `startEtcd()`: a real single-member etcd (Debian's `etcd-server`, `/usr/bin/etcd`) on free
 * loopback ports with a temporary data directory, for the etcd adapter's tests.
 *
 *   const etcd = await startEtcd();
 *   etcd.endpoint            // '127.0.0.1:PORT' (client URL http://127.0.0.1:PORT)
 *   await etcd.restart();    // SIGTERM, wait, start again: same ports, same data
 *   await etcd.kill9();      // SIGKILL; etcd.start() brings it back from its data dir
 *   await etcd.close();      // kill it and remove the data dir (if the helper made it)
 *
 * Every start waits (bounded) until `GET /health` answers `{"health":"true"}`, i.e. the
 * member has elected itself leader and serves. Every etcd still running when the test
 * process exits (or gets SIGINT/SIGTERM) is SIGKILLed. `etcdAvailable()` says whether the binary can be run at all,
 * so a suite can skip with a reason on a machine without it (CI installs it: `.ci/run`).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { get } from 'node:http';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface StartEtcdOptions {
  /** Data directory to use (kept by close()). @default a fresh temp dir, removed by close() */
  dataDir?: string;
  /** The etcd binary. @default $SKEIN_ETCD_BIN, else 'etcd' on the PATH */
  bin?: string;
  /** Extra command-line flags. @default [] */
  args?: string[];
  /** How long a start may take before it fails, ms. @default 20000 */
  readyTimeoutMs?: number;
}

export interface EtcdServer {
  /** '127.0.0.1:PORT' of the client URL. */
  readonly endpoint: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  /** True while the process runs. */
  readonly running: boolean;
  /** The last lines etcd wrote to stderr (for failure messages). */
  output(): string;
  /** Start it again after stop()/kill9(): same ports and data dir; resolves once it serves. */
  start(): Promise<void>;
  /** SIGTERM and wait for the exit (SIGKILL after 5 s). No-op when not running. */
  stop(): Promise<void>;
  /** SIGKILL and wait for the exit. No-op when not running. */
  kill9(): Promise<void>;
  /** stop() (if running), then start(). */
  restart(): Promise<void>;
  /** Kill it and remove the data dir if the helper made it. Idempotent. */
  close(): Promise<void>;
}

const live = new Set<ChildProcess>();
/** Temp data dirs made here and not yet removed. */
const tempDirs = new Set<string>();
let exitHookInstalled = false;

/** Kill every etcd still running when this process exits or is told to stop (SIGINT, SIGTERM). */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  const killAll = (): void => {
    for (const child of live) child.kill('SIGKILL');
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', killAll);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      killAll();
      process.kill(process.pid, signal); // the default action again: this listener is gone
    });
  }
}

function etcdBin(bin?: string): string {
  return bin ?? process.env['SKEIN_ETCD_BIN'] ?? 'etcd';
}

/** True if `etcd --version` runs. */
export function etcdAvailable(bin?: string): boolean {
  const r = spawnSync(etcdBin(bin), ['--version'], { stdio: 'ignore', timeout: 10_000 });
  return r.status === 0;
}

/** Two distinct free loopback ports (held together while both are picked). */
async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer();
      servers.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
      });
    }
    return servers.map((s) => (s.address() as { port: number }).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

/** GET /health → true when etcd says it is healthy. */
function healthy(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const req = get({ host: '127.0.0.1', port, path: '/health', timeout: 1000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(res.statusCode === 200 && /"health"\s*:\s*"true"/.test(body)));
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

class EtcdProcess implements EtcdServer {
  readonly endpoint: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  readonly #bin: string;
  readonly #args: string[];
  readonly #readyTimeoutMs: number;
  readonly #ownDir: string | undefined;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #log = '';
  #closed = false;

  constructor(o: { bin: string; clientPort: number; peerPort: number; dataDir: string; ownDir: string | undefined; args: string[]; readyTimeoutMs: number }) {
    this.#bin = o.bin;
    this.clientPort = o.clientPort;
    this.peerPort = o.peerPort;
    this.endpoint = `127.0.0.1:${o.clientPort}`;
    this.dataDir = o.dataDir;
    this.#ownDir = o.ownDir;
    this.#args = o.args;
    this.#readyTimeoutMs = o.readyTimeoutMs;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  output(): string {
    return this.#log.split('\n').slice(-30).join('\n');
  }

  async start(): Promise<void> {
    if (this.#closed) throw new Error('etcd helper: start() after close()');
    if (this.#child !== undefined) return;
    const client = `http://127.0.0.1:${this.clientPort}`;
    const peer = `http://127.0.0.1:${this.peerPort}`;
    const args = [
      '--name=skein-test',
      `--data-dir=${this.dataDir}`,
      `--listen-client-urls=${client}`,
      `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=skein-test=${peer}`,
      '--initial-cluster-state=new',
      '--logger=zap',
      '--log-outputs=stderr',
      '--log-level=warn',
      ...this.#args,
    ];
    // ETCD_* variables would override the flags (etcd reads its config from them too).
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')));
    const child = spawn(this.#bin, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    installExitHook();
    live.add(child);
    this.#child = child;
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      this.#log = (this.#log + s).slice(-64 * 1024);
    });
    let exitInfo: string | undefined;
    this.#exited = new Promise<void>((resolve) => {
      const done = (info: string): void => {
        if (exitInfo !== undefined) return;
        exitInfo = info;
        live.delete(child);
        if (this.#child === child) this.#child = undefined;
        resolve();
      };
      child.once('exit', (code, signal) => done(`exited (code ${code}, signal ${signal})`));
      child.once('error', (err) => done(`failed to start: ${err.message}`));
    });
    const deadline = Date.now() + this.#readyTimeoutMs;
    while (Date.now() < deadline) {
      if (exitInfo !== undefined) throw new Error(`etcd (${this.#bin}) ${exitInfo} before serving on ${this.endpoint}:\n${this.output()}`);
      if (await healthy(this.clientPort)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.kill9();
    throw new Error(`etcd did not serve on ${this.endpoint} within ${this.#readyTimeoutMs} ms:\n${this.output()}`);
  }

  async #signal(signal: NodeJS.Signals, graceMs: number): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    child.kill(signal);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const forced = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve();
      }, graceMs);
    });
    await Promise.race([this.#exited, forced]);
    clearTimeout(timer);
    await this.#exited;
  }

  stop(): Promise<void> {
    return this.#signal('SIGTERM', 5000);
  }

  kill9(): Promise<void> {
    return this.#signal('SIGKILL', 5000);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.kill9();
    if (this.#ownDir !== undefined) {
      await rm(this.#ownDir, { recursive: true, force: true });
      tempDirs.delete(this.#ownDir);
    }
  }
}

/**
 * Start etcd on free loopback ports; resolves once it serves. If a port was taken between
 * picking and binding (another process), it tries again with new ports.
 */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdServer> {
  const ownDir = options.dataDir === undefined ? await mkdtemp(join(tmpdir(), 'skein-etcd-')) : undefined;
  if (ownDir !== undefined) tempDirs.add(ownDir);
  const dataDir = options.dataDir ?? join(ownDir!, 'data');
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const [clientPort, peerPort] = (await freePorts(2)) as [number, number];
    const etcd = new EtcdProcess({
      bin: etcdBin(options.bin),
      clientPort,
      peerPort,
      dataDir,
      ownDir,
      args: options.args ?? [],
      readyTimeoutMs: options.readyTimeoutMs ?? 20_000,
    });
    try {
      await etcd.start();
      return etcd;
    } catch (err) {
      lastError = err;
      await etcd.kill9();
      if (!/address already in use/i.test(etcd.output())) break;
      // A half-made member remembers its old peer URL: start the next try from nothing.
      if (ownDir !== undefined) await rm(dataDir, { recursive: true, force: true });
    }
  }
  if (ownDir !== undefined) {
    await rm(ownDir, { recursive: true, force: true });
    tempDirs.delete(ownDir);
  }
  throw lastError;
}
