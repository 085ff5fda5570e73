/**
 * Helpers shared by the `skein` commands: exit codes, error lines (`CODE: message`),
 * NDJSON in and out with backpressure, `--meta K=V` and number parsing, TLS files.
 *
 * Exit codes are part of the command-line contract: 0 ok, 1 the call (or the server)
 * failed at run time, 2 the command line or its input was wrong.
 */
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { InvalidArgumentError, Option } from 'commander';
import type { Command } from 'commander';
import { bidi, discoveryFor, isSkeinError, parseDiscoveryUrl, service, statusName, type Metadata, type ServiceDef, type TlsOptions } from '../index.js';
import { parseTarget } from '../transport/index.js';

export const ExitCode = {
  OK: 0,
  /** The call failed, or the server could not run. */
  FAILED: 1,
  /** Bad command line or bad input (JSON, --meta, files). */
  USAGE: 2,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** A mistake in the command line or its input: printed as is, exit status 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/**
 * One line describing a failure: `STATUS: message` for skein errors (e.g.
 * `DEADLINE_EXCEEDED: deadline exceeded calling echo.sleep`), the plain message for usage
 * errors, `UNKNOWN: message` for anything else.
 */
export function formatError(err: unknown): string {
  if (isSkeinError(err)) return `${statusName(err.status)}: ${err.message}`;
  if (err instanceof UsageError) return err.message;
  return `UNKNOWN: ${err instanceof Error ? err.message : String(err)}`;
}

/** Write to stderr (all logs go there; stdout carries only results and `ready` lines). */
export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** The reader of stdout went away (EPIPE, e.g. `skein call ... | head -1`). */
export class OutputClosedError extends Error {
  override name = 'OutputClosedError';
}

/**
 * Write one line, waiting for 'drain' when the stream's buffer is full. Rejects with
 * OutputClosedError when the stream is (or gets) destroyed instead of waiting forever.
 */
export async function writeLine(out: Writable, line: string): Promise<void> {
  if (out.destroyed) throw new OutputClosedError('output closed');
  if (out.write(`${line}\n`)) return;
  const ac = new AbortController();
  try {
    await Promise.race([once(out, 'drain', { signal: ac.signal }), once(out, 'close', { signal: ac.signal }).then(() => Promise.reject(new OutputClosedError('output closed')))]);
  } finally {
    ac.abort();
  }
}

/** Let stdout and stderr flush, then exit with `code`. */
export async function exit(code: ExitCodeValue): Promise<never> {
  await Promise.all([process.stdout, process.stderr].map((s) => new Promise<void>((resolve) => (s.writableLength === 0 ? resolve() : s.write('', () => resolve())))));
  process.exit(code);
}

/**
 * The JSON text printed for one message. JSON cannot carry everything MessagePack can, so:
 * Buffer / Uint8Array → base64 string, bigint → decimal string, Date → ISO string,
 * undefined → null.
 */
export function toJsonLine(value: unknown): string {
  return (
    JSON.stringify(value, function (this: Record<string, unknown>, key: string, v: unknown) {
      const raw = this[key]; // before toJSON: a Buffer arrives here as {type:'Buffer',...}
      if (raw instanceof Uint8Array) return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64');
      if (typeof v === 'bigint') return v.toString();
      return v;
    }) ?? 'null'
  );
}

/** Parse a JSON text given on the command line; UsageError when malformed. */
export function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`bad JSON in ${what}: ${(err as Error).message}`);
  }
}

/**
 * Requests from NDJSON: one JSON value per line, blank lines skipped. Pull-based (the
 * input is read only as fast as the messages are taken), so a slow server stalls the
 * reader instead of filling memory. A malformed line throws a UsageError.
 */
export async function* readNdjson(input: Readable, what = 'stdin'): AsyncGenerator<unknown> {
  let rest = '';
  let lineNo = 0;
  const parse = (line: string): unknown => {
    lineNo++;
    return parseJson(line, `${what} line ${lineNo}`);
  };
  input.setEncoding('utf8');
  for await (const chunk of input as AsyncIterable<string>) {
    rest += chunk;
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl).trim();
      rest = rest.slice(nl + 1);
      if (line === '') lineNo++;
      else yield parse(line);
    }
  }
  if (rest.trim() !== '') yield parse(rest.trim());
}

const META_KEY = /^[a-z0-9\-_.]{1,255}$/;

/** Commander collector for repeated `--meta key=value` options. */
export function collectMeta(value: string, previous: Metadata | undefined): Metadata {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError(`expected key=value, got ${JSON.stringify(value)}`);
  const key = value.slice(0, eq);
  if (!META_KEY.test(key)) throw new InvalidArgumentError(`bad metadata key ${JSON.stringify(key)}: use 1-255 characters of [a-z0-9-_.]`);
  return { ...previous, [key]: value.slice(eq + 1) };
}

