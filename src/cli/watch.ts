/**
 * `skein watch [SERVICE]`: follow the instances of one service as the discovery source
 * reports them, one line per change, until interrupted (SIGINT/SIGTERM: exit 0). Without
 * SERVICE, every service, when the source can watch them all at once (skein://); the
 * snapshot header then names the service "*".
 *
 * Text format (stdout), stable for scripts:
 *
 *   # echo snapshot: 2 instances (revision 7)   a full list follows (first answer, or a resync)
 *   = echo 127.0.0.1:4001 {"version":"1.2.0"}   one per instance of that list
 *   = echo 127.0.0.1:4002 {}
 *   + echo 127.0.0.1:4003 {}                    an instance was added
 *   ~ echo 127.0.0.1:4003 {"zone":"b"}          an instance's metadata changed
 *   - echo 127.0.0.1:4001 {"version":"1.2.0"}   an instance was removed
 *
 * Each instance line is `OP SERVICE ADDRESS [id=ID] METADATA-JSON`; `id=` appears when the
 * id differs from the address; "(revision N)" when the source numbers its changes.
 * Errors of the source (registry unreachable) go to stderr as
 * `skein watch: STATUS: message (retrying)`: the watch goes on by itself.
 *
 * `--json`: NDJSON, one object per event, as the Resolver reports them:
 *   {"type":"snapshot","service":"echo","instances":[{service,id,address,metadata},...],"revision":7}
 *   {"type":"added"|"updated"|"removed","service":"echo","instance":{...},"revision":8}
 *   {"type":"error","service":"echo","status":"UNAVAILABLE","code":"SKEIN_ERR_...","message":"..."}
 */
import type { Command } from 'commander';
import { resolverFor, statusName, type Instance, type Resolver, type ResolverEvent } from '../index.js';
import { checkDiscovery, discoveryOption, exit, ExitCode, type ExitCodeValue, formatError, log, OutputClosedError, redactUrl, toJsonLine, UsageError, writeLine } from './util.js';

interface WatchFlags {
  discovery?: string;
  json?: boolean;
}

const EXAMPLES = `
Examples:
  $ skein watch echo --discovery skein://127.0.0.1:7600
  $ skein watch echo --json | jq -c 'select(.type=="removed") | .instance.address'

Output, one line per change (stdout):
  # echo snapshot: 2 instances (revision 7)     a full list follows: first, and after a resync
  = echo 127.0.0.1:4001 {"version":"1.2.0"}     an instance in that list
  + echo 127.0.0.1:4003 {}                      added
  ~ echo 127.0.0.1:4003 {"zone":"b"}            metadata changed
  - echo 127.0.0.1:4001 {"version":"1.2.0"}     removed
Lines are OP SERVICE ADDRESS [id=ID] METADATA; id= shows when the id is not the address.
With --json: one JSON object per event (type snapshot/added/updated/removed/error).
Source errors go to stderr ("skein watch: STATUS: message (retrying)"); the watch goes on.
Runs until SIGINT or SIGTERM (exit 0). Bad arguments: exit status 2.`;

export function registerWatch(program: Command): void {
  program
    .command('watch')
    .summary('follow the instances of a service, one line per change')
    .description('Print the instances of SERVICE, then one line per change, until interrupted.')
    .argument('[service]', 'the service to watch; all services when the source can (skein://)')
    .addOption(discoveryOption('the discovery source to watch'))
    .option('--json', 'one JSON object per event (NDJSON)')
    .addHelpText('after', EXAMPLES)
    .action((service: string | undefined, flags: WatchFlags) => watch(service, flags));
}

function instanceLine(op: string, i: Instance): string {
  return `${op} ${i.service} ${i.address}${i.id !== i.address ? ` id=${i.id}` : ''} ${JSON.stringify(i.metadata ?? {})}`;
}

const OPS = { added: '+', updated: '~', removed: '-' } as const;

/** The text lines for one event (errors excepted: they go to stderr). */
export function formatEvent(service: string, ev: ResolverEvent): string[] {
  const rev = ev.type !== 'error' && ev.revision !== undefined ? ` (revision ${ev.revision})` : '';
  switch (ev.type) {
    case 'snapshot':
      return [`# ${service} snapshot: ${ev.instances.length} instance${ev.instances.length === 1 ? '' : 's'}${rev}`, ...ev.instances.map((i) => instanceLine('=', i))];
    case 'added':
    case 'updated':
    case 'removed':
      return [instanceLine(OPS[ev.type], ev.instance)];
    default:
      return [];
  }
}

function jsonEvent(service: string, ev: ResolverEvent): string {
  if (ev.type === 'error') return toJsonLine({ type: 'error', service, status: statusName(ev.error.status), code: ev.error.code, message: ev.error.message });
  if (ev.type === 'snapshot') return toJsonLine({ type: 'snapshot', service, instances: ev.instances, ...(ev.revision !== undefined ? { revision: ev.revision } : {}) });
  return toJsonLine({ type: ev.type, service, instance: ev.instance, ...(ev.revision !== undefined ? { revision: ev.revision } : {}) });
}

type AllResolver = Resolver & { watchAll?: (o: { signal: AbortSignal }) => AsyncIterable<ResolverEvent> };

async function watch(service: string | undefined, flags: WatchFlags): Promise<void> {
  let url: string;
  let resolver: AllResolver;
  try {
    url = checkDiscovery(flags.discovery);
    if (service !== undefined && service.trim() === '') throw new UsageError('the service name is empty');
    resolver = resolverFor(url);
    if (service === undefined && typeof resolver.watchAll !== 'function') {
      await resolver.close().catch(() => {});
      throw new UsageError(`name the service to watch (${redactUrl(url)} cannot watch every service at once)`);
    }
  } catch (err) {
    log(`skein watch: ${err instanceof UsageError ? err.message : formatError(err)}`);
    return exit(ExitCode.USAGE);
  }
  const label = service ?? '*';
  const ac = new AbortController();
  let interrupted = false;
  const stop = (): void => {
    interrupted = true;
    ac.abort();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const onStdoutError = (): void => stop();
  process.stdout.on('error', onStdoutError);
  let code: ExitCodeValue = ExitCode.OK;
  try {
    const events = service === undefined ? resolver.watchAll!({ signal: ac.signal }) : resolver.watch(service, { signal: ac.signal });
    for await (const ev of events) {
      if (ac.signal.aborted) break;
      if (flags.json === true) await writeLine(process.stdout, jsonEvent(label, ev));
      if (ev.type === 'error') log(`skein watch: ${formatError(ev.error)} (retrying)`);
      else if (flags.json !== true) for (const line of formatEvent(label, ev)) await writeLine(process.stdout, line);
    }
    if (!interrupted) {
      log(`skein watch: the watch of ${label} at ${redactUrl(url)} ended`);
      code = ExitCode.FAILED;
    }
  } catch (err) {
    if (!interrupted && !(err instanceof OutputClosedError)) {
      log(formatError(err));
      code = ExitCode.FAILED;
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    await resolver.close().catch(() => {});
  }
  return exit(code);
}
