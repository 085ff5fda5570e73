import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import protobuf from 'protobufjs';
import { CodecId, loadProtoType, protobufCodec } from '../../../src/codec/index.js';
import { ErrorCode } from '../../../src/errors.js';
import { assertThrowsCode, returnsOrThrowsCode } from './_helpers.js';

const PROTO = `
syntax = "proto3";
package skein.test;

enum Status {
  STATUS_UNKNOWN = 0;
  STATUS_ACTIVE = 1;
  STATUS_BANNED = 2;
}

message Item {
  string sku = 1;
  uint32 qty = 2;
  bytes blob = 3;
}

message User {
  int64 id = 1;
  string display_name = 2;
  Status status = 3;
  repeated string tags = 4;
  map<string, int32> scores = 5;
  Item primary = 6;
  repeated Item items = 7;
  bytes avatar = 8;
  uint64 big = 9;
  double ratio = 10;
  bool active = 11;
  oneof contact {
    string email = 12;
    string phone = 13;
  }
  sint64 delta = 14;
  map<string, Status> statuses = 15;
  repeated Status history = 16;
}

message Counter {
  int64 id = 1;
}
`;

const User = loadProtoType(PROTO, 'skein.test.User');
const users = protobufCodec(User);
const counters = protobufCodec(loadProtoType(PROTO, 'skein.test.Counter'));

/** What decoding gives for a User with nothing set. */
const EMPTY_USER = {
  id: '0',
  display_name: '',
  status: 'STATUS_UNKNOWN',
  tags: [],
  scores: {},
  primary: null,
  items: [],
  avatar: Buffer.alloc(0),
  big: '0',
  ratio: 0,
  active: false,
  delta: '0',
  statuses: {},
  history: [],
};

test('protobuf - has name protobuf and wire id 3', () => {
  assert.equal(users.name, 'protobuf');
  assert.equal(users.id, CodecId.PROTOBUF);
});

test('protobuf - round-trips a message with every kind of field', () => {
  const user = {
    id: '-9223372036854775808',
    display_name: 'Ada',
    status: 'STATUS_ACTIVE',
    tags: ['a', 'b'],
    scores: { x: 1, y: -2 },
    primary: { sku: 'p-1', qty: 3, blob: Buffer.from([9, 8]) },
    items: [
      { sku: 'i-1', qty: 1, blob: Buffer.alloc(0) },
      { sku: 'i-2', qty: 4294967295, blob: Buffer.from('zz') },
    ],
    avatar: Buffer.from([0, 255, 1]),
    big: '18446744073709551615',
    ratio: 0.25,
    active: true,
    email: 'ada@example.com',
    delta: '-5',
    statuses: { a: 'STATUS_BANNED' },
    history: ['STATUS_ACTIVE', 'STATUS_BANNED'],
  };
  assert.deepStrictEqual(users.decode(users.encode(user)), user);
});

test('protobuf - decoding fills defaults, longs as strings and enums as names', () => {
  assert.deepStrictEqual(users.decode(users.encode({})), EMPTY_USER);
  assert.deepStrictEqual(users.decode(Buffer.alloc(0)), EMPTY_USER);
});

test('protobuf - writes the standard wire format', () => {
  // The protobuf docs' example: field 1 varint 150 is 08 96 01.
  assert.deepStrictEqual(counters.encode({ id: 150 }), Buffer.from([0x08, 0x96, 0x01]));
  assert.deepStrictEqual(counters.encode({ id: '150' }), Buffer.from([0x08, 0x96, 0x01]));
  assert.deepStrictEqual(counters.encode({ id: -1 }), Buffer.from('08ffffffffffffffffff01', 'hex'));
  assert.ok(Buffer.isBuffer(counters.encode({ id: 1 })));
});

test('protobuf - 64-bit fields accept numbers, decimal strings and bigints', () => {
  for (const id of [42, '42', 42n]) assert.deepStrictEqual(counters.decode(counters.encode({ id })), { id: '42' });
  const max = { big: 2n ** 64n - 1n, id: 2n ** 63n - 1n, delta: -(2n ** 63n) };
  assert.deepStrictEqual(users.decode(users.encode(max)), {
    ...EMPTY_USER,
    big: '18446744073709551615',
    id: '9223372036854775807',
    delta: '-9223372036854775808',
  });
});

test('protobuf - enums accept names and numbers, unknown numbers come back as numbers', () => {
  const out = users.decode(users.encode({ status: 2, history: ['STATUS_ACTIVE', 0, 7], statuses: { k: 1 } }));
  assert.equal(out.status, 'STATUS_BANNED');
  assert.deepStrictEqual(out.history, ['STATUS_ACTIVE', 'STATUS_UNKNOWN', 7]);
  assert.deepStrictEqual(out.statuses, { k: 'STATUS_ACTIVE' });
});

test('protobuf - bytes fields accept base64 strings and Uint8Array', () => {
  const out = users.decode(users.encode({ avatar: Buffer.from('hi').toString('base64'), primary: { blob: new Uint8Array([1, 2]) } }));
  assert.deepStrictEqual(out.avatar, Buffer.from('hi'));
  assert.deepStrictEqual((out.primary as { blob: Buffer }).blob, Buffer.from([1, 2]));
});

