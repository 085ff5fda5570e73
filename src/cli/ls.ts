/**
 * `skein ls [SERVICE]`: what a discovery source knows — services, instances, addresses,
 * metadata and, when the source tracks leases (the embedded `skein://` registry does), the
 * time each lease has left.
 *
 * Text output: one line per instance, in columns, sorted by service then address:
 *
 *   SERVICE  ADDRESS          LEASE LEFT  METADATA
 *   echo     127.0.0.1:4001   9.4 s/10 s  {"version":"1.2.0"}
 *
 * An ID column is added when some instance's id differs from its address; LEASE LEFT only
 * when the source reports leases. With `--json`: one JSON object per instance (NDJSON):
 * `{"service","id","address","metadata"[,"leaseRemainingMs","ttlMs"]}`. Nothing found
 * prints nothing on stdout (and a note on stderr); exit 0.
 */
import type { Command } from 'commander';
import { ErrorCode, createError, resolverFor, type Instance } from '../index.js';
import { checkDiscovery, discoveryOption, exit, ExitCode, formatError, intOption, log, OutputClosedError, redactUrl, toJsonLine, UsageError, writeLine } from './util.js';

interface LsFlags {
  discovery?: string;
  json?: boolean;
  timeout: number;
}

const EXAMPLES = `
Examples:
  $ skein ls --discovery skein://127.0.0.1:7600
  $ skein ls echo --discovery skein://127.0.0.1:7600 --json | jq .address
  $ SKEIN_DISCOVERY=static://127.0.0.1:7701,127.0.0.1:7702 skein ls echo

Output: one line per instance (SERVICE, ADDRESS, [ID,] [LEASE LEFT,] METADATA), or with
--json one JSON object per instance. LEASE LEFT shows when the source keeps leases (the
embedded registry): time left / lease TTL. A static:// list names no services: ask for
one (skein ls echo), or it lists its addresses under the service "*".
On failure: "STATUS: message" on stderr, exit status 1. Bad arguments: exit status 2.`;

export function registerLs(program: Command): void {
  program
    .command('ls')
    .summary('list the services and instances a discovery source knows')
    .description('List the instances a discovery source knows: every service, or only SERVICE.')
    .argument('[service]', 'only this service')
    .addOption(discoveryOption('the discovery source to ask'))
    .option('--json', 'one JSON object per instance (NDJSON)')
    .option('--timeout <ms>', 'give up after this long', intOption(1, 0x7fffffff), 5000)
    .addHelpText('after', EXAMPLES)
    .action((service: string | undefined, flags: LsFlags) => ls(service, flags));
}

/** What `list()` may carry beyond Instance (the embedded registry adds its lease). */
type Listed = Instance & { leaseRemainingMs?: unknown; ttlMs?: unknown };

function seconds(ms: number): string {
  return ms >= 100_000 ? `${Math.round(ms / 1000)} s` : `${(ms / 1000).toFixed(1).replace(/\.0$/, '')} s`;
}

function leaseOf(i: Listed): { left: number; ttl: number | undefined } | undefined {
  if (typeof i.leaseRemainingMs !== 'number' || !Number.isFinite(i.leaseRemainingMs)) return undefined;
  return { left: Math.max(0, i.leaseRemainingMs), ttl: typeof i.ttlMs === 'number' && Number.isFinite(i.ttlMs) ? i.ttlMs : undefined };
}

/** Rows as aligned columns (the last column is not padded). */
export function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]! + 2))).join('').trimEnd());
}

async function ls(service: string | undefined, flags: LsFlags): Promise<void> {
  let url: string;
  try {
    url = checkDiscovery(flags.discovery);
    if (service !== undefined && service.trim() === '') throw new UsageError('the service name is empty');
  } catch (err) {
    log(`skein ls: ${err instanceof UsageError ? err.message : formatError(err)}`);
    return exit(ExitCode.USAGE);
  }
  const resolver = resolverFor(url);
  let instances: Listed[];
  try {
    const signal = AbortSignal.timeout(flags.timeout);
    // The embedded registry's resolver also reports each lease (listDetailed).
    const detailed = (resolver as { listDetailed?: (s: string | undefined, o: { signal: AbortSignal }) => Promise<{ instances: Listed[] }> }).listDetailed;
    instances = (await Promise.race([
      typeof detailed === 'function' ? detailed.call(resolver, service, { signal }).then((r) => r.instances) : resolver.list(service, { signal }),
      new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(createError(ErrorCode.DEADLINE, `no answer from ${redactUrl(url)} within ${flags.timeout} ms`)), { once: true })),
    ])) as Listed[];
  } catch (err) {
    log(formatError(err));
    await resolver.close().catch(() => {});
    return exit(ExitCode.FAILED);
  }
  await resolver.close().catch(() => {});
  instances = [...instances].sort((a, b) => (a.service === b.service ? (a.address < b.address ? -1 : a.address > b.address ? 1 : 0) : a.service < b.service ? -1 : 1));
  try {
    if (flags.json === true) {
      for (const i of instances) {
        const o: Record<string, unknown> = { service: i.service, id: i.id, address: i.address, metadata: i.metadata ?? {} };
        const lease = leaseOf(i);
        if (lease !== undefined) {
          o.leaseRemainingMs = lease.left;
          if (lease.ttl !== undefined) o.ttlMs = lease.ttl;
        }
        await writeLine(process.stdout, toJsonLine(o));
      }
    } else if (instances.length > 0) {
      const withId = instances.some((i) => i.id !== i.address);
      const withLease = instances.some((i) => leaseOf(i) !== undefined);
      const rows: string[][] = [['SERVICE', 'ADDRESS', ...(withId ? ['ID'] : []), ...(withLease ? ['LEASE LEFT'] : []), 'METADATA']];
      for (const i of instances) {
        const lease = leaseOf(i);
        const leaseCell = lease === undefined ? '-' : `${seconds(lease.left)}${lease.ttl !== undefined ? `/${seconds(lease.ttl)}` : ''}`;
        rows.push([i.service, i.address, ...(withId ? [i.id] : []), ...(withLease ? [leaseCell] : []), JSON.stringify(i.metadata ?? {})]);
      }
      for (const line of table(rows)) await writeLine(process.stdout, line);
    }
  } catch (err) {
    if (!(err instanceof OutputClosedError)) throw err;
  }
  if (instances.length === 0) log(`skein ls: no instances${service !== undefined ? ` of ${service}` : ''} at ${redactUrl(url)}`);
  return exit(ExitCode.OK);
}
