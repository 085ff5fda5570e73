/**
 * The receiving end of the reliable pipe (docs/protocol.md §14): a skein server serving
 * `skein.pipe/transfer`, holding one transfer, which any number of attachments (one bidi
 * call each, on whatever connection the sender managed to open) carry in turn.
 *
 *   attachment (call) ──OPEN──▶ open(): same transfer? epoch + 1, older attachment reset,
 *                               pending writes settled ──▶ ACCEPT(epoch, confirmed, window)
 *                     ──DATA──▶ data(): epoch current, offset == expected, CRC32C ok
 *                               ──▶ hash, sink.write ──▶ confirmed (commit for files) ──▶ ACK
 *                     ──END───▶ end(): expected == total, SHA-256 equal ──▶ sink.finish
 *                               ──▶ DONE + END(OK)
 *
 * Three offsets: `expected` (accepted and hashed), `written` (in the sink), `confirmed`
 * (acknowledged: written and, for a file, fdatasync'ed with the state file rewritten).
 * A new attachment is accepted at `confirmed` after everything written was committed, so
 * within one process nothing accepted is ever thrown away; a restarted receiver resumes at
 * the state file's offset.
 *
 * Everything runs on the event loop; what must not interleave (a commit, the settling of
 * a new attachment, the finish) goes through `exclusive()`.
 */
