/**
 * skein benchmark orchestrator: `npm run bench` (= build, then `node dist/bench/run.js`).
 *
 *   node dist/bench/run.js [unary] [stream] [idle] [--impl raw,grpc,skein] [--json [FILE]]
 *
 * Every implementation runs as a separate server process; every measurement is a fresh
 * client process (see lib/driver.ts). Runs are repeated BENCH_RUNS times with the
 * implementations interleaved (the order rotates per run and per scenario) and the
 * MEDIAN across runs is reported. See bench/README.md for the scenarios and env vars.
 */
import type { StreamResult, UnaryResult } from './lib/driver.js';
import { benchScript, Child, startServer } from './lib/proc.js';
import { envList, envNum, errorMessage, firstLine, fmtInt, fmtRatio, fmtRuns, fmtSpread, fmtUs, jsonArgAt, machineMeta, printHeader, type MachineMeta, ratio, rotate, table, writeJson } from './lib/report.js';
import { median, spread, unaryMedians } from './lib/stats.js';
import { fdLimit, planClients, runIdle, type IdleResult } from './idle.js';

// ---------------------------------------------------------------------------- settings

const IMPLS = ['raw', 'grpc', 'skein'] as const;
type Impl = (typeof IMPLS)[number];
const LABEL: Record<Impl, string> = { raw: 'raw net', grpc: 'grpc-js', skein: 'skein' };
const GROUPS = ['unary', 'stream', 'idle'] as const;
type Group = (typeof GROUPS)[number];
const isGroup = (a: string): a is Group => (GROUPS as readonly string[]).includes(a);

const HELP = `usage: node dist/bench/run.js [unary] [stream] [idle] [--impl raw,grpc,skein] [--json [FILE]]

env: BENCH_SECONDS (3)  BENCH_RUNS (3)  BENCH_WARMUP (0.5)  BENCH_SIZES (64,4096)
     BENCH_INFLIGHT (1,16,256)  BENCH_STREAM_COUNT (auto)  BENCH_IDLE_CONNS (10000)
     BENCH_IDLE_PER_PROC (auto)  BENCH_IDLE_BATCH (500)  BENCH_STRICT (0)  BENCH_VERBOSE (0)`;

interface Options {
  groups: Set<Group>;
  impls: Impl[];
  json: string | null;
  seconds: number;
  runs: number;
  warmup: number;
  sizes: number[];
  inflight: number[];
  streamCount: number;
  idle: { conns: number; perProc: number; batch: number };
  strict: boolean;
}

function parseArgs(argv: string[]): Options {
  const groups = new Set<Group>();
  let impls: Impl[] = [...IMPLS];
  let json: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const j = jsonArgAt(argv, i, 'bench', isGroup);
    if (a === '-h' || a === '--help') {
      console.log(HELP);
      process.exit(0);
    } else if (a === '--impl' || a.startsWith('--impl=')) {
      const v = a === '--impl' ? argv[++i] : a.slice('--impl='.length);
      if (!v) throw new Error('--impl needs a value, e.g. --impl raw,grpc');
      impls = v.split(',').map((s) => {
        const name = s.trim() === 'grpc-js' ? 'grpc' : s.trim();
        if (!(IMPLS as readonly string[]).includes(name)) throw new Error(`unknown impl ${s}; known: ${IMPLS.join(', ')}`);
        return name as Impl;
      });
    } else if (j !== null) {
      json = j.path;
      i = j.last;
    } else if (isGroup(a)) {
      groups.add(a);
    } else {
      throw new Error(`unknown argument ${a}\n${HELP}`);
    }
  }
  if (groups.size === 0) for (const g of GROUPS) groups.add(g);
  const seconds = envNum('BENCH_SECONDS', 3);
  if (seconds <= 0) throw new Error('BENCH_SECONDS must be > 0');
  return {
    groups,
    impls,
    json,
    seconds,
    runs: Math.max(1, Math.round(envNum('BENCH_RUNS', 3))),
    warmup: envNum('BENCH_WARMUP', 0.5),
    sizes: envList('BENCH_SIZES', [64, 4096], { min: 0 }),
    inflight: envList('BENCH_INFLIGHT', [1, 16, 256], { min: 0 }),
    streamCount: Math.round(envNum('BENCH_STREAM_COUNT', 0)),
    idle: {
      conns: Math.round(envNum('BENCH_IDLE_CONNS', 10_000)),
      perProc: Math.round(envNum('BENCH_IDLE_PER_PROC', 0)),
      batch: Math.max(1, Math.round(envNum('BENCH_IDLE_BATCH', 500))),
    },
    strict: process.env.BENCH_STRICT === '1',
  };
}

