/** Assertions shared by the codec tests. */
import assert from 'node:assert/strict';
import { isSkeinError, SkeinError } from '../../../src/errors.js';
import type { ErrorCodeValue } from '../../../src/errors.js';

/** `fn` throws a SkeinError with `code` (and nothing else); `label` names the case in failures. */
export function assertThrowsCode(fn: () => unknown, code: ErrorCodeValue, message?: RegExp, label = ''): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SkeinError, `${label}: expected a SkeinError, got ${String(e)}`);
    assert.equal(e.code, code, `${label}: expected ${code}, got ${e.code}: ${e.message}`);
    if (message) assert.match(e.message, message);
    return true;
  }, `${label}: expected a throw`);
}

/** Runs `fn`; it may return, or throw a SkeinError with one of `codes`; anything else fails. */
export function returnsOrThrowsCode(fn: () => unknown, ...codes: ErrorCodeValue[]): void {
  try {
    fn();
  } catch (e) {
    assert.ok(isSkeinError(e) && codes.includes(e.code), `unexpected error: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  }
}

/** True if `v` holds an object key named `__proto__` anywhere. */
export function hasProtoKey(v: unknown): boolean {
  if (Array.isArray(v)) return v.some(hasProtoKey);
  if (typeof v === 'object' && v !== null) {
    return Object.keys(v).some((k) => k === '__proto__' || hasProtoKey((v as Record<string, unknown>)[k]));
  }
  return false;
}
