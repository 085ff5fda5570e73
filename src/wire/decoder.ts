/**
 * Streaming frame decoder (docs/protocol.md §2).
 *
 * An explicit state machine over a list of received chunks:
 *
 *     PREFACE ──8 bytes ok──▶ HEADER ──10 bytes──▶ PAYLOAD ──length bytes──▶ HEADER ...
 *
 * - Survives any chunk split: bytes are taken with `consume(n)`, which returns a view into
 *   the current chunk when the n bytes lie in one chunk and copies only when they span
 *   chunks (the sticky/partial-packet case).
 * - The declared length is checked against `maxFrameSize` (and the type against the known
 *   types) as soon as the header is complete, before one payload byte is buffered.
 * - Payload views are handed to `onFrame` synchronously; they point into socket chunks
 *   that are never reused, so a consumer may keep them (it then keeps the chunk alive).
 *
 * Errors are thrown as ProtocolError out of `push()` (and out of `end()`, when the input
 * stops inside a frame); after an error the decoder is dead.
 */
import { createError, ErrorCode, type ProtocolError } from '../errors.js';
import { HEADER_SIZE, MAGIC, MAX_FRAME_TYPE, PREFACE_SIZE, PROTOCOL_VERSION, EMPTY } from './frame.js';

export type FrameHandler = (type: number, flags: number, streamId: number, payload: Buffer) => void;

export interface DecoderOptions {
  /** Expect and check the 8-byte preface before the first frame. @default true */
  expectPreface?: boolean;
  /** Largest payload accepted. Can be changed later with `setMaxFrameSize`. */
  maxFrameSize: number;
}

const enum State {
  PREFACE,
  HEADER,
  PAYLOAD,
  DEAD,
}

export class FrameDecoder {
  private readonly chunks: Buffer[] = [];
  /** Read position inside chunks[0]. */
  private pos = 0;
  private buffered = 0;
  private state: State;
  private maxFrameSize: number;
  private length = 0;
  private type = 0;
  private flags = 0;
  private streamId = 0;

  constructor(options: DecoderOptions, private readonly onFrame: FrameHandler) {
    this.state = options.expectPreface === false ? State.HEADER : State.PREFACE;
    this.maxFrameSize = options.maxFrameSize;
  }

  /** Change the limit (after negotiation). Applies from the next header on. */
  setMaxFrameSize(n: number): void {
    this.maxFrameSize = n;
  }

  /** Bytes received but not yet handed out (bounded by max frame size + header). */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Feed received bytes. Calls `onFrame` for every complete frame; throws ProtocolError on bad input. */
  push(chunk: Buffer): void {
    if (this.state === State.DEAD) return;
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    try {
      this.loop();
    } catch (err) {
      this.state = State.DEAD;
      this.chunks.length = 0;
      this.pos = 0;
      this.buffered = 0;
      throw err;
    }
  }

