/**
 * The load generator shared by every client process (raw, grpc-js, skein), so that all
 * three are measured by exactly the same loop: N workers, each awaiting one promise-based
 * call at a time (closed loop), a warm-up phase, then a fixed measured window.
 *
 * Client process usage (spawned by bench/run.ts):
 *   node dist/bench/<impl>/client.js unary  HOST:PORT SIZE INFLIGHT SECONDS WARMUP
 *   node dist/bench/<impl>/client.js stream HOST:PORT SIZE STREAMS  SECONDS WARMUP [MSGS_PER_STREAM]
 * It prints exactly one JSON line (UnaryResult or StreamResult) and exits.
 */
import { exitWithParent, fatal } from './child.js';
import { percentile, Samples } from './stats.js';

export interface BenchClient {
  /** Unary echo: resolves with the reply body. */
  echo(payload: Buffer): Promise<Buffer>;
  /** One server stream of `count` messages of `size` bytes; calls onMessage per message, resolves with the number received. */
  stream(count: number, size: number, onMessage: (len: number) => void): Promise<number>;
  close(): Promise<void> | void;
}

export interface UnaryResult {
  count: number;
  seconds: number;
  rps: number;
  p50_us: number;
  p99_us: number;
  p999_us: number;
  max_us: number;
  errors: number;
}

