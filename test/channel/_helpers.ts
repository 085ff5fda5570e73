/**
 * Shared pieces of the channel tests: an echo service whose replies name the server that
 * answered, servers on 127.0.0.1 port 0, and bounded waits on channel state.
 */
import { connect, createServer, implement, serverStream, service, unary, type ChannelClient, type DiscoveryClientOptions, type Server, type ServerOptions } from '../../src/index.js';
import { waitFor } from '../helpers/wait.js';

export const Echo = service('echo', {
  say: unary<{ text: string }, { text: string; by: string }>({ idempotent: true }),
  count: serverStream<{ n: number }, { i: number; by: string }>(),
  slow: unary<{ ms: number }, { by: string }>(),
});

export interface Named {
  name: string;
  server: Server;
  address: string;
  port: number;
  /** Resolve a pending `slow` call now (they otherwise wait for `ms`). */
  release(): void;
  /** Resolves when a `slow` call has started on this server. */
  slowStarted(): Promise<void>;
}

/** An echo server named `name` on 127.0.0.1:0. */
export async function startEcho(name: string, options: ServerOptions = {}): Promise<Named> {
  let releases: Array<() => void> = [];
  const started: Array<() => void> = [];
  const server = createServer({ drainGraceMs: 5000, ...options }).add(
    implement(Echo, {
      say: ({ text }) => ({ text, by: name }),
      async *count({ n }) {
        for (let i = 1; i <= n; i++) yield { i, by: name };
      },
      async slow({ ms }, ctx) {
        for (const s of started.splice(0)) s();
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(resolve, ms);
          releases.push(() => {
            clearTimeout(t);
            resolve();
          });
          ctx.signal.addEventListener('abort', () => {
            clearTimeout(t);
            reject(ctx.signal.reason);
          });
        });
        return { by: name };
      },
    }),
  );
  const bound = await server.listen({ host: '127.0.0.1', port: 0 });
  return {
    name,
    server,
    address: bound.address,
    port: bound.port!,
    release: () => {
      const r = releases;
      releases = [];
      for (const f of r) f();
    },
    slowStarted: () => new Promise<void>((r) => started.push(r)),
  };
}

export type EchoClient = ChannelClient<typeof Echo.methods>;

export function channelClient(url: string, options: Omit<DiscoveryClientOptions, 'discovery'> = {}): EchoClient {
  // Round-robin: these tests count exact even splits (the default picker is p2c-ewma).
  return connect(Echo, { discovery: url, balancer: 'round-robin', ...options });
}

/** Wait (bounded) until the channel's READY subchannels are exactly `addresses` (any order). */
export function waitReady(client: EchoClient, addresses: string[], timeoutMs = 5000): Promise<void> {
  const want = [...addresses].sort().join(',');
  return waitFor(() => client.channel.readySubchannels.map((s) => s.address).sort().join(',') === want, { timeoutMs, what: `ready subchannels = [${want}] (have [${client.channel.readySubchannels.map((s) => s.address).join(',')}])` });
}

/** Make `n` say() calls one after the other; count the replies per server name. */
export async function spread(client: EchoClient, n: number): Promise<Map<string, number>> {
  const by = new Map<string, number>();
  for (let k = 0; k < n; k++) {
    const { by: name } = await client.say({ text: String(k) }, { timeout: 2000 });
    by.set(name, (by.get(name) ?? 0) + 1);
  }
  return by;
}

/** Close everything given, ignoring failures (test cleanup). */
export async function closeAll(...things: Array<{ close(grace?: number): Promise<unknown> } | undefined>): Promise<void> {
  await Promise.all(things.map((t) => t?.close(0).catch(() => {})));
}
