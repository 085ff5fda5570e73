/**
 * Policy-chain benchmark (issue 4, item 10): the cost of the full DEFAULT resilience chain
 * on the unary hot path against no policies. Goal: ≤ 10 % throughput loss.
 *
 *   npm run build && node dist/bench/policies.js
 *   BENCH_RUNS=5 BENCH_SECONDS=3 node dist/bench/policies.js --json
 *
 * Four modes, each a (server, client) pair of settings:
 *   none    createServer({ resilience: false })  + connect(Def, { target, resilience: false })
 *   default createServer()                       + connect(Def, { target })   (shed | retry → breaker)
 *   server  createServer()                       + connect(Def, { target, resilience: false })
 *   client  createServer({ resilience: false })  + connect(Def, { target })
 * each measured with a 64 B unary echo (the `bench` service of bench/skein) at 1 call in
 * flight (latency) and at 256 in flight (throughput), over TCP 127.0.0.1.
 *
 * Processes (all `node dist/bench/policies.js <role> ...`, see lib/proc.ts): for every
 * measurement a fresh server process (`server on|off`) and a fresh client process
 * (`client on|off HOST:PORT SIZE INFLIGHT SECONDS WARMUP`), which runs a closed loop of
 * INFLIGHT workers (the same loop as lib/driver.ts, but failed calls are counted by
 * status instead of ending the run: a shedding server may refuse some) and prints one JSON
 * line. The modes are interleaved and their order rotates per run; the table shows the
 * median across runs.
 *
 * `--json [FILE]` also writes the results (default .bench-out/policies-<date>.json).
 * Exit status 1 when a measurement failed, or (BENCH_STRICT=1) when the goal is missed.
 */
import { connect, createServer, isSkeinError } from '../src/index.js';
import { commandLoop, emit, exitWithParent, fatal } from './lib/child.js';
import { benchScript, Child } from './lib/proc.js';
import { envList, envNum, errorMessage, firstLine, fmtInt, fmtRatio, fmtRuns, fmtSpread, fmtUs, machineMeta, parseJsonArg, printHeader, ratio, rotate, table, writeJson } from './lib/report.js';
import { closedLoop } from './lib/driver.js';
import { median, percentile, unaryMedians } from './lib/stats.js';
import { Bench, benchImpl } from './skein/service.js';

const MODES = ['none', 'default', 'server', 'client'] as const;
type Mode = (typeof MODES)[number];
/** Which side has its default policies in each mode. */
const SIDES: Record<Mode, { server: boolean; client: boolean; label: string }> = {
  none: { server: false, client: false, label: '(a) none / none' },
  default: { server: true, client: true, label: '(b) default / default' },
  server: { server: true, client: false, label: '(c) default server / no client policies' },
  client: { server: false, client: true, label: '(d) no server policies / default client' },
};

