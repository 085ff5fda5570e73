/**
 * Idle-connection client process (used by bench/idle.ts):
 *
 *   node dist/bench/<impl>/idle-client.js HOST:PORT COUNT BATCH
 *
 * Opens COUNT connections to the server, BATCH at a time, and makes one 1-byte echo call
 * on each so that every connection is fully established (handshake done, server-side
 * state allocated). Prints `ready COUNT SECONDS`, then holds the connections open until
 * stdin says `close` or reaches EOF.
 */
import { commandLoop, emit, fatal } from './child.js';

export interface IdleConn {
  ping(): Promise<void>;
  close(): void | Promise<void>;
}

export async function idleClientMain(open: (target: string) => IdleConn | Promise<IdleConn>): Promise<void> {
  try {
    const [target, countS, batchS] = process.argv.slice(2);
    const count = Number(countS);
    const batch = Number(batchS ?? '500');
    if (!target || !(count >= 1) || !(batch >= 1)) throw new Error('usage: idle-client.js HOST:PORT COUNT [BATCH]');
    const conns: IdleConn[] = [];
    commandLoop(async (line) => {
      if (line === 'close') {
        await Promise.race([Promise.allSettled(conns.map((c) => c.close())), new Promise((r) => setTimeout(r, 5000))]);
        emit('closed', String(conns.length));
        process.exit(0);
      }
    });
    const t0 = process.hrtime.bigint();
    for (let done = 0; done < count; ) {
      const n = Math.min(batch, count - done);
      const opened = await Promise.all(
        Array.from({ length: n }, async () => {
          const c = await open(target);
          conns.push(c);
          await c.ping();
          return c;
        }),
      );
      done += opened.length;
    }
    emit('ready', `${conns.length} ${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(3)}`);
  } catch (err) {
    fatal(err);
  }
}
