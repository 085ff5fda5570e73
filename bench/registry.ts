/**
 * Embedded registry benchmark (issue 3, item 11):
 *
 *  1. fan-out latency: time from a registration (the `put` leaving this process) to the
 *     moment the last of 1,000 watchers has received it — p50/p99 over 50 registrations,
 *     with the registry in memory and with `--data` (fsync before the acknowledgement).
 *     The watchers are 1,000 watch streams in this process over 4 connections, so the
 *     figure includes decoding 1,000 messages on one client event loop; the registrar
 *     uses a fifth connection. Goal: p99 <= 50 ms.
 *  2. memory: the registry process's RSS when idle, with 10,000 instances registered (one
 *     lease each, as 10,000 owners would have), and with each of those leases also kept
 *     alive on its own open keepalive stream.
 *
 *   npm run build && node dist/bench/registry.js
 *   BENCH_REGISTRATIONS=50 BENCH_WATCHERS=1000 BENCH_INSTANCES=10000 node dist/bench/registry.js
 *
 * The registry runs as a child process (`node dist/src/cli/main.js registry --port 0`);
 * the table goes to stdout, progress to stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { connect, pushable } from '../src/index.js';
import { RegistryService, type WatchMessage } from '../src/discovery/embedded/api.js';
import { percentile } from './lib/stats.js';

const REGISTRATIONS = Number(process.env.BENCH_REGISTRATIONS ?? 50);
const WATCHERS = Number(process.env.BENCH_WATCHERS ?? 1000);
const CONNECTIONS = 4;
const INSTANCES = Number(process.env.BENCH_INSTANCES ?? 10000);
const WARMUP = 5;

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function progress(line: string): void {
  process.stderr.write(`bench registry: ${line}\n`);
}

interface RegistryChild {
  child: ChildProcess;
  address: string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

function startRegistry(args: string[] = []): Promise<RegistryChild> {
  const child = spawn(process.execPath, [CLI, 'registry', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise<RegistryChild>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`registry not ready within 15 s; stderr:\n${stderr}`)), 15000);
    child.once('exit', (code) => reject(new Error(`registry exited (${code}) before ready; stderr:\n${stderr}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!line.startsWith('ready registry ')) return;
      clearTimeout(timer);
      resolve({
        child,
        address: line.slice('ready registry '.length).trim(),
        stop: () =>
          new Promise<void>((res) => {
            const t = setTimeout(() => child.kill('SIGKILL'), 10000);
            child.once('exit', () => {
              clearTimeout(t);
              live.delete(child);
              res();
            });
            child.kill('SIGTERM');
          }),
      });
    });
  });
}

/** Resolve once `cond()` holds (checked on every event loop turn), bounded. */
function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const started = Date.now();
    const check = (): void => {
      if (cond()) return resolve();
      if (Date.now() - started > timeoutMs) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(check, 1);
    };
    check();
  });
}

async function fanOut(label: string, args: string[]): Promise<{ label: string; p50: number; p99: number; max: number; ackP50: number; ackP99: number }> {
  const registry = await startRegistry(args);
  progress(`${label}: registry at ${registry.address}; opening ${WATCHERS} watchers over ${CONNECTIONS} connections`);
  const clients = Array.from({ length: CONNECTIONS }, () => connect(RegistryService, { target: registry.address, waitForReady: true }));
  const registrar = connect(RegistryService, { target: registry.address, waitForReady: true });
  // revision -> [watchers that have it, time the last one got it]
  const seen = new Map<number, { n: number; last: number }>();
  let snapshots = 0;
  const streams = [];
  for (let i = 0; i < WATCHERS; i++) {
    const stream = clients[i % CONNECTIONS]!.watch({ service: 'bench' });
    streams.push(stream);
    void (async () => {
      try {
        for await (const m of stream as AsyncIterable<WatchMessage>) {
          if (m.type === 'snapshot') snapshots++;
          else if (m.type === 'added') {
            const now = performance.now();
            let s = seen.get(m.revision);
            if (s === undefined) seen.set(m.revision, (s = { n: 0, last: 0 }));
            s.n++;
            s.last = now;
          }
        }
      } catch {
        // cancelled at the end
      }
    })();
  }
  await until(() => snapshots === WATCHERS, 60000, `${WATCHERS} snapshots`);
  const { leaseId } = await registrar.grant({ ttlMs: 600000 });
  const latencies: number[] = [];
  const acks: number[] = [];
  for (let i = 0; i < WARMUP + REGISTRATIONS; i++) {
    const t0 = performance.now();
    const { revision } = await registrar.put({ leaseId, instance: { service: 'bench', id: `i${i}`, address: `10.0.0.${i % 250}:7000`, metadata: { version: '1.2.3', zone: 'z1' } } });
    const ack = performance.now() - t0;
    await until(() => (seen.get(revision)?.n ?? 0) === WATCHERS, 30000, `all watchers to see revision ${revision}`);
    if (i >= WARMUP) {
      latencies.push(seen.get(revision)!.last - t0);
      acks.push(ack);
    }
  }
  for (const s of streams) s.cancel();
  await Promise.all([...clients, registrar].map((c) => c.close()));
  await registry.stop();
  latencies.sort((a, b) => a - b);
  acks.sort((a, b) => a - b);
  const r = { label, p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies.at(-1)!, ackP50: percentile(acks, 50), ackP99: percentile(acks, 99) };
  progress(`${label}: p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms`);
  return r;
}