import { createHash, timingSafeEqual, type Hash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import { createError, ErrorCode, isSkeinError, Status, type SkeinError } from '../errors.js';
import { createServer, implement, type Server } from '../rpc/server.js';
import type { CallContext } from '../rpc/types.js';
import type { PeerInfo, TlsOptions } from '../transport/transport.js';
import { pushable, type Pushable } from '../util/pushable.js';
import { crc32c } from './crc32c.js';
import { listenerSessionOptions, PipeDefaults } from './defaults.js';
import { decodeToReceiver, encodeAccept, encodeAck, encodeDone, encodeNack, NackReason, OpenFlags, PipeMessageType, type DataMessage, type EndMessage, type OpenMessage } from './messages.js';
import { PipeService } from './service.js';
import { FileSink, ReadableSink, type HeldTransfer, type Sink } from './sink.js';
import type { PipeState } from './state.js';

export interface PipeListenOptions {
  /** Address to bind. @default '127.0.0.1' */
  host?: string;
  /** Port; 0 picks a free one. @default 0 */
  port?: number;
  /** Listen on this unix socket path instead of TCP. */
  path?: string;
  /** Shared secret the sender must present (compared in constant time). @default none: any sender */
  token?: string | Buffer;
  /** Serve TLS with this certificate and key. */
  tls?: TlsOptions;
  /**
   * Write the bytes to this file (through `out.skein-part` and `out.skein-state`, resumable
   * by a restarted receiver) instead of the `readable`.
   */
  out?: string;
  /** Fail an unfinished transfer after this long without a sender, in ms. @default 60000 */
  resumeTimeoutMs?: number;
  /** Bytes a sender may have unacknowledged (offered in ACCEPT). @default 8388608 (8 MiB) */
  window?: number;
  /** Closes the receiver (an unfinished transfer fails with the signal's reason, a file output is kept). */
  signal?: AbortSignal;
}

/** Bytes confirmed so far, and the total when the sender announced it. */
export interface PipeProgress {
  bytes: number;
  size?: number;
}

/** A finished transfer. */
export interface PipeResult {
  bytes: number;
  /** SHA-256 of every byte, lower-case hex. */
  sha256: string;
}

/** A sender's connection took over the transfer. */
export interface PipeAttachInfo {
  /** The attachment number (1 for the first of this receiver). */
  epoch: number;
  /** Where it resumes: the confirmed offset. */
  offset: number;
  size?: number;
  name: string;
  /** The sender's address. */
  peer: string;
}

export interface PipeReceiverEvents {
  progress: [PipeProgress];
  attach: [PipeAttachInfo];
  /** An attachment ended before the transfer did (the sender is expected back). */
  detach: [{ epoch: number; reason: SkeinError }];
  /** A connection was refused in the handshake (wrong or missing token). */
  refused: [{ peer: string; reason: string }];
}

interface TransferInfo {
  id: Buffer;
  size: number | undefined;
  restartable: boolean;
  name: string;
}

const Phase = {
  /** No transfer yet. */
  IDLE: 'idle',
  /** Receiving (attached or not). */
  ACTIVE: 'active',
  /** END accepted, the output is being finished. */
  FINISHING: 'finishing',
  DONE: 'done',
  FAILED: 'failed',
} as const;
type PhaseValue = (typeof Phase)[keyof typeof Phase];

/** File output: chunk writes in flight at once. */
const MAX_WRITES_IN_FLIGHT = 8;

/** A chunk for the Readable's high-water mark: a few chunks ahead of the consumer. */
const READABLE_HWM = 1024 * 1024;

function asSkein(err: unknown): SkeinError {
  return isSkeinError(err) ? err : createError(ErrorCode.INTERNAL, (err as Error)?.message ?? String(err), { cause: err });
}

function sha256(b: Buffer): Buffer {
  return createHash('sha256').update(b).digest();
}

/** One call carrying the transfer. Its replies are the pushable the handler returns. */
class Attachment {
  epoch = 0;
  ended = false;
  readonly replies: Pushable<Buffer> = pushable<Buffer>({ highWaterMark: 1024 });

  constructor(readonly peer: string) {}

  send(msg: Buffer): void {
    if (this.ended) return;
    this.replies.push(msg).catch(() => {});
  }

  /** End the call with OK (after the queued replies). */
  close(): void {
    if (this.ended) return;
    this.ended = true;
    this.replies.end();
  }

  /** End the call with `err`'s status and message. */
  fail(err: SkeinError): void {
    if (this.ended) return;
    this.ended = true;
    this.replies.fail(err);
  }
}

export class PipeReceiver extends EventEmitter<PipeReceiverEvents> {
  /** 'host:port' (or 'unix:/path'). */
  readonly address: string;
  readonly host: string | undefined;
  readonly port: number | undefined;
  /** The bytes, when `out` is not set. Ends after the digests matched; errors if the transfer fails. */
  readonly readable: Readable | undefined;
  /** Resolves once the transfer is complete and verified; rejects with a SkeinError. */
  readonly done: Promise<PipeResult>;

  private readonly server: Server;
  private readonly sink: Sink;
  private readonly window: number;
  private readonly ackEvery: number;
  private readonly resumeTimeoutMs: number;
  private phase: PhaseValue = Phase.IDLE;
  private info: TransferInfo | undefined;
  private epoch = 0;
  private current: Attachment | undefined;
  private hash: Hash = createHash('sha256');
  private digest: Buffer | undefined;
  private expected = 0;
  private written = 0;
  private confirmed = 0;
  private lastAcked = 0;
  /** NACKed at this expected offset already (one NACK per gap); -1 when none. */
  private nackedAt = -1;
  private nackCount = 0;
  /** File writes in flight, oldest first (they complete in any order; `written` advances in order). */
  private writes: Array<{ end: number; done: boolean; p: Promise<void> }> = [];
  private lock: Promise<void> = Promise.resolve();
  private committing = false;
  private commitAgain = false;
  private commitTimer: NodeJS.Timeout | undefined;
  private ackTimer: NodeJS.Timeout | undefined;
  private abandonTimer: NodeJS.Timeout | undefined;
  private failure: SkeinError | undefined;
  private closing: Promise<void> | undefined;
  private resolveDone!: (r: PipeResult) => void;
  private rejectDone!: (e: SkeinError) => void;

  /** @internal Use `pipeListen()`. */
  constructor(
    init: { server: Server; sink: Sink; window: number; resumeTimeoutMs: number; readable: Readable | undefined },
    bound: { address: string; host?: string; port?: number },
  ) {
    super();
    this.server = init.server;
    this.sink = init.sink;
    this.window = init.window;
    this.ackEvery = Math.max(1, Math.floor(init.window / 4));
    this.resumeTimeoutMs = init.resumeTimeoutMs;
    this.readable = init.readable;
    this.address = bound.address;
    this.host = bound.host;
    this.port = bound.port;
    this.done = new Promise<PipeResult>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // Observed by whoever awaits it; never an unhandled rejection.
    this.done.catch(() => {});
  }

  /** Bytes confirmed so far. */
  get bytes(): number {
    return this.confirmed;
  }

  /** Attachments accepted so far (the current epoch). */
  get attachments(): number {
    return this.epoch;
  }

  /** NACKs sent so far (a chunk that failed its CRC32C, or arrived out of order). */
  get nacks(): number {
    return this.nackCount;
  }

  /** The size the sender announced, if any. */
  get size(): number | undefined {
    return this.info?.size;
  }

  /**
   * Stop: an unfinished transfer fails with SKEIN_ERR_CLOSED (a file output keeps its part
   * and state files for a later run); the listener closes, a finished sender gets a short
   * grace period to hang up. Idempotent.
   */
  close(reason?: SkeinError): Promise<void> {
    this.closing ??= (async () => {
      if (this.phase === Phase.FINISHING) await this.lock.catch(() => {});
      // The sender is told UNAVAILABLE, not ABORTED: a receiver started again on the same
      // file output resumes the transfer, so the sender keeps trying.
      if (this.phase === Phase.IDLE || this.phase === Phase.ACTIVE) await this.fail(reason ?? createError(ErrorCode.CLOSED, 'the pipe receiver was closed'), false, createError(ErrorCode.CLOSED, 'the pipe receiver is closing', { status: Status.UNAVAILABLE }));
      this.clearTimers();
      await this.server.close(this.phase === Phase.DONE ? PipeDefaults.closeGraceMs : 0);
    })();
    return this.closing;
  }

  // ---------------------------------------------------------------- setup (pipeListen)

  /** @internal A partial transfer found on disk: held until its sender comes back. */
  hold(state: PipeState, hash: Hash): void {
    this.info = { id: Buffer.from(state.id, 'hex'), size: state.size ?? undefined, restartable: state.restartable, name: state.name };
    this.hash = hash;
    this.expected = this.written = this.confirmed = this.lastAcked = state.offset;
    this.phase = Phase.ACTIVE;
    this.armAbandon();
  }

  /** @internal The `authenticate` hook: SHA-256 of both sides, compared in constant time. */
  static authenticator(token: Buffer, onRefused: (peer: PeerInfo, reason: string) => void): (credential: Buffer | undefined, peer: PeerInfo) => boolean {
    const want = sha256(token);
    return (credential, peer) => {
      const ok = credential !== undefined && timingSafeEqual(sha256(credential), want);
      if (!ok) {
        const reason = credential === undefined ? 'no token' : 'wrong token';
        onRefused(peer, reason);
        throw createError(ErrorCode.AUTH_REFUSED, `${reason} for this pipe`);
      }
      return true;
    };
  }

  /** @internal The `skein.pipe/transfer` handler. */
  handle(requests: AsyncIterable<Buffer>, ctx: CallContext): AsyncIterable<Buffer> {
    const att = new Attachment(ctx.peer.address);
    void this.serve(att, requests);
    return att.replies;
  }

  // ---------------------------------------------------------------- one attachment

  private async serve(att: Attachment, requests: AsyncIterable<Buffer>): Promise<void> {
    const it = requests[Symbol.asyncIterator]();
    let reason: SkeinError = createError(ErrorCode.CANCELLED, 'the sender ended the call');
    try {
      const first = await it.next();
      if (first.done === true) {
        att.close();
        return;
      }
      const open = decodeToReceiver(first.value);
      if (open.type !== PipeMessageType.OPEN) throw createError(ErrorCode.CODEC, 'malformed pipe message: the first message of a call must be OPEN', { status: Status.INVALID_ARGUMENT });
      await this.open(att, open);
      for (;;) {
        const r = await it.next();
        if (r.done === true || att.ended) break;
        const m = decodeToReceiver(r.value);
        if (m.type === PipeMessageType.DATA) {
          if (m.epoch === att.epoch) await this.data(att, m);
        } else if (m.type === PipeMessageType.END) {
          if (m.epoch === att.epoch) await this.end(att, m);
        } else {
          throw createError(ErrorCode.CODEC, 'malformed pipe message: OPEN twice in one call', { status: Status.INVALID_ARGUMENT });
        }
      }
      att.close();
    } catch (err) {
      reason = asSkein(err);
      att.fail(reason);
    } finally {
      this.detach(att, reason);
    }
  }

  private async open(att: Attachment, m: OpenMessage): Promise<void> {
    if (this.closing !== undefined) throw createError(ErrorCode.CLOSED, 'the pipe receiver is closing', { status: Status.UNAVAILABLE });
    if (this.phase === Phase.FAILED) throw createError(ErrorCode.PIPE_ABANDONED, `the receiver gave this transfer up: ${this.failure!.message}`, { status: Status.ABORTED });
    const size = (m.flags & OpenFlags.SIZE_KNOWN) !== 0 ? m.size : undefined;
    const restartable = (m.flags & OpenFlags.RESTARTABLE) !== 0;
    const info = this.info;
    if (info === undefined) {
      this.info = { id: m.id, size, restartable, name: m.name };
      this.phase = Phase.ACTIVE;
      if (this.sink instanceof FileSink) {
        const sink = this.sink;
        try {
          await this.exclusive(() => sink.begin(this.stateAt(0)));
        } catch (err) {
          await this.fail(asSkein(err), false);
          throw err;
        }
        // Closed or failed while the part file was being created: release it.
        if (this.phase !== Phase.ACTIVE) {
          await sink.abandon();
          throw createError(ErrorCode.CLOSED, 'the pipe receiver is closing', { status: Status.UNAVAILABLE });
        }
      }
    } else if (!info.id.equals(m.id)) {
      if (this.phase === Phase.DONE || this.phase === Phase.FINISHING) throw createError(ErrorCode.PIPE_MISMATCH, 'this receiver has already received its transfer');
      if (info.restartable) {
        const where = this.sink instanceof FileSink ? ` (its state file is ${this.sink.statePath}: delete it and ${this.sink.part} to start over)` : '';
        throw createError(ErrorCode.PIPE_MISMATCH, `the receiver holds a partial transfer of another source${where}`);
      }
      if (this.current !== undefined) throw createError(ErrorCode.PIPE_MISMATCH, 'the receiver is busy with another transfer');
      // The held transfer's source was a stream and a sender with another id came: the
      // old sender restarted, and a stream cannot resume. Nothing can complete it now.
      await this.fail(createError(ErrorCode.PIPE_ABANDONED, 'the sender restarted; a stream source cannot resume'), true);
      throw createError(ErrorCode.PIPE_ABANDONED, 'the receiver held an unfinished transfer from a stream source whose sender is gone: it gave that transfer up (start the receiver again)', { status: Status.ABORTED });
    } else if (info.size !== size || info.restartable !== restartable) {
      throw createError(ErrorCode.PIPE_MISMATCH, `OPEN of transfer ${m.id.toString('hex')} disagrees with the transfer held (size ${info.size ?? 'unknown'}, ${info.restartable ? '' : 'not '}restartable)`);
    }

    const epoch = ++this.epoch;
    const old = this.current;
    this.current = att;
    att.epoch = epoch;
    this.clearAbandon();
    old?.fail(createError(ErrorCode.CANCELLED, 'superseded by a newer attachment of this transfer'));
    // Everything written becomes confirmed before the new attachment starts from it.
    await this.exclusive(async () => {
      await this.allWritten();
      if (this.phase === Phase.ACTIVE && this.written > this.confirmed) await this.commitNow();
    });
    if (this.current !== att) throw createError(ErrorCode.CANCELLED, 'superseded by a newer attachment of this transfer');
    if ((this.phase as PhaseValue) === Phase.FAILED) throw createError(ErrorCode.PIPE_ABANDONED, `the receiver gave this transfer up: ${this.failure!.message}`, { status: Status.ABORTED });
    this.nackedAt = -1;
    this.lastAcked = this.confirmed;
    att.send(encodeAccept(epoch, this.confirmed, this.window));
    const ev: PipeAttachInfo = { epoch, offset: this.confirmed, name: this.info!.name, peer: att.peer };
    if (this.info!.size !== undefined) ev.size = this.info!.size;
    this.emit('attach', ev);
  }

  private async data(att: Attachment, m: DataMessage): Promise<void> {
    if (this.phase !== Phase.ACTIVE || this.current !== att) return;
    const { offset, chunk } = m;
    const end = offset + chunk.length;
    if (offset !== this.expected) {
      if (end <= this.expected) return; // a duplicate: dropped silently
      if (this.nackedAt !== this.expected) {
        this.nackedAt = this.expected;
        this.nackCount++;
        att.send(encodeNack(att.epoch, this.expected, NackReason.OUT_OF_ORDER));
      }
      return;
    }
    if (crc32c(chunk) !== m.crc) {
      this.nackedAt = this.expected;
      this.nackCount++;
      att.send(encodeNack(att.epoch, this.expected, NackReason.CHECKSUM));
      return;
    }
    const size = this.info!.size;
    if (size !== undefined && end > size) throw createError(ErrorCode.CODEC, `malformed pipe message: DATA up to byte ${end}, beyond the announced size ${size}`, { status: Status.INVALID_ARGUMENT });
    const sink = this.sink;
    if (!sink.ready) {
      await sink.whenReady();
      if (this.phase !== Phase.ACTIVE || this.current !== att || offset !== this.expected) return;
    }
    this.nackedAt = -1;
    this.hash.update(chunk);
    this.expected = end;
    if (!sink.durable) {
      sink.write(chunk, offset);
      this.written = this.confirmed = end;
      this.ackSoon();
      return;
    }
    // Several writes in flight: the next chunk is checked and hashed while the kernel copies
    // the previous ones. Positional writes, so their order does not matter; `written` only
    // moves over a contiguous prefix.
    const w = { end, done: false, p: Promise.resolve() };
    w.p = (sink.write(chunk, offset) as Promise<void>).then(
      () => {
        w.done = true;
        this.advanceWritten();
      },
      (err: unknown) => this.fail(asSkein(err), false),
    );
    this.writes.push(w);
    if (this.writes.length >= MAX_WRITES_IN_FLIGHT) await this.writes[0]!.p;
  }

  private advanceWritten(): void {
    const ws = this.writes;
    let n = 0;
    while (n < ws.length && ws[n]!.done) this.written = ws[n++]!.end;
    if (n === 0) return;
    ws.splice(0, n);
    if (this.phase === Phase.ACTIVE) this.scheduleCommit();
  }

  /** Every write issued so far has completed (or failed the transfer). */
  private async allWritten(): Promise<void> {
    while (this.writes.length > 0 && this.phase !== Phase.FAILED) await Promise.all(this.writes.map((w) => w.p));
  }

  private async end(att: Attachment, m: EndMessage): Promise<void> {
    if (this.phase === Phase.DONE) {
      // The sender missed our DONE (its connection dropped) and came back: say it again.
      if (m.total === this.expected && m.sha256.equals(this.digest!)) {
        att.send(encodeDone(att.epoch, this.expected, this.digest!));
        att.close();
      } else att.fail(this.mismatch(m));
      return;
    }
    if (this.phase !== Phase.ACTIVE || this.current !== att || m.total !== this.expected) return;
    const size = this.info!.size;
    if (size !== undefined && m.total !== size) throw createError(ErrorCode.CODEC, `malformed pipe message: END at ${m.total} bytes, the announced size is ${size}`, { status: Status.INVALID_ARGUMENT });
    this.phase = Phase.FINISHING;
    this.clearTimers();
    let result: PipeResult | undefined;
    await this.exclusive(async () => {
      await this.allWritten();
      if (this.phase !== Phase.FINISHING) return; // a write failed
      const digest = this.hash.digest();
      if (!digest.equals(m.sha256)) {
        await this.fail(this.mismatch(m, digest), true);
        return;
      }
      try {
        await this.sink.finish();
      } catch (err) {
        await this.fail(asSkein(err), false);
        return;
      }
      this.digest = digest;
      this.confirmed = this.written = m.total;
      this.phase = Phase.DONE;
      result = { bytes: m.total, sha256: digest.toString('hex') };
    });
    if (result === undefined) return;
    // A newer attachment may have arrived meanwhile: it gets DONE after its own END.
    if (this.current === att) {
      att.send(encodeDone(att.epoch, m.total, this.digest!));
      att.close();
    }
    this.emitProgress();
    this.resolveDone(result);
  }

  private mismatch(m: EndMessage, digest = this.digest): SkeinError {
    return createError(ErrorCode.DIGEST_MISMATCH, `SHA-256 mismatch after ${m.total} bytes: the receiver computed ${digest?.toString('hex')}, the sender ${m.sha256.toString('hex')}; the output was discarded`);
  }

  private detach(att: Attachment, reason: SkeinError): void {
    if (this.current !== att) return;
    this.current = undefined;
    if (this.phase !== Phase.ACTIVE) return;
    this.emit('detach', { epoch: att.epoch, reason });
    this.armAbandon();
  }

  // ---------------------------------------------------------------- confirmation and ACKs

  /** Readable output: acknowledge once a quarter window is confirmed, or 50 ms after the first unacknowledged byte. */
  private ackSoon(): void {
    if (this.confirmed - this.lastAcked >= this.ackEvery) this.ack();
    else this.ackTimer ??= setTimeout(() => this.ack(), PipeDefaults.ackDelayMs);
  }

  private ack(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    const att = this.current;
    if (this.confirmed <= this.lastAcked) return;
    this.lastAcked = this.confirmed;
    if (att !== undefined && this.phase === Phase.ACTIVE) att.send(encodeAck(att.epoch, this.confirmed));
    this.emitProgress();
  }

  /** File output: commit (fdatasync + state) on the same cadence, then acknowledge. */
  private scheduleCommit(): void {
    if (this.written - this.confirmed >= this.ackEvery) this.startCommit();
    else if (this.written > this.confirmed) this.commitTimer ??= setTimeout(() => this.startCommit(), PipeDefaults.ackDelayMs);
  }

  private startCommit(): void {
    clearTimeout(this.commitTimer);
    this.commitTimer = undefined;
    if (this.committing) {
      this.commitAgain = true;
      return;
    }
    this.committing = true;
    this.exclusive(() => (this.phase === Phase.ACTIVE && this.written > this.confirmed ? this.commitNow() : Promise.resolve()))
      .catch((err: unknown) => this.fail(asSkein(err), false))
      .finally(() => {
        this.committing = false;
        if (this.commitAgain) {
          this.commitAgain = false;
          if (this.phase === Phase.ACTIVE) this.scheduleCommit();
        }
      });
  }

  /** Under the lock: fdatasync what is written, record it, acknowledge it. */
  private async commitNow(): Promise<void> {
    const offset = this.written;
    await this.sink.commit(this.stateAt(offset));
    if (offset > this.confirmed) this.confirmed = offset;
    this.ack();
  }

  private stateAt(offset: number): PipeState {
    const info = this.info!;
    return { version: 1, id: info.id.toString('hex'), size: info.size ?? null, offset, restartable: info.restartable, name: info.name };
  }

  private emitProgress(): void {
    const p: PipeProgress = { bytes: this.confirmed };
    if (this.info?.size !== undefined) p.size = this.info.size;
    this.emit('progress', p);
  }

  // ---------------------------------------------------------------- end of the transfer

  /** Fail the transfer: the live call ends with `err`, the output is kept (`discard` false) or deleted. */
  private async fail(err: SkeinError, discard: boolean, toSender?: SkeinError): Promise<void> {
    if (this.phase === Phase.DONE || this.phase === Phase.FAILED) return;
    this.phase = Phase.FAILED;
    this.failure = err;
    this.clearTimers();
    const att = this.current;
    this.current = undefined;
    att?.fail(toSender ?? (err.code === ErrorCode.DIGEST_MISMATCH || err.code === ErrorCode.PIPE_MISMATCH ? err : createError(err.code, err.message, { status: Status.ABORTED, cause: err })));
    try {
      await (discard ? this.sink.discard(err) : this.sink.abandon(err));
    } catch {
      // the transfer failed already; a cleanup error adds nothing
    }
    this.rejectDone(err);
  }

  /** @internal The consumer destroyed the Readable before the end. */
  outputClosed(err: SkeinError): void {
    void this.fail(err, false);
  }

  private armAbandon(): void {
    this.clearAbandon();
    this.abandonTimer = setTimeout(() => {
      this.abandonTimer = undefined;
      if (this.current === undefined && this.phase === Phase.ACTIVE) {
        void this.fail(createError(ErrorCode.PIPE_ABANDONED, `no sender came back for ${this.resumeTimeoutMs} ms (${this.confirmed} bytes confirmed${this.sink instanceof FileSink ? `, kept in ${this.sink.part} to resume` : ''})`), false);
      }
    }, this.resumeTimeoutMs);
  }

  private clearAbandon(): void {
    clearTimeout(this.abandonTimer);
    this.abandonTimer = undefined;
  }

  private clearTimers(): void {
    this.clearAbandon();
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    clearTimeout(this.commitTimer);
    this.commitTimer = undefined;
  }

  /** Run `fn` after every earlier exclusive section. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn);
    this.lock = run.then(
      () => {},
      () => {},
    );
    return run;
  }
}

function checkInt(name: string, v: number | undefined, min: number, max: number): void {
  if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) throw createError(ErrorCode.INVALID_OPTIONS, `pipe.listen(): ${name} must be an integer in [${min}, ${max}], got ${v}`);
}

/**
 * Listen for one transfer. Resolves once listening (and, with `out`, once a partial
 * transfer left by an earlier run is loaded and waiting for its sender).
 */
export async function pipeListen(options: PipeListenOptions = {}): Promise<PipeReceiver> {
  checkInt('window', options.window, PipeDefaults.minWindow, PipeDefaults.maxWindow);
  checkInt('resumeTimeoutMs', options.resumeTimeoutMs, 1, 0x7fffffff);
  checkInt('port', options.port, 0, 65535);
  options.signal?.throwIfAborted();
  const window = options.window ?? PipeDefaults.window;
  const token = options.token === undefined ? undefined : Buffer.isBuffer(options.token) ? options.token : Buffer.from(options.token, 'utf8');
  // The server's hooks refer to the receiver, which needs the bound server first.
  const ref: { receiver?: PipeReceiver } = {};
  const server = createServer({
    ...listenerSessionOptions(window),
    resilience: false,
    health: false,
    ...(options.tls !== undefined ? { tls: options.tls } : {}),
    ...(token !== undefined ? { authenticate: PipeReceiver.authenticator(token, (peer, reason) => ref.receiver?.emit('refused', { peer: peer.address, reason })) } : {}),
  });
  server.add(implement(PipeService, { transfer: (requests, ctx) => ref.receiver!.handle(requests, ctx) }));

  let sink: Sink;
  let readable: Readable | undefined;
  let held: HeldTransfer | undefined;
  if (options.out !== undefined) {
    if (typeof options.out !== 'string' || options.out === '') throw createError(ErrorCode.INVALID_OPTIONS, 'pipe.listen(): out must be a file path');
    const fileSink = new FileSink(options.out);
    held = await fileSink.load();
    sink = fileSink;
  } else {
    const rs = new ReadableSink(READABLE_HWM, (err) => ref.receiver?.outputClosed(err));
    readable = rs.readable;
    // Errors reach `done`; a consumer that only awaits `done` must not crash on 'error'.
    readable.on('error', () => {});
    sink = rs;
  }

  let bound;
  try {
    bound = await server.listen(options.path !== undefined ? { path: options.path } : { host: options.host ?? '127.0.0.1', port: options.port ?? 0 });
  } catch (err) {
    await server.close(0).catch(() => {});
    throw err;
  }
  const where: { address: string; host?: string; port?: number } = { address: bound.address };
  if (bound.host !== undefined) where.host = bound.host;
  if (bound.port !== undefined) where.port = bound.port;
  const receiver = (ref.receiver = new PipeReceiver({ server, sink, window, resumeTimeoutMs: options.resumeTimeoutMs ?? PipeDefaults.resumeTimeoutMs, readable }, where));
  if (held !== undefined) receiver.hold(held.state, held.hash);
  const signal = options.signal;
  if (signal !== undefined) {
    const onAbort = () => void receiver.close(isSkeinError(signal.reason) ? signal.reason : createError(ErrorCode.CANCELLED, 'the pipe receiver was aborted', { cause: signal.reason }));
    signal.addEventListener('abort', onAbort, { once: true });
    void receiver.done.then(
      () => signal.removeEventListener('abort', onAbort),
      () => signal.removeEventListener('abort', onAbort),
    );
  }
  return receiver;
}
