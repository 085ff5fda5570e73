/**
 * `skein pipe listen` / `skein pipe send`: the reliable pipe (docs/pipe.md) from the shell.
 *
 *   skein pipe listen [--host H] [--port P] [--out FILE] [--token T] [--tls-cert F --tls-key F]
 *                     [--resume-timeout SECONDS] [--quiet]
 *   skein pipe send HOST:PORT [--in FILE] [--token T] [--tls-ca F] [--retry-timeout SECONDS] [--quiet]
 *
 * Contract (scripts and tests depend on it):
 *  - `listen` prints `ready pipe HOST:PORT` once listening: on stdout with `--out`, on
 *    stderr without (stdout then carries the received bytes and nothing else);
 *  - `listen` receives one transfer and exits 0 once the sender finished and the SHA-256
 *    matched (the file is in place, or stdout has every byte); `send` exits 0 only once the
 *    receiver confirmed every byte and the digest;
 *  - any failure: one line `skein pipe listen|send: STATUS: message (SKEIN_ERR_CODE)` on
 *    stderr, exit 1; bad usage (flags, a missing --in file, a bad target): exit 2;
 *  - progress on stderr only when it is a TTY and `--quiet` is not given; resume notices
 *    on stderr unless `--quiet`.
 */
import { createWriteStream, existsSync, fstatSync, statSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { dirname, resolve as resolvePath } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Option, type Command } from 'commander';
import { createError, ErrorCode, isSkeinError, pipeListen, pipeSend, type PipeReceiver, type PipeSender, type TlsOptions } from '../index.js';
import { formatAddress, parseTarget } from '../transport/index.js';
import { createProgress, type Progress } from './progress.js';
import { exit, ExitCode, formatError, intOption, log, numberOption, readTls, UsageError } from './util.js';

interface ListenFlags {
  host: string;
  port: number;
  out?: string;
  token?: string;
  tlsCert?: string;
  tlsKey?: string;
  resumeTimeout: number;
  quiet?: boolean;
}

interface SendFlags {
  in?: string;
  token?: string;
  tlsCa?: string;
  retryTimeout: number;
  quiet?: boolean;
}

const LISTEN_EXAMPLES = `
Examples:
  $ skein pipe listen --port 7900 --out backup.tar         # prints: ready pipe 127.0.0.1:7900
  $ skein pipe listen --host 0.0.0.0 --port 7900 --token "$SECRET" > data.bin
  $ skein pipe listen --port 7900 --tls-cert server.pem --tls-key server-key.pem --out f

Receives one transfer, then exits. With --out FILE the bytes go to FILE.skein-part (and the
confirmed offset to FILE.skein-state); FILE appears, complete, only once the SHA-256 of the
whole transfer matched. Started again with the same --out after a crash (even kill -9), it
resumes where the transfer was confirmed. Without --out the bytes go to stdout and the
"ready pipe HOST:PORT" line to stderr.
Exit status: 0 received and verified, 1 the transfer failed, 2 bad arguments.`;

const SEND_EXAMPLES = `
Examples:
  $ skein pipe send 10.0.0.5:7900 --in backup.tar
  $ tar c dir | skein pipe send 10.0.0.5:7900 --token "$SECRET"
  $ skein pipe send 10.0.0.5:7900 --in f --tls-ca ca.pem          # the receiver serves TLS

Sends --in FILE, or stdin. Connections that drop (or stall: 3 s without an answer) are
replaced, with backoff, and the transfer resumes at the receiver's confirmed offset: no byte
is lost, duplicated or reordered. A FILE transfer also survives a restart of this command
(same arguments); a stdin transfer cannot, and its receiver then fails.
Exit status: 0 every byte confirmed and the digests equal, 1 the transfer failed, 2 bad arguments.`;

