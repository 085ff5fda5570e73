/**
 * The sending end of the reliable pipe (docs/protocol.md §14): a Writable (or a file read
 * at any offset) whose bytes reach the receiver complete, in order and once, across any
 * number of lost connections.
 *
 *   source ──▶ [ entries: acked … produced ]  each entry one DATA message, built once:
 *              │<────── ≤ window + 1 chunk ───────>│  header + chunk, CRC32C, SHA-256
 *                   ▲ sendOffset (go back on NACK / ACCEPT)
 *
 *   attachment loop: connect ─▶ OPEN ─▶ ACCEPT(e, o, w) ─▶ DATA from o while
 *   sendOffset − acked ≤ w ─▶ ACK frees entries ─▶ END ─▶ DONE (digests equal) ─▶ success
 *   any loss of the call ─▶ backoff (100 ms ×2 ≤ 5 s, full jitter) ─▶ connect again,
 *   until retryTimeoutMs pass without an accepted attachment.
 *
 * Memory is bounded by the receiver's window: a stream source's `write()` callback is held
 * while `produced − acked` is at the window (before the first ACCEPT: one chunk), and a
 * file source reads ahead no further than the window. Each byte is copied once (stream
 * source: into its chunk; file source: read straight after its header), hashed once and
 * checksummed once; a resend sends the same buffer again with the new epoch.
 *
 * The request source of each call is an AttachmentSource: an async iterator that builds
 * the next message only when the session can send it, so a NACK or a new ACCEPT takes
 * effect at once (nothing stale is queued) and a full window simply stops the pump.
 */
import { createHash, randomBytes } from 'node:crypto';
import { read } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { basename, resolve as resolvePath } from 'node:path';
import { Writable } from 'node:stream';
import { createError, ErrorCode, isSkeinError, Status, type SkeinError } from '../errors.js';
import { connect, type Client } from '../rpc/client.js';
import type { ResponseStream } from '../rpc/types.js';
import type { TlsOptions } from '../transport/transport.js';
import { Backoff } from '../util/backoff.js';
import { crc32c } from './crc32c.js';
import { PipeDefaults } from './defaults.js';
import type { PipeProgress, PipeResult } from './receiver.js';
import { DATA_HEADER_SIZE, decodeToSender, encodeEnd, encodeOpen, ID_SIZE, MAX_CHUNK, OpenFlags, PipeMessageType, setDataEpoch, writeDataHeader, type ToSender } from './messages.js';
import { PipeService } from './service.js';

export interface PipeSendOptions {
  /** The receiver's shared secret (sent in the handshake's credential). */
  token?: string | Buffer;
  /** TLS: trust these CAs (`ca`), present a client certificate... A `tls://` target uses TLS with the system CAs without it. */
  tls?: TlsOptions;
  /** Send this file (restartable: a sender started again resumes the same transfer). Without it, write the bytes to the sender. */
  in?: string;
  /** Without `in`: the total number of bytes that will be written, announced to the receiver (SIZE_KNOWN). */
  size?: number;
  /** Informative name sent in OPEN. @default the file's base name, else '' */
  name?: string;
  /** Bytes per DATA message, 1 … 4 MiB − 64. @default 262144 (256 KiB) */
  chunkSize?: number;
  /** Give up after this long without an accepted attachment, in ms (SKEIN_ERR_CONNECT_FAILED). @default 60000 */
  retryTimeoutMs?: number;
  /** Cancels the transfer (`done` rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** A connection of the sender took the transfer over. */
export interface PipeSendAttachInfo {
  epoch: number;
  /** Where the receiver asked to resume. */
  offset: number;
  /** The receiver's window. */
  window: number;
}

interface Entry {
  offset: number;
  len: number;
  /** DATA message: header (epoch rewritten per send) and the chunk. */
  msg: Buffer;
}

const Phase = { RUNNING: 'running', DONE: 'done', FAILED: 'failed' } as const;
type PhaseValue = (typeof Phase)[keyof typeof Phase];

/** Attachments in a row the receiver ended as malformed, without progress, before giving up. */
const MAX_MALFORMED = 3;
/** Handshakes in a row the receiver closed without a word (before any ACCEPT): a TLS listener, most likely. */
const MAX_SILENT_CLOSES = 3;
/** File source: chunk reads in flight at once. */
const READ_AHEAD = 4;
/** Recycled chunk buffers kept at most. */
const POOL_MAX = 16;
/** Reading block when a restarted sender hashes the prefix the receiver already has. */
const HASH_BLOCK = 1024 * 1024;
/** Partial chunks smaller than this fraction of the chunk size are copied out (so they do not pin a whole chunk buffer). */
const PARTIAL_COPY_DIVISOR = 2;

const DONE_RESULT: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

function asSkein(err: unknown): SkeinError {
  return isSkeinError(err) ? err : createError(ErrorCode.INTERNAL, (err as Error)?.message ?? String(err), { cause: err });
}

/**
 * The request messages of one attachment, built on demand: OPEN first, then whatever the
 * sender has to send when the session asks for the next message.
 */
class AttachmentSource implements AsyncIterableIterator<Buffer> {
  /** Set by ACCEPT. */
  epoch: number | undefined;
  endSent = false;
  closed = false;
  private opened = false;
  private waiter: ((r: IteratorResult<Buffer>) => void) | undefined;

