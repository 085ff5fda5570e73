/**
 * Balancing benchmark (issue 4, item 11): the p99 of unary calls over three replicas, one
 * of which is slowed by 20 ms, with `round-robin` and with `p2c-ewma` in the same run.
 * Goal: p99(p2c-ewma) ≤ 0.3 × p99(round-robin).
 *
 *   npm run build && node dist/bench/balance.js
 *   BENCH_RUNS=5 BENCH_SECONDS=5 BENCH_INFLIGHT=32 node dist/bench/balance.js
 *
 * Processes (all `node dist/bench/balance.js <role> ...`, see lib/proc.ts):
 *   - three replica servers (`server NAME DELAY_MS`): a unary `ask` that answers with its
 *     name; the slow one sleeps DELAY_MS (setTimeout) in its handler before answering;
 *   - one fresh client process per measurement (`client BALANCER URL INFLIGHT SECONDS
 *     WARMUP`): `connect(Who, { discovery: 'static://a,b,slow', balancer })`, waits for
 *     three READY subchannels, then a closed loop of INFLIGHT workers, each awaiting one
 *     call at a time: a warm-up, then a measured window in which every call is timed
 *     (process.hrtime) and counted per replica; prints one JSON line.
 * The two pickers are interleaved (the order alternates per run); the servers stay up for
 * the whole benchmark; the table reports the median across runs of each run's p50/p99.
 */
import os from 'node:os';
import { connect, createServer, implement, service, unary } from '../src/index.js';
import { exitWithParent, fatal, serverMain } from './lib/child.js';
import { benchScript, Child } from './lib/proc.js';
import { envNum, errorMessage, firstLine, fmtInt, fmtRatio, fmtRuns, fmtSpread, table } from './lib/report.js';
import { closedLoop } from './lib/driver.js';
import { median, percentile, spread } from './lib/stats.js';

const Who = service('who', {
  ask: unary<{ n: number }, { by: string }>({ idempotent: true }),
});

const PICKERS = ['round-robin', 'p2c-ewma'] as const;
type PickerName = (typeof PICKERS)[number];
const REPLICAS: ReadonlyArray<{ name: string; delayMs: number }> = [
  { name: 'a', delayMs: 0 },
  { name: 'b', delayMs: 0 },
  { name: 'slow', delayMs: Number(process.env.BENCH_SLOW_MS ?? 20) },
];

