/**
 * Message codecs and compressors: the interfaces the session and RPC layers use.
 *
 * A codec turns one message value into bytes and back. The codec used by a call is named
 * by a one-byte id in its CALL frame (docs/protocol.md §5), so a connection can carry
 * MessagePack and Protobuf calls side by side. A compressor is negotiated per connection
 * in the handshake and applied to DATA payloads above a size threshold (flag COMPRESSED).
 */

/** Codec ids as they appear on the wire (CALL frame, `codec` byte). */
export const CodecId = {
  MSGPACK: 1,
  JSON: 2,
  PROTOBUF: 3,
  /** Raw bytes: the message is its bytes (methods declared `raw: true`). */
  BYTES: 4,
} as const;
export type CodecIdValue = (typeof CodecId)[keyof typeof CodecId];

export interface Codec<T = unknown> {
  /** Name used in the handshake and in options: 'msgpack' | 'json' | 'protobuf' | 'bytes'. */
  readonly name: string;
  readonly id: CodecIdValue;
  /** Encode one message. Throws SkeinError(SKEIN_ERR_CODEC) on values it cannot encode. */
  encode(value: T): Buffer;
  /**
   * Decode one message. `bytes` may be a view into a larger buffer that is reused after
   * this call returns: implementations must not keep a reference to it.
   * Throws SkeinError(SKEIN_ERR_CODEC) on malformed bytes.
   */
  decode(bytes: Buffer): T;
}

/** A compression algorithm. Names go in the handshake: 'gzip' | 'lz4' | 'snappy'. */
export interface Compressor {
  readonly name: string;
  /** Compress a payload (synchronous: payloads are bounded by the max frame size). */
  compress(data: Buffer): Buffer;
  /**
   * Decompress a payload, refusing to produce more than `maxOutput` bytes (a
   * decompression bomb fails with SKEIN_ERR_MESSAGE_TOO_LARGE instead of allocating).
   * Throws SkeinError(SKEIN_ERR_CODEC) on corrupt input.
   */
  decompress(data: Buffer, maxOutput: number): Buffer;
}