// ---------------------------------------------------------------------------- results

interface Cell<R> {
  runs: R[];
  errors: string[];
}

interface UnaryRow {
  size: number;
  inflight: number;
  cells: Partial<Record<Impl, Cell<UnaryResult>>>;
}

interface StreamRow {
  size: number;
  cells: Partial<Record<Impl, Cell<StreamResult>>>;
}

interface UnaryMedian {
  n: number;
  rps: number;
  rps_spread: number;
  p50_us: number;
  p99_us: number;
}

interface StreamMedian {
  n: number;
  msgs_per_s: number;
  msgs_spread: number;
  mb_per_s: number;
}

function unaryMedian(c: Cell<UnaryResult> | undefined): UnaryMedian | null {
  return !c || c.runs.length === 0 ? null : unaryMedians(c.runs);
}

function streamMedian(c: Cell<StreamResult> | undefined): StreamMedian | null {
  if (!c || c.runs.length === 0) return null;
  const m = c.runs.map((r) => r.msgs_per_s);
  return { n: c.runs.length, msgs_per_s: median(m), msgs_spread: spread(m), mb_per_s: median(c.runs.map((r) => r.mb_per_s)) };
}

// ---------------------------------------------------------------------------- running

function cell<R>(cells: Partial<Record<Impl, Cell<R>>>, impl: Impl): Cell<R> {
  return (cells[impl] ??= { runs: [], errors: [] });
}

/** Spawn one client process, wait for its single JSON result line. */
async function runClient<R>(impl: Impl, target: string, args: string[], timeoutMs: number): Promise<R> {
  const child = new Child(`${impl} client`, benchScript(`${impl}/client.js`), [args[0]!, target, ...args.slice(1)]);
  try {
    const line = await child.waitLine((l) => l.startsWith('{'), timeoutMs, 'the result line');
    return JSON.parse(line) as R;
  } finally {
    await child.stop();
  }
}

type Servers = Partial<Record<Impl, { child: Child; target: string }>>;

async function ensureServer(servers: Servers, impl: Impl): Promise<string> {
  const s = servers[impl];
  if (s && s.child.proc.exitCode === null && s.child.proc.signalCode === null) return s.target;
  if (s) process.stderr.write(`  ${LABEL[impl]} server is gone; restarting it\n`);
  const started = await startServer(`${impl} server`, benchScript(`${impl}/server.js`));
  servers[impl] = started;
  return started.target;
}

async function stopServers(servers: Servers): Promise<void> {
  await Promise.all(Object.values(servers).map((s) => s!.child.stop()));
}

const fmtSize = (b: number): string => (b >= 1024 && b % 1024 === 0 ? `${b / 1024} KiB` : `${b} B`);
/** Ratios here: two decimals, one from 10× on. */
const fmtX = (x: number | null): string => fmtRatio(x, x !== null && x >= 10 ? 1 : 2);
const fmtMB = (b: number): string => (Number.isFinite(b) ? `${(b / 1e6).toFixed(1)} MB` : 'n/a');