interface ClientResult {
  balancer: string;
  count: number;
  seconds: number;
  rps: number;
  p50_us: number;
  p99_us: number;
  p999_us: number;
  errors: number;
  /** Calls answered by each replica in the measured window. */
  by: Record<string, number>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------- children

async function serverRole(name: string, delayMs: number): Promise<void> {
  await serverMain(async () => {
    const server = createServer().add(
      implement(Who, {
        async ask() {
          if (delayMs > 0) await sleep(delayMs);
          return { by: name };
        },
      }),
    );
    const addr = await server.listen({ host: '127.0.0.1', port: 0 });
    return { address: `127.0.0.1:${addr.port}`, connections: () => -1, close: () => server.close() };
  });
}

async function clientRole(balancer: string, url: string, inflight: number, seconds: number, warmup: number): Promise<void> {
  exitWithParent();
  setTimeout(() => fatal(new Error('client self-timeout')), (seconds + warmup + 60) * 1000).unref();
  const client = connect(Who, { discovery: url, balancer });
  const readyBy = Date.now() + 15_000;
  while (client.channel.readySubchannels.length < REPLICAS.length) {
    if (Date.now() > readyBy) throw new Error(`only ${client.channel.readySubchannels.length} READY subchannels after 15 s`);
    await sleep(5);
  }
  let errors = 0;
  let lastError: unknown = null;
  const by: Record<string, number> = {};
  const { count, seconds: elapsed, samples } = await closedLoop({
    inflight,
    warmup,
    seconds,
    call: (n) => client.ask({ n }, { timeout: 5000 }),
    onReply: (reply) => {
      by[reply.by] = (by[reply.by] ?? 0) + 1;
    },
    onError: (err) => {
      lastError = err;
      return ++errors >= 1000;
    },
  });
  await Promise.race([client.close(), sleep(2000)]);
  if (count === 0 || errors >= 1000) throw new Error(`${balancer}: ${count} ok, ${errors} errors; last: ${String(lastError)}`);
  const sorted = samples.sorted();
  const result: ClientResult = {
    balancer,
    count,
    seconds: elapsed,
    rps: count / elapsed,
    p50_us: percentile(sorted, 50),
    p99_us: percentile(sorted, 99),
    p999_us: percentile(sorted, 99.9),
    errors,
    by,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

// ---------------------------------------------------------------------------- orchestrator

const fmtMs = (us: number): string => (Number.isFinite(us) ? `${(us / 1000).toFixed(2)} ms` : 'n/a');
const fmtPct = (x: number): string => (Number.isFinite(x) ? `${(x * 100).toFixed(1)} %` : 'n/a');

async function orchestrate(): Promise<void> {
  const runs = Math.max(1, Math.round(envNum('BENCH_RUNS', 3)));
  const seconds = envNum('BENCH_SECONDS', 3);
  const warmup = envNum('BENCH_WARMUP', 0.5);
  const inflight = Math.max(1, Math.round(envNum('BENCH_INFLIGHT', 32)));
  const script = benchScript('balance.js');
  const cpus = os.cpus();
  console.log(`skein bench balance — ${new Date().toISOString()}`);
  console.log(`machine: ${cpus.length} × ${cpus[0]?.model ?? 'unknown'}, ${Math.round(os.totalmem() / 1e6)} MB RAM, ${os.platform()} ${os.release()} ${os.arch()}, node ${process.version}, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`settings: replicas ${REPLICAS.map((r) => (r.delayMs ? `${r.name} (+${r.delayMs} ms in its handler)` : r.name)).join(', ')} | ${inflight} in flight (closed loop) | ${runs} run(s) × ${seconds} s (+${warmup} s warm-up) per picker`);

  const servers: Child[] = [];
  const results: Record<PickerName, ClientResult[]> = { 'round-robin': [], 'p2c-ewma': [] };
  const failures: Record<PickerName, string[]> = { 'round-robin': [], 'p2c-ewma': [] };
  try {
    const addresses: string[] = [];
    for (const r of REPLICAS) {
      // startServer() runs a script without arguments; these servers take a role, so start them directly.
      const child = new Child(`server ${r.name}`, script, ['server', r.name, String(r.delayMs)]);
      servers.push(child);
      addresses.push((await child.waitPrefixed('ready', 20_000)).trim());
    }
    const url = `static://${addresses.join(',')}`;
    process.stderr.write(`replicas: ${REPLICAS.map((r, i) => `${r.name}=${addresses[i]}`).join(' ')}\n`);
    for (let run = 0; run < runs; run++) {
      const order = run % 2 === 0 ? PICKERS : [...PICKERS].reverse();
      for (const balancer of order) {
        const c = new Child(`client ${balancer}`, script, ['client', balancer, url, String(inflight), String(seconds), String(warmup)]);
        try {
          const line = await c.waitLine((l) => l.startsWith('{'), (seconds + warmup + 45) * 1000, 'the result line');
          const r = JSON.parse(line) as ClientResult;
          results[balancer].push(r);
          process.stderr.write(`[run ${run + 1}/${runs}] ${balancer}: ${fmtInt(r.rps)} calls/s, p50 ${fmtMs(r.p50_us)}, p99 ${fmtMs(r.p99_us)}, slow replica ${fmtPct((r.by.slow ?? 0) / r.count)}${r.errors ? `, ${r.errors} errors` : ''}\n`);
        } catch (err) {
          failures[balancer].push(firstLine(err));
          process.stderr.write(`[run ${run + 1}/${runs}] ${balancer}: FAILED: ${errorMessage(err)}\n`);
        } finally {
          await c.stop();
        }
      }
    }
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }

  const med = (p: PickerName, f: (r: ClientResult) => number): number => median(results[p].map(f));
  console.log(`\nUnary calls over 3 replicas, one slowed by ${REPLICAS[2]!.delayMs} ms; median of ${runs} run(s) × ${seconds} s\n`);
  const rows = [['picker', 'calls/s', 'p50', 'p99', 'p99.9', 'p99 spread', 'to slow replica', 'runs']];
  for (const p of PICKERS) {
    const n = results[p].length;
    rows.push([
      p,
      n ? fmtInt(med(p, (r) => r.rps)) : 'FAILED',
      n ? fmtMs(med(p, (r) => r.p50_us)) : '',
      n ? fmtMs(med(p, (r) => r.p99_us)) : '',
      n ? fmtMs(med(p, (r) => r.p999_us)) : '',
      n ? fmtSpread(spread(results[p].map((r) => r.p99_us))) : '',
      n ? fmtPct(med(p, (r) => (r.by.slow ?? 0) / r.count)) : '',
      fmtRuns(n, failures[p].length),
    ]);
  }
  console.log(table(rows, 1));

  const ratio = med('p2c-ewma', (r) => r.p99_us) / med('round-robin', (r) => r.p99_us);
  const pass = Number.isFinite(ratio) ? ratio <= 0.3 : null;
  console.log(`\nTarget (issue 4): p99(p2c-ewma) / p99(round-robin) ≤ 0.30× — measured ${fmtRatio(ratio, 2)}: ${pass === null ? 'n/a' : pass ? 'PASS' : 'FAIL'}`);
  process.exitCode = process.env.BENCH_STRICT === '1' && pass !== true ? 1 : 0;
}

// ---------------------------------------------------------------------------- main

const [role, ...args] = process.argv.slice(2);
if (role === 'server') {
  serverRole(args[0] ?? 'x', Number(args[1] ?? 0)).catch(fatal);
} else if (role === 'client') {
  const [balancer, url, inflight, seconds, warmup] = args;
  clientRole(balancer!, url!, Number(inflight), Number(seconds), Number(warmup)).catch(fatal);
} else if (role === undefined) {
  orchestrate().catch((err: unknown) => {
    process.stderr.write(`bench balance: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
} else {
  fatal(new Error(`usage: node dist/bench/balance.js   (roles 'server' and 'client' are for its own children)`));
}
