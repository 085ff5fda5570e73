/**
 * Payload encodings for every frame type (docs/protocol.md §4). All integers big-endian.
 *
 * Decoders take a payload view and check every length against the bytes actually present
 * before reading: a malformed payload raises ProtocolError (SKEIN_ERR_PROTOCOL), never a
 * RangeError or an allocation sized by the peer.
 */
import { createError, ErrorCode, type ProtocolError } from '../errors.js';
import { EMPTY } from './frame.js';

/** Call metadata and trailers. Keys: 1–255 bytes of [a-z0-9-_.]; values: UTF-8 text or bytes. */
export type Metadata = Record<string, string | Buffer>;

const KEY_RE = /^[a-z0-9\-_.]{1,255}$/;

export function isValidMetadataKey(key: string): boolean {
  return KEY_RE.test(key);
}

function protocolError(message: string): ProtocolError {
  return createError(ErrorCode.PROTOCOL, message) as ProtocolError;
}

/** A bounds-checked cursor over a payload. */
export class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer, private readonly what: string) {}

  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw protocolError(`truncated ${this.what} payload (need ${n} bytes at offset ${this.pos}, have ${this.buf.length - this.pos})`);
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  utf8(n: number): string {
    this.need(n);
    const v = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  /** Fail unless every byte was consumed. */
  end(): void {
    if (this.pos !== this.buf.length) throw protocolError(`${this.buf.length - this.pos} trailing bytes in ${this.what} payload`);
  }
}

// ---------------------------------------------------------------- metadata block (§4.1)

export function metadataSize(md: Metadata | undefined): number {
  let n = 2;
  if (md === undefined) return n;
  for (const key in md) {
    const v = md[key]!;
    n += 1 + Buffer.byteLength(key, 'latin1') + 1 + 4 + (typeof v === 'string' ? Buffer.byteLength(v, 'utf8') : v.length);
  }
  return n;
}

/** Write a metadata block at `off`; returns the new offset. Keys must be valid (checked by the caller). */
export function writeMetadata(buf: Buffer, off: number, md: Metadata | undefined): number {
  const countAt = off;
  off += 2;
  let count = 0;
  if (md !== undefined) {
    for (const key in md) {
      const v = md[key]!;
      buf[off++] = key.length;
      off += buf.write(key, off, 'latin1');
      if (typeof v === 'string') {
        buf[off++] = 0;
        const len = buf.write(v, off + 4, 'utf8');
        buf.writeUInt32BE(len, off);
        off += 4 + len;
      } else {
        buf[off++] = 1;
        buf.writeUInt32BE(v.length, off);
        v.copy(buf, off + 4);
        off += 4 + v.length;
      }
      count++;
    }
  }
  buf.writeUInt16BE(count, countAt);
  return off;
}

export function readMetadata(r: Reader): Metadata {
  const count = r.u16();
  const md: Metadata = {};
  for (let i = 0; i < count; i++) {
    const klen = r.u8();
    const key = r.utf8(klen);
    if (!KEY_RE.test(key)) throw protocolError(`invalid metadata key ${JSON.stringify(key.slice(0, 40))}`);
    const kind = r.u8();
    const vlen = r.u32();
    let value: string | Buffer;
    if (kind === 0) value = r.utf8(vlen);
    else if (kind === 1) value = Buffer.from(r.bytes(vlen)); // copied: the payload view may be reused
    else throw protocolError(`invalid metadata value kind ${kind}`);
    // '__proto__' is a valid key; plain assignment would hit Object.prototype's setter
    // (dropping a string value, or making a Buffer value the object's prototype).
    if (key === '__proto__') Object.defineProperty(md, key, { value, enumerable: true, writable: true, configurable: true });
    else md[key] = value;
  }
  return md;
}

