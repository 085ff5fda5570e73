/**
 * `duplexPair()`: two connected in-memory socket ends, no ports, no event-loop I/O.
 * What one end writes the other reads, on a later turn; `end()` gives EOF on the other
 * end; `destroy()` makes the other end see 'end' then 'close'; backpressure goes end to
 * end through `highWaterMark`. They are the memory transport's sockets (see
 * src/transport/memory.ts for the exact semantics), so a session test over a duplexPair
 * exercises what `memory:` targets do.
 *
 *   const [client, server] = duplexPair();
 *   server.on('data', (b) => ...);
 *   client.write(Buffer.from('hi'));
 */
import { createMemoryPair, type MemoryPairOptions, type MemorySocket } from '../../src/transport/memory.js';

export type { MemorySocket, MemoryPairOptions };

/** A connected pair `[a, b]`. @param options.highWaterMark per-side buffer size, bytes (default 16 KiB). */
export function duplexPair(options: MemoryPairOptions = {}): [MemorySocket, MemorySocket] {
  return createMemoryPair(options);
}