async function runAll(opts: Options, unary: UnaryRow[], stream: StreamRow[]): Promise<void> {
  const timeout = (opts.seconds + opts.warmup + 45) * 1000;
  for (let run = 0; run < opts.runs; run++) {
    const servers: Servers = {};
    try {
      let k = run;
      const jobs: Array<() => Promise<void>> = [];
      if (opts.groups.has('unary')) {
        for (const row of unary) {
          for (const impl of rotate(opts.impls, k++)) {
            jobs.push(async () => {
              const c = cell(row.cells, impl);
              const what = `unary ${fmtSize(row.size)} ×${row.inflight} ${LABEL[impl]}`;
              try {
                const target = await ensureServer(servers, impl);
                const r = await runClient<UnaryResult>(impl, target, ['unary', String(row.size), String(row.inflight), String(opts.seconds), String(opts.warmup)], timeout);
                c.runs.push(r);
                process.stderr.write(`[run ${run + 1}/${opts.runs}] ${what}: ${fmtInt(r.rps)} req/s, p50 ${fmtUs(r.p50_us)}, p99 ${fmtUs(r.p99_us)}${r.errors ? `, ${r.errors} errors` : ''}\n`);
              } catch (err) {
                c.errors.push(firstLine(err));
                process.stderr.write(`[run ${run + 1}/${opts.runs}] ${what}: FAILED: ${errorMessage(err)}\n`);
              }
            });
          }
        }
      }
      if (opts.groups.has('stream')) {
        for (const row of stream) {
          for (const impl of rotate(opts.impls, k++)) {
            jobs.push(async () => {
              const c = cell(row.cells, impl);
              const what = `stream ${fmtSize(row.size)} ${LABEL[impl]}`;
              try {
                const target = await ensureServer(servers, impl);
                const args = ['stream', String(row.size), '1', String(opts.seconds), String(opts.warmup)];
                if (opts.streamCount > 0) args.push(String(opts.streamCount));
                const r = await runClient<StreamResult>(impl, target, args, timeout);
                c.runs.push(r);
                process.stderr.write(`[run ${run + 1}/${opts.runs}] ${what}: ${fmtInt(r.msgs_per_s)} msg/s, ${r.mb_per_s.toFixed(1)} MB/s\n`);
              } catch (err) {
                c.errors.push(firstLine(err));
                process.stderr.write(`[run ${run + 1}/${opts.runs}] ${what}: FAILED: ${errorMessage(err)}\n`);
              }
            });
          }
        }
      }
      for (const job of jobs) await job();
    } finally {
      await stopServers(servers);
    }
  }
}

// ---------------------------------------------------------------------------- printing

function printUnary(opts: Options, rows: UnaryRow[]): void {
  const out: string[][] = [['size', 'in flight', 'impl', 'req/s', 'spread', 'p50', 'p99', 'runs']];
  for (const row of rows) {
    const med: Partial<Record<Impl, UnaryMedian | null>> = {};
    let first = true;
    for (const impl of opts.impls) {
      const m = (med[impl] = unaryMedian(row.cells[impl]));
      const errs = row.cells[impl]?.errors.length ?? 0;
      out.push([
        first ? fmtSize(row.size) : '',
        first ? String(row.inflight) : '',
        LABEL[impl],
        m ? fmtInt(m.rps) : 'FAILED',
        m ? fmtSpread(m.rps_spread) : '',
        m ? fmtUs(m.p50_us) : '',
        m ? fmtUs(m.p99_us) : '',
        fmtRuns(m?.n ?? 0, errs),
      ]);
      first = false;
    }
    const s = med.skein;
    if (s !== undefined) {
      for (const base of ['raw', 'grpc'] as const) {
        if (!(base in med)) continue;
        const b = med[base];
        out.push(['', '', `skein/${base === 'raw' ? 'raw' : 'grpc-js'}`, fmtX(ratio(s?.rps, b?.rps)), '', fmtX(ratio(s?.p50_us, b?.p50_us)), fmtX(ratio(s?.p99_us, b?.p99_us)), '']);
      }
    }
    out.push([]);
  }
  console.log(`\nUnary echo: one connection, N calls in flight (closed loop); median of ${opts.runs} run(s) × ${opts.seconds} s after ${opts.warmup} s warm-up`);
  console.log(`(spread = ±half of (max − min) / median of req/s across runs; ratios compare medians:`);
  console.log(` req/s ratio > 1 means skein is faster, latency ratio < 1 means skein is quicker)\n`);
  console.log(table(out, (i) => i >= 3 && i <= 6));
}

