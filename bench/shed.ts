/**
 * Load-shedding benchmark (issue 4, item 11): shedding keeps the p99 of ADMITTED calls
 * bounded under 3× overload, where without it latency grows toward the deadline.
 *
 *   npm run build && node dist/bench/shed.js
 *   BENCH_RUNS=5 BENCH_SECONDS=3 node dist/bench/shed.js --json
 *
 * The server has a fixed, known capacity: its one unary method spins for BENCH_WORK_MS
 * (1 ms) of wall-clock time, synchronously, so one server process completes at most
 * ~1000 calls/s whatever else runs on the machine.
 *
 *   1. capacity: a closed loop of BENCH_CAPACITY_INFLIGHT (32) workers against a fresh
 *      server without policies, for BENCH_SECONDS; completed calls/s, measured
 *      min(BENCH_RUNS, 3) times, the highest kept (noise only ever lowers it) = capacity C.
 *   2. per run, for each mode (order alternating per run), a fresh server and client:
 *        shed     createServer()                      (the defaults: adaptive shedding)
 *        no-shed  createServer({ resilience: false })
 *      The client has `resilience: false` (no retries: refusals are visible) and runs an
 *      OPEN loop: calls start on a timer schedule whatever completes, each with a deadline
 *      (BENCH_DEADLINE_MS, 1000 ms). Phases, back to back on one connection:
 *        warm-up   BENCH_REF (0.5) × C for BENCH_WARMUP s     (not counted)
 *        reference BENCH_REF (0.5) × C for BENCH_SECONDS s     (the no-overload latency)
 *        overload  BENCH_OVERLOAD (3) × C for BENCH_SECONDS s
 *      then it waits until every call has ended (the deadline bounds that) and prints one
 *      JSON line. A call belongs to the phase it started in; latency is measured from its
 *      start (process.hrtime) to its end, for admitted (OK) and refused calls separately.
 *
 * Reported per mode and phase (medians across runs): offered calls/s, admitted (OK)
 * calls/s (calls started in the phase that succeeded, per second of the phase), OK calls
 * that ended while the phase ran, per second (the goodput then), refused
 * (RESOURCE_EXHAUSTED), DEADLINE_EXCEEDED and other failures, p50/p99 of the admitted
 * calls, p50/p99 of the refusals; and the ratio p99(shed) / p99(no-shed) of admitted calls
 * under overload.
 *
 * `--json [FILE]` also writes the results (default .bench-out/shed-<date>.json).
 * Exit status 1 when a measurement failed.
 */
import { performance } from 'node:perf_hooks';
import { connect, createServer, implement, isSkeinError, service, unary } from '../src/index.js';
import { exitWithParent, fatal, serverMain } from './lib/child.js';
import { benchScript, Child } from './lib/proc.js';
import { envNum, errorMessage, firstLine, fmtInt, fmtRatio, fmtRuns, machineMeta, parseJsonArg, printHeader, ratio, table, writeJson } from './lib/report.js';
import { closedLoop } from './lib/driver.js';
import { median, percentile, Samples } from './lib/stats.js';

const Work = service('shedbench', {
  work: unary<{ n: number }, { n: number }>(),
});

const MODES = ['shed', 'no-shed'] as const;
type Mode = (typeof MODES)[number];
const PHASES = ['reference', 'overload'] as const;
type Phase = (typeof PHASES)[number];

interface CapacityResult {
  count: number;
  seconds: number;
  rps: number;
  p50_us: number;
  p99_us: number;
  errors: number;
}

export interface PhaseResult {
  /** Calls started in the phase. */
  offered: number;
  seconds: number;
  offered_rps: number;
  /** Calls started in the phase that succeeded. */
  ok: number;
  /** `ok` / phase length. */
  ok_rps: number;
  /** Successful calls that ENDED within the phase's window, per second (the goodput while it lasted). */
  ok_done_rps: number;
  /** RESOURCE_EXHAUSTED: refused by the server (shedding). */
  refused: number;
  deadline_exceeded: number;
  /** Any other failure, by status. */
  other: Record<string, number>;
  ok_p50_us: number;
  ok_p99_us: number;
  ok_p999_us: number;
  ok_max_us: number;
  refused_p50_us: number;
  refused_p99_us: number;
  /** Largest delay between a call's scheduled start and its real start (client lag). */
  max_lag_us: number;
}

export interface OpenResult {
  mode: string;
  rates: Record<Phase, number>;
  phases: Record<Phase, PhaseResult>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const now = (): bigint => process.hrtime.bigint();

// ---------------------------------------------------------------------------- children

/** Spin for `ms` of wall-clock time: a fixed service time, hence a fixed capacity. */
function spin(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy
  }
}

