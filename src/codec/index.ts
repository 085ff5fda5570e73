/**
 * Public surface of the codec layer: message codecs (msgpack default, json, protobuf per
 * message type), the codec registry, and payload compressors. Names are listed one by one.
 */
export { CodecId } from './codec.js';
export type { Codec, CodecIdValue, Compressor } from './codec.js';
export { msgpackCodec } from './msgpack.js';
export { jsonCodec } from './json.js';
export { bytesCodec } from './bytes.js';
export { protobufCodec, loadProtoType } from './protobuf.js';
export type { LoadProtoOptions, ProtobufCodecOptions } from './protobuf.js';
export { getCodec, codecNames } from './registry.js';
export { gzipCompressor, availableCompressors, getCompressor } from './compress.js';