  private loop(): void {
    for (;;) {
      switch (this.state) {
        case State.PREFACE: {
          if (this.buffered < PREFACE_SIZE) {
            // Fail early on a wrong magic byte rather than waiting for all 8.
            this.checkMagicPrefix();
            return;
          }
          const p = this.consume(PREFACE_SIZE);
          if (!p.subarray(0, 5).equals(MAGIC)) throw fail(ErrorCode.PROTOCOL, 'bad preface: not a skein peer (magic bytes mismatch)');
          if (p[5] !== PROTOCOL_VERSION) throw fail(ErrorCode.VERSION, `unsupported protocol version ${p[5]} (this side speaks ${PROTOCOL_VERSION})`);
          this.state = State.HEADER;
          break;
        }
        case State.HEADER: {
          if (this.buffered < HEADER_SIZE) return;
          // Read the header in place when it lies in one chunk (the common case): no view allocated.
          let h = this.chunks[0]!;
          let at = this.pos;
          if (h.length - at >= HEADER_SIZE) {
            this.skip(HEADER_SIZE);
          } else {
            h = this.consume(HEADER_SIZE);
            at = 0;
          }
          const length = h.readUInt32BE(at);
          const type = h[at + 4]!;
          if (type > MAX_FRAME_TYPE) throw fail(ErrorCode.PROTOCOL, `unknown frame type 0x${type.toString(16)}`);
          if (length > this.maxFrameSize) throw fail(ErrorCode.FRAME_TOO_LARGE, `frame length ${length} exceeds the maximum ${this.maxFrameSize}`);
          this.length = length;
          this.type = type;
          this.flags = h[at + 5]!;
          this.streamId = h.readUInt32BE(at + 6);
          if (this.streamId > 0x7fffffff) throw fail(ErrorCode.PROTOCOL, 'stream id with the reserved high bit set');
          this.state = State.PAYLOAD;
          break;
        }
        case State.PAYLOAD: {
          if (this.buffered < this.length) return;
          const payload = this.length === 0 ? EMPTY : this.consume(this.length);
          this.state = State.HEADER;
          this.onFrame(this.type, this.flags, this.streamId, payload);
          if ((this.state as State) === State.DEAD) return;
          break;
        }
        case State.DEAD:
          return;
      }
    }
  }

  /**
   * The peer finished sending (end of stream). Throws ProtocolError (SKEIN_ERR_PROTOCOL) if
   * it stopped inside the preface or inside a frame — a truncated frame can never complete —
   * and does nothing at a frame boundary. The decoder is dead afterwards either way.
   */
  end(): void {
    if (this.state === State.DEAD) return;
    const where = this.state === State.PREFACE ? 'the preface' : this.state === State.PAYLOAD ? `a frame payload (${this.buffered} of ${this.length} bytes)` : 'a frame header';
    const partial = this.buffered > 0 || this.state === State.PAYLOAD;
    this.destroy();
    if (partial) throw fail(ErrorCode.PROTOCOL, `the peer closed the connection in the middle of ${where}`);
  }

  /** Stop decoding: later pushes are ignored (used when the session closes). */
  destroy(): void {
    this.state = State.DEAD;
    this.chunks.length = 0;
    this.pos = 0;
    this.buffered = 0;
  }

  private checkMagicPrefix(): void {
    let i = 0;
    for (let k = 0; k < this.chunks.length; k++) {
      const c = this.chunks[k]!;
      for (let j = k === 0 ? this.pos : 0; j < c.length && i < MAGIC.length; j++, i++) {
        if (c[j] !== MAGIC[i]) throw fail(ErrorCode.PROTOCOL, 'bad preface: not a skein peer (magic bytes mismatch)');
      }
    }
  }

  /** Drop n bytes that lie in the first chunk (already read in place). */
  private skip(n: number): void {
    this.buffered -= n;
    this.pos += n;
    if (this.pos === this.chunks[0]!.length) {
      this.chunks.shift();
      this.pos = 0;
    }
  }

  /** Take n bytes (n <= buffered): a view when they lie in the first chunk, else a copy. */
  private consume(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0]!;
    const avail = first.length - this.pos;
    if (n <= avail) {
      const view = this.pos === 0 && n === first.length ? first : first.subarray(this.pos, this.pos + n);
      if (n === avail) {
        this.chunks.shift();
        this.pos = 0;
      } else this.pos += n;
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const take = Math.min(c.length - this.pos, n - off);
      c.copy(out, off, this.pos, this.pos + take);
      off += take;
      if (take === c.length - this.pos) {
        this.chunks.shift();
        this.pos = 0;
      } else this.pos += take;
    }
    return out;
  }
}

function fail(code: typeof ErrorCode.PROTOCOL | typeof ErrorCode.FRAME_TOO_LARGE | typeof ErrorCode.VERSION, message: string): ProtocolError {
  return createError(code, message) as ProtocolError;
}