  constructor(
    private readonly sender: PipeSender,
    private readonly openMessage: Buffer,
  ) {}

  next(): Promise<IteratorResult<Buffer>> {
    if (this.closed) return Promise.resolve(DONE_RESULT);
    if (!this.opened) {
      this.opened = true;
      return Promise.resolve({ done: false, value: this.openMessage });
    }
    const m = this.sender.nextMessage(this);
    if (m !== undefined) return Promise.resolve({ done: false, value: m });
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** Something changed (data, room, NACK, ACCEPT): hand the waiting pump its next message. */
  wake(): void {
    const w = this.waiter;
    if (w === undefined) return;
    if (this.closed) {
      this.waiter = undefined;
      w(DONE_RESULT);
      return;
    }
    const m = this.sender.nextMessage(this);
    if (m === undefined) return;
    this.waiter = undefined;
    w({ done: false, value: m });
  }

  /** No more messages: the pump finishes and the call is half-closed. */
  close(): void {
    this.closed = true;
    this.wake();
  }

  return(): Promise<IteratorResult<Buffer>> {
    this.close();
    return Promise.resolve(DONE_RESULT);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Buffer> {
    return this;
  }
}

/**
 * A pipe sender. Without `in` it is a Writable: write the bytes (backpressure: `write()`
 * returns false while the receiver's window is full), then `end()`; `'finish'` fires only
 * once the receiver confirmed every byte and the digest. With `in` it reads the file and
 * takes no writes.
 *
 * Events: 'progress' ({ bytes, size? }: bytes acknowledged), 'attach' ({ epoch, offset,
 * window }), 'detach' (SkeinError: an attachment ended, the sender reconnects), and the
 * Writable events. A failure rejects `done` and destroys the stream with the error (a
 * no-op 'error' listener is installed, so awaiting `done` alone is enough).
 */
export class PipeSender extends Writable {
  /** Resolves when the receiver confirmed every byte and both SHA-256 agree. */
  readonly done: Promise<PipeResult>;
  /** The target this sender dials. */
  readonly target: string;

  private readonly options: PipeSendOptions;
  private readonly chunkSize: number;
  private readonly retryTimeoutMs: number;
  private readonly file: string | undefined;
  private fh: FileHandle | undefined;
  /** Stream source: random; file source: from the file's identity, once it is open. */
  private id: Buffer | undefined;
  private restartable = false;
  private declaredSize: number | undefined;
  private name: string;
  private phase: PhaseValue = Phase.RUNNING;
  private error: SkeinError | undefined;

  private entries: Array<Entry | undefined> = [];
  private head = 0;
  private acked = 0;
  private produced = 0;
  private sendOffset = 0;
  private hashedOffset = 0;
  private readonly hash = createHash('sha256');
  private total: number | undefined;
  private digest: Buffer | undefined;
  private window: number | undefined;

  /** Stream source: the chunk being filled (header space first), and how full it is. */
  private cur: Buffer | undefined;
  private curLen = 0;
  private pendingWrite: { data: Buffer; pos: number; cb: (err?: Error | null) => void } | undefined;
  private finalCb: ((err?: Error | null) => void) | undefined;
  private filling = false;
  /** Full-chunk message buffers whose bytes were acknowledged, for reuse. */
  private pool: Buffer[] = [];
  /**
   * Not over the in-process `memory:` transport, which hands the receiver the sender's own
   * buffers: there the receiver may still hold an acknowledged chunk (a Readable not read yet).
   */
  private readonly pooling: boolean;

  private att: AttachmentSource | undefined;
  private call: ResponseStream<Buffer> | undefined;
  private readonly backoff = new Backoff({ initialMs: PipeDefaults.backoffInitialMs, multiplier: PipeDefaults.backoffMultiplier, maxMs: PipeDefaults.backoffMaxMs, jitter: 0 });
  private everAccepted = false;
  private acceptCount = 0;
  private sleepTimer: NodeJS.Timeout | undefined;
  private wakeSleep: (() => void) | undefined;
  private resolveDone!: (r: PipeResult) => void;
  private rejectDone!: (e: SkeinError) => void;

  /** @internal Use `pipeSend()`. */
  constructor(target: string, options: PipeSendOptions = {}) {
    const chunkSize = options.chunkSize ?? PipeDefaults.chunkSize;
    super({ highWaterMark: chunkSize, decodeStrings: true });
    if (typeof target !== 'string' || target === '') throw createError(ErrorCode.INVALID_OPTIONS, 'pipe.send(): a target "host:port" is required');
    if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > MAX_CHUNK) throw createError(ErrorCode.INVALID_OPTIONS, `pipe.send(): chunkSize must be an integer in [1, ${MAX_CHUNK}], got ${chunkSize}`);
    const retry = options.retryTimeoutMs ?? PipeDefaults.retryTimeoutMs;
    if (!Number.isInteger(retry) || retry < 1 || retry > 0x7fffffff) throw createError(ErrorCode.INVALID_OPTIONS, `pipe.send(): retryTimeoutMs must be a positive integer, got ${retry}`);
    if (options.size !== undefined && (!Number.isSafeInteger(options.size) || options.size < 0)) throw createError(ErrorCode.INVALID_OPTIONS, `pipe.send(): size must be a non-negative integer, got ${options.size}`);
    if (options.in !== undefined && (typeof options.in !== 'string' || options.in === '')) throw createError(ErrorCode.INVALID_OPTIONS, 'pipe.send(): in must be a file path');
    if (options.in !== undefined && options.size !== undefined) throw createError(ErrorCode.INVALID_OPTIONS, 'pipe.send(): size is for stream sources; a file announces its own');
    this.target = target;
    this.pooling = !target.startsWith('memory:');
    this.options = options;
    this.chunkSize = chunkSize;
    this.retryTimeoutMs = retry;
    this.file = options.in;
    if (this.file === undefined) this.id = randomBytes(ID_SIZE);
    this.declaredSize = options.size;
    this.name = options.name ?? (options.in !== undefined ? basename(options.in) : '');
    this.done = new Promise<PipeResult>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => {});
    this.on('error', () => {});
    const signal = options.signal;
    if (signal !== undefined) {
      const onAbort = () => this.fail(isSkeinError(signal.reason) ? signal.reason : createError(ErrorCode.CANCELLED, 'the pipe sender was aborted', { cause: signal.reason }));
      if (signal.aborted) queueMicrotask(onAbort);
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        const off = () => signal.removeEventListener('abort', onAbort);
        this.done.then(off, off);
      }
    }
    // A file source takes no writes.
    if (this.file !== undefined) this.end();
    void this.run();
  }