interface Mem {
  rss: number;
  heapUsed: number;
}

async function memory(): Promise<{ idle: Mem; registered: Mem; withStreams: Mem }> {
  const registry = await startRegistry();
  const clients = Array.from({ length: 10 }, () => connect(RegistryService, { target: registry.address, waitForReady: true, timeout: 60000 }));
  const idle = await clients[0]!.info({});
  progress(`memory: registering ${INSTANCES} instances (one lease each)`);
  const leases: number[] = [];
  const CONCURRENCY = 200;
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, w) => {
      const c = clients[w % clients.length]!;
      while (next < INSTANCES) {
        const i = next++;
        const { leaseId } = await c.grant({ ttlMs: 3_600_000 });
        await c.put({ leaseId, instance: { service: `svc${i % 100}`, id: `instance-${i}`, address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:7000`, metadata: { version: '1.2.3', zone: `zone-${i % 3}`, weight: '100' } } });
        leases.push(leaseId);
      }
    }),
  );
  const info = await clients[0]!.info({});
  if (info.instances !== INSTANCES) throw new Error(`expected ${INSTANCES} instances, registry has ${info.instances}`);
  const registered = info;
  progress(`memory: opening ${INSTANCES} keepalive streams`);
  let acked = 0;
  const open = [];
  for (let i = 0; i < leases.length; i++) {
    const pings = pushable<{ leaseId: number }>();
    void pings.push({ leaseId: leases[i]! });
    const replies = clients[i % clients.length]!.keepAlive(pings);
    open.push(replies);
    void (async () => {
      try {
        for await (const _ of replies) acked++;
      } catch {
        // cancelled at the end
      }
    })();
  }
  await until(() => acked >= INSTANCES, 60000, 'every keepalive stream to answer');
  const withStreams = await clients[0]!.info({});
  for (const r of open) r.cancel();
  await Promise.all(clients.map((c) => c.close()));
  await registry.stop();
  return { idle, registered, withStreams };
}

const mb = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MiB`;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'skein-bench-registry-'));
  try {
    const rows = [await fanOut('memory', []), await fanOut('--data (fsync)', ['--data', dir])];
    const mem = await memory();
    const out: string[] = [];
    out.push(`\nregistration -> all ${WATCHERS} watchers (${CONNECTIONS} connections, one client process), ${REGISTRATIONS} registrations`);
    out.push('| registry        | p50      | p99      | max      | put ack p50 | put ack p99 |');
    out.push('|-----------------|----------|----------|----------|-------------|-------------|');
    for (const r of rows) {
      out.push(`| ${r.label.padEnd(15)} | ${`${r.p50.toFixed(1)} ms`.padEnd(8)} | ${`${r.p99.toFixed(1)} ms`.padEnd(8)} | ${`${r.max.toFixed(1)} ms`.padEnd(8)} | ${`${r.ackP50.toFixed(2)} ms`.padEnd(11)} | ${`${r.ackP99.toFixed(2)} ms`.padEnd(11)} |`);
    }
    out.push(`goal p99 <= 50 ms: ${rows.every((r) => r.p99 <= 50) ? 'met' : 'MISSED'}`);
    out.push(`\nregistry RSS (memory mode)`);
    out.push('| state                                              | RSS       | V8 heap used |');
    out.push('|----------------------------------------------------|-----------|--------------|');
    const row = (label: string, m: Mem): string => `| ${label.padEnd(50)} | ${mb(m.rss).padEnd(9)} | ${mb(m.heapUsed).padEnd(12)} |`;
    out.push(row('idle', mem.idle));
    out.push(row(`${INSTANCES} instances, ${INSTANCES} leases`, mem.registered));
    out.push(row(`  + ${INSTANCES} open keepalive streams`, mem.withStreams));
    out.push(`per instance, RSS (registered - idle) / ${INSTANCES}: ${((mem.registered.rss - mem.idle.rss) / INSTANCES) | 0} bytes (heap: ${((mem.registered.heapUsed - mem.idle.heapUsed) / INSTANCES) | 0} bytes, garbage included)`);
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench registry: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
