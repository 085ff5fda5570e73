/**
 * The pipe's message codec (docs/protocol.md §14.2, src/pipe/messages.ts): every message
 * round-trips, and every truncation, extension or bad field is a typed error
 * (SKEIN_ERR_CODEC with INVALID_ARGUMENT; another version: SKEIN_ERR_PIPE_MISMATCH).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, Status, isSkeinError } from '../../src/errors.js';
import {
  DATA_HEADER_SIZE,
  decodeToReceiver,
  decodeToSender,
  encodeAccept,
  encodeAck,
  encodeData,
  encodeDone,
  encodeEnd,
  encodeNack,
  encodeOpen,
  MAX_CHUNK,
  NackReason,
  OpenFlags,
  PipeMessageType,
  setDataEpoch,
  writeDataHeader,
} from '../../src/pipe/messages.js';

const id = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const sha = Buffer.alloc(32, 0xab);
const BIG = 2 ** 53 - 1;

function assertMalformed(fn: () => unknown, what: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isSkeinError(err), `${what}: not a SkeinError: ${String(err)}`);
    assert.equal(err.code, ErrorCode.CODEC, `${what}: ${err.message}`);
    assert.equal(err.status, Status.INVALID_ARGUMENT, what);
    return true;
  });
}

describe('pipe messages', () => {
  it('messages - OPEN round-trips (flags, id, size, UTF-8 name)', () => {
    const buf = encodeOpen({ flags: OpenFlags.SIZE_KNOWN | OpenFlags.RESTARTABLE, id, size: BIG, name: 'räksmörgås.tar' });
    const m = decodeToReceiver(buf);
    assert.deepEqual(m, { type: PipeMessageType.OPEN, version: 1, flags: 3, id, size: BIG, name: 'räksmörgås.tar' });
    const anon = decodeToReceiver(encodeOpen({ flags: 0, id, size: 0, name: '' }));
    assert.equal(anon.type, PipeMessageType.OPEN);
    assert.equal((anon as { name: string }).name, '');
  });

  it('messages - DATA round-trips; the chunk is a view, the epoch can be rewritten in place', () => {
    const chunk = Buffer.from('hello pipe');
    const buf = encodeData(7, 2 ** 40 + 3, 0xdeadbeef, chunk);
    const m = decodeToReceiver(buf);
    assert.equal(m.type, PipeMessageType.DATA);
    if (m.type !== PipeMessageType.DATA) return;
    assert.equal(m.epoch, 7);
    assert.equal(m.offset, 2 ** 40 + 3);
    assert.equal(m.crc, 0xdeadbeef);
    assert.deepEqual(m.chunk, chunk);
    assert.equal(m.chunk.buffer, buf.buffer, 'the chunk is not copied');
    setDataEpoch(buf, 9);
    assert.equal((decodeToReceiver(buf) as { epoch: number }).epoch, 9);
    const inPlace = Buffer.alloc(DATA_HEADER_SIZE + 3, 1);
    writeDataHeader(inPlace, 1, 5, 6);
    assert.deepEqual(decodeToReceiver(inPlace), { type: PipeMessageType.DATA, epoch: 1, offset: 5, crc: 6, chunk: Buffer.from([1, 1, 1]) });
  });

  it('messages - END, ACCEPT, ACK, NACK and DONE round-trip', () => {
    assert.deepEqual(decodeToReceiver(encodeEnd(3, BIG, sha)), { type: PipeMessageType.END, epoch: 3, total: BIG, sha256: sha });
    assert.deepEqual(decodeToSender(encodeAccept(0xffffffff, 12345, 8 * 1024 * 1024)), { type: PipeMessageType.ACCEPT, epoch: 0xffffffff, offset: 12345, window: 8 * 1024 * 1024 });
    assert.deepEqual(decodeToSender(encodeAck(2, 2 ** 33)), { type: PipeMessageType.ACK, epoch: 2, offset: 2 ** 33 });
    assert.deepEqual(decodeToSender(encodeNack(2, 10, NackReason.CHECKSUM)), { type: PipeMessageType.NACK, epoch: 2, offset: 10, reason: 1 });
    assert.deepEqual(decodeToSender(encodeNack(2, 10, NackReason.OUT_OF_ORDER)), { type: PipeMessageType.NACK, epoch: 2, offset: 10, reason: 2 });
    assert.deepEqual(decodeToSender(encodeDone(4, 99, sha)), { type: PipeMessageType.DONE, epoch: 4, total: 99, sha256: sha });
  });

  it('messages - the exact bytes of ACK and ACCEPT are big-endian as §14.2 says', () => {
    assert.equal(encodeAck(1, 0x0102030405).toString('hex'), '82' + '00000001' + '0000000102030405');
    assert.equal(encodeAccept(2, 3, 0x10000).toString('hex'), '81' + '00000002' + '0000000000000003' + '00010000');
  });

  it('messages - every truncation of every message is a typed error', () => {
    const toReceiver = [encodeOpen({ flags: 1, id, size: 10, name: 'abc' }), encodeData(1, 0, 0, Buffer.from([1, 2, 3])), encodeEnd(1, 3, sha)];
    for (const full of toReceiver) {
      for (let n = 0; n < full.length; n++) {
        // DATA stays valid down to one chunk byte.
        if (full[0] === PipeMessageType.DATA && n > DATA_HEADER_SIZE) continue;
        assertMalformed(() => decodeToReceiver(full.subarray(0, n)), `type 0x${full[0]!.toString(16)} cut to ${n} of ${full.length} bytes`);
      }
    }
    const toSender = [encodeAccept(1, 0, 65536), encodeAck(1, 5), encodeNack(1, 5, 1), encodeDone(1, 5, sha)];
    for (const full of toSender) {
      for (let n = 0; n < full.length; n++) assertMalformed(() => decodeToSender(full.subarray(0, n)), `type 0x${full[0]!.toString(16)} cut to ${n} of ${full.length} bytes`);
    }
  });

  it('messages - trailing bytes after a fixed layout are a typed error', () => {
    for (const full of [encodeEnd(1, 3, sha), encodeOpen({ flags: 0, id, size: 0, name: 'x' })]) assertMalformed(() => decodeToReceiver(Buffer.concat([full, Buffer.from([0])])), `0x${full[0]!.toString(16)} + 1 byte`);
    for (const full of [encodeAccept(1, 0, 65536), encodeAck(1, 5), encodeNack(1, 5, 1), encodeDone(1, 5, sha)]) assertMalformed(() => decodeToSender(Buffer.concat([full, Buffer.from([0])])), `0x${full[0]!.toString(16)} + 1 byte`);
  });

  it('messages - unknown types and messages sent the wrong way are typed errors', () => {
    assertMalformed(() => decodeToReceiver(Buffer.from([0x7f, 0, 0])), 'unknown type to a receiver');
    assertMalformed(() => decodeToSender(Buffer.from([0x05])), 'unknown type to a sender');
    assertMalformed(() => decodeToReceiver(encodeAck(1, 1)), 'ACK sent to a receiver');
    assertMalformed(() => decodeToSender(encodeEnd(1, 1, sha)), 'END sent to a sender');
  });

  it('messages - bad field values are typed errors', () => {
    // A u64 above 2^53 - 1.
    const ack = encodeAck(1, 0);
    ack.writeUInt32BE(0x00200000, 5);
    assertMalformed(() => decodeToSender(ack), 'offset above 2^53');
    // A NACK reason that does not exist.
    const nack = encodeNack(1, 0, 1);
    nack[13] = 3;
    assertMalformed(() => decodeToSender(nack), 'NACK reason 3');
    // A window of 0.
    assertMalformed(() => decodeToSender(encodeAccept(1, 0, 65536).fill(0, 13)), 'window 0');
    // Size without SIZE_KNOWN.
    assertMalformed(() => decodeToReceiver(encodeOpen({ flags: 0, id, size: 5, name: '' })), 'size without SIZE_KNOWN');
    // A name that is not UTF-8.
    const open = encodeOpen({ flags: 0, id, size: 0, name: 'ab' });
    open[open.length - 1] = 0xff;
    assertMalformed(() => decodeToReceiver(open), 'non-UTF-8 name');
    // An empty or oversized DATA chunk.
    assertMalformed(() => decodeToReceiver(encodeData(1, 0, 0, Buffer.alloc(0))), 'empty chunk');
    assertMalformed(() => decodeToReceiver(encodeData(1, 0, 0, Buffer.alloc(MAX_CHUNK + 1))), 'chunk above the maximum');
    assert.doesNotThrow(() => decodeToReceiver(encodeData(1, 0, 0, Buffer.alloc(MAX_CHUNK))));
  });

  it('messages - an OPEN of another version is SKEIN_ERR_PIPE_MISMATCH (FAILED_PRECONDITION)', () => {
    assert.throws(
      () => decodeToReceiver(encodeOpen({ flags: 0, id, size: 0, name: '', version: 2 })),
      (err: unknown) => isSkeinError(err) && err.code === ErrorCode.PIPE_MISMATCH && err.status === Status.FAILED_PRECONDITION && /version 2/.test(err.message),
    );
  });

  it('messages - encoders refuse values the layout cannot carry', () => {
    assert.throws(() => encodeAck(-1, 0), (e: unknown) => isSkeinError(e) && e.code === ErrorCode.INVALID_OPTIONS);
    assert.throws(() => encodeAck(1, 2 ** 53), (e: unknown) => isSkeinError(e) && e.code === ErrorCode.INVALID_OPTIONS);
    assert.throws(() => encodeOpen({ flags: 0, id: Buffer.alloc(15), size: 0, name: '' }), (e: unknown) => isSkeinError(e) && e.code === ErrorCode.INVALID_OPTIONS);
    assert.throws(() => encodeEnd(1, 1, Buffer.alloc(31)), (e: unknown) => isSkeinError(e) && e.code === ErrorCode.INVALID_OPTIONS);
    // A name longer than the u16 length is cut at a character boundary.
    const long = 'é'.repeat(40000);
    const m = decodeToReceiver(encodeOpen({ flags: 0, id, size: 0, name: long }));
    assert.equal(m.type, PipeMessageType.OPEN);
    assert.ok((m as { name: string }).name.length > 30000 && long.startsWith((m as { name: string }).name));
  });
});