async function serverRole(shedding: boolean, workMs: number): Promise<void> {
  await serverMain(async () => {
    const server = createServer(shedding ? {} : { resilience: false });
    server.add(
      implement(Work, {
        async work(req) {
          spin(workMs);
          return req;
        },
      }),
    );
    const addr = await server.listen({ host: '127.0.0.1', port: 0 });
    return { address: `127.0.0.1:${addr.port}`, connections: () => -1, close: () => server.close() };
  });
}

function client(target: string): ReturnType<typeof connect<typeof Work.methods>> {
  return connect(Work, { target, resilience: false });
}

async function firstCall(c: ReturnType<typeof client>): Promise<void> {
  await Promise.race([c.work({ n: 0 }, { timeout: 15_000 }), sleep(15_000).then(() => Promise.reject(new Error('first call timed out')))]);
}

/** Closed loop: the server's capacity. */
async function capacityRole(target: string, inflight: number, seconds: number, warmup: number): Promise<void> {
  exitWithParent();
  setTimeout(() => fatal(new Error('client self-timeout')), (seconds + warmup + 60) * 1000).unref();
  const c = client(target);
  await firstCall(c);
  let errors = 0;
  let lastError: unknown = null;
  const { count, seconds: elapsed, samples } = await closedLoop({
    inflight,
    warmup,
    seconds,
    call: (n) => c.work({ n }, { timeout: 10_000 }),
    onError: (err) => {
      lastError = err;
      return ++errors >= 100;
    },
    drainMs: 15_000,
  });
  await Promise.race([c.close(), sleep(2000)]);
  if (count === 0 || errors >= 100) throw new Error(`capacity run failed: ${count} ok, ${errors} errors; last: ${String(lastError)}`);
  const sorted = samples.sorted();
  const result: CapacityResult = { count, seconds: elapsed, rps: count / elapsed, p50_us: percentile(sorted, 50), p99_us: percentile(sorted, 99), errors };
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

class PhaseStats {
  offered = 0;
  ok = 0;
  refused = 0;
  deadline = 0;
  other: Record<string, number> = {};
  okLat = new Samples();
  refusedLat = new Samples();
  maxLagUs = 0;
  seconds = 0;
  /** Successful calls (of any phase) that ended while this phase's window was open. */
  okDone = 0;

  result(): PhaseResult {
    const ok = this.okLat.sorted();
    const ref = this.refusedLat.sorted();
    return {
      offered: this.offered,
      seconds: this.seconds,
      offered_rps: this.offered / this.seconds,
      ok: this.ok,
      ok_rps: this.ok / this.seconds,
      ok_done_rps: this.okDone / this.seconds,
      refused: this.refused,
      deadline_exceeded: this.deadline,
      other: this.other,
      ok_p50_us: percentile(ok, 50),
      ok_p99_us: percentile(ok, 99),
      ok_p999_us: percentile(ok, 99.9),
      ok_max_us: ok.length ? ok[ok.length - 1]! : NaN,
      refused_p50_us: percentile(ref, 50),
      refused_p99_us: percentile(ref, 99),
      max_lag_us: this.maxLagUs,
    };
  }
}

/** Open loop: warm-up, reference and overload phases at fixed arrival rates. */
async function openRole(mode: string, target: string, capacity: number, seconds: number, warmup: number, deadlineMs: number, overload: number, ref: number): Promise<void> {
  exitWithParent();
  setTimeout(() => fatal(new Error('client self-timeout')), (warmup + 2 * seconds + deadlineMs / 1000 + 60) * 1000).unref();
  const c = client(target);
  await firstCall(c);
  let pending = 0;
  let allDone: (() => void) | undefined;
  let n = 0;
  /** The phase whose window is open (completions are credited to it). */
  let open: PhaseStats | undefined;

  const fire = (stats: PhaseStats | undefined): void => {
    pending++;
    const t0 = now();
    c.work({ n: n++ }, { timeout: deadlineMs }).then(
      () => {
        if (stats !== undefined) {
          stats.ok++;
          stats.okLat.push(Number(now() - t0) / 1000);
        }
        if (open !== undefined) open.okDone++;
        if (--pending === 0) allDone?.();
      },
      (err: unknown) => {
        if (stats !== undefined) {
          const s = isSkeinError(err) ? err.statusName : 'NOT_A_SKEIN_ERROR';
          if (s === 'RESOURCE_EXHAUSTED') {
            stats.refused++;
            stats.refusedLat.push(Number(now() - t0) / 1000);
          } else if (s === 'DEADLINE_EXCEEDED') stats.deadline++;
          else stats.other[s] = (stats.other[s] ?? 0) + 1;
        }
        if (--pending === 0) allDone?.();
      },
    );
  };

  /** Start calls at `rate`/s for `secs`, on schedule (a 1 ms timer catches up on what is due). */
  const openLoop = (rate: number, secs: number, stats: PhaseStats | undefined): Promise<void> =>
    new Promise((resolve) => {
      const total = Math.max(1, Math.round(rate * secs));
      const start = performance.now();
      let started = 0;
      open = stats;
      const tick = (): void => {
        const t = performance.now();
        const due = Math.min(total, Math.floor(((t - start) / 1000) * rate) + 1);
        while (started < due) {
          const lagUs = (t - (start + (started * 1000) / rate)) * 1000;
          if (stats !== undefined) {
            stats.offered++;
            if (lagUs > stats.maxLagUs) stats.maxLagUs = lagUs;
          }
          fire(stats);
          started++;
        }
        if (started >= total) {
          if (stats !== undefined) stats.seconds = Math.max(secs, (performance.now() - start) / 1000);
          open = undefined;
          resolve();
        } else setTimeout(tick, 1);
      };
      tick();
    });

  const rates: Record<Phase, number> = { reference: ref * capacity, overload: overload * capacity };
  const stats: Record<Phase, PhaseStats> = { reference: new PhaseStats(), overload: new PhaseStats() };
  if (warmup > 0) await openLoop(rates.reference, warmup, undefined);
  for (const p of PHASES) await openLoop(rates[p], seconds, stats[p]);
  // Every call has a deadline, so this ends; the margin covers a client that lags.
  if (pending > 0) await Promise.race([new Promise<void>((r) => (allDone = r)), sleep(deadlineMs + 10_000)]);
  await Promise.race([c.close(), sleep(2000)]);
  if (pending > 0) throw new Error(`${pending} call(s) still pending ${deadlineMs + 10_000} ms after the last was sent`);
  const result: OpenResult = { mode, rates, phases: { reference: stats.reference.result(), overload: stats.overload.result() } };
  if (result.phases.reference.ok === 0) throw new Error(`no call succeeded in the reference phase: ${JSON.stringify(result.phases.reference)}`);
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

// ---------------------------------------------------------------------------- orchestrator

const fmtMs = (us: number): string => (!Number.isFinite(us) ? 'n/a' : us >= 100_000 ? `${(us / 1000).toFixed(0)} ms` : `${(us / 1000).toFixed(2)} ms`);
type Median = Record<Phase, Record<string, number>>;

function medians(runs: OpenResult[]): Median | null {
  if (runs.length === 0) return null;
  const out = {} as Median;
  for (const p of PHASES) {
    const m: Record<string, number> = {};
    const keys = ['offered_rps', 'ok_rps', 'ok_done_rps', 'refused', 'deadline_exceeded', 'ok_p50_us', 'ok_p99_us', 'ok_p999_us', 'refused_p50_us', 'refused_p99_us', 'max_lag_us'] as const;
    for (const k of keys) m[k] = median(runs.map((r) => r.phases[p][k]));
    m.other = median(runs.map((r) => Object.values(r.phases[p].other).reduce((a, b) => a + b, 0)));
    out[p] = m;
  }
  return out;
}

async function orchestrate(argv: string[]): Promise<void> {
  const json = parseJsonArg(argv, {
    name: 'shed',
    usage:
      'usage: node dist/bench/shed.js [--json [FILE]]\nenv: BENCH_RUNS (5) BENCH_SECONDS (3) BENCH_WARMUP (0.5) BENCH_WORK_MS (1) BENCH_DEADLINE_MS (1000) BENCH_OVERLOAD (3) BENCH_REF (0.5) BENCH_CAPACITY_INFLIGHT (32) BENCH_VERBOSE (0)',
  });
  const runs = Math.max(1, Math.round(envNum('BENCH_RUNS', 5)));
  const seconds = envNum('BENCH_SECONDS', 3);
  if (!(seconds > 0)) throw new Error('BENCH_SECONDS must be > 0');
  const warmup = envNum('BENCH_WARMUP', 0.5);
  const workMs = envNum('BENCH_WORK_MS', 1);
  const deadlineMs = Math.max(1, Math.round(envNum('BENCH_DEADLINE_MS', 1000)));
  const overload = envNum('BENCH_OVERLOAD', 3);
  const ref = envNum('BENCH_REF', 0.5);
  const capInflight = Math.max(1, Math.round(envNum('BENCH_CAPACITY_INFLIGHT', 32)));
  const script = benchScript('shed.js');
  const meta = machineMeta();
  printHeader('shed', meta);
  console.log(`settings: handler spins ${workMs} ms | deadline ${deadlineMs} ms | reference ${ref}× and overload ${overload}× capacity, open loop | ${runs} run(s) × ${seconds} s per phase (+${warmup} s warm-up) | client resilience: false`);

  let failures = 0;
  const startServer = async (shedding: boolean): Promise<{ child: Child; target: string }> => {
    const child = new Child(`server ${shedding ? 'shed' : 'no-shed'}`, script, ['server', shedding ? 'on' : 'off', String(workMs)]);
    try {
      return { child, target: (await child.waitPrefixed('ready', 20_000)).trim() };
    } catch (err) {
      await child.stop();
      throw err;
    }
  };

  // -------------------------------------------------------------- 1. capacity
  const capacities: CapacityResult[] = [];
  for (let i = 0; i < Math.min(runs, 3); i++) {
    const { child: server, target } = await startServer(false);
    const c = new Child('capacity client', script, ['capacity', target, String(capInflight), String(seconds), String(warmup)]);
    try {
      const r = JSON.parse(await c.waitLine((l) => l.startsWith('{'), (seconds + warmup + 45) * 1000, 'the result line')) as CapacityResult;
      capacities.push(r);
      process.stderr.write(`[capacity ${i + 1}/${Math.min(runs, 3)}] ${fmtInt(r.rps)} calls/s\n`);
    } finally {
      await c.stop();
      await server.stop();
    }
  }
  const capacity = capacities.reduce((a, b) => (b.rps > a.rps ? b : a));
  console.log(
    `capacity: ${fmtInt(capacity.rps)} calls/s (best of ${capacities.map((c) => fmtInt(c.rps)).join(', ')}; closed loop, ${capInflight} in flight, ${seconds} s; at most ${fmtInt(1000 / workMs)} by construction) → reference ${fmtInt(ref * capacity.rps)} calls/s, overload ${fmtInt(overload * capacity.rps)} calls/s`,
  );

  // -------------------------------------------------------------- 2. open loop, both modes
  const results: Record<Mode, OpenResult[]> = { shed: [], 'no-shed': [] };
  const failed: Record<Mode, string[]> = { shed: [], 'no-shed': [] };
  const timeout = (warmup + 2 * seconds + deadlineMs / 1000 + 60) * 1000;
  for (let run = 0; run < runs; run++) {
    const order = run % 2 === 0 ? MODES : [...MODES].reverse();
    for (const mode of order) {
      let server: Child | undefined;
      let c: Child | undefined;
      try {
        const s = await startServer(mode === 'shed');
        server = s.child;
        c = new Child(`open client ${mode}`, script, ['open', mode, s.target, String(capacity.rps), String(seconds), String(warmup), String(deadlineMs), String(overload), String(ref)]);
        const r = JSON.parse(await c.waitLine((l) => l.startsWith('{'), timeout, 'the result line')) as OpenResult;
        results[mode].push(r);
        const o = r.phases.overload;
        const f = r.phases.reference;
        process.stderr.write(
          `[run ${run + 1}/${runs}] ${mode}: reference ok p99 ${fmtMs(f.ok_p99_us)} | overload: offered ${fmtInt(o.offered_rps)}/s, ok ${fmtInt(o.ok_rps)}/s, refused ${o.refused}, deadline ${o.deadline_exceeded}, ok p50 ${fmtMs(o.ok_p50_us)}, p99 ${fmtMs(o.ok_p99_us)}, refused p99 ${fmtMs(o.refused_p99_us)}\n`,
        );
      } catch (err) {
        failures++;
        failed[mode].push(firstLine(err));
        process.stderr.write(`[run ${run + 1}/${runs}] ${mode}: FAILED: ${errorMessage(err)}\n`);
      } finally {
        await c?.stop();
        await server?.stop();
      }
    }
  }

  // -------------------------------------------------------------- table
  const med: Record<Mode, Median | null> = { shed: medians(results.shed), 'no-shed': medians(results['no-shed']) };
  console.log(`\nOpen-loop unary calls, ${workMs} ms of CPU each, deadline ${deadlineMs} ms; client without policies; median of ${runs} run(s) × ${seconds} s per phase`);
  console.log(`shed = createServer() (default adaptive shedding); no-shed = createServer({ resilience: false }); capacity ${fmtInt(capacity.rps)} calls/s`);
  console.log('admitted (ok)/s: calls started in the phase that succeeded, per second of it; ok done/s: successful calls that ENDED during the phase, per second\n');
  const rows: string[][] = [['mode', 'phase', 'offered/s', 'admitted (ok)/s', 'ok done/s', 'refused', 'deadline exc.', 'other', 'ok p50', 'ok p99', 'ok p99.9', 'refused p50', 'refused p99', 'runs']];
  for (const mode of MODES) {
    const m = med[mode];
    for (const p of PHASES) {
      const x = m?.[p];
      rows.push([
        p === 'reference' ? mode : '',
        `${p} (${p === 'reference' ? ref : overload}×)`,
        x ? fmtInt(x.offered_rps!) : 'FAILED',
        x ? fmtInt(x.ok_rps!) : '',
        x ? fmtInt(x.ok_done_rps!) : '',
        x ? fmtInt(x.refused!) : '',
        x ? fmtInt(x.deadline_exceeded!) : '',
        x ? fmtInt(x.other!) : '',
        x ? fmtMs(x.ok_p50_us!) : '',
        x ? fmtMs(x.ok_p99_us!) : '',
        x ? fmtMs(x.ok_p999_us!) : '',
        x && x.refused! > 0 ? fmtMs(x.refused_p50_us!) : '–',
        x && x.refused! > 0 ? fmtMs(x.refused_p99_us!) : '–',
        fmtRuns(results[mode].length, failed[mode].length),
      ]);
    }
  }
  console.log(table(rows));
  const p99Ratio = ratio(med.shed?.overload.ok_p99_us, med['no-shed']?.overload.ok_p99_us);
  const vsRef = ratio(med.shed?.overload.ok_p99_us, med.shed?.reference.ok_p99_us);
  // Paired per run (the two modes ran back to back), then the median.
  const paired: number[] = [];
  for (let i = 0; i < Math.min(results.shed.length, results['no-shed'].length); i++) paired.push(results.shed[i]!.phases.overload.ok_p99_us / results['no-shed'][i]!.phases.overload.ok_p99_us);
  console.log(
    `\nadmitted p99 under ${overload}× overload: shed ${fmtMs(med.shed?.overload.ok_p99_us ?? NaN)} (${fmtRatio(vsRef)} its ${ref}× reference) vs no-shed ${fmtMs(med['no-shed']?.overload.ok_p99_us ?? NaN)} — p99 ratio shed/no-shed ${fmtRatio(p99Ratio)} (per-run paired median ${fmtRatio(paired.length ? median(paired) : null)})`,
  );

  if (json !== null) {
    const doc = {
      bench: 'shed',
      meta,
      settings: { runs, seconds, warmup, work_ms: workMs, deadline_ms: deadlineMs, overload, reference: ref, capacity_inflight: capInflight },
      capacity,
      capacity_runs: capacities,
      modes: MODES.map((mode) => ({ mode, server: mode === 'shed' ? 'createServer()' : 'createServer({ resilience: false })', median: med[mode], runs: results[mode], failures: failed[mode] })),
      p99_ratio_shed_over_noshed: p99Ratio,
      p99_ratio_shed_paired: paired.length ? median(paired) : null,
      p99_shed_overload_over_reference: vsRef,
      failures,
    };
    console.log(`\nresults written to ${writeJson(json, doc)}`);
  }
  if (failures > 0) {
    process.stderr.write(`bench shed: ${failures} measurement(s) failed\n`);
    process.exitCode = 1;
  }
}

// ---------------------------------------------------------------------------- main

const [role, ...args] = process.argv.slice(2);
if (role === 'server') {
  serverRole(args[0] === 'on', Number(args[1] ?? 1)).catch(fatal);
} else if (role === 'capacity') {
  const [target, inflight, seconds, warmup] = args;
  capacityRole(target!, Number(inflight), Number(seconds), Number(warmup)).catch(fatal);
} else if (role === 'open') {
  const [mode, target, capacity, seconds, warmup, deadlineMs, overload, ref] = args;
  openRole(mode!, target!, Number(capacity), Number(seconds), Number(warmup), Number(deadlineMs), Number(overload), Number(ref)).catch(fatal);
} else if (role === undefined || role.startsWith('-')) {
  orchestrate(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`bench shed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
} else {
  fatal(new Error(`usage: node dist/bench/shed.js [--json [FILE]]   (roles 'server', 'capacity' and 'open' are for its own children)`));
}
