/**
 * Session: one long-lived connection carrying many streams (docs/protocol.md §3–§7).
 *
 *   socket ─data─▶ FrameDecoder ─frame─▶ Session.onFrame ─▶ Stream callbacks ─▶ rpc/
 *   rpc/ ─▶ Stream.send/end/reset ─▶ Session ─▶ FrameWriter (coalesced per tick) ─▶ socket
 *
 * Lifecycle:  HANDSHAKING ──HELLO/HELLO_ACK──▶ READY ──GOAWAY / drain()──▶ DRAINING ──▶ CLOSED
 *                   └──────────── error, timeout, refused, socket closed ─────────────▶ CLOSED
 *
 * Contracts:
 * - Any protocol violation by the peer: GOAWAY with a reason is sent if the socket is still
 *   writable, the socket is closed, and every open stream fails at once with UNAVAILABLE.
 *   Nothing the peer sends can crash the process or make this side allocate more than
 *   max frame size + header per frame.
 * - Flow control (§6): a DATA frame may be sent while both the stream's and the
 *   connection's send credit are > 0; credit then drops by the payload length and may go
 *   negative by less than one frame. Receive credit is returned with WINDOW_UPDATE once
 *   the application has consumed half a window, so a slow reader stalls its sender.
 * - Keepalive (§7): every `heartbeatMs` a tick checks whether any byte arrived since the
 *   last tick; if not, a PING is sent; after `keepaliveMisses` silent ticks the session is
 *   closed with SKEIN_ERR_KEEPALIVE_TIMEOUT.
 * - `closed` resolves (never rejects) with the reason once the session is closed.
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { createError, ErrorCode, isSkeinError, ProtocolError, Status, type SkeinError, type ErrorCodeValue } from '../errors.js';
import { FrameDecoder } from '../wire/decoder.js';
import { FrameType, Flags, ResetFlags, GoawayReason, GoawayReasonName, Limits, PREFACE, type GoawayReasonValue } from '../wire/frame.js';
import {
  decodeCall,
  decodeEnd,
  decodeGoaway,
  decodeHello,
  decodeHelloAck,
  decodeReset,
  decodeWindowUpdate,
  encodeEnd,
  encodeGoaway,
  encodeJson,
  encodeReset,
  encodeWindowUpdate,
  END_OK,
  callSize,
  type CallHead,
  type Hello,
  type HelloAck,
  type Metadata,
} from '../wire/payloads.js';
import { getCompressor } from '../codec/index.js';
import type { Compressor } from '../codec/codec.js';
import type { Connection, PeerInfo } from '../transport/transport.js';
import { FrameWriter } from './writer.js';
import { Stream, type StreamHost } from './stream.js';
import { resolveSessionOptions, type ResolvedSessionOptions, type SessionOptions } from './options.js';
import { armTimer, type CancelTimer } from './timer.js';

export const SessionState = {
  HANDSHAKING: 'HANDSHAKING',
  READY: 'READY',
  DRAINING: 'DRAINING',
  CLOSED: 'CLOSED',
} as const;
export type SessionStateValue = (typeof SessionState)[keyof typeof SessionState];

/** What both sides agreed in the handshake. */
export interface Negotiated {
  /** The codecs the peer supports. */
  peerCodecs: string[];
  compression: string | null;
  /** Largest payload this side may send. */
  sendMaxFrameSize: number;
  heartbeatMs: number;
  /** Streams this side may have open towards the peer (client) / accepts (server). */
  maxConcurrentStreams: number;
  peerAgent?: string;
}

/** Per-stream parameters a client gives when opening a call. */
export interface OpenStreamHead {
  codec: number;
  /** Relative timeout for the CALL frame (0 = none); ignored when `deadline` is given. */
  timeoutMs: number;
  /**
   * Absolute deadline (Date.now() ms). The CALL frame's timeout is computed from it when the
   * frame is written, so a call that waited for a stream slot does not hand the server the
   * time it spent queued.
   */
  deadline?: number;
  /** Pre-encoded service + method (see encodeCallPath). */
  path: Buffer;
  metadata?: Metadata;
}

const AGENT = 'skein-node/0.1';
const SUPPORTED_CODECS = ['msgpack', 'json', 'protobuf'];
/** PONGs this side queues while its socket is backed up before it treats the peer as flooding. */
const MAX_PONGS_BLOCKED = 1000;
/** How many recently half-closed peer stream ids are remembered to catch DATA after END_STREAM. */
const HALF_CLOSED_MEMORY = 1024;

/**
 * GOAWAY reason ⇄ error code, one table for both directions: the code a received reason
 * becomes, and the reason sent when this side closes with a code (unlisted codes: INTERNAL_ERROR).
 */
const REASON_CODES: ReadonlyArray<readonly [GoawayReasonValue, ErrorCodeValue]> = [
  [GoawayReason.NO_ERROR, ErrorCode.GOAWAY],
  [GoawayReason.PROTOCOL_ERROR, ErrorCode.PROTOCOL],
  [GoawayReason.FLOW_CONTROL_ERROR, ErrorCode.FLOW_CONTROL],
  [GoawayReason.FRAME_SIZE_ERROR, ErrorCode.FRAME_TOO_LARGE],
  [GoawayReason.VERSION_UNSUPPORTED, ErrorCode.VERSION],
  [GoawayReason.UNAUTHENTICATED, ErrorCode.AUTH_REFUSED],
  [GoawayReason.HANDSHAKE_FAILED, ErrorCode.HANDSHAKE],
  [GoawayReason.KEEPALIVE_TIMEOUT, ErrorCode.KEEPALIVE_TIMEOUT],
  [GoawayReason.IDLE_TIMEOUT, ErrorCode.IDLE_TIMEOUT],
  [GoawayReason.INTERNAL_ERROR, ErrorCode.CONNECTION_LOST],
];
const reasonToCode = new Map<number, ErrorCodeValue>(REASON_CODES);
const codeToReasonMap = new Map<string, GoawayReasonValue>([...REASON_CODES.map(([r, c]) => [c, r] as const), [ErrorCode.CLOSED, GoawayReason.NO_ERROR]]);

