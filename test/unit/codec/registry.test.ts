import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as codec from '../../../src/codec/index.js';
import { codecNames, CodecId, getCodec, jsonCodec, msgpackCodec } from '../../../src/codec/index.js';

test('registry - finds msgpack and json by name and by wire id', () => {
  assert.equal(getCodec('msgpack'), msgpackCodec);
  assert.equal(getCodec(CodecId.MSGPACK), msgpackCodec);
  assert.equal(getCodec('json'), jsonCodec);
  assert.equal(getCodec(CodecId.JSON), jsonCodec);
});

test('registry - protobuf and unknown names or ids are not registered', () => {
  assert.equal(getCodec('protobuf'), undefined);
  assert.equal(getCodec(CodecId.PROTOBUF), undefined);
  assert.equal(getCodec(CodecId.BYTES), undefined, 'bytes is chosen per method, never negotiated');
  assert.equal(getCodec('cbor'), undefined);
  assert.equal(getCodec(0), undefined);
  assert.equal(getCodec('1'), undefined);
});

test('registry - codecNames lists the default codec first', () => {
  assert.deepStrictEqual(codecNames(), ['msgpack', 'json']);
});

test('registry - codec ids match the wire spec', () => {
  assert.deepStrictEqual({ ...CodecId }, { MSGPACK: 1, JSON: 2, PROTOBUF: 3, BYTES: 4 });
});

test('registry - the index exports exactly the documented names', () => {
  assert.deepStrictEqual(Object.keys(codec).sort(), [
    'CodecId',
    'availableCompressors',
    'bytesCodec',
    'codecNames',
    'getCodec',
    'getCompressor',
    'gzipCompressor',
    'jsonCodec',
    'loadProtoType',
    'msgpackCodec',
    'protobufCodec',
  ]);
});

test('registry - codecs and compressors are frozen', () => {
  assert.ok(Object.isFrozen(msgpackCodec));
  assert.ok(Object.isFrozen(jsonCodec));
  assert.ok(Object.isFrozen(codec.gzipCompressor));
});