function printStream(opts: Options, rows: StreamRow[]): void {
  const out: string[][] = [['size', 'impl', 'msgs/s', 'spread', 'MB/s', 'runs']];
  for (const row of rows) {
    const med: Partial<Record<Impl, StreamMedian | null>> = {};
    let first = true;
    for (const impl of opts.impls) {
      const m = (med[impl] = streamMedian(row.cells[impl]));
      const errs = row.cells[impl]?.errors.length ?? 0;
      out.push([first ? fmtSize(row.size) : '', LABEL[impl], m ? fmtInt(m.msgs_per_s) : 'FAILED', m ? fmtSpread(m.msgs_spread) : '', m ? m.mb_per_s.toFixed(1) : '', fmtRuns(m?.n ?? 0, errs)]);
      first = false;
    }
    const s = med.skein;
    if (s !== undefined) {
      for (const base of ['raw', 'grpc'] as const) {
        if (!(base in med)) continue;
        const b = med[base];
        out.push(['', `skein/${base === 'raw' ? 'raw' : 'grpc-js'}`, fmtX(ratio(s?.msgs_per_s, b?.msgs_per_s)), '', fmtX(ratio(s?.mb_per_s, b?.mb_per_s)), '']);
      }
    }
    out.push([]);
  }
  console.log(`\nServer streaming (one-way): back-to-back streams on one connection; median of ${opts.runs} run(s) × ${opts.seconds} s\n`);
  console.log(table(out, (i) => i >= 2 && i <= 4));
}

function printIdle(results: Array<IdleResult | { impl: string; error: string }>, note: string): void {
  const out: string[][] = [['impl', 'conns', 'RSS before', 'RSS after', 'Δ RSS', 'bytes/conn', 'heap used', 'ArrayBuffers', 'open time']];
  for (const r of results) {
    if ('error' in r) {
      out.push([LABEL[r.impl as Impl] ?? r.impl, 'FAILED', r.error]);
      continue;
    }
    out.push([LABEL[r.impl as Impl] ?? r.impl, fmtInt(r.conns), fmtMB(r.before.rss), fmtMB(r.after.rss), fmtMB(r.rss_delta), fmtInt(r.per_conn_bytes), fmtMB(r.after.heapUsed), fmtMB(r.after.arrayBuffers), `${r.open_seconds.toFixed(1)} s`]);
  }
  console.log(`\nIdle connections held by one server process (server memory after a full GC; MB = 10^6 bytes)`);
  console.log(`(ArrayBuffers = process.memoryUsage().arrayBuffers: allocated buffer memory, only partly resident)`);
  console.log(`${note}\n`);
  console.log(table(out, 1));
}

interface Target {
  name: string;
  goal: string;
  value: number | null;
  pass: boolean | null;
}

function evaluateTargets(opts: Options, unary: UnaryRow[], stream: StreamRow[], idle: Array<IdleResult | { impl: string; error: string }>): Target[] {
  const t: Target[] = [];
  const check = (name: string, goal: string, value: number | null, ok: (v: number) => boolean): void => {
    t.push({ name, goal, value, pass: value === null ? null : ok(value) });
  };
  if (opts.groups.has('unary')) {
    for (const row of unary.filter((r) => r.inflight === 256)) {
      const s = unaryMedian(row.cells.skein);
      const r = unaryMedian(row.cells.raw);
      check(`unary ${fmtSize(row.size)} @256 in flight: skein/raw req/s`, '≥ 0.70×', ratio(s?.rps, r?.rps), (v) => v >= 0.7);
    }
    for (const row of unary.filter((r) => r.inflight === 1)) {
      const s = unaryMedian(row.cells.skein);
      const r = unaryMedian(row.cells.raw);
      check(`unary ${fmtSize(row.size)} @1 in flight: skein/raw p50`, '≤ 1.30×', ratio(s?.p50_us, r?.p50_us), (v) => v <= 1.3);
    }
  }
  if (opts.groups.has('stream')) {
    for (const row of stream) {
      const s = streamMedian(row.cells.skein);
      const g = streamMedian(row.cells.grpc);
      check(`stream ${fmtSize(row.size)}: skein/grpc-js msgs/s`, '≥ 10×', ratio(s?.msgs_per_s, g?.msgs_per_s), (v) => v >= 10);
    }
  }
  if (opts.groups.has('idle')) {
    const s = idle.find((r) => r.impl === 'skein');
    const v = s && !('error' in s) ? s.after.rss : null;
    t.push({ name: `idle ${fmtInt(opts.idle.conns)} conns: skein server RSS`, goal: '≤ 100 MB', value: v, pass: v === null ? null : v <= 100e6 });
  }
  return t;
}

