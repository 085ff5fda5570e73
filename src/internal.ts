/**
 * skein/internal — building blocks below the public API, for tests, tools and sibling
 * packages (a second transport, a protocol analyser). No stability promise beyond the
 * wire format itself, which docs/protocol.md specifies.
 */
export { PREFACE, PREFACE_SIZE, PROTOCOL_VERSION, HEADER_SIZE, FrameType, Flags, ResetFlags, GoawayReason, Limits, encodeFrame, writeHeader } from './wire/frame.js';
export { FrameDecoder } from './wire/decoder.js';
export type { FrameHandler, DecoderOptions } from './wire/decoder.js';
export { encodeCall, decodeCall, encodeEnd, decodeEnd, encodeReset, decodeReset, encodeWindowUpdate, decodeWindowUpdate, encodeGoaway, decodeGoaway, decodeHello, decodeHelloAck, encodeJson, checkMetadata } from './wire/payloads.js';
export type { CallHead, EndInfo, GoawayInfo, Hello, HelloAck } from './wire/payloads.js';
export { Session, SessionState } from './session/session.js';
export type { Negotiated, OpenStreamHead, SessionEvents, SessionStateValue } from './session/session.js';
export { Stream } from './session/stream.js';
export type { StreamHandler } from './session/stream.js';
export { resolveSessionOptions, sessionDefaults } from './session/options.js';
export { dial, getTransport, parseTarget, tcpTransport, tlsTransport, unixTransport, memoryTransport, createMemoryPair } from './transport/index.js';
export type { Transport, Connection, Listener, Target } from './transport/index.js';
export { msgpackCodec, jsonCodec, getCodec, getCompressor } from './codec/index.js';
export { Backoff } from './util/backoff.js';
export { addDeadline, cancelDeadline } from './util/deadline-queue.js';
export type { DeadlineEntry } from './util/deadline-queue.js';
