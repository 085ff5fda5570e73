import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ErrorCode, isSkeinError } from '../../../src/errors.js';
import { dial } from '../../../src/transport/index.js';
import { unixTransport } from '../../../src/transport/unix.js';
import type { Connection } from '../../../src/transport/transport.js';
import { once, readBytes, withTimeout } from '../../helpers/wait.js';

function ignore(): void {}

function echo(conn: Connection): void {
  conn.socket.on('error', ignore);
  conn.socket.pipe(conn.socket);
}

async function roundTrip(conn: Connection): Promise<void> {
  conn.socket.on('error', ignore);
  const reply = readBytes(conn.socket, 2);
  conn.socket.write('hi');
  assert.equal((await reply).toString(), 'hi');
  conn.socket.destroy();
}

/** Leave a socket file behind: a child process listens on it and is killed with SIGKILL. */
async function makeStaleSocket(path: string): Promise<void> {
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await withTimeout(once(child.stdout, 'data'), 10_000, 'the child to listen');
  const exited = once(child, 'exit', 10_000);
  child.kill('SIGKILL');
  await exited;
  assert.ok((await lstat(path)).isSocket(), 'the stale socket file is there');
}

describe('unix transport', () => {
  let dir: string;
  let path: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'skein-unix-'));
    path = join(dir, 's.sock');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('unix - a stale socket file nobody answers on is replaced', async () => {
    await makeStaleSocket(path);
    const listener = await unixTransport.listen({ path }, echo);
    try {
      await roundTrip(await unixTransport.dial(listener.address));
    } finally {
      await listener.close();
    }
  });

  it('unix - a socket someone listens on is not taken over', async () => {
    const other = createServer((s) => {
      s.on('error', ignore); // the stale-socket probe connects and hangs up
      s.end('other');
    });
    await new Promise<void>((resolve) => other.listen(path, resolve));
    try {
      await assert.rejects(unixTransport.listen({ path }, ignore), (err: unknown) => isSkeinError(err) && err.code === ErrorCode.INVALID_OPTIONS && err.message === `listen EADDRINUSE unix:${path}`);
      const conn = await unixTransport.dial(path);
      conn.socket.on('error', ignore);
      assert.equal((await readBytes(conn.socket, 5)).toString(), 'other', 'the first listener still serves');
      conn.socket.destroy();
    } finally {
      await new Promise<void>((resolve) => other.close(() => resolve()));
    }
  });

  it('unix - a regular file at the path is left alone', async () => {
    await writeFile(path, 'precious');
    await assert.rejects(unixTransport.listen({ path }, ignore), (err: unknown) => isSkeinError(err) && err.code === ErrorCode.INVALID_OPTIONS);
    assert.ok((await lstat(path)).isFile());
  });

  it('unix - closing the listener removes the socket file', async () => {
    const listener = await unixTransport.listen({ path }, ignore);
    assert.ok(existsSync(path));
    await listener.close();
    assert.equal(existsSync(path), false);
  });

  it('unix - dial accepts unix:/path, unix:///path and a bare path', async () => {
    const listener = await unixTransport.listen({ path }, echo);
    try {
      assert.equal(listener.address, `unix:${path}`);
      assert.equal(listener.port, undefined);
      for (const address of [`unix:${path}`, `unix://${path}`, path]) await roundTrip(await unixTransport.dial(address));
      await roundTrip(await dial(`unix://${path}`));
    } finally {
      await listener.close();
    }
  });

  it('unix - dialing a missing path fails with SKEIN_ERR_CONNECT_FAILED naming it', async () => {
    await assert.rejects(unixTransport.dial(path), (err: unknown) => isSkeinError(err) && err.code === ErrorCode.CONNECT_FAILED && err.message === `connect ENOENT unix:${path}`);
  });

  it('unix - listening without a path fails with SKEIN_ERR_INVALID_OPTIONS', async () => {
    await assert.rejects(unixTransport.listen({}, ignore), (err: unknown) => isSkeinError(err) && err.code === ErrorCode.INVALID_OPTIONS);
  });
});