export function registerPipe(program: Command): void {
  const cmd = program
    .command('pipe')
    .summary('send bytes between hosts, surviving lost connections')
    .description('A reliable byte pipe between two hosts: resumes after any connection loss, verifies a SHA-256 end to end (docs/pipe.md).');
  cmd
    .command('listen')
    .summary('receive one transfer (to --out FILE or stdout)')
    .description('Receive one transfer and write it to FILE (resumable) or stdout.')
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('-p, --port <port>', 'port to listen on; 0 picks a free one', intOption(0, 65535), 0)
    .option('--out <file>', 'write the bytes to FILE (resumable after a restart) instead of stdout')
    .addOption(new Option('--token <secret>', 'shared secret the sender must present').env('SKEIN_PIPE_TOKEN'))
    .option('--tls-cert <file>', 'serve TLS with this PEM certificate chain (with --tls-key)')
    .option('--tls-key <file>', 'PEM private key for --tls-cert')
    .option('--resume-timeout <seconds>', 'give the transfer up after this long without a sender', numberOption(0.001, 86400), 60)
    .option('-q, --quiet', 'no progress and no notices on stderr')
    .addHelpText('after', LISTEN_EXAMPLES)
    .action((flags: ListenFlags) => listen(flags));
  cmd
    .command('send')
    .summary('send --in FILE or stdin to a listening receiver')
    .description('Send FILE (restartable) or stdin to the receiver at HOST:PORT.')
    .argument('<target>', "the receiver's HOST:PORT (tls://HOST:PORT for TLS with the system CAs)")
    .option('--in <file>', 'send this file instead of stdin (a restarted sender resumes it)')
    .addOption(new Option('--token <secret>', "the receiver's shared secret").env('SKEIN_PIPE_TOKEN'))
    .option('--tls-ca <file>', 'connect with TLS, trusting this PEM CA')
    .option('--retry-timeout <seconds>', 'give up after this long without a receiver accepting the transfer', numberOption(0.001, 86400), 60)
    .option('-q, --quiet', 'no progress and no notices on stderr')
    .addHelpText('after', SEND_EXAMPLES)
    .action((target: string, flags: SendFlags) => send(target, flags));
}

/**
 * Where received bytes go without --out. process.stdout writes synchronously when it is a
 * file (`> out.bin`), which would stall the event loop on every chunk; a file gets an
 * asynchronous stream on fd 1 instead (pipes and terminals keep process.stdout).
 */
function stdoutStream(): Writable {
  try {
    if (fstatSync(1).isFile()) return createWriteStream('', { fd: 1, autoClose: false, highWaterMark: 1024 * 1024 });
  } catch {
    // fall back to process.stdout
  }
  return process.stdout;
}

/** `STATUS: message (SKEIN_ERR_CODE)`. */
function describe(err: unknown): string {
  return isSkeinError(err) ? `${formatError(err)} (${err.code})` : formatError(err);
}

function onSignals(stop: (signal: string) => void): void {
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

async function listen(flags: ListenFlags): Promise<void> {
  const name = 'skein pipe listen';
  const quiet = flags.quiet === true;
  let tls: TlsOptions | undefined;
  try {
    tls = readTls({ tlsCert: flags.tlsCert, tlsKey: flags.tlsKey }, 'server');
    if (flags.out !== undefined) {
      const dir = dirname(resolvePath(flags.out));
      if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`--out: ${dir} is not a directory`);
      if (existsSync(flags.out) && statSync(flags.out).isDirectory()) throw new UsageError(`--out: ${flags.out} is a directory`);
    }
    if (flags.token === '') throw new UsageError('--token: empty');
  } catch (err) {
    log(`${name}: ${err instanceof UsageError ? err.message : describe(err)}`);
    return exit(err instanceof UsageError ? ExitCode.USAGE : ExitCode.FAILED);
  }

  let receiver: PipeReceiver;
  try {
    receiver = await pipeListen({
      host: flags.host,
      port: flags.port,
      resumeTimeoutMs: Math.max(1, Math.round(flags.resumeTimeout * 1000)),
      ...(flags.out !== undefined ? { out: flags.out } : {}),
      ...(flags.token !== undefined ? { token: flags.token } : {}),
      ...(tls !== undefined ? { tls } : {}),
    });
  } catch (err) {
    log(`${name}: ${describe(err)}`);
    return exit(ExitCode.FAILED);
  }

  if (!quiet && receiver.bytes > 0) log(`${name}: a partial transfer of ${flags.out} is waiting for its sender (${receiver.bytes} bytes confirmed)`);
  let progress: Progress | undefined;
  receiver.on('attach', (a) => {
    progress ??= createProgress({ stream: process.stderr, quiet, label: 'receive', ...(a.size !== undefined ? { total: a.size } : {}) });
    if (!quiet && (a.epoch > 1 || a.offset > 0)) log(`${name}: ${a.offset > 0 ? `resuming at byte ${a.offset}` : 'sender reconnected'} (${a.peer})`);
  });
  receiver.on('progress', (p) => progress?.update(p.bytes));
  receiver.on('refused', (r) => {
    if (!quiet) log(`${name}: refused a connection from ${r.peer}: ${r.reason}`);
  });
  receiver.on('detach', (d) => {
    if (!quiet) log(`${name}: the sender's connection ended (${formatError(d.reason)}); waiting for it to come back`);
  });
  onSignals((signal) => void receiver.close(createError(ErrorCode.CANCELLED, `interrupted (${signal})`)));

  const address = receiver.port !== undefined ? formatAddress(receiver.host ?? flags.host, receiver.port) : receiver.address;
  const ready = `ready pipe ${address}\n`;
  let output: Promise<void> = Promise.resolve();
  if (flags.out !== undefined) process.stdout.write(ready);
  else {
    process.stderr.write(ready);
    // stdout carries the bytes; a reader that goes away (EPIPE) fails the transfer.
    const out = stdoutStream();
    // Ending the file stream flushes it (its fd stays open); process.stdout is never ended.
    output = pipeline(receiver.readable!, out, { end: out !== process.stdout });
    output.catch(() => {});
  }

  try {
    await receiver.done;
    await output;
    progress?.done();
    await receiver.close();
    return exit(ExitCode.OK);
  } catch (err) {
    progress?.done();
    log(`${name}: ${describe(err)}`);
    await receiver.close().catch(() => {});
    return exit(ExitCode.FAILED);
  }
}