/** Check metadata given by a program before it goes on the wire. */
export function checkMetadata(md: Metadata | undefined): void {
  if (md === undefined) return;
  let count = 0;
  for (const key in md) {
    if (!KEY_RE.test(key)) throw createError(ErrorCode.INVALID_OPTIONS, `invalid metadata key ${JSON.stringify(key)}: use 1-255 characters of [a-z0-9-_.]`);
    const v = md[key];
    if (typeof v !== 'string' && !Buffer.isBuffer(v)) throw createError(ErrorCode.INVALID_OPTIONS, `metadata value for ${JSON.stringify(key)} must be a string or a Buffer`);
    count++;
  }
  if (count > 0xffff) throw createError(ErrorCode.INVALID_OPTIONS, 'too many metadata entries (max 65535)');
}

// ---------------------------------------------------------------- CALL (§4.4)

export interface CallHead {
  /** Codec id of the messages on this stream (CodecId). */
  codec: number;
  /** Milliseconds the caller will wait, from the moment the frame is sent; 0 = no deadline. */
  timeoutMs: number;
  service: string;
  method: string;
  metadata: Metadata;
}

/** Pre-encoded `service` + `method` (the part of CALL that is the same for every call of a method). */
export function encodeCallPath(service: string, method: string): Buffer {
  const s = Buffer.from(service, 'utf8');
  const m = Buffer.from(method, 'utf8');
  if (s.length > 0xffff || m.length > 0xffff || s.length === 0 || m.length === 0) throw createError(ErrorCode.INVALID_OPTIONS, 'service and method names must be 1-65535 bytes');
  const out = Buffer.allocUnsafe(4 + s.length + m.length);
  out.writeUInt16BE(s.length, 0);
  s.copy(out, 2);
  out.writeUInt16BE(m.length, 2 + s.length);
  m.copy(out, 4 + s.length);
  return out;
}

/** Size of a CALL payload. */
export function callSize(path: Buffer, metadata: Metadata | undefined): number {
  return 5 + path.length + (metadata === undefined ? 2 : metadataSize(metadata));
}

/** Write a CALL payload of `callSize(path, metadata)` bytes at `off` of `out`. */
export function writeCall(out: Buffer, off: number, codec: number, timeoutMs: number, path: Buffer, metadata: Metadata | undefined): void {
  out[off] = codec;
  out.writeUInt32BE(Math.max(0, Math.min(0xffffffff, Math.ceil(timeoutMs))), off + 1);
  path.copy(out, off + 5);
  writeMetadata(out, off + 5 + path.length, metadata);
}

export function encodeCall(codec: number, timeoutMs: number, path: Buffer, metadata: Metadata | undefined): Buffer {
  const out = Buffer.allocUnsafe(callSize(path, metadata));
  writeCall(out, 0, codec, timeoutMs, path, metadata);
  return out;
}

export function decodeCall(payload: Buffer): CallHead {
  const r = new Reader(payload, 'CALL');
  const codec = r.u8();
  const timeoutMs = r.u32();
  const service = r.utf8(r.u16());
  const method = r.utf8(r.u16());
  if (service.length === 0 || method.length === 0) throw protocolError('CALL with an empty service or method name');
  const metadata = readMetadata(r);
  r.end();
  return { codec, timeoutMs, service, method, metadata };
}

// ---------------------------------------------------------------- END (§4.6)

export interface EndInfo {
  status: number;
  message: string;
  /** Parsed JSON details, or undefined when absent. */
  details: unknown;
  metadata: Metadata;
}

/** Status and reset messages are cut to this many bytes when sent (frames stay far below every limit). */
const MAX_STATUS_MESSAGE = 4096;

/** UTF-8 bytes of `s`, cut to at most `max` bytes at a character boundary. */
function truncateUtf8(s: string, max: number): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length <= max) return b;
  let end = max;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--; // back off continuation bytes
  return b.subarray(0, end);
}

