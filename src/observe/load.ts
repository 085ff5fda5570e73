/**
 * Load reporting, server side: what a server says about its own load (docs/balancing.md
 * §load, docs/channels.md §4). The `load` picker of the clients weighs instances by it.
 *
 *   ServerCall ── start()/finish() ─▶ CallLoad { inflight, latencyMs }    per call: a counter (the
 *                                      │                                  server times the call)
 *   skein.health.watch({ loadReportMs }) ── every interval ──▶ LoadSampler.sample()
 *                                      │                          cpu, mem: read from the process
 *                                      ▼
 *                    { status, load: { cpu, mem, inflight, latencyMs } }
 *
 * - `cpu`: the process's CPU time over the time since the previous sample (user + system,
 *   `process.cpuUsage()`), divided by that wall time and by `os.availableParallelism()`;
 *   clamped to 0..1 (1 = every core busy with this process).
 * - `mem`: `process.memoryUsage.rss()` over what the process may use: the cgroup limit
 *   (`process.constrainedMemory()`) when there is one below the machine's memory, else
 *   `os.totalmem()`; clamped to 0..1. (RSS, not the V8 heap: buffers and native memory
 *   count too, and the limit the kernel enforces is on RSS.)
 * - `inflight`: calls running on the server now (their handler started, their status not
 *   sent yet), from every client; `skein.health` calls (the watches themselves) do not count.
 * - `latencyMs`: an exponentially weighted moving average of the durations of unary calls
 *   (from the handler's start to the status, errors included, cancelled calls excluded),
 *   each call weighing LATENCY_EWMA_ALPHA; 0 before the first one.
 *
 * Nothing here runs by itself: no timer, no sampling until something calls `sample()`
 * (the health service does, on its one timer, while a watch asks for reports).
 */
import { availableParallelism, totalmem } from 'node:os';
import { performance } from 'node:perf_hooks';

/** What a server reports of its load (the `load` of a `skein.health.watch` reply). */
export interface LoadSample {
  /** CPU use of the process, 0..1 of all cores. */
  readonly cpu: number;
  /** Memory use of the process (RSS), 0..1 of what it may use. */
  readonly mem: number;
  /** Calls running on the server now. */
  readonly inflight: number;
  /** EWMA of unary call durations on the server, ms. */
  readonly latencyMs: number;
}

/** The weight of each new unary call in the latency average. */
export const LATENCY_EWMA_ALPHA = 0.1;

/** The default interval of load reports a client asks for, ms. */
export const DEFAULT_LOAD_REPORT_MS = 1000;
/** The shortest interval a server sends load reports at, ms (shorter requests are raised to it). */
export const MIN_LOAD_REPORT_MS = 100;
/** The longest interval a server sends load reports at, ms (longer requests are lowered to it). */
export const MAX_LOAD_REPORT_MS = 3_600_000;

/**
 * Calls running on one server and the average duration of its unary calls. The server
 * keeps one and reports each call to it (as its first admission gate, src/rpc/server.ts,
 * which already times the call): a counter increment, a decrement, and for a unary call one
 * EWMA step. Allocates nothing per call.
 */
export class CallLoad {
  /** Calls running now. */
  inflight = 0;
  /** EWMA of unary call durations, ms (0 before the first). */
  latencyMs = 0;
  /** Unary calls measured so far. */
  measured = 0;

  /** A call starts running. */
  start(): void {
    this.inflight++;
  }

  /** A call ended; `durationMs` for a unary call that counts in the latency (undefined: not measured — streams, cancelled calls). */
  finish(durationMs: number | undefined): void {
    this.inflight--;
    if (durationMs === undefined || !(durationMs >= 0)) return;
    this.latencyMs = this.measured++ === 0 ? durationMs : this.latencyMs + LATENCY_EWMA_ALPHA * (durationMs - this.latencyMs);
  }
}

