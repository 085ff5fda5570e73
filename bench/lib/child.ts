/**
 * Helpers used INSIDE the child processes (servers and clients) started by the orchestrator.
 *
 * Protocol with the orchestrator (see lib/proc.ts):
 *   server stdout: `ready HOST:PORT` once listening; `rss {json}` in reply to `rss`
 *   server stdin:  `rss` (report memory after a GC), `quit` (close and exit); EOF = exit
 *   client stdout: one JSON line of results
 */

/** Exit when the orchestrator goes away (its end of our stdin closes). */
export function exitWithParent(onExit?: () => void): void {
  const bye = (): void => {
    try {
      onExit?.();
    } finally {
      process.exit(0);
    }
  };
  process.stdin.on('end', bye);
  process.stdin.on('close', bye);
  process.stdin.on('error', bye);
  process.stdin.resume();
}

/** Read stdin as lines and hand each to `onLine`; exit on EOF. */
export function commandLoop(onLine: (line: string) => void | Promise<void>): void {
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (s: string) => {
    buf += s;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) void Promise.resolve(onLine(line)).catch((err: unknown) => fatal(err));
    }
  });
  exitWithParent();
}

export function emit(prefix: string, value: unknown): void {
  process.stdout.write(`${prefix} ${typeof value === 'string' ? value : JSON.stringify(value)}\n`);
}

export function fatal(err: unknown): never {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}

/** Memory after a full GC (servers run with --expose-gc). */
export async function memReport(connections: number): Promise<Record<string, number>> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    await new Promise((r) => setTimeout(r, 100));
    gc();
  }
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, connections };
}

export interface BenchServer {
  /** Printable 'HOST:PORT'. */
  address: string;
  close(): Promise<void>;
  /** Open connections, or -1 when the implementation cannot tell. */
  connections(): number;
}

/** Standard server main: print `ready`, then serve stdin commands until EOF or `quit`. */
export async function serverMain(start: () => Promise<BenchServer>): Promise<void> {
  const server = await start();
  commandLoop(async (line) => {
    if (line === 'rss') {
      emit('rss', await memReport(server.connections()));
    } else if (line === 'quit') {
      await Promise.race([server.close(), new Promise((r) => setTimeout(r, 2000))]);
      process.exit(0);
    }
  });
  process.on('SIGTERM', () => process.exit(0));
  emit('ready', server.address);
}

/** Parse 'host:port' (IPv4 or bracketed IPv6). */
export function splitTarget(target: string): { host: string; port: number } {
  const i = target.lastIndexOf(':');
  if (i <= 0) throw new Error(`bad target ${target}`);
  return { host: target.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(target.slice(i + 1)) };
}