function printTargets(targets: Target[]): void {
  if (targets.length === 0) return;
  const out: string[][] = [['target', 'goal', 'measured', '']];
  for (const t of targets) {
    const measured = t.value === null ? 'n/a' : t.goal.includes('MB') ? fmtMB(t.value) : fmtX(t.value);
    out.push([t.name, t.goal, measured, t.pass === null ? 'n/a' : t.pass ? 'PASS' : 'FAIL']);
  }
  console.log('\nTargets (from the issue)\n');
  console.log(table(out, (i) => i === 2));
}

// ---------------------------------------------------------------------------- main

/** machineMeta() plus the V8 version and `ulimit -n`, keys in the order of the JSON results so far. */
function machineInfo(): MachineMeta & { v8: string; ulimit_n: number | null } {
  const m = machineMeta();
  return { date: m.date, node: m.node, v8: process.versions.v8, platform: m.platform, cpu_model: m.cpu_model, cpus: m.cpus, total_mem_mb: m.total_mem_mb, loadavg_at_start: m.loadavg_at_start, ulimit_n: fdLimit() };
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const meta = machineInfo();
  const unary: UnaryRow[] = [];
  const stream: StreamRow[] = [];
  for (const size of opts.sizes) for (const inflight of opts.inflight) unary.push({ size, inflight, cells: {} });
  for (const size of opts.sizes) stream.push({ size, cells: {} });

  const nScen = (opts.groups.has('unary') ? unary.length : 0) + (opts.groups.has('stream') ? stream.length : 0);
  const est = opts.runs * nScen * opts.impls.length * (opts.seconds + opts.warmup + 0.5) + (opts.groups.has('idle') ? 20 * opts.impls.filter((i) => i !== 'grpc').length : 0);
  printHeader('', meta);
  console.log(`settings: ${[...opts.groups].join('+')} | impls ${opts.impls.map((i) => LABEL[i]).join(', ')} | ${opts.runs} run(s) × ${opts.seconds} s (+${opts.warmup} s warm-up) | sizes ${opts.sizes.map(fmtSize).join(', ')} | in flight ${opts.inflight.join(', ')}`);
  console.log(`estimated duration: ~${Math.ceil(est / 60)} min (progress on stderr)`);

  if (nScen > 0) await runAll(opts, unary, stream);

  const idle: Array<IdleResult | { impl: string; error: string }> = [];
  let idleNote = '';
  if (opts.groups.has('idle')) {
    const plan = planClients(opts.idle);
    idleNote = `${plan.note}; ${plan.procs} client process(es) × ≤${plan.perProc} connections, opened ${opts.idle.batch} at a time, one 1-byte echo each`;
    process.stderr.write(`idle: ${idleNote}\n`);
    // grpc-js shares one HTTP/2 connection between channels to the same target, so it has no place here.
    for (const impl of opts.impls.filter((i) => i !== 'grpc')) {
      try {
        idle.push(await runIdle(impl, opts.idle, plan.perProc));
      } catch (err) {
        idle.push({ impl, error: firstLine(err) });
        process.stderr.write(`idle ${LABEL[impl]}: FAILED: ${errorMessage(err)}\n`);
      }
    }
  }

  if (opts.groups.has('unary')) printUnary(opts, unary);
  if (opts.groups.has('stream')) printStream(opts, stream);
  if (opts.groups.has('idle')) printIdle(idle, idleNote);
  const targets = evaluateTargets(opts, unary, stream, idle);
  if (opts.impls.includes('skein')) printTargets(targets);

  if (opts.json) {
    const summarize = <R, M>(cells: Partial<Record<Impl, Cell<R>>>, med: (c: Cell<R> | undefined) => M) =>
      Object.fromEntries(Object.entries(cells).map(([impl, c]) => [impl, { median: med(c), runs: c!.runs, errors: c!.errors }]));
    const doc = {
      meta,
      settings: { ...opts, groups: [...opts.groups] },
      unary: opts.groups.has('unary') ? unary.map((r) => ({ size: r.size, inflight: r.inflight, impls: summarize(r.cells, unaryMedian) })) : [],
      stream: opts.groups.has('stream') ? stream.map((r) => ({ size: r.size, impls: summarize(r.cells, streamMedian) })) : [],
      idle,
      targets,
    };
    console.log(`\nresults written to ${writeJson(opts.json, doc)}`);
  }

  const failed = targets.some((t) => t.pass === false);
  process.exitCode = opts.strict && failed ? 1 : 0;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
