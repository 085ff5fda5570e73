/**
 * grpc-js baseline service, defined without a .proto: the (de)serializers are identity
 * functions on Buffers, so grpc-js is measured on transport and framing only, just like
 * the raw baseline. The stream request is 8 bytes: u32 LE count | u32 LE size.
 */
import type { ServiceDefinition } from '@grpc/grpc-js';

export interface StreamRequest {
  count: number;
  size: number;
}

const id = (b: Buffer): Buffer => b;

export function encodeStreamRequest(r: StreamRequest): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32LE(r.count, 0);
  b.writeUInt32LE(r.size, 4);
  return b;
}

export function decodeStreamRequest(b: Buffer): StreamRequest {
  return { count: b.readUInt32LE(0), size: b.readUInt32LE(4) };
}

export const BenchService = {
  echo: {
    path: '/bench.Bench/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: id,
    requestDeserialize: id,
    responseSerialize: id,
    responseDeserialize: id,
  },
  stream: {
    path: '/bench.Bench/Stream',
    requestStream: false,
    responseStream: true,
    requestSerialize: encodeStreamRequest,
    requestDeserialize: decodeStreamRequest,
    responseSerialize: id,
    responseDeserialize: id,
  },
} satisfies ServiceDefinition;
