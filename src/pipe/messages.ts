/**
 * The reliable pipe's messages (docs/protocol.md §14.2): one DATA payload of the
 * `skein.pipe/transfer` call each, first byte the type, integers big-endian.
 *
 *   sender → receiver                          receiver → sender
 *   0x01 OPEN    u8 version · u16 flags ·      0x81 ACCEPT  u32 epoch · u64 offset · u32 window
 *                16 B id · u64 size ·          0x82 ACK     u32 epoch · u64 offset
 *                u16 name length · name        0x83 NACK    u32 epoch · u64 offset · u8 reason
 *   0x02 DATA    u32 epoch · u64 offset ·      0x84 DONE    u32 epoch · u64 total · 32 B SHA-256
 *                u32 CRC32C · chunk
 *   0x03 END     u32 epoch · u64 total · 32 B SHA-256
 *
 * Decoding is strict: an unknown type, or a length other than the layout's, throws
 * SKEIN_ERR_CODEC with status INVALID_ARGUMENT (the receiver ends the call with it); an
 * OPEN of another version throws SKEIN_ERR_PIPE_MISMATCH (FAILED_PRECONDITION). Offsets
 * are u64 on the wire and JavaScript numbers here: values above 2^53 - 1 are refused.
 *
 * DATA is the hot path: the sender builds it in place (`DATA_HEADER_SIZE` bytes of header
 * reserved in front of the chunk, `writeDataHeader`), and `decodeToReceiver` returns the
 * chunk as a view of the payload, so a chunk is never copied by this module.
 */
import { createError, ErrorCode, Status, type SkeinError } from '../errors.js';

export const PipeMessageType = {
  OPEN: 0x01,
  DATA: 0x02,
  END: 0x03,
  ACCEPT: 0x81,
  ACK: 0x82,
  NACK: 0x83,
  DONE: 0x84,
} as const;
export type PipeMessageTypeValue = (typeof PipeMessageType)[keyof typeof PipeMessageType];

/** OPEN flags. */
export const OpenFlags = {
  /** `size` is the total length. */
  SIZE_KNOWN: 0x1,
  /** The source can be read again from any offset by a restarted sender (a file). */
  RESTARTABLE: 0x2,
} as const;

/** Why a chunk was refused (NACK). */
export const NackReason = {
  CHECKSUM: 1,
  OUT_OF_ORDER: 2,
} as const;
export type NackReasonValue = (typeof NackReason)[keyof typeof NackReason];

/** The pipe protocol version carried in OPEN. */
export const PIPE_VERSION = 1;
/** Bytes of a transfer id. */
export const ID_SIZE = 16;
/** Bytes of a SHA-256 digest. */
export const DIGEST_SIZE = 32;
/** type · epoch · offset · crc */
export const DATA_HEADER_SIZE = 1 + 4 + 8 + 4;
/** Largest chunk in one DATA (§14.2): fits a default 4 MiB frame with room to spare. */
export const MAX_CHUNK = 4 * 1024 * 1024 - 64;
/** Longest OPEN name (u16 length). */
export const MAX_NAME_BYTES = 0xffff;

const OPEN_FIXED = 1 + 1 + 2 + ID_SIZE + 8 + 2;
const END_SIZE = 1 + 4 + 8 + DIGEST_SIZE;
const ACCEPT_SIZE = 1 + 4 + 8 + 4;
const ACK_SIZE = 1 + 4 + 8;
const NACK_SIZE = 1 + 4 + 8 + 1;
const DONE_SIZE = 1 + 4 + 8 + DIGEST_SIZE;
const TWO_32 = 0x1_0000_0000;
/** High word of the largest safe integer (2^53 - 1). */
const MAX_HIGH = 0x1f_ffff;

export interface OpenMessage {
  type: typeof PipeMessageType.OPEN;
  version: number;
  flags: number;
  /** 16 bytes. */
  id: Buffer;
  /** The total length when SIZE_KNOWN, else 0. */
  size: number;
  name: string;
}
export interface DataMessage {
  type: typeof PipeMessageType.DATA;
  epoch: number;
  offset: number;
  crc: number;
  /** A view of the payload (not a copy). */
  chunk: Buffer;
}
export interface EndMessage {
  type: typeof PipeMessageType.END;
  epoch: number;
  total: number;
  /** 32 bytes. */
  sha256: Buffer;
}
export interface AcceptMessage {
  type: typeof PipeMessageType.ACCEPT;
  epoch: number;
  offset: number;
  window: number;
}
export interface AckMessage {
  type: typeof PipeMessageType.ACK;
  epoch: number;
  offset: number;
}
export interface NackMessage {
  type: typeof PipeMessageType.NACK;
  epoch: number;
  offset: number;
  reason: NackReasonValue;
}
export interface DoneMessage {
  type: typeof PipeMessageType.DONE;
  epoch: number;
  total: number;
  sha256: Buffer;
}

/** What a receiver reads. */
export type ToReceiver = OpenMessage | DataMessage | EndMessage;
/** What a sender reads. */
export type ToSender = AcceptMessage | AckMessage | NackMessage | DoneMessage;

