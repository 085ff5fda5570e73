/**
 * One multiplexed stream of a session (docs/protocol.md §5, §6).
 *
 * The RPC layer drives a stream through a handler object (StreamHandler) rather than
 * promises or closures, to keep the unary hot path free of allocations it does not need:
 *
 *   inbound:  onMessage(msg, size) → the RPC layer calls consume(size) once the message is
 *             taken by the application (this is what makes a slow reader stall its sender);
 *             onEnd(info) when the peer half-closes (server) or ends the call (client);
 *             onAbort(err) when the stream dies: RESET from the peer, connection lost, GOAWAY.
 *   outbound: send(msg) returns false once the peer's credit is used up — the message is still
 *             queued, and onDrain() fires when credit comes back; end() half-closes (client) or
 *             sends the status and trailers (server); reset() aborts.
 *
 * Callbacks are never called synchronously from inside send()/end()/reset().
 */
import { createError, ErrorCode, type SkeinError } from '../errors.js';
import type { EndInfo, Metadata } from '../wire/payloads.js';

/** What a stream needs from its session (implemented by Session). */
export interface StreamHost {
  sendData(stream: Stream, payload: Buffer, endStream: boolean): void;
  sendEnd(stream: Stream, status: number, message: string, details: unknown, metadata: Metadata | undefined): void;
  sendReset(stream: Stream, status: number, message: string): void;
  releaseCredit(stream: Stream, size: number): void;
  connectionSendCredit(): number;
  /** The largest payload the peer accepts. */
  peerMaxFrameSize(): number;
}

const noop = () => {};

/**
 * Receives a stream's events. The RPC layer's call objects implement it directly, so a
 * call costs one object rather than a closure per callback.
 */
export interface StreamHandler {
  /** A message arrived (`size` wire bytes of credit, to give back with `consume`). */
  onMessage(msg: Buffer, size: number): void;
  /** The peer half-closed (server side: info null) or ended the call (client side: the status). */
  onEnd(info: EndInfo | null): void;
  /** The stream died: RESET from the peer, connection lost, GOAWAY. */
  onAbort(err: SkeinError): void;
  /** Send credit is available again after send() returned false. */
  onDrain(): void;
}

interface Queued {
  payload: Buffer | null;
  endStream: boolean;
  /** For a queued END (server trailers / client half-close). */
  end?: { status: number; message: string; details: unknown; metadata: Metadata | undefined };
}

export class Stream {
  /** Stream id; 0 while a client stream waits for a free slot under the peer's limit. */
  id = 0;
  /** Bytes this side may still send before the peer grants more (may go negative by < 1 frame). */
  sendCredit: number;
  /** Bytes the peer may still send before this side grants more. */
  recvCredit: number;
  /** Consumed bytes not yet returned to the peer with WINDOW_UPDATE. */
  unannounced = 0;
  /** Bytes received on this stream and not yet consumed by the application. */
  held = 0;
  localEnded = false;
  remoteEnded = false;
  /** Removed from the session: no more frames either way. */
  closed = false;
  /** Frames waiting for credit (or, for a client stream, for its CALL to be sent). */
  queue: Queued[] | null = null;
  private needDrain = false;

  /**
   * Who gets this stream's events. Defaults to the stream itself, which forwards to the four
   * assignable callback fields below (handy in tests); the RPC layer sets its call object.
   */
  handler: StreamHandler = this;
  onMessage: (msg: Buffer, size: number) => void = noop;
  onEnd: (info: EndInfo | null) => void = noop;
  onAbort: (err: SkeinError) => void = noop;
  onDrain: () => void = noop;

  constructor(
    private readonly host: StreamHost,
    /** True on the server side of a call (the stream was opened by the peer). */
    readonly serverSide: boolean,
    sendWindow: number,
    recvWindow: number,
  ) {
    this.sendCredit = sendWindow;
    this.recvCredit = recvWindow;
  }

  /**
   * Waiting for credit: frames are queued, or the last send() returned false (the message
   * went out but used up the credit) and onDrain is owed.
   */
  get blocked(): boolean {
    return this.queue !== null || this.needDrain;
  }

  /** True while the peer's stream and connection credit allow more data without queueing. */
  get writable(): boolean {
    return this.queue === null && this.sendCredit > 0 && this.host.connectionSendCredit() > 0;
  }

  /**
   * Send one message. Never drops it: when credit is used up it is queued and `false` is
   * returned; wait for `onDrain` before sending more. Throws SKEIN_ERR_MESSAGE_TOO_LARGE
   * if the message exceeds the peer's max frame size (the stream stays usable).
   */
  send(payload: Buffer, endStream = false): boolean {
    if (this.closed || this.localEnded) return false;
    const max = this.host.peerMaxFrameSize();
    if (payload.length > max) throw createError(ErrorCode.MESSAGE_TOO_LARGE, `message of ${payload.length} bytes exceeds the peer's maximum of ${max}`);
    if (endStream) this.localEnded = true;
    if (this.id !== 0 && this.queue === null && this.sendCredit > 0 && this.host.connectionSendCredit() > 0) {
      this.host.sendData(this, payload, endStream);
      if (this.sendCredit > 0 && this.host.connectionSendCredit() > 0) return true;
    } else {
      (this.queue ??= []).push({ payload, endStream });
    }
    this.needDrain = true;
    return false;
  }

  /**
   * Client: half-close (no more messages). Server: send the final status with trailers;
   * this ends the stream for both sides.
   */
  end(status = 0, message = '', details?: unknown, metadata?: Metadata): void {
    if (this.closed || (this.localEnded && !this.serverSide)) return;
    this.localEnded = true;
    if (this.id !== 0 && this.queue === null) this.host.sendEnd(this, status, message, details, metadata);
    else (this.queue ??= []).push({ payload: null, endStream: true, end: { status, message, details, metadata } });
  }

  /** Abort the stream: RESET goes to the peer; no callback fires on this side. */
  reset(status: number, message: string): void {
    if (this.closed) return;
    this.host.sendReset(this, status, message);
  }

  /** The application took a message of `size` wire bytes: give the credit back (batched). */
  consume(size: number): void {
    if (size > 0) this.host.releaseCredit(this, size);
  }

  /** Send what was queued while credit allows; called by the session when credit arrives or the stream opens. */
  flushQueue(): void {
    const q = this.queue;
    if (q !== null) {
      while (q.length > 0 && !this.closed) {
        const item = q[0]!;
        if (item.end !== undefined) {
          q.shift();
          this.host.sendEnd(this, item.end.status, item.end.message, item.end.details, item.end.metadata);
          continue;
        }
        if (this.sendCredit <= 0 || this.host.connectionSendCredit() <= 0) return;
        q.shift();
        this.host.sendData(this, item.payload!, item.endStream);
      }
      this.queue = null;
    }
    if (this.needDrain && !this.closed && this.sendCredit > 0 && this.host.connectionSendCredit() > 0) {
      this.needDrain = false;
      this.handler.onDrain();
    }
  }
}