export function encodeEnd(status: number, message: string, details: unknown, metadata: Metadata | undefined): Buffer {
  if (status === 0 && message === '' && details === undefined && metadata === undefined) return END_OK;
  const msg = truncateUtf8(message, MAX_STATUS_MESSAGE);
  let det = EMPTY;
  if (details !== undefined) {
    try {
      det = Buffer.from(JSON.stringify(details) ?? 'null', 'utf8');
    } catch {
      det = Buffer.from('"(details not serialisable)"', 'utf8');
    }
  }
  const out = Buffer.allocUnsafe(1 + 2 + msg.length + 4 + det.length + metadataSize(metadata));
  out[0] = status;
  out.writeUInt16BE(msg.length, 1);
  msg.copy(out, 3);
  let off = 3 + msg.length;
  out.writeUInt32BE(det.length, off);
  det.copy(out, off + 4);
  off += 4 + det.length;
  writeMetadata(out, off, metadata);
  return out;
}

/** END with status OK and nothing else: the common case, encoded once. */
export const END_OK: Buffer = (() => {
  const b = Buffer.alloc(9);
  return b;
})();

/** The decoded form of END_OK, shared (frozen) since almost every call ends that way. */
const END_OK_INFO: EndInfo = Object.freeze({ status: 0, message: '', details: undefined, metadata: Object.freeze({}) as Metadata });

export function decodeEnd(payload: Buffer): EndInfo {
  if (payload.length === 9 && payload.readUInt32BE(0) === 0 && payload.readUInt32BE(4) === 0 && payload[8] === 0) return END_OK_INFO;
  const r = new Reader(payload, 'END');
  const status = r.u8();
  if (status > 16) throw protocolError(`END with unknown status ${status}`);
  const message = r.utf8(r.u16());
  const dlen = r.u32();
  let details: unknown = undefined;
  if (dlen > 0) {
    const text = r.utf8(dlen);
    try {
      details = JSON.parse(text);
    } catch {
      throw protocolError('END details are not valid JSON');
    }
  }
  const metadata = readMetadata(r);
  r.end();
  return { status, message, details, metadata };
}

// ---------------------------------------------------------------- RESET (§4.7)

export function encodeReset(status: number, message: string): Buffer {
  const msg = truncateUtf8(message, MAX_STATUS_MESSAGE);
  const out = Buffer.allocUnsafe(3 + msg.length);
  out[0] = status;
  out.writeUInt16BE(msg.length, 1);
  msg.copy(out, 3);
  return out;
}

export function decodeReset(payload: Buffer): { status: number; message: string } {
  const r = new Reader(payload, 'RESET');
  const status = r.u8();
  if (status > 16) throw protocolError(`RESET with unknown status ${status}`);
  const message = r.utf8(r.u16());
  r.end();
  return { status, message };
}

// ---------------------------------------------------------------- WINDOW_UPDATE (§4.8)

export function encodeWindowUpdate(increment: number): Buffer {
  const out = Buffer.allocUnsafe(4);
  out.writeUInt32BE(increment, 0);
  return out;
}

export function decodeWindowUpdate(payload: Buffer): number {
  const r = new Reader(payload, 'WINDOW_UPDATE');
  const inc = r.u32();
  r.end();
  if (inc === 0 || inc > 0x7fffffff) throw protocolError(`WINDOW_UPDATE with invalid increment ${inc}`);
  return inc;
}

// ---------------------------------------------------------------- GOAWAY (§4.10)

export interface GoawayInfo {
  lastStreamId: number;
  reason: number;
  message: string;
}

export function encodeGoaway(lastStreamId: number, reason: number, message: string): Buffer {
  const msg = truncateUtf8(message, MAX_STATUS_MESSAGE);
  const out = Buffer.allocUnsafe(7 + msg.length);
  out.writeUInt32BE(lastStreamId, 0);
  out[4] = reason;
  out.writeUInt16BE(msg.length, 5);
  msg.copy(out, 7);
  return out;
}

export function decodeGoaway(payload: Buffer): GoawayInfo {
  const r = new Reader(payload, 'GOAWAY');
  const lastStreamId = r.u32();
  const reason = r.u8();
  const message = r.utf8(r.u16());
  r.end();
  return { lastStreamId, reason, message };
}

// ---------------------------------------------------------------- HELLO / HELLO_ACK (§3)