test('protobuf - round-trips generated messages (property)', () => {
  const item = fc.record({ sku: fc.string(), qty: fc.integer({ min: 0, max: 2 ** 32 - 1 }), blob: fc.uint8Array().map((a) => Buffer.from(a)) }, { noNullPrototype: true });
  const user = fc.record({
    id: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
    display_name: fc.string({ unit: 'binary' }),
    status: fc.constantFrom('STATUS_UNKNOWN', 'STATUS_ACTIVE', 'STATUS_BANNED'),
    tags: fc.array(fc.string()),
    scores: fc.dictionary(fc.string().filter((k) => k !== '__proto__'), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { noNullPrototype: true }),
    primary: fc.option(item, { nil: null }),
    items: fc.array(item, { maxLength: 4 }),
    avatar: fc.uint8Array().map((a) => Buffer.from(a)),
    big: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(String),
    ratio: fc.double(),
    active: fc.boolean(),
    delta: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
    statuses: fc.constant({}),
    history: fc.array(fc.constantFrom('STATUS_ACTIVE', 'STATUS_BANNED')),
  }, { noNullPrototype: true });
  fc.assert(
    fc.property(user, (u) => {
      assert.deepStrictEqual(users.decode(users.encode(u)), u);
    }),
    { numRuns: 200 },
  );
});

test('protobuf - decode does not keep a reference to the input buffer', () => {
  const input = Buffer.from(users.encode({ avatar: Buffer.from('abc'), primary: { blob: Buffer.from('def') } }));
  const out = users.decode(input);
  input.fill(0);
  assert.deepStrictEqual(out.avatar, Buffer.from('abc'));
  assert.deepStrictEqual((out.primary as { blob: Buffer }).blob, Buffer.from('def'));
});

test('protobuf - values that fail verification give SKEIN_ERR_CODEC', () => {
  const cases: [string, unknown][] = [
    ['not an object', 42],
    ['null', null],
    ['string in uint32', { primary: { qty: 'three' } }],
    ['fraction in int64', { id: 1.5 }],
    ['non-decimal int64 string', { id: '12abc' }],
    ['int64 string out of range', { id: '9223372036854775808' }],
    ['negative uint64', { big: '-1' }],
    ['uint64 bigint out of range', { big: 2n ** 64n }],
    ['unknown enum name', { status: 'STATUS_NOPE' }],
    ['number in string', { display_name: 5 }],
    ['object in repeated', { tags: 'a' }],
    ['two oneof members', { email: 'a', phone: 'b' }],
    ['bad map value', { scores: { a: 'x' } }],
    ['bad nested message', { items: [{ sku: 1 }] }],
  ];
  for (const [label, value] of cases) {
    assertThrowsCode(() => users.encode(value as Record<string, unknown>), ErrorCode.CODEC, /^protobuf\(skein\.test\.User\): cannot encode/, label);
  }
});

test('protobuf - malformed input gives SKEIN_ERR_CODEC', () => {
  const cases: [string, Buffer][] = [
    ['length beyond the end', Buffer.from([0x12, 0x05, 0x41])],
    ['truncated varint', Buffer.from([0x08, 0xff])],
    ['invalid wire type', Buffer.from([0x0f, 0x00])],
    ['field number 0', Buffer.from([0x00, 0x01])],
    ['nested message truncated', Buffer.from([0x32, 0x02, 0x0a, 0x05])],
  ];
  for (const [label, bytes] of cases) assertThrowsCode(() => users.decode(bytes), ErrorCode.CODEC, /malformed message/, label);
});

test('protobuf - random bytes never crash the decoder (property)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      returnsOrThrowsCode(() => users.decode(Buffer.from(bytes)), ErrorCode.CODEC);
    }),
    { numRuns: 2000 },
  );
});

test('protobuf - loadProtoType keeps field names as written unless told otherwise', () => {
  assert.ok(loadProtoType(PROTO, 'skein.test.User').fields.display_name);
  assert.ok(loadProtoType(PROTO, 'skein.test.User', { keepCase: false }).fields.displayName);
  assert.equal(loadProtoType(PROTO, 'Item').fullName, '.skein.test.Item');
});

test('protobuf - loadProtoType refuses bad source and unknown types with SKEIN_ERR_INVALID_OPTIONS', () => {
  assertThrowsCode(() => loadProtoType('message {', 'X'), ErrorCode.INVALID_OPTIONS, /cannot parse/);
  assertThrowsCode(() => loadProtoType('syntax = "proto3"; message A { Missing m = 1; }', 'A'), ErrorCode.INVALID_OPTIONS, /cannot parse/);
  assertThrowsCode(() => loadProtoType(PROTO, 'skein.test.Nope'), ErrorCode.INVALID_OPTIONS, /no message type/);
  assertThrowsCode(() => loadProtoType(PROTO, 'skein.test.Status'), ErrorCode.INVALID_OPTIONS, /no message type/);
});

test('protobuf - toObject options can be overridden', () => {
  const plain = protobufCodec(User, { toObject: { longs: Number, enums: undefined, defaults: false } });
  assert.deepStrictEqual(plain.decode(plain.encode({ id: '7', status: 'STATUS_BANNED' })), { id: 7, status: 2 });
});

test('protobuf - works with types built in code, resolving them itself', () => {
  const root = new protobuf.Root();
  root.add(new protobuf.Enum('Color', { RED: 0, BLUE: 1 }));
  const Paint = new protobuf.Type('Paint').add(new protobuf.Field('color', 1, 'Color')).add(new protobuf.Field('n', 2, 'int64'));
  root.add(Paint);
  const paints = protobufCodec(Paint);
  assert.deepStrictEqual(paints.decode(paints.encode({ color: 'BLUE', n: '5' })), { color: 'BLUE', n: '5' });
});

test('protobuf - a type with an unresolvable field gives SKEIN_ERR_INVALID_OPTIONS', () => {
  const root = new protobuf.Root();
  const Bad = new protobuf.Type('Bad').add(new protobuf.Field('x', 1, 'Missing'));
  root.add(Bad);
  assertThrowsCode(() => protobufCodec(Bad), ErrorCode.INVALID_OPTIONS, /cannot resolve/);
});