function codeToReason(code: string): GoawayReasonValue {
  return codeToReasonMap.get(code) ?? GoawayReason.INTERNAL_ERROR;
}

export interface SessionEvents {
  /** The session reached READY. */
  ready: [];
  /** The peer sent GOAWAY. */
  goaway: [info: { lastStreamId: number; reason: string; message: string }];
  /** The session closed; `reason` is undefined for a clean close by this side. */
  close: [reason: SkeinError | undefined];
}

export class Session extends EventEmitter<SessionEvents> implements StreamHost {
  readonly role: 'client' | 'server';
  readonly peer: PeerInfo;
  readonly local: string;
  readonly options: ResolvedSessionOptions;
  state: SessionStateValue = SessionState.HANDSHAKING;
  /** Server: what the authenticate hook returned. */
  identity: unknown = undefined;
  negotiated: Negotiated | undefined;
  /** Last measured round-trip time in ms (keepalive or ping()); NaN until measured. */
  rttMs = NaN;
  /** Resolves with the close reason (undefined when closed cleanly by this side). Never rejects. */
  readonly closed: Promise<SkeinError | undefined>;

  /** Server: called synchronously for every new incoming call; attach callbacks before returning. */
  onStream: (stream: Stream, head: CallHead) => void = (s) => s.reset(Status.UNIMPLEMENTED, 'no handler');

  private readonly socket: Duplex;
  private readonly decoder: FrameDecoder;
  private readonly writer: FrameWriter;
  private readonly streams = new Map<number, Stream>();
  /** Client streams waiting for a slot under the peer's max-concurrent-streams. */
  private readonly pendingOpen: Array<{ stream: Stream; head: OpenStreamHead }> = [];
  private nextStreamId = 1;
  private lastPeerStreamId = 0;
  /** Server: ring of recently half-closed peer stream ids, made on first use (idle connections stay small). */
  private halfClosedIds: number[] | undefined;
  private halfClosedNext = 0;
  private halfClosedSet: Set<number> | undefined;
  private connSendCredit = 0;
  private connRecvCredit: number;
  private connUnannounced = 0;
  private streamSendWindow = 0;
  private sendMaxFrame: number = Limits.HANDSHAKE_FRAME_MAX;
  private compressor: Compressor | undefined;
  private prefaceSent = false;
  private goawaySent = false;
  private lastStreamIdAllowed: number = Limits.MAX_STREAM_ID;
  private tickTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private cancelDrainTimer: CancelTimer | undefined;
  private receivedSinceTick = false;
  private silentTicks = 0;
  private idleSince = Date.now();
  private pingSeq = 0;
  private pongsWhileBlocked = 0;
  private pingsMap: Map<number, { t0: bigint; resolve: (rtt: number) => void }> | undefined;
  /** Outstanding PINGs by sequence number (made on first use). */
  private get pings(): Map<number, { t0: bigint; resolve: (rtt: number) => void }> {
    return (this.pingsMap ??= new Map());
  }
  private resolveClosed!: (r: SkeinError | undefined) => void;
  private handshakeWaiter: { resolve: () => void; reject: (e: SkeinError) => void } | undefined;

  private constructor(role: 'client' | 'server', conn: Connection, options: SessionOptions) {
    super();
    this.role = role;
    this.peer = conn.peer;
    this.local = conn.local;
    this.options = resolveSessionOptions(options);
    this.socket = conn.socket;
    this.connRecvCredit = this.options.connectionWindow;
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.writer = new FrameWriter(this.socket);
    this.decoder = new FrameDecoder({ expectPreface: true, maxFrameSize: Limits.HANDSHAKE_FRAME_MAX }, (t, f, id, p) => this.onFrame(t, f, id, p));
    this.socket.on('data', (chunk: Buffer) => {
      this.receivedSinceTick = true;
      try {
        this.decoder.push(chunk);
      } catch (err) {
        this.fail(err);
      }
    });
    // The peer read what we wrote: PONGs queued before no longer count as a flood (answerPing).
    this.socket.on('drain', () => (this.pongsWhileBlocked = 0));
    this.socket.on('error', (err: Error) => this.close(createError(ErrorCode.CONNECTION_LOST, `connection to ${this.peer.address} lost: ${err.message}`, { cause: err })));
    this.socket.on('end', () => {
      // A FIN in the middle of a frame (or of the preface) is a protocol violation, not just
      // a lost connection: the decoder says so, and the peer gets GOAWAY(PROTOCOL_ERROR)
      // (our side is still writable until the socket ends itself, after this handler).
      try {
        this.decoder.end();
      } catch (err) {
        this.fail(err);
        return;
      }
      this.close(createError(ErrorCode.CONNECTION_LOST, `connection to ${this.peer.address} closed by the peer`));
    });
    this.socket.on('close', () => this.close(createError(ErrorCode.CONNECTION_LOST, `connection to ${this.peer.address} closed`)));
    this.handshakeTimer = setTimeout(() => this.fail(createError(ErrorCode.HANDSHAKE, `handshake with ${this.peer.address} did not complete within ${this.options.handshakeTimeoutMs} ms`)), this.options.handshakeTimeoutMs);
    this.handshakeTimer.unref?.();
  }