  /** Bytes held for (re)sending: produced (or read ahead) and not yet acknowledged. Bounded by the window plus one chunk. */
  get buffered(): number {
    return this.produced + this.curLen - this.acked;
  }

  /** Bytes sent on the current attachment and not yet acknowledged. */
  get inFlight(): number {
    return this.sendOffset - this.acked;
  }

  /** Bytes the receiver confirmed. */
  get acknowledged(): number {
    return this.acked;
  }

  /** Attachments the receiver accepted so far. */
  get attachments(): number {
    return this.acceptCount;
  }

  /** The transfer id, hex (for a file source: once the file is open, undefined before). */
  get transferId(): string | undefined {
    return this.id?.toString('hex');
  }

  // ---------------------------------------------------------------- Writable (stream source)

  override _write(data: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.file !== undefined) return cb(createError(ErrorCode.INVALID_OPTIONS, 'this pipe sender reads a file; it takes no writes'));
    if (this.phase !== Phase.RUNNING) return cb(this.error ?? createError(ErrorCode.CLOSED, 'the transfer is over'));
    this.pendingWrite = { data, pos: 0, cb };
    this.absorb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.phase === Phase.DONE) return cb();
    if (this.phase === Phase.FAILED) return cb(this.error);
    this.finalCb = cb;
    if (this.file !== undefined) return;
    if (this.curLen > 0) this.seal();
    if (this.declaredSize !== undefined && this.produced !== this.declaredSize) {
      this.fail(createError(ErrorCode.INVALID_OPTIONS, `the stream ended after ${this.produced} bytes, but size announced ${this.declaredSize}`));
      return;
    }
    this.total = this.produced;
    this.digest = this.hash.digest();
    this.att?.wake();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.phase === Phase.RUNNING) {
      // Destroyed from outside (by its owner, or by a pipeline whose source failed).
      this.fail(isSkeinError(err) ? err : createError(ErrorCode.CANCELLED, `the pipe sender was destroyed before the end${err ? `: ${err.message}` : ''}`, { cause: err ?? undefined }));
    }
    cb(err);
  }

  /** Copy the pending write into chunks while the window allows; its callback runs once it is all in. */
  private absorb(): void {
    const p = this.pendingWrite;
    if (p === undefined) return;
    const limit = this.window ?? this.chunkSize;
    const size = this.chunkSize;
    while (p.pos < p.data.length && this.produced + this.curLen - this.acked < limit) {
      this.cur ??= this.takeBuffer(size);
      const n = Math.min(size - this.curLen, p.data.length - p.pos);
      p.data.copy(this.cur, DATA_HEADER_SIZE + this.curLen, p.pos, p.pos + n);
      this.curLen += n;
      p.pos += n;
      if (this.curLen === size) this.seal();
    }
    if (p.pos === p.data.length) {
      this.pendingWrite = undefined;
      p.cb();
    }
    this.att?.wake();
  }

  /** Turn the chunk being filled into an entry: checksum, hash, header. */
  private seal(): void {
    const len = this.curLen;
    let msg = this.cur!;
    if (len < this.chunkSize) {
      if (len < this.chunkSize / PARTIAL_COPY_DIVISOR) {
        const small = Buffer.allocUnsafe(DATA_HEADER_SIZE + len);
        msg.copy(small, DATA_HEADER_SIZE, DATA_HEADER_SIZE, DATA_HEADER_SIZE + len);
        msg = small;
        // `cur` stays allocated and is filled again from the start.
      } else {
        msg = msg.subarray(0, DATA_HEADER_SIZE + len);
        this.cur = undefined;
      }
    } else this.cur = undefined;
    const chunk = msg.subarray(DATA_HEADER_SIZE);
    this.hash.update(chunk);
    writeDataHeader(msg, 0, this.produced, crc32c(chunk));
    this.entries.push({ offset: this.produced, len, msg });
    this.produced += len;
    this.hashedOffset = this.produced;
    this.curLen = 0;
  }

  // ---------------------------------------------------------------- file source

  private async openFile(path: string): Promise<void> {
    const abs = resolvePath(path);
    try {
      this.fh = await open(abs, 'r');
      // Failed (destroyed, aborted) while the file was opening: nothing will close it later.
      if (this.phase !== Phase.RUNNING) throw this.error ?? new Error('the transfer is over');
      const st = await this.fh.stat({ bigint: true });
      if (!st.isFile()) throw new Error('not a regular file');
      if (st.size > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error('too large');
      this.declaredSize = Number(st.size);
      // §14.5: the id is derived from the file's identity, so a restarted sender presents it again.
      this.id = createHash('sha256').update(`${abs}\n${st.size}\n${st.mtimeMs}\n${st.ino}`).digest().subarray(0, ID_SIZE);
      this.restartable = true;
    } catch (err) {
      await this.fh?.close().catch(() => {});
      this.fh = undefined;
      throw createError(ErrorCode.INVALID_OPTIONS, `cannot send ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Read ahead up to the window, a few reads in flight (the next chunks are read while this
   * one is checksummed and hashed); hash any prefix the receiver already has first (a
   * restarted sender).
   */
  private async fill(): Promise<void> {
    const fh = this.fh;
    if (this.filling || fh === undefined || this.phase !== Phase.RUNNING || this.window === undefined) return;
    this.filling = true;
    const size = this.declaredSize!;
    const reads: Array<{ off: number; len: number; msg: Buffer; p: Promise<void> }> = [];
    let next = this.produced;
    try {
      while (this.phase === Phase.RUNNING) {
        if (reads.length === 0) {
          next = this.produced;
          if (this.hashedOffset < this.produced) await this.hashPrefix(fh, this.produced);
        }
        while (reads.length < READ_AHEAD && next < size && next - this.acked < this.window) {
          const len = Math.min(this.chunkSize, size - next);
          const msg = this.takeBuffer(len);
          const p = readFully(fh, msg, DATA_HEADER_SIZE, len, next, this.file!);
          p.catch(() => {}); // awaited below unless an ACCEPT made it moot
          reads.push({ off: next, len, msg, p });
          next += len;
        }
        const r = reads.shift();
        if (r === undefined) break;
        await r.p;
        // An ACCEPT moved the read position while these reads ran: read again from there.
        if (this.produced !== r.off || this.phase !== Phase.RUNNING) {
          reads.length = 0;
          continue;
        }
        const { off, len, msg } = r;
        const chunk = msg.subarray(DATA_HEADER_SIZE);
        writeDataHeader(msg, 0, off, crc32c(chunk));
        if (off <= this.hashedOffset && off + len > this.hashedOffset) {
          this.hash.update(chunk.subarray(this.hashedOffset - off));
          this.hashedOffset = off + len;
        }
        this.entries.push({ offset: off, len, msg });
        this.produced = off + len;
        this.att?.wake();
      }
      if (this.phase === Phase.RUNNING && this.produced >= size && this.digest === undefined) {
        if (this.hashedOffset < size) await this.hashPrefix(fh, size);
        this.total = size;
        this.digest = this.hash.digest();
        this.att?.wake();
      }
    } catch (err) {
      this.fail(asSkein(err));
    } finally {
      this.filling = false;
    }
  }

  /** A message buffer for a chunk of `len` bytes: a recycled one for full chunks when there is one. */
  private takeBuffer(len: number): Buffer {
    if (len === this.chunkSize) {
      const b = this.pool.pop();
      if (b !== undefined) return b;
    }
    return Buffer.allocUnsafe(DATA_HEADER_SIZE + len);
  }

  /** Hash the file from `hashedOffset` up to `to` (bytes the receiver confirmed to an earlier run). */
  private async hashPrefix(fh: FileHandle, to: number): Promise<void> {
    const buf = Buffer.allocUnsafe(Math.min(HASH_BLOCK, to - this.hashedOffset));
    while (this.hashedOffset < to) {
      const n = Math.min(buf.length, to - this.hashedOffset);
      await readFully(fh, buf, 0, n, this.hashedOffset, this.file!);
      this.hash.update(buf.subarray(0, n));
      this.hashedOffset += n;
    }
  }

  // ---------------------------------------------------------------- what to send next

  /** @internal The next message of `att`, or undefined when there is nothing to send now. */
  nextMessage(att: AttachmentSource): Buffer | undefined {
    if (this.phase !== Phase.RUNNING || att.epoch === undefined || att !== this.att) return undefined;
    const room = this.acked + this.window! - this.sendOffset;
    if (this.sendOffset === this.produced && this.curLen > 0 && room > 0 && this.pendingWrite === undefined) {
      // The network waits for the producer: send what there is rather than wait for a full chunk.
      this.seal();
    }
    if (this.sendOffset < this.produced) {
      if (room <= 0) return undefined;
      const e = this.entryAt(this.sendOffset);
      const remaining = e.offset + e.len - this.sendOffset;
      if (remaining <= room) {
        if (e.offset === this.sendOffset) {
          setDataEpoch(e.msg, att.epoch);
          this.sendOffset += e.len;
          return e.msg;
        }
        return this.slice(att.epoch, e, remaining);
      }
      // A chunk larger than the whole window: send a window's worth once nothing is in flight.
      if (this.sendOffset === this.acked) return this.slice(att.epoch, e, room);
      return undefined;
    }
    if (this.total !== undefined && this.sendOffset === this.total && this.digest !== undefined && !att.endSent) {
      att.endSent = true;
      return encodeEnd(att.epoch, this.total, this.digest);
    }
    return undefined;
  }

  /** A DATA message for `len` bytes of `e` from `sendOffset` (a resend that does not start on the entry's boundary). */
  private slice(epoch: number, e: Entry, len: number): Buffer {
    const from = DATA_HEADER_SIZE + (this.sendOffset - e.offset);
    const msg = Buffer.allocUnsafe(DATA_HEADER_SIZE + len);
    e.msg.copy(msg, DATA_HEADER_SIZE, from, from + len);
    writeDataHeader(msg, epoch, this.sendOffset, crc32c(msg.subarray(DATA_HEADER_SIZE)));
    this.sendOffset += len;
    return msg;
  }

  private entryAt(offset: number): Entry {
    for (let i = this.head; i < this.entries.length; i++) {
      const e = this.entries[i]!;
      if (offset < e.offset + e.len) return e;
    }
    throw createError(ErrorCode.INTERNAL, `pipe sender: no data held at offset ${offset}`);
  }

  /** Release entries the receiver confirmed. */
  private dropAcked(): void {
    const es = this.entries;
    const full = DATA_HEADER_SIZE + this.chunkSize;
    while (this.head < es.length && es[this.head]!.offset + es[this.head]!.len <= this.acked) {
      // Acknowledged means received: no socket holds it any more, so a full chunk's buffer
      // can carry the next chunk (fewer large allocations, less GC).
      const msg = es[this.head]!.msg;
      if (this.pooling && msg.length === full && msg.byteOffset === 0 && this.pool.length < POOL_MAX) this.pool.push(msg);
      es[this.head++] = undefined;
    }
    if (this.head > 64 && this.head * 2 > es.length) {
      this.entries = es.slice(this.head);
      this.head = 0;
    }
  }

  // ---------------------------------------------------------------- receiver messages

  private onMessage(att: AttachmentSource, raw: Buffer): void {
    const m: ToSender = decodeToSender(raw);
    if (m.type === PipeMessageType.ACCEPT) return this.onAccept(att, m.epoch, m.offset, m.window);
    if (att.epoch === undefined) throw createError(ErrorCode.CODEC, 'malformed pipe reply: a message before ACCEPT', { status: Status.INVALID_ARGUMENT });
    if (m.epoch !== att.epoch) return; // stale
    switch (m.type) {
      case PipeMessageType.ACK:
        return this.onAck(m.offset);
      case PipeMessageType.NACK:
        if (m.offset >= this.acked && m.offset <= this.sendOffset) {
          this.sendOffset = m.offset;
          att.endSent = false;
          att.wake();
        }
        return;
      case PipeMessageType.DONE:
        return this.onDone(m.total, m.sha256);
    }
  }

  private onAccept(att: AttachmentSource, epoch: number, offset: number, window: number): void {
    if (att.epoch !== undefined) throw createError(ErrorCode.CODEC, 'malformed pipe reply: ACCEPT twice', { status: Status.INVALID_ARGUMENT });
    if (this.file === undefined) {
      if (offset < this.acked) throw this.fatal(createError(ErrorCode.PIPE_MISMATCH, `the receiver asks to resume at byte ${offset}, but bytes up to ${this.acked} were confirmed before and are no longer held (did the receiver restart without its output file?)`));
      if (offset > this.produced) throw this.fatal(createError(ErrorCode.PIPE_MISMATCH, `the receiver claims ${offset} bytes of a transfer of which ${this.produced} were sent`));
    } else {
      if (offset > this.declaredSize!) throw this.fatal(createError(ErrorCode.PIPE_MISMATCH, `the receiver claims ${offset} bytes of a ${this.declaredSize}-byte file`));
      if (offset < this.acked || offset > this.produced || (this.head < this.entries.length && offset < this.entries[this.head]!.offset)) {
        // Outside what is held: read the file again from there.
        this.entries = [];
        this.head = 0;
        this.produced = offset;
      }
    }
    this.acked = offset;
    this.dropAcked();
    this.sendOffset = offset;
    this.window = window;
    att.epoch = epoch;
    this.everAccepted = true;
    this.acceptCount++;
    this.backoff.reset();
    this.emit('attach', { epoch, offset, window } satisfies PipeSendAttachInfo);
    this.emitProgress();
    this.absorb();
    void this.fill();
    att.wake();
  }

  private onAck(offset: number): void {
    if (offset <= this.acked) return;
    if (offset > this.produced) throw createError(ErrorCode.CODEC, `malformed pipe reply: ACK of ${offset} bytes, ${this.produced} were sent`, { status: Status.INVALID_ARGUMENT });
    this.acked = offset;
    if (this.sendOffset < offset) this.sendOffset = offset;
    this.dropAcked();
    this.emitProgress();
    this.absorb();
    void this.fill();
    this.att?.wake();
  }

  private onDone(total: number, sha256: Buffer): void {
    if (this.total === undefined || this.digest === undefined || total !== this.total) throw createError(ErrorCode.CODEC, `malformed pipe reply: DONE at ${total} bytes before the end was sent`, { status: Status.INVALID_ARGUMENT });
    if (!sha256.equals(this.digest)) throw this.fatal(createError(ErrorCode.DIGEST_MISMATCH, `SHA-256 mismatch: the receiver computed ${sha256.toString('hex')}, the sender ${this.digest.toString('hex')}`));
    this.acked = total;
    this.entries = [];
    this.head = 0;
    this.pool = [];
    this.emitProgress();
    this.phase = Phase.DONE;
    // The receiver ends the call right after DONE; should that END not come, stop waiting.
    const call = this.call;
    setTimeout(() => call?.cancel('finished'), PipeDefaults.closeGraceMs).unref();
    this.att?.close();
    void this.fh?.close().catch(() => {});
    this.fh = undefined;
    this.resolveDone({ bytes: total, sha256: this.digest.toString('hex') });
    const cb = this.finalCb;
    this.finalCb = undefined;
    cb?.();
  }

  private emitProgress(): void {
    const p: PipeProgress = { bytes: this.acked };
    const size = this.declaredSize;
    if (size !== undefined) p.size = size;
    this.emit('progress', p);
  }

  // ---------------------------------------------------------------- attachments

  private async run(): Promise<void> {
    try {
      if (this.file !== undefined) await this.openFile(this.file);
    } catch (err) {
      this.fail(asSkein(err));
      return;
    }
    let since = Date.now();
    let malformed = 0;
    let silentCloses = 0;
    let progressAt = -1;
    while (this.phase === Phase.RUNNING) {
      const { accepted, error } = await this.attach(since + this.retryTimeoutMs);
      if (this.phase !== Phase.RUNNING) return;
      if (accepted) since = Date.now();
      const err = error ?? createError(ErrorCode.CONNECTION_LOST, 'the receiver ended the call before DONE');
      this.emit('detach', err);
      const fatal = this.classify(err);
      if (fatal !== undefined) return this.fail(fatal);
      if (err.code === ErrorCode.REMOTE && err.status === Status.INVALID_ARGUMENT) {
        malformed = this.acked === progressAt ? malformed + 1 : 1;
        progressAt = this.acked;
        if (malformed >= MAX_MALFORMED) return this.fail(createError(ErrorCode.PIPE_MISMATCH, `the receiver refused ${MAX_MALFORMED} attachments in a row as malformed: ${err.message}`, { status: Status.INVALID_ARGUMENT, cause: err }));
      }
      if (!this.everAccepted && err.code === ErrorCode.NOT_READY && isSkeinError(err.cause) && err.cause.code === ErrorCode.CONNECTION_LOST) {
        if (++silentCloses >= MAX_SILENT_CLOSES) {
          const tls = this.options.tls !== undefined || this.target.startsWith('tls://');
          return this.fail(
            createError(ErrorCode.HANDSHAKE, `${this.target} closed ${MAX_SILENT_CLOSES} connections in a row during the handshake without answering: ${tls ? 'it is not a skein pipe receiver' : 'it probably expects TLS (give --tls-ca, or the tls option), or it is not a skein pipe receiver'}`, { cause: err }),
          );
        }
      } else silentCloses = 0;
      const left = since + this.retryTimeoutMs - Date.now();
      if (left <= 0) return this.fail(createError(ErrorCode.CONNECT_FAILED, `no receiver accepted the transfer for ${this.retryTimeoutMs} ms (last error: ${err.message})`, { cause: err }));
      // Full jitter: anywhere between 0 and the exponential step.
      await this.sleep(Math.min(left, Math.random() * this.backoff.next()));
    }
  }

  /** One attachment: connect, OPEN, carry the transfer until the call ends. */
  private async attach(deadline: number): Promise<{ accepted: boolean; error: SkeinError | undefined }> {
    const credential = this.options.token;
    const tls = this.options.tls ?? (this.target.startsWith('tls://') ? {} : undefined);
    let client: Client<typeof PipeService.methods> | undefined;
    let att: AttachmentSource | undefined;
    let timer: NodeJS.Timeout | undefined;
    let error: SkeinError | undefined;
    try {
      client = connect(PipeService, {
        target: this.target,
        ...(tls !== undefined ? { tls } : {}),
        session: { heartbeatMs: PipeDefaults.heartbeatMs, keepaliveMisses: PipeDefaults.keepaliveMisses, ...(credential !== undefined ? { credential } : {}) },
        connectTimeoutMs: Math.max(1, Math.min(10_000, deadline - Date.now())),
        resilience: false,
      });
      let flags = this.restartable ? OpenFlags.RESTARTABLE : 0;
      if (this.declaredSize !== undefined) flags |= OpenFlags.SIZE_KNOWN;
      att = this.att = new AttachmentSource(this, encodeOpen({ flags, id: this.id!, size: this.declaredSize ?? 0, name: this.name }));
      const call = (this.call = client.transfer(att, { waitForReady: false }));
      // Bounded: without an ACCEPT by the deadline, give the attempt up.
      const a = att;
      timer = setTimeout(() => {
        if (a.epoch === undefined) call.cancel('no ACCEPT before the retry timeout');
      }, Math.max(0, deadline - Date.now()));
      for await (const raw of call) {
        try {
          this.onMessage(att, raw);
        } catch (err) {
          const e = asSkein(err);
          call.cancel(e.message);
          throw e;
        }
        if (this.phase === Phase.FAILED) break;
      }
    } catch (err) {
      error = asSkein(err);
    } finally {
      clearTimeout(timer);
      att?.close();
      if (this.att === att) this.att = undefined;
      this.call = undefined;
      // After DONE the receiver ends the call at once; a short grace lets our half-close go out.
      if (client !== undefined) void client.close(this.phase === Phase.DONE ? 100 : 0).catch(() => {});
    }
    return { accepted: att?.epoch !== undefined, error };
  }

  /**
   * Undefined for a failure worth another attachment; the error to fail with for one that
   * no retry can fix.
   */
  private classify(err: SkeinError): SkeinError | undefined {
    if (err.code === ErrorCode.AUTH_REFUSED) return createError(ErrorCode.AUTH_REFUSED, `the receiver refused the token: ${err.message}`, { status: Status.UNAUTHENTICATED, cause: err });
    if (err.code === ErrorCode.INVALID_OPTIONS || err.code === ErrorCode.PIPE_MISMATCH || err.code === ErrorCode.DIGEST_MISMATCH) return err;
    if (err.code === ErrorCode.CONNECT_FAILED && /certificate|self[- ]signed|SSL|TLS|wrong version number|altnames/i.test(`${err.message} ${(err.cause as Error | undefined)?.message ?? ''}`)) {
      return createError(ErrorCode.CONNECT_FAILED, `TLS with ${this.target} failed: ${err.message}`, { cause: err });
    }
    if (err.code === ErrorCode.NOT_READY && isSkeinError(err.cause)) {
      const inner = this.classify(err.cause);
      if (inner !== undefined) return inner;
    }
    if (err.code !== ErrorCode.REMOTE) return undefined;
    switch (err.status) {
      case Status.DATA_LOSS:
        return createError(ErrorCode.DIGEST_MISMATCH, err.message, { cause: err });
      case Status.FAILED_PRECONDITION:
        return createError(ErrorCode.PIPE_MISMATCH, err.message, { cause: err });
      case Status.ABORTED:
        return createError(ErrorCode.PIPE_ABANDONED, err.message, { cause: err });
      case Status.UNAUTHENTICATED:
        return createError(ErrorCode.AUTH_REFUSED, `the receiver refused the token: ${err.message}`, { status: Status.UNAUTHENTICATED, cause: err });
      case Status.UNIMPLEMENTED:
        return createError(ErrorCode.PIPE_MISMATCH, `${this.target} is not a skein pipe receiver: ${err.message}`, { status: Status.UNIMPLEMENTED, cause: err });
      default:
        return undefined;
    }
  }

  /** Mark an error as fatal for the transfer (thrown out of a message handler). */
  private fatal(err: SkeinError): SkeinError {
    this.fail(err);
    return err;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wakeSleep = resolve;
      this.sleepTimer = setTimeout(resolve, ms);
    });
  }

  /** Fail the transfer: stop every attachment, reject `done`, destroy the stream. */
  private fail(err: SkeinError): void {
    if (this.phase !== Phase.RUNNING) return;
    this.phase = Phase.FAILED;
    this.error = err;
    clearTimeout(this.sleepTimer);
    this.wakeSleep?.();
    this.att?.close();
    this.call?.cancel(err.message);
    this.entries = [];
    this.head = 0;
    this.pool = [];
    this.cur = undefined;
    void this.fh?.close().catch(() => {});
    this.fh = undefined;
    this.rejectDone(err);
    const p = this.pendingWrite;
    this.pendingWrite = undefined;
    p?.cb(err);
    const cb = this.finalCb;
    this.finalCb = undefined;
    if (cb !== undefined) cb(err);
    else if (!this.destroyed) this.destroy(err);
  }
}

/**
 * Read exactly `len` bytes at `position` into `buf` at `at`. The callback API on the
 * handle's fd: per call it costs the event loop noticeably less than FileHandle.read.
 */
async function readFully(fh: FileHandle, buf: Buffer, at: number, len: number, position: number, path: string): Promise<void> {
  for (let done = 0; done < len; ) {
    const n = await new Promise<number>((resolve, reject) => read(fh.fd, buf, at + done, len - done, position + done, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead))));
    if (n === 0) throw createError(ErrorCode.PIPE_MISMATCH, `${path} changed while it was being sent: it ended at ${position + done} bytes`);
    done += n;
  }
}

/** Send bytes to a pipe receiver at `target` ('host:port', 'tls://host:port', 'unix:/path'). */
export function pipeSend(target: string, options: PipeSendOptions = {}): PipeSender {
  return new PipeSender(target, options);
}
