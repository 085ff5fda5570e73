/**
 * Frame layout (docs/protocol.md §2–§4).
 *
 *   preface (8 bytes, each side sends it once, first):
 *     'S' 'K' 'E' 'I' 'N'  version(u8)  0x00 0x00
 *
 *   frame header (10 bytes, big-endian), then `length` payload bytes:
 *     +----------------+--------+--------+----------------+
 *     | length (u32)   | type   | flags  | stream id (u32)|
 *     +----------------+--------+--------+----------------+
 *
 * `length` counts the payload only. Stream 0 is the connection itself.
 */

export const PROTOCOL_VERSION = 1;
export const PREFACE_SIZE = 8;
export const MAGIC = Buffer.from('SKEIN', 'latin1');
export const PREFACE = Buffer.from([0x53, 0x4b, 0x45, 0x49, 0x4e, PROTOCOL_VERSION, 0, 0]);
export const HEADER_SIZE = 10;

/** Frame types (docs/protocol.md §4). */
export const FrameType = {
  HELLO: 0x0,
  HELLO_ACK: 0x1,
  CALL: 0x2,
  DATA: 0x3,
  END: 0x4,
  RESET: 0x5,
  WINDOW_UPDATE: 0x6,
  PING: 0x7,
  PONG: 0x8,
  GOAWAY: 0x9,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];
export const MAX_FRAME_TYPE = FrameType.GOAWAY;

export const FrameTypeName: Record<number, string> = Object.fromEntries(Object.entries(FrameType).map(([k, v]) => [v, k]));

/** DATA flags. */
export const Flags = {
  /** The sender sends no more messages on this stream (half-close). */
  END_STREAM: 0x1,
  /** The payload is compressed with the connection's negotiated algorithm. */
  COMPRESSED: 0x2,
} as const;

/** RESET flags. */
export const ResetFlags = {
  /** The stream was refused before any processing (draining, over the stream limit): safe to retry. */
  REFUSED: 0x1,
} as const;

/** GOAWAY reasons (docs/protocol.md §4.10). */
export const GoawayReason = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  FLOW_CONTROL_ERROR: 2,
  FRAME_SIZE_ERROR: 3,
  VERSION_UNSUPPORTED: 4,
  UNAUTHENTICATED: 5,
  HANDSHAKE_FAILED: 6,
  KEEPALIVE_TIMEOUT: 7,
  IDLE_TIMEOUT: 8,
  INTERNAL_ERROR: 9,
} as const;
export type GoawayReasonValue = (typeof GoawayReason)[keyof typeof GoawayReason];
export const GoawayReasonName: Record<number, string> = Object.fromEntries(Object.entries(GoawayReason).map(([k, v]) => [v, k]));

/** Limits that hold before and regardless of negotiation. */
export const Limits = {
  /** The largest HELLO / HELLO_ACK payload accepted (before max frame size is negotiated). */
  HANDSHAKE_FRAME_MAX: 64 * 1024,
  /** The smallest max frame size a peer may declare. */
  MIN_MAX_FRAME_SIZE: 16 * 1024,
  /** The largest max frame size a peer may declare (16 MiB). */
  MAX_MAX_FRAME_SIZE: 16 * 1024 * 1024,
  /** Largest window (u31) and window increment. */
  MAX_WINDOW: 0x7fffffff,
  /** Largest stream id (u31, the high bit is reserved). */
  MAX_STREAM_ID: 0x7fffffff,
} as const;

/** Write a frame header at `offset` of `buf`. */
export function writeHeader(buf: Buffer, offset: number, length: number, type: number, flags: number, streamId: number): void {
  buf.writeUInt32BE(length, offset);
  buf[offset + 4] = type;
  buf[offset + 5] = flags;
  buf.writeUInt32BE(streamId, offset + 6);
}

/** A whole frame as one buffer (header + copied payload). For tests and tools; the session writes via FrameWriter. */
export function encodeFrame(type: number, flags: number, streamId: number, payload: Buffer = EMPTY): Buffer {
  const out = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  writeHeader(out, 0, payload.length, type, flags, streamId);
  payload.copy(out, HEADER_SIZE);
  return out;
}

export const EMPTY: Buffer = Buffer.alloc(0);
