/** Admission gates: which interceptors of a chain the server runs as gates (src/rpc/admission.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { splitGates, type AdmissionGate, type GatedInterceptor } from '../../src/rpc/admission.js';
import type { ServerInterceptor } from '../../src/rpc/types.js';

const gateOf = (name: string): AdmissionGate & { name: string } => ({ name, admit: () => 0, release: () => {} });
const gated = (name: string): GatedInterceptor => Object.assign(((next) => next) as ServerInterceptor, { gate: gateOf(name) });
const plain = (): ServerInterceptor => (next) => next;

test('admission - only the leading gated interceptors become gates; the rest keep their order', () => {
  const a = gated('a');
  const b = gated('b');
  const auth = plain();
  const c = gated('c');
  const { gates, rest } = splitGates([a, b, auth, c]);
  assert.deepEqual(gates.map((g) => (g as AdmissionGate & { name: string }).name), ['a', 'b']);
  assert.deepEqual(rest, [auth, c], 'a gated interceptor after a plain one runs as an interceptor, after it');
  assert.deepEqual(splitGates([]), { gates: [], rest: [] });
  assert.deepEqual(splitGates([auth]).gates, []);
});