/** Client → server (HELLO). Each limit describes what the sender itself accepts. */
export interface Hello {
  /** Codec names the client can use, e.g. ['msgpack', 'json', 'protobuf']. */
  codecs: string[];
  /** Compression algorithms the client accepts, in preference order. */
  compression: string[];
  /** Largest frame payload the client accepts. */
  maxFrameSize: number;
  /** Client's initial receive window per stream and for the connection. */
  streamWindow: number;
  connectionWindow: number;
  /** Keepalive interval the client proposes (ms); 0 = none. */
  heartbeatMs: number;
  /** Opaque credential for the server's authenticate hook, base64. */
  credential?: string;
  /** Free-form implementation name, e.g. 'skein-node/0.1.0'. */
  agent?: string;
}

/** Server → client (HELLO_ACK). */
export interface HelloAck {
  codecs: string[];
  /** The chosen compression algorithm, or null for none. */
  compression: string | null;
  maxFrameSize: number;
  streamWindow: number;
  connectionWindow: number;
  /** The heartbeat interval both sides use (ms); 0 = none. */
  heartbeatMs: number;
  /** How many streams the client may have open at once. */
  maxConcurrentStreams: number;
  agent?: string;
}

export function encodeJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

function parseJsonObject(payload: Buffer, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(payload.toString('utf8'));
  } catch {
    throw protocolError(`${what} payload is not valid JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw protocolError(`${what} payload is not a JSON object`);
  return v as Record<string, unknown>;
}

function num(o: Record<string, unknown>, key: string, what: string, min: number, max: number): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw protocolError(`${what}.${key} must be an integer in [${min}, ${max}]`);
  return v;
}

function strings(o: Record<string, unknown>, key: string, what: string): string[] {
  const v = o[key];
  if (!Array.isArray(v) || v.length > 64 || !v.every((x) => typeof x === 'string' && x.length <= 64)) throw protocolError(`${what}.${key} must be an array of short strings`);
  return v as string[];
}

export function decodeHello(payload: Buffer, limits: { minFrame: number; maxFrame: number }): Hello {
  const o = parseJsonObject(payload, 'HELLO');
  const hello: Hello = {
    codecs: strings(o, 'codecs', 'HELLO'),
    compression: strings(o, 'compression', 'HELLO'),
    maxFrameSize: num(o, 'maxFrameSize', 'HELLO', limits.minFrame, limits.maxFrame),
    streamWindow: num(o, 'streamWindow', 'HELLO', 1024, 0x7fffffff),
    connectionWindow: num(o, 'connectionWindow', 'HELLO', 1024, 0x7fffffff),
    heartbeatMs: num(o, 'heartbeatMs', 'HELLO', 0, 0x7fffffff),
  };
  if (o.credential !== undefined) {
    if (typeof o.credential !== 'string') throw protocolError('HELLO.credential must be a base64 string');
    hello.credential = o.credential;
  }
  if (typeof o.agent === 'string') hello.agent = o.agent.slice(0, 128);
  return hello;
}

export function decodeHelloAck(payload: Buffer, limits: { minFrame: number; maxFrame: number }): HelloAck {
  const o = parseJsonObject(payload, 'HELLO_ACK');
  const c = o.compression;
  if (c !== null && typeof c !== 'string') throw protocolError('HELLO_ACK.compression must be a string or null');
  const ack: HelloAck = {
    codecs: strings(o, 'codecs', 'HELLO_ACK'),
    compression: c,
    maxFrameSize: num(o, 'maxFrameSize', 'HELLO_ACK', limits.minFrame, limits.maxFrame),
    streamWindow: num(o, 'streamWindow', 'HELLO_ACK', 1024, 0x7fffffff),
    connectionWindow: num(o, 'connectionWindow', 'HELLO_ACK', 1024, 0x7fffffff),
    heartbeatMs: num(o, 'heartbeatMs', 'HELLO_ACK', 0, 0x7fffffff),
    maxConcurrentStreams: num(o, 'maxConcurrentStreams', 'HELLO_ACK', 1, 0x7fffffff),
  };
  if (typeof o.agent === 'string') ack.agent = o.agent.slice(0, 128);
  return ack;
}