export interface PolicyClientResult {
  mode: string;
  inflight: number;
  /** Calls that succeeded in the measured window. */
  count: number;
  seconds: number;
  /** Successful calls per second. */
  rps: number;
  p50_us: number;
  p99_us: number;
  p999_us: number;
  /** Failed calls in the measured window, by status name (e.g. RESOURCE_EXHAUSTED). */
  errors: Record<string, number>;
  /** Failed calls during the warm-up, by status name. */
  warmup_errors: Record<string, number>;
  /** CPU time (user + system) of the client process in the window, per call (ok + failed), µs. */
  client_cpu_us_per_call: number;
  /** The same for the server process (asked over its stdin at the window's start and end), µs. */
  server_cpu_us_per_call?: number;
  /** Share of one core each process used in the window. */
  client_cpu_util: number;
  server_cpu_util?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function statusOf(err: unknown): string {
  return isSkeinError(err) ? err.statusName : 'NOT_A_SKEIN_ERROR';
}

// ---------------------------------------------------------------------------- children

/** A bench server like lib/child.ts serverMain, plus a `cpu` stdin command (process.cpuUsage()). */
async function serverRole(policies: boolean): Promise<void> {
  const server = createServer(policies ? {} : { resilience: false });
  server.add(benchImpl);
  const addr = await server.listen({ host: '127.0.0.1', port: 0 });
  commandLoop(async (line) => {
    if (line === 'cpu') emit('cpu', process.cpuUsage());
    else if (line === 'quit') {
      await Promise.race([server.close(), sleep(2000)]);
      process.exit(0);
    }
  });
  process.on('SIGTERM', () => process.exit(0));
  emit('ready', `127.0.0.1:${addr.port}`);
}

async function clientRole(policies: boolean, target: string, size: number, inflight: number, seconds: number, warmup: number): Promise<void> {
  exitWithParent();
  setTimeout(() => fatal(new Error('client self-timeout')), (seconds + warmup + 60) * 1000).unref();
  const client = connect(Bench, policies ? { target } : { target, resilience: false });
  const payload = Buffer.alloc(size, 0x61);
  const first = await Promise.race([client.echo(payload), sleep(15_000).then(() => Promise.reject(new Error('first echo timed out')))]);
  if (first.length !== size) throw new Error(`echo returned ${first.length} bytes, sent ${size}`);

  let failed = 0;
  let lastError: unknown = null;
  const errors: Record<string, number> = {};
  const warmupErrors: Record<string, number> = {};
  let cpu0 = process.cpuUsage();
  let cpu = cpu0;
  let failed0 = 0;
  let failedInWindow = 0;
  const { count, seconds: elapsed, samples } = await closedLoop({
    inflight,
    warmup,
    seconds,
    call: async () => {
      const reply = await client.echo(payload);
      if (reply.length !== size) throw new Error(`echo returned ${reply.length} bytes, sent ${size}`);
      return reply;
    },
    onError: async (err, measuring) => {
      lastError = err;
      const s = statusOf(err);
      if (measuring) errors[s] = (errors[s] ?? 0) + 1;
      else warmupErrors[s] = (warmupErrors[s] ?? 0) + 1;
      if (++failed >= 1_000_000) return true;
      // A refused call returns at once: give the event loop a turn so a worker cannot spin.
      await new Promise((r) => setImmediate(r));
      return false;
    },
    // The orchestrator reads the server's CPU time when it sees these marks.
    onWindow: (edge) => {
      if (edge === 'start') {
        process.stdout.write('mark start\n');
        cpu0 = process.cpuUsage();
        failed0 = failed;
      } else {
        cpu = process.cpuUsage(cpu0);
        failedInWindow = failed - failed0;
        process.stdout.write('mark end\n');
      }
    },
  });
  await Promise.race([client.close(), sleep(2000)]);
  // No success at all is a failure of the run, unless every call was refused (a shedding
  // server whose limit collapsed: that is a result, reported as 0 req/s).
  const onlyRefused = failedInWindow > 0 && Object.keys(errors).every((s) => s === 'RESOURCE_EXHAUSTED');
  if (count === 0 && !onlyRefused) throw new Error(`no successful call in the window (${failedInWindow} failed); last: ${String(lastError)}`);
  const sorted = samples.sorted();
  const result: PolicyClientResult = {
    mode: policies ? 'default' : 'none',
    inflight,
    count,
    seconds: elapsed,
    rps: count / elapsed,
    p50_us: percentile(sorted, 50),
    p99_us: percentile(sorted, 99),
    p999_us: percentile(sorted, 99.9),
    errors,
    warmup_errors: warmupErrors,
    client_cpu_us_per_call: (cpu.user + cpu.system) / (count + failedInWindow),
    client_cpu_util: (cpu.user + cpu.system) / 1e6 / elapsed,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

// ---------------------------------------------------------------------------- orchestrator

interface Case {
  mode: Mode;
  inflight: number;
  runs: PolicyClientResult[];
  failures: string[];
}

interface CaseMedian {
  n: number;
  rps: number;
  rps_spread: number;
  p50_us: number;
  p99_us: number;
  /** Median over runs of the failed calls in the window (all statuses). */
  errors: number;
  server_cpu_us_per_call: number;
  client_cpu_us_per_call: number;
  /** Median over runs of server + client CPU µs per call. */
  cpu_us_per_call: number;
}

function caseMedian(c: Case): CaseMedian | null {
  if (c.runs.length === 0) return null;
  return {
    ...unaryMedians(c.runs),
    errors: median(c.runs.map((r) => Object.values(r.errors).reduce((a, b) => a + b, 0))),
    server_cpu_us_per_call: median(c.runs.map((r) => r.server_cpu_us_per_call ?? NaN)),
    client_cpu_us_per_call: median(c.runs.map((r) => r.client_cpu_us_per_call)),
    cpu_us_per_call: median(c.runs.map((r) => (r.server_cpu_us_per_call ?? NaN) + r.client_cpu_us_per_call)),
  };
}

/** The server process's CPU time so far (user + system), µs. */
async function serverCpu(server: Child): Promise<number> {
  server.send('cpu');
  const u = JSON.parse(await server.waitPrefixed('cpu', 10_000)) as { user: number; system: number };
  return u.user + u.system;
}

async function orchestrate(argv: string[]): Promise<void> {
  const json = parseJsonArg(argv, {
    name: 'policies',
    usage: 'usage: node dist/bench/policies.js [--json [FILE]]\nenv: BENCH_RUNS (5) BENCH_SECONDS (3) BENCH_WARMUP (0.5) BENCH_INFLIGHT (1,256) BENCH_SIZE (64) BENCH_STRICT (0) BENCH_VERBOSE (0)',
  });
  const runs = Math.max(1, Math.round(envNum('BENCH_RUNS', 5)));
  const seconds = envNum('BENCH_SECONDS', 3);
  if (!(seconds > 0)) throw new Error('BENCH_SECONDS must be > 0');
  const warmup = envNum('BENCH_WARMUP', 0.5);
  const size = Math.round(envNum('BENCH_SIZE', 64));
  const inflights = envList('BENCH_INFLIGHT', [1, 256]);
  const strict = process.env.BENCH_STRICT === '1';
  const script = benchScript('policies.js');
  const meta = machineMeta();
  printHeader('policies', meta);
  console.log(`settings: unary echo ${size} B over TCP 127.0.0.1 | in flight ${inflights.join(', ')} | modes ${MODES.join(', ')} | ${runs} run(s) × ${seconds} s (+${warmup} s warm-up)`);
  console.log(`estimated duration: ~${Math.ceil((runs * inflights.length * MODES.length * (seconds + warmup + 0.8)) / 60)} min (progress on stderr)`);

  const cases: Case[] = [];
  for (const inflight of inflights) for (const mode of MODES) cases.push({ mode, inflight, runs: [], failures: [] });
  const caseOf = (mode: Mode, inflight: number): Case => cases.find((c) => c.mode === mode && c.inflight === inflight)!;
  const timeout = (seconds + warmup + 45) * 1000;

  let k = 0;
  for (let run = 0; run < runs; run++) {
    for (const inflight of inflights) {
      // Rotate the order of the modes per run and per concurrency; reverse it every other run.
      const base = rotate(MODES, k++);
      const order = run % 2 === 0 ? base : base.reverse();
      for (const mode of order) {
        const c = caseOf(mode, inflight);
        const what = `${mode} ×${inflight}`;
        const sides = SIDES[mode];
        const server = new Child(`server ${sides.server ? 'on' : 'off'}`, script, ['server', sides.server ? 'on' : 'off']);
        let client: Child | undefined;
        try {
          const target = (await server.waitPrefixed('ready', 20_000)).trim();
          client = new Child(`client ${what}`, script, ['client', sides.client ? 'on' : 'off', target, String(size), String(inflight), String(seconds), String(warmup)]);
          await client.waitLine((l) => l === 'mark start', timeout, 'the start of the window');
          const cpu0 = await serverCpu(server);
          const t0 = process.hrtime.bigint();
          await client.waitLine((l) => l === 'mark end', timeout, 'the end of the window');
          const cpu1 = await serverCpu(server);
          const dt = Number(process.hrtime.bigint() - t0) / 1e9;
          const r = JSON.parse(await client.waitLine((l) => l.startsWith('{'), timeout, 'the result line')) as PolicyClientResult;
          r.mode = mode;
          const calls = r.count + Object.values(r.errors).reduce((a, b) => a + b, 0);
          r.server_cpu_us_per_call = (cpu1 - cpu0) / calls;
          r.server_cpu_util = (cpu1 - cpu0) / 1e6 / dt;
          c.runs.push(r);
          const errs = Object.entries(r.errors).map(([s, n]) => `${n} ${s}`);
          process.stderr.write(
            `[run ${run + 1}/${runs}] ${what}: ${fmtInt(r.rps)} req/s, p50 ${fmtUs(r.p50_us)}, p99 ${fmtUs(r.p99_us)}, CPU/call server ${r.server_cpu_us_per_call.toFixed(2)} µs client ${r.client_cpu_us_per_call.toFixed(2)} µs${errs.length ? `, failed: ${errs.join(', ')}` : ''}\n`,
          );
        } catch (err) {
          c.failures.push(firstLine(err));
          process.stderr.write(`[run ${run + 1}/${runs}] ${what}: FAILED: ${errorMessage(err)}\n`);
        } finally {
          await client?.stop();
          await server.stop();
        }
      }
    }
  }

  // -------------------------------------------------------------- table
  const med = new Map<Case, CaseMedian | null>(cases.map((c) => [c, caseMedian(c)]));
  console.log(`\nUnary echo ${size} B, one connection, N calls in flight (closed loop); median of ${runs} run(s) × ${seconds} s after ${warmup} s warm-up`);
  console.log('server / client: "default" = the default policy chain (server: shed; client: retry → breaker), "none" = resilience: false');
  console.log('ratio = this mode / (a) none, on medians (req/s: < 1 is a loss; latency, CPU: > 1 is more); spread = ±½ (max − min) / median of req/s');
  console.log('CPU/call = CPU time (user + system) of the server / client process in the window ÷ calls in it: less sensitive to a noisy machine than req/s\n');
  const rows: string[][] = [['in flight', 'mode', 'req/s', 'spread', 'p50', 'p99', 'failed', 'CPU/call srv', 'CPU/call cli', 'req/s ratio', 'p50 ratio', 'p99 ratio', 'CPU/call ratio', 'runs']];
  const ratios: Array<{ inflight: number; mode: Mode; rps: number | null; p50: number | null; p99: number | null; cpu_per_call: number | null; rps_paired: number | null }> = [];
  for (const inflight of inflights) {
    const none = med.get(caseOf('none', inflight)) ?? undefined;
    let first = true;
    for (const mode of MODES) {
      const c = caseOf(mode, inflight);
      const m = med.get(c) ?? undefined;
      const r = { rps: ratio(m?.rps, none?.rps), p50: ratio(m?.p50_us, none?.p50_us), p99: ratio(m?.p99_us, none?.p99_us), cpu_per_call: ratio(m?.cpu_us_per_call, none?.cpu_us_per_call) };
      // Paired: the ratio within each run (the two modes ran back to back), then the median.
      const pairs: number[] = [];
      const base = caseOf('none', inflight).runs;
      for (let i = 0; i < Math.min(base.length, c.runs.length); i++) pairs.push(c.runs[i]!.rps / base[i]!.rps);
      ratios.push({ inflight, mode, ...r, rps_paired: pairs.length ? median(pairs) : null });
      rows.push([
        first ? String(inflight) : '',
        SIDES[mode].label,
        m ? fmtInt(m.rps) : 'FAILED',
        m ? fmtSpread(m.rps_spread) : '',
        m ? fmtUs(m.p50_us) : '',
        m ? fmtUs(m.p99_us) : '',
        m ? fmtInt(m.errors) : '',
        m ? fmtUs(m.server_cpu_us_per_call) : '',
        m ? fmtUs(m.client_cpu_us_per_call) : '',
        mode === 'none' ? '1' : fmtRatio(r.rps),
        mode === 'none' ? '1' : fmtRatio(r.p50),
        mode === 'none' ? '1' : fmtRatio(r.p99),
        mode === 'none' ? '1' : fmtRatio(r.cpu_per_call),
        fmtRuns(c.runs.length, c.failures.length),
      ]);
      first = false;
    }
    if (inflight !== inflights[inflights.length - 1]) rows.push([]);
  }
  console.log(table(rows));

  // -------------------------------------------------------------- goal
  const top = Math.max(...inflights);
  const goalRow = ratios.find((r) => r.inflight === top && r.mode === 'default');
  const goalRatio = goalRow?.rps ?? null;
  const loss = goalRatio === null ? null : 1 - goalRatio;
  const pass = loss === null ? null : loss <= 0.1;
  console.log(
    `\ngoal: ≤ 10 % loss — ${pass === null ? 'n/a' : pass ? 'met' : 'missed'} (req/s at ${top} in flight, (b) default / (a) none = ${fmtRatio(goalRatio)}, loss ${loss === null ? 'n/a' : `${(loss * 100).toFixed(1)} %`}; median of the per-run ratios ${fmtRatio(goalRow?.rps_paired ?? null)})`,
  );

  const failures = cases.reduce((n, c) => n + c.failures.length, 0);
  if (json !== null) {
    const doc = {
      bench: 'policies',
      meta,
      settings: { runs, seconds, warmup, size, inflight: inflights, modes: MODES, strict },
      cases: cases.map((c) => ({ mode: c.mode, label: SIDES[c.mode].label, server: SIDES[c.mode].server ? 'default' : 'none', client: SIDES[c.mode].client ? 'default' : 'none', inflight: c.inflight, median: med.get(c) ?? null, runs: c.runs, failures: c.failures })),
      ratios,
      goal: { description: 'req/s at the highest concurrency, default/none ≥ 0.90 (≤ 10 % loss)', inflight: top, ratio: goalRatio, ratio_paired: goalRow?.rps_paired ?? null, loss, pass },
      failures,
    };
    console.log(`\nresults written to ${writeJson(json, doc)}`);
  }
  if (failures > 0) {
    process.stderr.write(`bench policies: ${failures} measurement(s) failed\n`);
    process.exitCode = 1;
  } else process.exitCode = strict && pass !== true ? 1 : 0;
}

// ---------------------------------------------------------------------------- main

const [role, ...args] = process.argv.slice(2);
if (role === 'server') {
  serverRole(args[0] === 'on').catch(fatal);
} else if (role === 'client') {
  const [side, target, size, inflight, seconds, warmup] = args;
  clientRole(side === 'on', target!, Number(size), Number(inflight), Number(seconds), Number(warmup)).catch(fatal);
} else if (role === undefined || role.startsWith('-')) {
  orchestrate(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`bench policies: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
} else {
  fatal(new Error(`usage: node dist/bench/policies.js [--json [FILE]]   (roles 'server' and 'client' are for its own children)`));
}
