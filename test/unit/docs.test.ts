/**
 * Keeps the docs in step with the code:
 *  - docs/errors.md has one `### \`SKEIN_ERR_…\`` section per ErrorCode value, names no code
 *    that does not exist, and lists every Status with its number;
 *  - docs/protocol.md names every frame type (with its type code) and every GOAWAY reason
 *    (with its value), and has a heading for every section that src/ cites as
 *    `docs/protocol.md §N`.
 *
 * Runs compiled, from dist/test/unit/: the docs and sources are read from the repository root.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, Status } from '../../src/errors.js';
import { FrameType, GoawayReason } from '../../src/wire/frame.js';

const cache = new Map<string, string>();

function readDoc(name: 'errors.md' | 'protocol.md'): string {
  let text = cache.get(name);
  if (text === undefined) {
    text = readFileSync(new URL(`../../../docs/${name}`, import.meta.url), 'utf8');
    cache.set(name, text);
  }
  return text;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** `name` as a whole identifier: not part of a longer UPPER_CASE name (HELLO vs HELLO_ACK). */
function mentions(text: string, name: string): boolean {
  return new RegExp(`(?<![A-Za-z0-9_])${escapeRe(name)}(?![A-Za-z0-9_])`).test(text);
}

/** A markdown table row whose first two cells are `first` and `second` (backticks optional). */
function hasRow(text: string, first: string, second: string): boolean {
  const cell = (s: string) => `\\s*\`?${s}\`?\\s*`;
  return new RegExp(`^\\|${cell(first)}\\|${cell(second)}\\|`, 'm').test(text);
}

const codes: string[] = Object.values(ErrorCode);

test('docs/errors.md - every ErrorCode has a level-3 heading with the code in backticks', () => {
  const doc = readDoc('errors.md');
  const missing = codes.filter((code) => !new RegExp(`^### .*\`${escapeRe(code)}\``, 'm').test(doc));
  assert.deepEqual(missing, [], `docs/errors.md needs a "### \`CODE\`" section for: ${missing.join(', ')}`);
});

test('docs/errors.md - no code has two headings', () => {
  const doc = readDoc('errors.md');
  const headings = [...doc.matchAll(/^### .*`(SKEIN_ERR_[A-Z0-9_]+)`/gm)].map((m) => m[1]!);
  const dupes = headings.filter((c, i) => headings.indexOf(c) !== i);
  assert.deepEqual(dupes, [], `duplicate sections in docs/errors.md: ${dupes.join(', ')}`);
});

test('docs/errors.md - names no SKEIN_ERR_* code that does not exist', () => {
  const doc = readDoc('errors.md');
  const known = new Set(codes);
  const named = new Set([...doc.matchAll(/(?<![A-Za-z0-9_])SKEIN_ERR_[A-Z][A-Z0-9_]*/g)].map((m) => m[0]));
  const stale = [...named].filter((c) => !known.has(c)).sort();
  assert.deepEqual(stale, [], `docs/errors.md names codes that are not in ErrorCode: ${stale.join(', ')}`);
});

test('docs/errors.md - every Status appears in the status table with its number', () => {
  const doc = readDoc('errors.md');
  const entries = Object.entries(Status);
  assert.equal(entries.length, 17);
  const missing = entries.filter(([name, n]) => !mentions(doc, name) || !hasRow(doc, name, String(n))).map(([name, n]) => `${name}=${n}`);
  assert.deepEqual(missing, [], `docs/errors.md status table lacks: ${missing.join(', ')}`);
});

test('docs/protocol.md - every FrameType is named, with its type code in the frame type table', () => {
  const doc = readDoc('protocol.md');
  const unnamed = Object.keys(FrameType).filter((name) => !mentions(doc, name));
  assert.deepEqual(unnamed, [], `docs/protocol.md does not mention frame types: ${unnamed.join(', ')}`);
  const noRow = Object.entries(FrameType)
    .filter(([name, v]) => !hasRow(doc, `0x0?${v.toString(16)}`, name))
    .map(([name, v]) => `${name}=0x${v.toString(16)}`);
  assert.deepEqual(noRow, [], `docs/protocol.md frame type table lacks: ${noRow.join(', ')}`);
});

test('docs/protocol.md - every GOAWAY reason is listed with its value', () => {
  const doc = readDoc('protocol.md');
  const missing = Object.entries(GoawayReason)
    .filter(([name, v]) => !hasRow(doc, String(v), name))
    .map(([name, v]) => `${name}=${v}`);
  assert.deepEqual(missing, [], `docs/protocol.md GOAWAY reason table lacks: ${missing.join(', ')}`);
});

/** Every .ts file under `dir`. */
function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

test('docs/protocol.md - has a heading for every section src/ cites', () => {
  const doc = readDoc('protocol.md');
  const srcDir = fileURLToPath(new URL('../../../src/', import.meta.url));
  const cited = new Set<string>();
  for (const file of sourceFiles(srcDir)) {
    const text = readFileSync(file, 'utf8');
    if (!text.includes('docs/protocol.md')) continue;
    for (const m of text.matchAll(/§(\d+(?:\.\d+)*)/g)) cited.add(m[1]!);
  }
  assert.ok(cited.size > 0, 'expected src/ to cite docs/protocol.md sections');
  const missing = [...cited].filter((n) => !new RegExp(`^#{2,4} ${escapeRe(n)}[.\\s]`, 'm').test(doc)).sort();
  assert.deepEqual(missing, [], `docs/protocol.md has no heading for cited sections: ${missing.map((n) => `§${n}`).join(', ')}`);
});
