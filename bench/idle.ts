/**
 * Idle-connection scenario: how much memory does ONE server process need to hold many
 * established, idle client connections?
 *
 * 1. Start the implementation's bench server (a separate process, run with --expose-gc).
 * 2. Ask it for its memory (`rss` on stdin: full GC, then process.memoryUsage()).
 * 3. Start client processes (bench/<impl>/idle-client.js) one after the other; each opens
 *    its share of the connections in batches and makes one 1-byte echo call on each.
 * 4. Once all clients report `ready`, let things settle for a second and ask the server
 *    for its memory again. Report RSS before/after and (after - before) / connections.
 *
 * The file-descriptor limit cannot be raised from Node, so the connections are split
 * across several client processes when `ulimit -n` is below 2 × connections + 100.
 */
import { spawnSync } from 'node:child_process';
import { benchScript, Child, queryMem, sleep, startServer, type MemReport } from './lib/proc.js';

export interface IdleOptions {
  conns: number;
  /** Connections per client process; 0 = derive from `ulimit -n`. */
  perProc: number;
  batch: number;
}

export interface IdleResult {
  impl: string;
  conns: number;
  client_procs: number;
  open_seconds: number;
  before: MemReport;
  after: MemReport;
  rss_delta: number;
  per_conn_bytes: number;
}

/** The soft fd limit children inherit (`ulimit -n`), or null if it cannot be read. */
export function fdLimit(): number | null {
  const r = spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8', timeout: 5000 });
  const v = r.stdout?.trim();
  if (!v) return null;
  if (v === 'unlimited') return Infinity;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

/** How to split `conns` across client processes, with a note explaining why. */
export function planClients(opts: IdleOptions): { perProc: number; procs: number; note: string } {
  const limit = fdLimit();
  const need = 2 * opts.conns + 100;
  let perProc = opts.perProc > 0 ? Math.min(opts.perProc, opts.conns) : opts.conns;
  let note = `ulimit -n = ${limit ?? 'unknown'}`;
  if (opts.perProc <= 0 && limit !== null && limit < need) {
    const procs = Math.ceil(need / limit);
    perProc = Math.ceil(opts.conns / procs);
    note += ` (< ${need}), so the ${opts.conns} connections are split across ${procs} client processes`;
  }
  if (limit !== null && limit < opts.conns + 100) {
    note += `; WARNING: the server itself needs ~${opts.conns + 100} fds and may hit EMFILE`;
  }
  return { perProc, procs: Math.ceil(opts.conns / perProc), note };
}

export async function runIdle(impl: string, opts: IdleOptions, perProc: number): Promise<IdleResult> {
  const { child: server, target } = await startServer(`${impl} server`, benchScript(`${impl}/server.js`));
  const clients: Child[] = [];
  try {
    await sleep(300);
    const before = await queryMem(server);
    const t0 = Date.now();
    for (let opened = 0, i = 0; opened < opts.conns; i++) {
      const n = Math.min(perProc, opts.conns - opened);
      const c = new Child(`${impl} idle-client ${i}`, benchScript(`${impl}/idle-client.js`), [target, String(n), String(opts.batch)]);
      clients.push(c);
      const ready = await c.waitPrefixed('ready', 60_000 + n * 20);
      const got = Number(ready.split(' ')[0]);
      if (got !== n) throw new Error(`${impl} idle client ${i} opened ${got} of ${n} connections`);
      opened += n;
      process.stderr.write(`  ${impl}: ${opened}/${opts.conns} connections open\n`);
    }
    const openSeconds = (Date.now() - t0) / 1000;
    await sleep(1000);
    const after = await queryMem(server);
    if (after.connections >= 0 && after.connections < opts.conns) {
      throw new Error(`${impl} server reports ${after.connections} connections, expected ${opts.conns}`);
    }
    const delta = after.rss - before.rss;
    return {
      impl,
      conns: opts.conns,
      client_procs: clients.length,
      open_seconds: openSeconds,
      before,
      after,
      rss_delta: delta,
      per_conn_bytes: delta / opts.conns,
    };
  } finally {
    for (const c of clients) c.send('close');
    await Promise.all(clients.map((c) => c.stop(5000)));
    await server.stop();
  }
}