/** The one helper every decoding failure goes through. */
function malformed(what: string): SkeinError {
  return createError(ErrorCode.CODEC, `malformed pipe message: ${what}`, { status: Status.INVALID_ARGUMENT });
}

function u32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw createError(ErrorCode.INVALID_OPTIONS, `pipe message: ${name} must be a u32, got ${v}`);
}

function u64(name: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw createError(ErrorCode.INVALID_OPTIONS, `pipe message: ${name} must be an integer in [0, 2^53 - 1], got ${v}`);
}

function writeU64(buf: Buffer, at: number, v: number): void {
  buf.writeUInt32BE(Math.floor(v / TWO_32), at);
  buf.writeUInt32BE(v % TWO_32, at + 4);
}

function readU64(buf: Buffer, at: number, name: string): number {
  const high = buf.readUInt32BE(at);
  if (high > MAX_HIGH) throw malformed(`${name} exceeds 2^53 - 1`);
  return high * TWO_32 + buf.readUInt32BE(at + 4);
}

function exact(buf: Buffer, size: number, name: string): void {
  if (buf.length !== size) throw malformed(`${name} of ${buf.length} bytes (its layout is ${size})`);
}

// ---------------------------------------------------------------- encoders

export function encodeOpen(m: { flags: number; id: Buffer; size: number; name: string; version?: number }): Buffer {
  if (m.id.length !== ID_SIZE) throw createError(ErrorCode.INVALID_OPTIONS, `pipe OPEN: the id must be ${ID_SIZE} bytes`);
  if (!Number.isInteger(m.flags) || m.flags < 0 || m.flags > 0xffff) throw createError(ErrorCode.INVALID_OPTIONS, `pipe OPEN: flags must be a u16, got ${m.flags}`);
  u64('size', m.size);
  let name = Buffer.from(m.name, 'utf8');
  if (name.length > MAX_NAME_BYTES) name = Buffer.from(new TextDecoder().decode(name.subarray(0, MAX_NAME_BYTES)).replace(/\uFFFD$/, ''), 'utf8');
  const buf = Buffer.allocUnsafe(OPEN_FIXED + name.length);
  buf[0] = PipeMessageType.OPEN;
  buf[1] = m.version ?? PIPE_VERSION;
  buf.writeUInt16BE(m.flags, 2);
  m.id.copy(buf, 4);
  writeU64(buf, 4 + ID_SIZE, m.size);
  buf.writeUInt16BE(name.length, 12 + ID_SIZE);
  name.copy(buf, OPEN_FIXED);
  return buf;
}

/**
 * Write a DATA header into the first DATA_HEADER_SIZE bytes of `msg`, whose rest is the
 * chunk. The epoch can be rewritten later with `setDataEpoch` (a resend on a new attachment).
 */
export function writeDataHeader(msg: Buffer, epoch: number, offset: number, crc: number): void {
  msg[0] = PipeMessageType.DATA;
  msg.writeUInt32BE(epoch >>> 0, 1);
  writeU64(msg, 5, offset);
  msg.writeUInt32BE(crc >>> 0, 13);
}

/** Rewrite the epoch of a DATA message built by `writeDataHeader`. */
export function setDataEpoch(msg: Buffer, epoch: number): void {
  msg.writeUInt32BE(epoch >>> 0, 1);
}

/** A whole DATA message (copies the chunk: for tests and rare paths; the sender builds in place). */
export function encodeData(epoch: number, offset: number, crc: number, chunk: Uint8Array): Buffer {
  u32('epoch', epoch);
  u64('offset', offset);
  const buf = Buffer.allocUnsafe(DATA_HEADER_SIZE + chunk.length);
  writeDataHeader(buf, epoch, offset, crc);
  buf.set(chunk, DATA_HEADER_SIZE);
  return buf;
}

function epochOffset(type: number, size: number, epoch: number, offset: number): Buffer {
  u32('epoch', epoch);
  u64('offset', offset);
  const buf = Buffer.allocUnsafe(size);
  buf[0] = type;
  buf.writeUInt32BE(epoch, 1);
  writeU64(buf, 5, offset);
  return buf;
}

function withDigest(type: number, size: number, epoch: number, total: number, sha256: Buffer): Buffer {
  if (sha256.length !== DIGEST_SIZE) throw createError(ErrorCode.INVALID_OPTIONS, `pipe message: a SHA-256 is ${DIGEST_SIZE} bytes`);
  const buf = epochOffset(type, size, epoch, total);
  sha256.copy(buf, 13);
  return buf;
}

export function encodeEnd(epoch: number, total: number, sha256: Buffer): Buffer {
  return withDigest(PipeMessageType.END, END_SIZE, epoch, total, sha256);
}

export function encodeAccept(epoch: number, offset: number, window: number): Buffer {
  u32('window', window);
  const buf = epochOffset(PipeMessageType.ACCEPT, ACCEPT_SIZE, epoch, offset);
  buf.writeUInt32BE(window, 13);
  return buf;
}