export interface StreamResult {
  messages: number;
  bytes: number;
  seconds: number;
  msgs_per_s: number;
  mb_per_s: number;
  streams: number;
  errors: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const now = (): bigint => process.hrtime.bigint();
const MAX_ERRORS = 1000;
type Phase = 'warm' | 'measure' | 'stop';

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export interface ClosedLoopOptions<R> {
  /** Workers, each awaiting one call at a time. */
  inflight: number;
  /** Seconds run before the measured window. */
  warmup: number;
  /** Seconds of the measured window. */
  seconds: number;
  /** One call; `n` counts this worker's calls. A reply it rejects should throw. */
  call: (n: number) => Promise<R>;
  /** A call that succeeded inside the window (its latency is already recorded). */
  onReply?: (reply: R) => void;
  /**
   * A call that failed (`measuring`: inside the window). Resolve true to stop the run; the
   * worker awaits it before its next call (a refused call returns at once: give the loop a turn).
   */
  onError: (err: unknown, measuring: boolean) => boolean | Promise<boolean>;
  /** The window opens ('start') and closes ('end'): for CPU readings and marks. */
  onWindow?: (edge: 'start' | 'end') => void;
  /** Longest wait, ms, for the calls still in flight when the window closes. @default 10000 */
  drainMs?: number;
}

export interface ClosedLoopResult {
  /** Calls that succeeded inside the window. */
  count: number;
  /** Length of the window, s. */
  seconds: number;
  /** Their latencies, µs. */
  samples: Samples;
  /** An `onError` stopped the run. */
  stopped: boolean;
}

/**
 * The closed loop every client of the benches runs: `inflight` workers calling back to
 * back, a warm-up, then a measured window in which every success is timed
 * (process.hrtime) and counted. Only what a bench counts differs: `onReply` / `onError`.
 */
export async function closedLoop<R>(o: ClosedLoopOptions<R>): Promise<ClosedLoopResult> {
  // Workers change `phase` concurrently; read it through `as Phase` where TS over-narrows.
  let phase: Phase = 'warm';
  let count = 0;
  let stopped = false;
  const samples = new Samples();
  const worker = async (): Promise<void> => {
    let n = 0;
    while (phase !== 'stop') {
      const t0 = now();
      try {
        const reply = await o.call(n++);
        if (phase === 'measure') {
          samples.push(Number(now() - t0) / 1000);
          count++;
          o.onReply?.(reply);
        }
      } catch (err) {
        if (await o.onError(err, phase === 'measure')) {
          stopped = true;
          phase = 'stop';
        }
      }
    }
  };
  const workers = Array.from({ length: o.inflight }, () => worker());
  await sleep(o.warmup * 1000);
  if ((phase as Phase) === 'warm') phase = 'measure';
  o.onWindow?.('start');
  const t0 = now();
  await sleep(o.seconds * 1000);
  phase = 'stop';
  const seconds = Number(now() - t0) / 1e9;
  o.onWindow?.('end');
  // Let the calls still in flight finish, but never wait forever.
  await Promise.race([Promise.all(workers), sleep(o.drainMs ?? 10_000)]);
  return { count, seconds, samples, stopped };
}

export async function runUnary(c: BenchClient, size: number, inflight: number, seconds: number, warmup: number): Promise<UnaryResult> {
  const payload = Buffer.alloc(size, 0x61);
  // First call establishes the connection; not measured.
  const first = await withTimeout(c.echo(payload), 15_000, 'first echo');
  if (first.length !== size) throw new Error(`echo returned ${first.length} bytes, sent ${size}`);

  let errors = 0;
  let lastError: unknown = null;
  const { count, seconds: elapsed, samples } = await closedLoop({
    inflight,
    warmup,
    seconds,
    call: async () => {
      const reply = await c.echo(payload);
      if (reply.length !== size) throw new Error(`echo returned ${reply.length} bytes, sent ${size}`);
      return reply;
    },
    onError: (err) => {
      lastError = err;
      return ++errors >= MAX_ERRORS;
    },
  });
  if (errors >= MAX_ERRORS || count === 0) throw new Error(`unary run failed: ${count} ok, ${errors} errors; last: ${String(lastError)}`);

  const sorted = samples.sorted();
  return {
    count,
    seconds: elapsed,
    rps: count / elapsed,
    p50_us: percentile(sorted, 50),
    p99_us: percentile(sorted, 99),
    p999_us: percentile(sorted, 99.9),
    max_us: sorted.length ? sorted[sorted.length - 1]! : NaN,
    errors,
  };
}

/**
 * Server streaming: back-to-back streams of `perStream` messages for a fixed window.
 * Messages are counted only while the window is open, so the result does not depend on
 * where a stream boundary falls; the stream running at the end is allowed to finish.
 */
export async function runStream(
  c: BenchClient,
  size: number,
  concurrency: number,
  seconds: number,
  warmup: number,
  perStream: number,
): Promise<StreamResult> {
  await withTimeout(c.stream(1, size, () => {}), 15_000, 'first stream');

  // Workers change `phase` concurrently; read it through `as Phase` where TS over-narrows.
  let phase: Phase = 'warm';
  let messages = 0;
  let bytes = 0;
  let streams = 0;
  let errors = 0;
  let lastError: unknown = null;
  const onMessage = (len: number): void => {
    if (phase === 'measure') {
      messages++;
      bytes += len;
    }
  };
  const loop = async (): Promise<void> => {
    while (phase !== 'stop') {
      try {
        const got = await c.stream(perStream, size, onMessage);
        if (got !== perStream) throw new Error(`stream delivered ${got} of ${perStream} messages`);
        streams++;
      } catch (err) {
        errors++;
        lastError = err;
        if (errors >= 10) phase = 'stop';
      }
    }
  };
  const loops = Array.from({ length: concurrency }, () => loop());
  await sleep(warmup * 1000);
  if ((phase as Phase) === 'warm') phase = 'measure';
  const t0 = now();
  await sleep(seconds * 1000);
  const failed = (phase as Phase) === 'stop';
  phase = 'stop';
  const elapsed = Number(now() - t0) / 1e9;
  await Promise.race([Promise.all(loops), sleep(30_000)]);
  if (failed || messages === 0) throw new Error(`stream run failed: ${messages} messages, ${errors} errors; last: ${String(lastError)}`);
  return {
    messages,
    bytes,
    seconds: elapsed,
    msgs_per_s: messages / elapsed,
    mb_per_s: bytes / 1e6 / elapsed,
    streams,
    errors,
  };
}

/** Default messages per stream: ~4 MB or 50k messages, whichever is fewer (at least 1000). */
export function defaultPerStream(size: number): number {
  return Math.max(1000, Math.min(50_000, Math.floor(4_000_000 / Math.max(1, size))));
}

/** main() of a client process: parse argv, connect, run, print one JSON line, exit. */
export async function clientMain(connect: (target: string) => Promise<BenchClient>): Promise<void> {
  try {
    const [mode, target, sizeS, inflightS, secondsS, warmupS, perStreamS] = process.argv.slice(2);
    const size = Number(sizeS);
    const inflight = Number(inflightS);
    const seconds = Number(secondsS);
    const warmup = Number(warmupS ?? '0.5');
    if ((mode !== 'unary' && mode !== 'stream') || !target || !(size >= 0) || !(inflight >= 1) || !(seconds > 0) || !(warmup >= 0)) {
      throw new Error(`usage: client.js unary|stream HOST:PORT SIZE INFLIGHT SECONDS [WARMUP] [MSGS_PER_STREAM]; got ${process.argv.slice(2).join(' ')}`);
    }
    exitWithParent();
    // Hard stop in case something hangs: the orchestrator has its own timeout too.
    setTimeout(() => fatal(new Error('client self-timeout')), (seconds + warmup + 60) * 1000).unref();

    const client = await connect(target);
    const result =
      mode === 'unary'
        ? await runUnary(client, size, inflight, seconds, warmup)
        : await runStream(client, size, inflight, seconds, warmup, Number(perStreamS) > 0 ? Number(perStreamS) : defaultPerStream(size));
    process.stdout.write(JSON.stringify(result) + '\n');
    await Promise.race([Promise.resolve(client.close()), sleep(2000)]);
    process.exit(0);
  } catch (err) {
    fatal(err);
  }
}
