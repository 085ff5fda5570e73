/**
 * A one-line progress indicator for long-running commands (`skein pipe`), drawn on stderr.
 *
 * Only when the stream is a TTY and `quiet` is not set: then one line, redrawn in place
 * (`\r`, text, clear to end of line) at most every 250 ms, showing the label, the bytes so
 * far (binary units), the rate (a moving average over the last ~5 s), and, when the total
 * is known, the percentage and the ETA. `done()` draws the final line (bytes, elapsed
 * time, average rate) followed by a newline. On anything else (a file, a pipe, `--quiet`)
 * nothing at all is written, so the output of scripts stays clean.
 *
 * `update(bytes)` takes the number of bytes transferred so far (a position, not an
 * increment); a value lower than the previous one (e.g. a transfer that resumed from an
 * earlier offset) restarts the rate estimate.
 */

export interface ProgressOptions {
  /** Where to draw (normally `process.stderr`). Nothing is drawn unless `stream.isTTY`. */
  stream: NodeJS.WriteStream;
  /** Total number of bytes, when known: adds the percentage and the ETA. */
  total?: number;
  /** Draw nothing. */
  quiet?: boolean;
  /** Shown first on the line (e.g. `send`, `receive`). */
  label: string;
  /** Milliseconds (monotonic). @default performance.now */
  clock?: () => number;
}

export interface Progress {
  /** `bytes`: transferred so far (a position, not an increment). */
  update(bytes: number): void;
  /** Draw the final line and a newline; later calls do nothing. */
  done(): void;
}

/** Minimum time between two redraws. */
export const REDRAW_MS = 250;
/** Span of the moving average of the rate. */
export const RATE_WINDOW_MS = 5000;

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** `1536` → `1.50 KiB`; three significant digits from KiB up. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '?';
  let u = 0;
  let v = n;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  if (u === 0) return `${Math.round(v)} B`;
  // Rounding can reach 1024 (1023.99 KiB → "1024 KiB"): keep three significant digits.
  const text = v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
  return `${text} ${UNITS[u]}`;
}

/** Seconds → `m:ss` or `h:mm:ss`; `--:--` when unknown or absurd. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0 || seconds > 99 * 3600) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

const NOOP: Progress = Object.freeze({ update(): void {}, done(): void {} });

export function createProgress(o: ProgressOptions): Progress {
  if (o.quiet === true || o.stream.isTTY !== true) return NOOP;
  const { stream, label } = o;
  const total = o.total !== undefined && Number.isFinite(o.total) && o.total >= 0 ? o.total : undefined;
  const clock = o.clock ?? (() => performance.now());

  /** Samples (time, bytes) taken at redraws, oldest first, spanning about RATE_WINDOW_MS. */
  let samples: Array<{ t: number; bytes: number }> = [];
  let bytes = 0;
  let startT: number | undefined;
  let startBytes = 0;
  let lastDraw = -Infinity;
  let finished = false;

  const write = (text: string): void => {
    try {
      stream.write(text);
    } catch {
      // A closed terminal must not fail the transfer.
    }
  };

  const fit = (line: string): string => {
    const columns = typeof stream.columns === 'number' && stream.columns > 1 ? stream.columns : 80;
    // One column short of the width: writing the last column makes some terminals wrap.
    return line.length > columns - 1 ? line.slice(0, columns - 1) : line;
  };

  /** Bytes per second over the samples, or undefined before there is a time span. */
  const rate = (): number | undefined => {
    if (samples.length < 2) return undefined;
    const first = samples[0];
    const last = samples[samples.length - 1];
    const dt = last.t - first.t;
    return dt > 0 ? (last.bytes - first.bytes) / (dt / 1000) : undefined;
  };

  const draw = (now: number): void => {
    samples.push({ t: now, bytes });
    // Drop samples older than the window, keeping the newest one before it as the base.
    while (samples.length > 2 && samples[1].t <= now - RATE_WINDOW_MS) samples.shift();
    const r = rate();
    const parts = [label, formatBytes(bytes)];
    if (total !== undefined) parts[1] += ` / ${formatBytes(total)}`;
    parts.push(r === undefined ? '--/s' : `${formatBytes(r)}/s`);
    if (total !== undefined) {
      const pct = total === 0 ? 100 : Math.min(100, (bytes / total) * 100);
      parts.push(`${pct.toFixed(pct < 10 ? 1 : 0)}%`);
      const left = Math.max(0, total - bytes);
      // Rounded up: a transfer with bytes left never shows 0:00.
      parts.push(`ETA ${left === 0 ? formatDuration(0) : r === undefined || r <= 0 ? '--:--' : formatDuration(Math.ceil(left / r - 1e-9))}`);
    }
    write(`\r${fit(parts.join('  '))}\x1b[K`);
    lastDraw = now;
  };

  return {
    update(n: number): void {
      if (finished || !Number.isFinite(n) || n < 0) return;
      const now = clock();
      if (startT === undefined || n < bytes) {
        // First update, or the position went back: restart the estimates from here.
        startT = now;
        startBytes = n;
        samples = [];
      }
      bytes = n;
      if (now - lastDraw >= REDRAW_MS) draw(now);
    },
    done(): void {
      if (finished) return;
      finished = true;
      const now = clock();
      const elapsed = startT === undefined ? 0 : (now - startT) / 1000;
      const moved = bytes - startBytes;
      const parts = [label, formatBytes(bytes)];
      if (total !== undefined && bytes !== total) parts[1] += ` / ${formatBytes(total)}`;
      parts.push(`in ${elapsed < 60 ? `${elapsed.toFixed(1)} s` : formatDuration(elapsed)}`);
      if (elapsed > 0) parts.push(`${formatBytes(moved / elapsed)}/s`);
      write(`\r${fit(parts.join('  '))}\x1b[K\n`);
    },
  };
}
