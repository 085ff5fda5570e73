/** The `who` service of the balancing tests: each replica answers with its name. */
import { service, unary, type CallOptions } from '../../src/index.js';
import { withTimeout } from '../helpers/wait.js';

export const Who = service('who', {
  ask: unary<{ n: number }, { by: string }>({ idempotent: true }),
});

/** `total` calls, `inflight` at a time (closed loop); the replies counted per replica name. */
export async function spread(client: { ask(request: { n: number }, options?: CallOptions): Promise<{ by: string }> }, total: number, inflight: number): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  let next = 0;
  await withTimeout(
    Promise.all(
      Array.from({ length: inflight }, async () => {
        while (next < total) {
          const n = next++;
          const { by } = await client.ask({ n }, { timeout: 5000 });
          counts.set(by, (counts.get(by) ?? 0) + 1);
        }
      }),
    ),
    30_000,
    `${total} calls`,
  );
  return counts;
}