/** Commander parser for an integer option within [min, max]. */
export function intOption(min: number, max: number): (value: string) => number {
  return (value: string) => {
    if (!/^\d+$/.test(value.trim())) throw new InvalidArgumentError(`expected an integer, got ${JSON.stringify(value)}`);
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected an integer in [${min}, ${max}], got ${value}`);
    return n;
  };
}

/** Commander parser for a number (decimals allowed) within [min, max]. */
export function numberOption(min: number, max: number): (value: string) => number {
  return (value: string) => {
    if (!/^\d+(\.\d+)?$/.test(value.trim())) throw new InvalidArgumentError(`expected a number, got ${JSON.stringify(value)}`);
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`expected a number in [${min}, ${max}], got ${value}`);
    return n;
  };
}

/** The `--discovery URL` option; SKEIN_DISCOVERY stands in for it. */
export function discoveryOption(what = 'where to find services'): Option {
  return new Option('--discovery <url>', `${what}: skein://HOST:PORT, etcd://HOST:PORT[,...], static://HOST:PORT[,...], dns://NAME, multicast://[GROUP:PORT]`).env('SKEIN_DISCOVERY');
}

/** A URL without its user info, for messages (passwords must not reach logs). */
export function redactUrl(url: string): string {
  return url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#]*@/, '$1***@');
}

/**
 * Check a discovery URL given on the command line: a UsageError (exit 2) when it is
 * missing, malformed, of an unknown scheme, or (for `registrar`) read-only.
 */
export function checkDiscovery(url: string | undefined, need: 'resolver' | 'registrar' = 'resolver'): string {
  if (url === undefined || url === '') throw new UsageError('no discovery URL: pass --discovery URL or set SKEIN_DISCOVERY');
  let plugin: ReturnType<typeof discoveryFor>;
  try {
    plugin = discoveryFor(parseDiscoveryUrl(url));
  } catch (err) {
    throw new UsageError(`--discovery: ${(err as Error).message}`);
  }
  if (need === 'registrar' && typeof plugin.registrar !== 'function') throw new UsageError(`--discovery: "${plugin.scheme}:" discovery is read-only: servers cannot register there (use skein://, etcd:// or multicast://)`);
  return url;
}

function readPem(file: string, flag: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`${flag}: cannot read ${file}: ${(err as Error).message}`);
  }
}

/**
 * TLS options from `--tls-cert/--tls-key/--tls-ca` files, or undefined when none is
 * given. `role` decides what `ca` means: the CA to trust (client) or, on a server, the CA
 * that signs client certificates, which turns mutual TLS on.
 */
export function readTls(files: { tlsCert?: string; tlsKey?: string; tlsCa?: string }, role: 'client' | 'server'): TlsOptions | undefined {
  const { tlsCert, tlsKey, tlsCa } = files;
  if (tlsCert === undefined && tlsKey === undefined && tlsCa === undefined) return undefined;
  if ((tlsCert === undefined) !== (tlsKey === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
  if (role === 'server' && tlsCert === undefined) throw new UsageError('--tls-ca on serve needs --tls-cert and --tls-key');
  const tls: TlsOptions = {};
  if (tlsCert !== undefined) tls.cert = readPem(tlsCert, '--tls-cert');
  if (tlsKey !== undefined) tls.key = readPem(tlsKey, '--tls-key');
  if (tlsCa !== undefined) {
    tls.ca = readPem(tlsCa, '--tls-ca');
    if (role === 'server') tls.requestCert = true;
  }
  return tls;
}

let cachedVersion: string | undefined;

/** This package's version, from its package.json (found from this file's location). */
export function packageVersion(): string {
  if (cachedVersion === undefined) {
    // dist/src/cli/util.js → ../../../package.json; src/cli/util.ts (type stripping) → ../../package.json
    for (const up of ['../../../package.json', '../../package.json']) {
      try {
        const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as { name?: string; version?: string };
        if (pkg.name === 'skein' && typeof pkg.version === 'string') {
          cachedVersion = pkg.version;
          break;
        }
      } catch {
        // not there: try the next candidate
      }
    }
    cachedVersion ??= '0.0.0-unknown';
  }
  return cachedVersion;
}

/** Method names the client object keeps for itself (see rpc/client.ts). */
const RESERVED = new Set(['connection', 'channel', 'state', 'status', 'ready', 'close', 'then', '__proto__']);

/**
 * A one-method definition for SERVICE.METHOD, declared bidi. A method whose name the
 * client reserves is defined under another key with the same wire path.
 */
export function runtimeDef(path: string): { def: ServiceDef; key: string } {
  const dot = path.lastIndexOf('.');
  if (dot <= 0 || dot === path.length - 1) throw new UsageError(`expected SERVICE.METHOD, got ${JSON.stringify(path)}`);
  const name = path.slice(0, dot);
  const method = path.slice(dot + 1);
  let def: ServiceDef;
  try {
    def = service(name, { [method]: bidi() });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (!RESERVED.has(method)) return { def, key: method };
  const key = `${method.replace(/^_+/, '')}_`;
  return { def: { name, methods: { [key]: def.methods[method]! }, paths: { [key]: def.paths[method]! } }, key };
}

/**
 * --target or --discovery: exactly one. When both are set, the one given on the command
 * line wins over the one from the environment; both on the command line is a usage error.
 */
export function where(flags: { target?: string | undefined; discovery?: string | undefined }, cmd: Command): { target: string } | { discovery: string } {
  let { target, discovery } = flags;
  if (target === '') target = undefined;
  if (discovery === '') discovery = undefined;
  if (target !== undefined && discovery !== undefined) {
    const fromCli = (name: string): boolean => cmd.getOptionValueSource(name) === 'cli';
    if (fromCli('target') && !fromCli('discovery')) discovery = undefined;
    else if (fromCli('discovery') && !fromCli('target')) target = undefined;
    else throw new UsageError('give --target or --discovery, not both');
  }
  if (discovery !== undefined) return { discovery: checkDiscovery(discovery) };
  if (target === undefined) throw new UsageError('no target: pass --target HOST:PORT or --discovery URL, or set SKEIN_TARGET or SKEIN_DISCOVERY');
  try {
    parseTarget(target);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return { target };
}