async function send(target: string, flags: SendFlags): Promise<void> {
  const name = 'skein pipe send';
  const quiet = flags.quiet === true;
  let tls: TlsOptions | undefined;
  let total: number | undefined;
  try {
    parseTarget(target);
    tls = readTls({ tlsCa: flags.tlsCa }, 'client');
    if (flags.in !== undefined) {
      if (!existsSync(flags.in)) throw new UsageError(`--in: ${flags.in}: no such file`);
      const st = statSync(flags.in);
      if (!st.isFile()) throw new UsageError(`--in: ${flags.in} is not a regular file`);
      total = st.size;
    } else {
      // stdin redirected from a file: its size is known (for the progress line only).
      const st = fstatSync(0);
      if (st.isFile()) total = st.size;
    }
    if (flags.token === '') throw new UsageError('--token: empty');
  } catch (err) {
    log(`${name}: ${err instanceof UsageError || !isSkeinError(err) ? (err as Error).message : err.message}`);
    return exit(ExitCode.USAGE);
  }

  let sender: PipeSender;
  try {
    sender = pipeSend(target, {
      retryTimeoutMs: Math.max(1, Math.round(flags.retryTimeout * 1000)),
      ...(flags.in !== undefined ? { in: flags.in } : {}),
      ...(flags.token !== undefined ? { token: flags.token } : {}),
      ...(tls !== undefined ? { tls } : {}),
    });
  } catch (err) {
    log(`${name}: ${describe(err)}`);
    return exit(ExitCode.USAGE);
  }
  const progress = createProgress({ stream: process.stderr, quiet, label: 'send', ...(total !== undefined ? { total } : {}) });
  sender.on('progress', (p: { bytes: number }) => progress.update(p.bytes));
  sender.on('attach', (a: { epoch: number; offset: number }) => {
    if (!quiet && a.offset > 0) log(`${name}: the receiver resumes at byte ${a.offset}`);
  });
  onSignals((signal) => sender.destroy(createError(ErrorCode.CANCELLED, `interrupted (${signal})`)));
  if (flags.in === undefined) {
    if (process.stdin.isTTY && !quiet) log(`${name}: reading from stdin (end with Ctrl-D)`);
    // A failing stdin destroys the sender (the transfer fails); the sender failing stops the reads.
    pipeline(process.stdin, sender).catch(() => {});
  }
  try {
    await sender.done;
    progress.done();
    return exit(ExitCode.OK);
  } catch (err) {
    progress.done();
    log(`${name}: ${describe(err)}`);
    return exit(ExitCode.FAILED);
  }
}