/** Where a sampler reads the process's numbers; replaceable for tests. */
export interface LoadSource {
  /** A monotonic clock, ms. */
  now(): number;
  /** CPU time the process has used so far (user + system), µs. */
  cpuMicros(): number;
  /** Cores the process may run on. */
  cores(): number;
  /** Bytes of memory the process uses now (RSS). */
  memUsed(): number;
  /** Bytes of memory the process may use. */
  memLimit(): number;
}

/** `constrainedMemory()` when it is a real limit below the machine's memory, else `totalmem()`. */
function processMemLimit(): number {
  const total = totalmem();
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  return typeof constrained === 'number' && Number.isFinite(constrained) && constrained > 0 && constrained < total ? constrained : total;
}

/** The running process's numbers (`process.cpuUsage()`, `process.memoryUsage.rss()`, `os`). */
export const processLoadSource: LoadSource = Object.freeze({
  now: () => performance.now(),
  cpuMicros: () => {
    const u = process.cpuUsage();
    return u.user + u.system;
  },
  cores: () => availableParallelism(),
  memUsed: () => process.memoryUsage.rss(),
  memLimit: processMemLimit,
});

export interface LoadSamplerOptions {
  /** Where to read CPU time, memory and the clock. @default processLoadSource */
  source?: LoadSource;
  /**
   * A `sample()` less than this long after the previous one measured does not start a new
   * CPU window: it reports the last window's CPU (a CPU share over a few ms is noise).
   * @default 50
   */
  minWindowMs?: number;
}

/**
 * Samples a server's load on demand: `sample()` reads the process's CPU time and memory and
 * the server's `CallLoad`. CPU is the share used since the previous sample. Keeps no timer.
 */
export class LoadSampler {
  private readonly source: LoadSource;
  private readonly minWindowMs: number;
  private readonly cores: number;
  private readonly memLimit: number;
  private lastAt: number;
  private lastCpu: number;
  private cpu = 0;

  constructor(
    private readonly calls: { readonly inflight: number; readonly latencyMs: number },
    options: LoadSamplerOptions = {},
  ) {
    this.source = options.source ?? processLoadSource;
    this.minWindowMs = options.minWindowMs ?? 50;
    this.cores = Math.max(1, this.source.cores() || 1);
    this.memLimit = this.source.memLimit();
    this.lastAt = this.source.now();
    this.lastCpu = this.source.cpuMicros();
  }

  /** The load now (CPU: since the previous sample, or since the sampler was created). */
  sample(): LoadSample {
    const s = this.source;
    const now = s.now();
    const elapsedMs = now - this.lastAt;
    if (elapsedMs >= this.minWindowMs) {
      const cpuNow = s.cpuMicros();
      this.cpu = clamp01((cpuNow - this.lastCpu) / 1000 / elapsedMs / this.cores);
      this.lastAt = now;
      this.lastCpu = cpuNow;
    }
    const limit = this.memLimit;
    return {
      cpu: this.cpu,
      mem: limit > 0 ? clamp01(s.memUsed() / limit) : 0,
      inflight: Math.max(0, this.calls.inflight),
      latencyMs: Math.max(0, this.calls.latencyMs),
    };
  }
}

function clamp01(x: number): number {
  return x > 0 ? (x < 1 ? x : 1) : 0;
}

/**
 * A client's `loadReportMs` as the server applies it: undefined (no reports) for absent,
 * null, 0 or negative; else clamped to MIN_LOAD_REPORT_MS..MAX_LOAD_REPORT_MS. A value that
 * is not a number gives undefined too (the field is advisory: never fail a watch over it).
 */
export function reportInterval(raw: unknown): number | undefined {
  if (typeof raw !== 'number' || !Number.isFinite(raw) || raw <= 0) return undefined;
  return Math.min(MAX_LOAD_REPORT_MS, Math.max(MIN_LOAD_REPORT_MS, Math.round(raw)));
}