  /**
   * Client side: send the preface and HELLO on `conn` and resolve once HELLO_ACK arrives.
   * Rejects (and closes the connection) on refusal, protocol error, timeout or abort.
   */
  static async connect(conn: Connection, options: SessionOptions = {}, signal?: AbortSignal): Promise<Session> {
    const s = new Session('client', conn, options);
    const ready = new Promise<void>((resolve, reject) => (s.handshakeWaiter = { resolve, reject }));
    const onAbort = () => s.close(createError(ErrorCode.CANCELLED, 'connect aborted', { cause: signal?.reason }));
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (signal?.aborted) onAbort();
      s.sendPrefaceOnce();
      const o = s.options;
      const hello: Hello = {
        codecs: SUPPORTED_CODECS,
        compression: o.compression.filter((c) => getCompressor(c) !== undefined),
        maxFrameSize: o.maxFrameSize,
        streamWindow: o.streamWindow,
        connectionWindow: o.connectionWindow,
        heartbeatMs: o.heartbeatMs,
        agent: AGENT,
      };
      if (o.credential !== undefined) hello.credential = Buffer.from(o.credential).toString('base64');
      s.writer.writeFrame(FrameType.HELLO, 0, 0, encodeJson(hello));
      await ready;
      return s;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Server side: take over an accepted connection; `onReady` fires once the handshake succeeds. */
  static accept(conn: Connection, options: SessionOptions = {}): Session {
    return new Session('server', conn, options);
  }

  /** Open streams (excluding client streams still waiting for a slot). */
  get activeStreams(): number {
    return this.streams.size;
  }

  /** Whether a new call may be started on this session. */
  get isReady(): boolean {
    return this.state === SessionState.READY;
  }

  // ------------------------------------------------------------------ client API

  /**
   * Client: open a stream for a call. The CALL frame leaves now, or as soon as the peer's
   * max-concurrent-streams allows; messages sent before that are queued in order.
   * Throws SKEIN_ERR_GOAWAY / SKEIN_ERR_CLOSED when the session no longer takes calls.
   */
  openStream(head: OpenStreamHead): Stream {
    if (this.state !== SessionState.READY) {
      throw this.state === SessionState.DRAINING
        ? createError(ErrorCode.GOAWAY, `connection to ${this.peer.address} is draining`)
        : createError(ErrorCode.CLOSED, `connection to ${this.peer.address} is ${this.state.toLowerCase()}`);
    }
    const size = head.metadata === undefined ? 0 : callSize(head.path, head.metadata);
    if (size > this.sendMaxFrame) throw createError(ErrorCode.MESSAGE_TOO_LARGE, `call metadata of ${size} bytes exceeds the peer's max frame size of ${this.sendMaxFrame}`);
    const stream = new Stream(this, false, this.streamSendWindow, this.options.streamWindow);
    if (this.streams.size < this.negotiated!.maxConcurrentStreams && this.pendingOpen.length === 0) this.startStream(stream, head);
    else {
      stream.queue = [];
      this.pendingOpen.push({ stream, head });
    }
    return stream;
  }

  private startStream(stream: Stream, head: OpenStreamHead): void {
    if (this.nextStreamId > Limits.MAX_STREAM_ID) {
      // Stream ids exhausted: this connection can take no more calls.
      stream.closed = true;
      queueMicrotask(() => stream.handler.onAbort(createError(ErrorCode.GOAWAY, 'stream ids exhausted on this connection; reconnect')));
      this.drain(0);
      return;
    }
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    stream.id = id;
    this.streams.set(id, stream);
    // At least 1 ms: 0 would mean "no deadline". An already-expired call is ended by its caller's own timer.
    const timeoutMs = head.deadline !== undefined && Number.isFinite(head.deadline) ? Math.max(1, head.deadline - Date.now()) : head.timeoutMs;
    this.writer.writeCallFrame(id, callSize(head.path, head.metadata), head.codec, timeoutMs, head.path, head.metadata);
    if (stream.queue !== null) {
      if (stream.queue.length === 0) stream.queue = null;
      else stream.flushQueue();
    }
  }

  private openPending(): void {
    while (this.pendingOpen.length > 0 && this.state === SessionState.READY && this.streams.size < this.negotiated!.maxConcurrentStreams) {
      const { stream, head } = this.pendingOpen.shift()!;
      if (!stream.closed) this.startStream(stream, head);
    }
  }

  /** Measure the round-trip time with a PING. Rejects if the session closes first or the signal aborts. */
  ping(signal?: AbortSignal): Promise<number> {
    if (this.state === SessionState.CLOSED || this.state === SessionState.HANDSHAKING) return Promise.reject(createError(ErrorCode.CLOSED, 'session is not open'));
    return new Promise<number>((resolve, reject) => {
      const seq = this.sendPing();
      const done = () => {
        signal?.removeEventListener('abort', onAbort);
        this.off('close', onClose);
      };
      const onAbort = () => {
        this.pings.delete(seq);
        done();
        reject(signal!.reason);
      };
      const onClose = (r: SkeinError | undefined) => {
        done();
        reject(r ?? createError(ErrorCode.CLOSED, 'session closed'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.once('close', onClose);
      this.pings.set(seq, {
        t0: process.hrtime.bigint(),
        resolve: (rtt) => {
          done();
          resolve(rtt);
        },
      });
    });
  }

  // ------------------------------------------------------------------ shutdown

  /**
   * Graceful drain: send GOAWAY(NO_ERROR), refuse new streams, let open ones finish, then
   * close. After `graceMs` the remaining streams are reset with UNAVAILABLE. Resolves when closed.
   */
  drain(graceMs = 5000): Promise<SkeinError | undefined> {
    if (this.state === SessionState.CLOSED) return this.closed;
    if (this.state === SessionState.HANDSHAKING) {
      this.close();
      return this.closed;
    }
    if (this.state === SessionState.READY) {
      this.state = SessionState.DRAINING;
      this.sendGoaway(GoawayReason.NO_ERROR, 'draining');
      this.abortPendingOpens(createError(ErrorCode.GOAWAY, 'connection is draining'));
    }
    // Also when the peer started the drain (its GOAWAY made us DRAINING): our own grace
    // period still bounds how long open streams may keep the connection.
    if (this.cancelDrainTimer === undefined) {
      this.cancelDrainTimer = armTimer(graceMs, () => {
        // These calls may have run: CONNECTION_LOST, not GOAWAY (which promises "never processed").
        const err = createError(ErrorCode.CONNECTION_LOST, `drain grace period of ${graceMs} ms ended with the call still running`);
        for (const s of [...this.streams.values()]) {
          this.sendReset(s, Status.UNAVAILABLE, err.message);
          s.handler.onAbort(err);
        }
        this.close();
      }, { unref: true });
      this.maybeFinishDrain();
    }
    return this.closed;
  }

  /**
   * Close now. Open streams fail with `reason` (or SKEIN_ERR_CLOSED); the peer gets a GOAWAY
   * when the socket is still writable. Idempotent.
   */
  close(reason?: SkeinError): void {
    if (this.state === SessionState.CLOSED) return;
    const wasHandshaking = this.state === SessionState.HANDSHAKING;
    this.state = SessionState.CLOSED;
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.cancelDrainTimer?.();
    clearInterval(this.tickTimer);
    clearInterval(this.idleTimer);
    this.decoder.destroy();
    if (!this.goawaySent && !this.socket.destroyed && this.socket.writable) {
      this.sendGoaway(reason === undefined ? GoawayReason.NO_ERROR : codeToReason(reason.code), reason?.message ?? 'closing');
    }
    this.writer.flush();
    this.writer.close();
    const streamErr = reason ?? createError(ErrorCode.CLOSED, `connection to ${this.peer.address} closed`);
    const failErr = streamErr.status === Status.UNAVAILABLE ? streamErr : createError(ErrorCode.CONNECTION_LOST, `connection to ${this.peer.address} lost: ${streamErr.message}`, { cause: streamErr });
    const victims = [...this.streams.values(), ...this.pendingOpen.map((p) => p.stream)];
    this.streams.clear();
    this.pendingOpen.length = 0;
    for (const s of victims) {
      if (s.closed) continue;
      s.closed = true;
      s.handler.onAbort(failErr);
    }
    this.pingsMap?.clear();
    // End the socket gracefully so a GOAWAY just written gets out; destroy it if that stalls.
    if (!this.socket.destroyed) {
      // A peer that broke the protocol gets no more of our attention: stop reading its input
      // (whatever it sends is discarded anyway), so a flooding peer neither keeps us busy nor
      // sees its writes drain until the socket is gone. Clean closes keep reading, to see the
      // peer's FIN and release the socket at once.
      if (reason instanceof ProtocolError) this.socket.pause();
      this.socket.end();
      const t = setTimeout(() => this.socket.destroy(), 1000);
      t.unref?.();
      this.socket.once('close', () => clearTimeout(t));
    }
    if (wasHandshaking && this.handshakeWaiter) {
      this.handshakeWaiter.reject(reason ?? createError(ErrorCode.HANDSHAKE, 'connection closed during the handshake'));
      this.handshakeWaiter = undefined;
    }
    this.resolveClosed(reason);
    this.emit('close', reason);
  }

  // ------------------------------------------------------------------ StreamHost (used by Stream)

  connectionSendCredit(): number {
    return this.connSendCredit;
  }

  peerMaxFrameSize(): number {
    return this.sendMaxFrame;
  }

  sendData(stream: Stream, payload: Buffer, endStream: boolean): void {
    let flags = endStream ? Flags.END_STREAM : 0;
    let body = payload;
    const c = this.compressor;
    if (c !== undefined && payload.length >= this.options.compressionThreshold) {
      const z = c.compress(payload);
      if (z.length < payload.length) {
        body = z;
        flags |= Flags.COMPRESSED;
      }
    }
    stream.sendCredit -= body.length;
    this.connSendCredit -= body.length;
    this.writer.writeFrame(FrameType.DATA, flags, stream.id, body);
  }

  sendEnd(stream: Stream, status: number, message: string, details: unknown, metadata: Metadata | undefined): void {
    let payload = status === 0 && message === '' && details === undefined && (metadata === undefined || isEmpty(metadata)) ? END_OK : encodeEnd(status, message, details, metadata);
    // An END the peer cannot accept would cost it the whole connection: send a small one instead.
    if (payload.length > this.sendMaxFrame) payload = encodeEnd(Status.INTERNAL, `status details and trailers (${payload.length} bytes) exceed the peer's max frame size`, undefined, undefined);
    this.writer.writeFrame(FrameType.END, 0, stream.id, payload);
    // The server's END finishes the call for both sides.
    if (stream.serverSide) this.removeStream(stream);
  }

  sendReset(stream: Stream, status: number, message: string): void {
    if (stream.closed) return;
    if (stream.id === 0) {
      stream.closed = true;
      const i = this.pendingOpen.findIndex((p) => p.stream === stream);
      if (i >= 0) this.pendingOpen.splice(i, 1);
      return;
    }
    if (this.state !== SessionState.CLOSED) this.writer.writeFrame(FrameType.RESET, 0, stream.id, encodeReset(status, message));
    this.removeStream(stream);
  }

  /**
   * The application took `size` wire bytes of `stream`. Only bytes the stream still holds
   * count (a stream that closed already returned its held bytes to the connection window).
   */
  releaseCredit(stream: Stream, size: number): void {
    if (size > stream.held) size = stream.held;
    if (size <= 0) return;
    stream.held -= size;
    this.returnConnectionCredit(size);
    if (stream.closed || this.state === SessionState.CLOSED) return;
    stream.unannounced += size;
    if (stream.unannounced >= this.options.streamWindow >>> 1 && !stream.remoteEnded) {
      stream.recvCredit += stream.unannounced;
      this.writer.writeFrame(FrameType.WINDOW_UPDATE, 0, stream.id, encodeWindowUpdate(stream.unannounced));
      stream.unannounced = 0;
    }
  }

  /** Give `size` bytes of connection window back to the peer (batched: half a window at a time). */
  private returnConnectionCredit(size: number): void {
    if (this.state === SessionState.CLOSED) return;
    this.connUnannounced += size;
    if (this.connUnannounced >= this.options.connectionWindow >>> 1) {
      this.connRecvCredit += this.connUnannounced;
      this.writer.writeFrame(FrameType.WINDOW_UPDATE, 0, 0, encodeWindowUpdate(this.connUnannounced));
      this.connUnannounced = 0;
    }
  }

  // ------------------------------------------------------------------ frame handling

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    if (this.state === SessionState.HANDSHAKING) return this.onHandshakeFrame(type, id, payload);
    switch (type) {
      case FrameType.DATA:
        return this.onData(flags, id, payload);
      case FrameType.CALL:
        return this.onCall(id, payload);
      case FrameType.END:
        return this.onEnd(id, payload);
      case FrameType.RESET:
        return this.onReset(flags, id, payload);
      case FrameType.WINDOW_UPDATE:
        return this.onWindowUpdate(id, payload);
      case FrameType.PING:
        if (id !== 0 || payload.length !== 8) throw createError(ErrorCode.PROTOCOL, 'PING must have stream id 0 and 8 bytes of payload');
        return this.answerPing(payload);
      case FrameType.PONG:
        return this.onPong(id, payload);
      case FrameType.GOAWAY:
        return this.onGoaway(id, payload);
      default:
        throw createError(ErrorCode.PROTOCOL, `unexpected ${type === FrameType.HELLO ? 'HELLO' : 'HELLO_ACK'} after the handshake`);
    }
  }

  private onHandshakeFrame(type: number, id: number, payload: Buffer): void {
    if (this.role === 'server') {
      if (type === FrameType.GOAWAY && id === 0) return this.onGoaway(id, payload);
      if (this.peerHello !== undefined) throw createError(ErrorCode.PROTOCOL, 'frame received before the handshake completed');
      if (type !== FrameType.HELLO || id !== 0) throw createError(ErrorCode.PROTOCOL, 'frame received before the handshake (expected HELLO)');
      this.peerHello = decodeHello(payload, { minFrame: Limits.MIN_MAX_FRAME_SIZE, maxFrame: Limits.MAX_MAX_FRAME_SIZE });
      void this.acceptHello(this.peerHello);
      return;
    }
    if (type === FrameType.GOAWAY && id === 0) return this.onGoaway(id, payload);
    if (type !== FrameType.HELLO_ACK || id !== 0) throw createError(ErrorCode.PROTOCOL, 'frame received before the handshake (expected HELLO_ACK)');
    const ack = decodeHelloAck(payload, { minFrame: Limits.MIN_MAX_FRAME_SIZE, maxFrame: Limits.MAX_MAX_FRAME_SIZE });
    if (ack.compression !== null && !this.options.compression.includes(ack.compression)) throw createError(ErrorCode.HANDSHAKE, `server chose compression ${ack.compression}, which this client did not offer`);
    this.applyPeer(ack, ack.compression, ack.heartbeatMs, ack.maxConcurrentStreams);
    this.ready();
  }

  private peerHello: Hello | undefined;

  private async acceptHello(hello: Hello): Promise<void> {
    try {
      const o = this.options;
      if (o.authenticate !== undefined) {
        const credential = hello.credential === undefined ? undefined : Buffer.from(hello.credential, 'base64');
        let identity: unknown;
        try {
          identity = await o.authenticate(credential, this.peer);
        } catch (err) {
          const msg = isSkeinError(err) || err instanceof Error ? err.message : 'refused';
          throw createError(ErrorCode.AUTH_REFUSED, `authentication refused: ${msg}`);
        }
        if (identity === false) throw createError(ErrorCode.AUTH_REFUSED, 'authentication refused');
        this.identity = identity;
      }
      if (this.state !== SessionState.HANDSHAKING) return;
      const compression = hello.compression.find((c) => o.compression.includes(c) && getCompressor(c) !== undefined) ?? null;
      const heartbeatMs = hello.heartbeatMs === 0 ? o.heartbeatMs : o.heartbeatMs === 0 ? hello.heartbeatMs : Math.min(hello.heartbeatMs, o.heartbeatMs);
      const ack: HelloAck = {
        codecs: SUPPORTED_CODECS,
        compression,
        maxFrameSize: o.maxFrameSize,
        streamWindow: o.streamWindow,
        connectionWindow: o.connectionWindow,
        heartbeatMs,
        maxConcurrentStreams: o.maxConcurrentStreams,
        agent: AGENT,
      };
      this.sendPrefaceOnce();
      this.writer.writeFrame(FrameType.HELLO_ACK, 0, 0, encodeJson(ack));
      this.applyPeer(hello, compression, heartbeatMs, o.maxConcurrentStreams);
      this.ready();
    } catch (err) {
      this.fail(err);
    }
  }

  private applyPeer(peer: Hello | HelloAck, compression: string | null, heartbeatMs: number, maxConcurrentStreams: number): void {
    this.sendMaxFrame = peer.maxFrameSize;
    this.streamSendWindow = peer.streamWindow;
    this.connSendCredit = peer.connectionWindow;
    this.compressor = compression === null ? undefined : getCompressor(compression);
    if (compression !== null && this.compressor === undefined) throw createError(ErrorCode.HANDSHAKE, `peer chose compression ${compression}, which is not available here`);
    this.decoder.setMaxFrameSize(this.options.maxFrameSize);
    this.negotiated = { peerCodecs: peer.codecs, compression, sendMaxFrameSize: peer.maxFrameSize, heartbeatMs, maxConcurrentStreams };
    if (peer.agent !== undefined) this.negotiated.peerAgent = peer.agent;
  }

  private ready(): void {
    this.peerHello = undefined;
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.state = SessionState.READY;
    this.idleSince = Date.now();
    const hb = this.negotiated!.heartbeatMs;
    if (hb > 0) {
      this.tickTimer = setInterval(() => this.onTick(), hb);
      this.tickTimer.unref?.();
    }
    // Idle checks run on their own clock: keepalive counts heartbeat intervals, and an idle
    // timeout shorter than the heartbeat must not wait for the next heartbeat tick.
    const idle = this.options.idleTimeoutMs;
    if (idle > 0) {
      this.idleTimer = setInterval(() => this.checkIdle(), Math.max(10, Math.min(1000, idle >>> 2)));
      this.idleTimer.unref?.();
    }
    this.handshakeWaiter?.resolve();
    this.handshakeWaiter = undefined;
    this.emit('ready');
  }

  private onCall(id: number, payload: Buffer): void {
    if (this.role !== 'server') throw createError(ErrorCode.PROTOCOL, 'CALL from the server (server-opened streams are not part of protocol v1)');
    if (id === 0 || (id & 1) === 0 || id <= this.lastPeerStreamId) throw createError(ErrorCode.PROTOCOL, `CALL on stream ${id} reuses or goes below stream ${this.lastPeerStreamId} (client stream ids are odd and increasing)`);
    this.lastPeerStreamId = id;
    if (this.state === SessionState.DRAINING || id > this.lastStreamIdAllowed) {
      this.writer.writeFrame(FrameType.RESET, ResetFlags.REFUSED, id, encodeReset(Status.UNAVAILABLE, 'refused: the server is draining'));
      return;
    }
    if (this.streams.size >= this.options.maxConcurrentStreams) {
      this.writer.writeFrame(FrameType.RESET, ResetFlags.REFUSED, id, encodeReset(Status.RESOURCE_EXHAUSTED, `refused: more than ${this.options.maxConcurrentStreams} concurrent streams`));
      return;
    }
    const head = decodeCall(payload);
    const stream = new Stream(this, true, this.streamSendWindow, this.options.streamWindow);
    stream.id = id;
    this.streams.set(id, stream);
    this.onStream(stream, head);
  }

  private onData(flags: number, id: number, payload: Buffer): void {
    const len = payload.length;
    if (this.connRecvCredit <= 0 && len > 0) throw createError(ErrorCode.FLOW_CONTROL, 'DATA beyond the connection window');
    this.connRecvCredit -= len;
    const s = this.streams.get(id);
    if (s === undefined) {
      this.unknownStream(id, 'DATA');
      if (this.halfClosedSet?.has(id)) throw createError(ErrorCode.PROTOCOL, `DATA on stream ${id} after the peer ended it`);
      // A stream this side already finished or reset: the data is dropped, its credit returned.
      if (len > 0) this.returnConnectionCredit(len);
      return;
    }
    if (s.remoteEnded) throw createError(ErrorCode.PROTOCOL, `DATA on stream ${id} after the peer ended it`);
    if (s.recvCredit <= 0 && len > 0) throw createError(ErrorCode.FLOW_CONTROL, `DATA beyond the window of stream ${id}`);
    s.recvCredit -= len;
    s.held += len;
    let msg = payload;
    if ((flags & Flags.COMPRESSED) !== 0) {
      if (this.compressor === undefined) throw createError(ErrorCode.PROTOCOL, 'COMPRESSED flag without negotiated compression');
      try {
        msg = this.compressor.decompress(payload, this.options.maxFrameSize);
      } catch (err) {
        const e = isSkeinError(err) ? err : createError(ErrorCode.CODEC, 'decompression failed');
        this.releaseCredit(s, len);
        this.sendReset(s, e.status, e.message);
        s.handler.onAbort(e);
        return;
      }
    }
    if ((flags & Flags.END_STREAM) !== 0) {
      if (this.role === 'client') throw createError(ErrorCode.PROTOCOL, `END_STREAM flag on DATA from the server (stream ${id}); a server ends a stream with END`);
      this.markRemoteEnded(s);
    }
    s.handler.onMessage(msg, len);
    if ((flags & Flags.END_STREAM) !== 0 && !s.closed) s.handler.onEnd(null);
  }

  private onEnd(id: number, payload: Buffer): void {
    const s = this.streams.get(id);
    if (s === undefined) {
      this.unknownStream(id, 'END');
      return;
    }
    if (s.remoteEnded) throw createError(ErrorCode.PROTOCOL, `END on stream ${id} after the peer ended it`);
    const info = decodeEnd(payload);
    if (this.role === 'client') {
      this.removeStream(s);
      s.handler.onEnd(info);
    } else {
      this.markRemoteEnded(s);
      s.handler.onEnd(null);
    }
  }

  private onReset(flags: number, id: number, payload: Buffer): void {
    const { status, message } = decodeReset(payload);
    const s = this.streams.get(id);
    if (s === undefined) {
      this.unknownStream(id, 'RESET');
      return;
    }
    this.removeStream(s);
    // REFUSED: the peer never processed the stream, so the call is safe to retry anywhere.
    const code = (flags & ResetFlags.REFUSED) === 0 ? ErrorCode.STREAM_RESET : status === Status.RESOURCE_EXHAUSTED ? ErrorCode.STREAM_LIMIT : ErrorCode.GOAWAY;
    s.handler.onAbort(createError(code, message || `stream reset by the peer (${status})`, { status }));
  }

  private onWindowUpdate(id: number, payload: Buffer): void {
    const inc = decodeWindowUpdate(payload);
    if (id === 0) {
      this.connSendCredit += inc;
      if (this.connSendCredit > Limits.MAX_WINDOW) throw createError(ErrorCode.FLOW_CONTROL, 'connection window overflow');
      // Streams blocked on the connection window go on in id order (rare: every half window).
      // Not only those with queued frames: a stream whose last send() used up the credit has
      // nothing queued but still waits for its onDrain.
      for (const s of this.streams.values()) {
        if (this.connSendCredit <= 0) break;
        if (s.blocked && s.sendCredit > 0) s.flushQueue();
      }
      return;
    }
    const s = this.streams.get(id);
    if (s === undefined) {
      this.unknownStream(id, 'WINDOW_UPDATE');
      return;
    }
    s.sendCredit += inc;
    if (s.sendCredit > Limits.MAX_WINDOW) throw createError(ErrorCode.FLOW_CONTROL, `window overflow on stream ${id}`);
    if (s.sendCredit > 0 && this.connSendCredit > 0) s.flushQueue();
  }

  /**
   * Answer a PING. A peer that keeps sending PINGs without reading our PONGs would make us
   * buffer replies without limit (HTTP/2's "ping flood", CVE-2019-9512). So PONGs queued
   * while the socket is backed up are counted, and past MAX_PONGS_BLOCKED the peer is cut
   * off; the count restarts whenever the socket drains (the peer reads), so a keepalive
   * peer — one PING per heartbeat — never comes near the limit, even during a long transfer.
   */
  private answerPing(payload: Buffer): void {
    if (this.socket.writableNeedDrain) {
      if (++this.pongsWhileBlocked > MAX_PONGS_BLOCKED) throw createError(ErrorCode.PROTOCOL, `the peer sent more than ${MAX_PONGS_BLOCKED} PINGs without reading the replies`);
    } else this.pongsWhileBlocked = 0;
    this.writer.writeFrame(FrameType.PONG, 0, 0, Buffer.from(payload));
  }

  private onPong(id: number, payload: Buffer): void {
    if (id !== 0 || payload.length !== 8) throw createError(ErrorCode.PROTOCOL, 'PONG must have stream id 0 and 8 bytes of payload');
    const seq = payload.readUInt32BE(0);
    const p = this.pingsMap?.get(seq);
    if (p === undefined) return; // unsolicited or late PONG: harmless
    this.pings.delete(seq);
    this.rttMs = Number(process.hrtime.bigint() - p.t0) / 1e6;
    p.resolve(this.rttMs);
  }

  private onGoaway(id: number, payload: Buffer): void {
    if (id !== 0) throw createError(ErrorCode.PROTOCOL, 'GOAWAY on a stream other than 0');
    const g = decodeGoaway(payload);
    const reasonName = GoawayReasonName[g.reason] ?? `UNKNOWN(${g.reason})`;
    this.emit('goaway', { lastStreamId: g.lastStreamId, reason: reasonName, message: g.message });
    const graceful = g.reason === GoawayReason.NO_ERROR || g.reason === GoawayReason.IDLE_TIMEOUT;
    const code = reasonToCode.get(g.reason) ?? ErrorCode.CONNECTION_LOST;
    if (!graceful || this.state === SessionState.HANDSHAKING) {
      const status = code === ErrorCode.AUTH_REFUSED ? Status.UNAUTHENTICATED : Status.UNAVAILABLE;
      this.goawaySent = true; // do not answer a GOAWAY with a GOAWAY
      this.close(createError(code, `the peer closed the connection (${reasonName}): ${g.message}`, { status }));
      return;
    }
    // Graceful: streams above lastStreamId were never seen by the peer; they fail retry-safe.
    this.lastStreamIdAllowed = Math.min(this.lastStreamIdAllowed, g.lastStreamId);
    if (this.state === SessionState.READY) this.state = SessionState.DRAINING;
    const err = createError(ErrorCode.GOAWAY, `the peer is going away (${reasonName}): ${g.message}`);
    for (const s of [...this.streams.values()]) {
      if (this.role === 'client' && s.id > g.lastStreamId) {
        this.removeStream(s);
        s.handler.onAbort(err);
      }
    }
    this.abortPendingOpens(err);
    if (!this.goawaySent) this.sendGoaway(GoawayReason.NO_ERROR, 'peer going away');
    this.maybeFinishDrain();
  }

  // ------------------------------------------------------------------ helpers

  private unknownStream(id: number, what: string): void {
    const known = this.role === 'server' ? id !== 0 && (id & 1) === 1 && id <= this.lastPeerStreamId : id !== 0 && (id & 1) === 1 && id < this.nextStreamId;
    if (!known) throw createError(ErrorCode.PROTOCOL, `${what} on stream ${id}, which was never opened`);
  }

  /** Server: the client half-closed stream `s`; remember it to catch DATA sent after that. */
  private markRemoteEnded(s: Stream): void {
    s.remoteEnded = true;
    // A ring of the last HALF_CLOSED_MEMORY ids: O(1) per call.
    const ring = (this.halfClosedIds ??= []);
    const set = (this.halfClosedSet ??= new Set());
    const old = ring[this.halfClosedNext];
    if (old !== undefined) set.delete(old);
    ring[this.halfClosedNext] = s.id;
    this.halfClosedNext = (this.halfClosedNext + 1) % HALF_CLOSED_MEMORY;
    set.add(s.id);
  }

  private removeStream(s: Stream): void {
    if (s.closed) return;
    s.closed = true;
    this.streams.delete(s.id);
    // Messages received but never taken (a reader that stopped, a cancelled call) must not
    // keep their share of the connection window: return it now.
    if (s.held > 0) {
      this.returnConnectionCredit(s.held);
      s.held = 0;
    }
    if (this.streams.size === 0) this.idleSince = Date.now();
    if (this.pendingOpen.length > 0) this.openPending();
    if (this.state === SessionState.DRAINING) this.maybeFinishDrain();
  }

  private abortPendingOpens(err: SkeinError): void {
    const list = this.pendingOpen.splice(0);
    for (const { stream } of list) {
      stream.closed = true;
      stream.handler.onAbort(err);
    }
  }

  private maybeFinishDrain(): void {
    if (this.state === SessionState.DRAINING && this.streams.size === 0 && this.pendingOpen.length === 0) {
      queueMicrotask(() => this.close());
    }
  }

  private sendPrefaceOnce(): void {
    if (this.prefaceSent) return;
    this.prefaceSent = true;
    this.writer.writeRaw(PREFACE);
  }

  private sendGoaway(reason: GoawayReasonValue, message: string): void {
    if (this.goawaySent) return;
    this.goawaySent = true;
    this.sendPrefaceOnce();
    this.writer.writeFrame(FrameType.GOAWAY, 0, 0, encodeGoaway(this.lastPeerStreamId, reason, message));
  }

  private sendPing(): number {
    const seq = (this.pingSeq = (this.pingSeq + 1) >>> 0);
    const p = Buffer.allocUnsafe(8);
    p.writeUInt32BE(seq, 0);
    p.writeUInt32BE(0, 4);
    this.writer.writeFrame(FrameType.PING, 0, 0, p);
    return seq;
  }

  private onTick(): void {
    if (this.state === SessionState.CLOSED) return;
    const hb = this.negotiated!.heartbeatMs;
    if (hb > 0) {
      if (this.receivedSinceTick) {
        this.receivedSinceTick = false;
        this.silentTicks = 0;
      } else {
        // Close only after `keepaliveMisses` PINGs in a row went unanswered (and nothing else arrived).
        if (this.silentTicks >= this.options.keepaliveMisses) {
          this.close(createError(ErrorCode.KEEPALIVE_TIMEOUT, `peer ${this.peer.address} answered none of ${this.silentTicks} pings sent ${hb} ms apart`));
          return;
        }
        this.silentTicks++;
        const seq = this.sendPing();
        const t0 = process.hrtime.bigint();
        this.pings.set(seq, { t0, resolve: () => this.pings.delete(seq) });
      }
    }
  }

  private checkIdle(): void {
    const idle = this.options.idleTimeoutMs;
    if (idle > 0 && this.state === SessionState.READY && this.streams.size === 0 && this.pendingOpen.length === 0 && Date.now() - this.idleSince >= idle) {
      this.state = SessionState.DRAINING;
      this.sendGoaway(GoawayReason.IDLE_TIMEOUT, `idle for ${idle} ms`);
      this.close(createError(ErrorCode.IDLE_TIMEOUT, `connection idle for ${idle} ms`));
    }
  }

  /** Fail the session because of `err` (protocol violation, handshake failure...). */
  private fail(err: unknown): void {
    const e = isSkeinError(err) ? err : createError(ErrorCode.PROTOCOL, `internal error while processing input: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    this.close(e);
  }
}

function isEmpty(o: object): boolean {
  for (const _ in o) return false;
  return true;
}