export function encodeAck(epoch: number, offset: number): Buffer {
  return epochOffset(PipeMessageType.ACK, ACK_SIZE, epoch, offset);
}

export function encodeNack(epoch: number, offset: number, reason: NackReasonValue): Buffer {
  const buf = epochOffset(PipeMessageType.NACK, NACK_SIZE, epoch, offset);
  buf[13] = reason;
  return buf;
}

export function encodeDone(epoch: number, total: number, sha256: Buffer): Buffer {
  return withDigest(PipeMessageType.DONE, DONE_SIZE, epoch, total, sha256);
}

// ---------------------------------------------------------------- decoders

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decode a sender → receiver message (OPEN, DATA, END). */
export function decodeToReceiver(buf: Buffer): ToReceiver {
  if (buf.length === 0) throw malformed('empty message');
  switch (buf[0]) {
    case PipeMessageType.DATA: {
      if (buf.length <= DATA_HEADER_SIZE) throw malformed(buf.length < DATA_HEADER_SIZE ? `DATA of ${buf.length} bytes (its header is ${DATA_HEADER_SIZE})` : 'DATA with an empty chunk');
      if (buf.length - DATA_HEADER_SIZE > MAX_CHUNK) throw malformed(`DATA chunk of ${buf.length - DATA_HEADER_SIZE} bytes (at most ${MAX_CHUNK})`);
      return { type: PipeMessageType.DATA, epoch: buf.readUInt32BE(1), offset: readU64(buf, 5, 'DATA offset'), crc: buf.readUInt32BE(13), chunk: buf.subarray(DATA_HEADER_SIZE) };
    }
    case PipeMessageType.OPEN: {
      if (buf.length < 2) throw malformed('OPEN without a version');
      const version = buf[1]!;
      if (version !== PIPE_VERSION) throw createError(ErrorCode.PIPE_MISMATCH, `unsupported pipe version ${version} (this receiver speaks version ${PIPE_VERSION})`);
      if (buf.length < OPEN_FIXED) throw malformed(`OPEN of ${buf.length} bytes (at least ${OPEN_FIXED})`);
      const nameLength = buf.readUInt16BE(12 + ID_SIZE);
      exact(buf, OPEN_FIXED + nameLength, 'OPEN');
      let name: string;
      try {
        name = utf8.decode(buf.subarray(OPEN_FIXED));
      } catch {
        throw malformed('OPEN name is not UTF-8');
      }
      const flags = buf.readUInt16BE(2);
      const size = readU64(buf, 4 + ID_SIZE, 'OPEN size');
      if ((flags & OpenFlags.SIZE_KNOWN) === 0 && size !== 0) throw malformed('OPEN size without SIZE_KNOWN must be 0');
      return { type: PipeMessageType.OPEN, version, flags, id: Buffer.from(buf.subarray(4, 4 + ID_SIZE)), size, name };
    }
    case PipeMessageType.END:
      exact(buf, END_SIZE, 'END');
      return { type: PipeMessageType.END, epoch: buf.readUInt32BE(1), total: readU64(buf, 5, 'END total'), sha256: Buffer.from(buf.subarray(13, 13 + DIGEST_SIZE)) };
    default:
      throw malformed(`unknown type 0x${buf[0]!.toString(16).padStart(2, '0')} from a sender`);
  }
}

/** Decode a receiver → sender message (ACCEPT, ACK, NACK, DONE). */
export function decodeToSender(buf: Buffer): ToSender {
  if (buf.length === 0) throw malformed('empty message');
  switch (buf[0]) {
    case PipeMessageType.ACK:
      exact(buf, ACK_SIZE, 'ACK');
      return { type: PipeMessageType.ACK, epoch: buf.readUInt32BE(1), offset: readU64(buf, 5, 'ACK offset') };
    case PipeMessageType.ACCEPT: {
      exact(buf, ACCEPT_SIZE, 'ACCEPT');
      const window = buf.readUInt32BE(13);
      if (window === 0) throw malformed('ACCEPT with a window of 0');
      return { type: PipeMessageType.ACCEPT, epoch: buf.readUInt32BE(1), offset: readU64(buf, 5, 'ACCEPT offset'), window };
    }
    case PipeMessageType.NACK: {
      exact(buf, NACK_SIZE, 'NACK');
      const reason = buf[13]!;
      if (reason !== NackReason.CHECKSUM && reason !== NackReason.OUT_OF_ORDER) throw malformed(`NACK reason ${reason}`);
      return { type: PipeMessageType.NACK, epoch: buf.readUInt32BE(1), offset: readU64(buf, 5, 'NACK offset'), reason };
    }
    case PipeMessageType.DONE:
      exact(buf, DONE_SIZE, 'DONE');
      return { type: PipeMessageType.DONE, epoch: buf.readUInt32BE(1), total: readU64(buf, 5, 'DONE total'), sha256: Buffer.from(buf.subarray(13, 13 + DIGEST_SIZE)) };
    default:
      throw malformed(`unknown type 0x${buf[0]!.toString(16).padStart(2, '0')} from a receiver`);
  }
}
