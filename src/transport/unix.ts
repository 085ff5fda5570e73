/**
 * Unix domain socket transport ('unix:/path', 'unix:///path').
 *
 * Listening on a path that already exists: if it is a socket and nothing answers on it
 * (ECONNREFUSED: the process that made it is gone), it is stale and is removed first; if
 * something answers, or the path is not a socket, the file is left alone and listen fails
 * with "listen EADDRINUSE unix:/path". Closing the listener removes the socket file.
 *
 * Unix clients have no address of their own, so both ends of a connection report the
 * listening path as `peer.address` and `local`.
 */
import { unlinkSync } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { createError, ErrorCode } from '../errors.js';
import { connectSocket, DEFAULT_BACKLOG, listenServer, resolveConnectTimeout, ServerListener, tuneSocket } from './connect.js';
import { parseTarget } from './target.js';
import type { Connection, DialOptions, Listener, ListenOptions, Transport } from './transport.js';

/** How long the stale-socket probe waits for an answer before assuming someone is there. */
const PROBE_TIMEOUT_MS = 1000;

/** The socket path of a dial address: 'unix:/p', 'unix:///p' or a bare path. */
function socketPath(address: string): string {
  if (typeof address !== 'string' || address === '') throw createError(ErrorCode.INVALID_OPTIONS, 'empty unix socket path');
  if (!address.startsWith('unix:')) return address;
  return parseTarget(address).address;
}

/** True if something accepts connections on `path` (or might: anything but a clean refusal). */
function answers(path: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = connect({ path });
    const finish = (alive: boolean): void => {
      clearTimeout(timer);
      socket.removeAllListeners();
      socket.on('error', () => {});
      socket.destroy();
      resolve(alive);
    };
    const timer = setTimeout(() => finish(true), PROBE_TIMEOUT_MS);
    socket.once('connect', () => finish(true));
    socket.once('error', (err: NodeJS.ErrnoException) => finish(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT'));
  });
}

/** Remove `path` if it is a socket file nobody listens on. */
async function removeStale(path: string): Promise<void> {
  let stat;
  try {
    stat = await lstat(path);
  } catch {
    return; // nothing there (or unreadable: let listen report it)
  }
  if (!stat.isSocket()) return;
  if (await answers(path)) return;
  await unlink(path).catch(() => {});
}

async function dial(address: string, options: DialOptions = {}): Promise<Connection> {
  const path = socketPath(address);
  const printable = `unix:${path}`;
  const socket = await connectSocket({
    address: printable,
    create: () => connect({ path }),
    readyEvent: 'connect',
    timeoutMs: resolveConnectTimeout(options),
    signal: options.signal,
  });
  tuneSocket(socket, false);
  return { socket, peer: { transport: 'unix', address: printable }, local: printable };
}

async function listen(options: ListenOptions, onConnection: (conn: Connection) => void): Promise<Listener> {
  const path = options.path;
  if (typeof path !== 'string' || path === '') throw createError(ErrorCode.INVALID_OPTIONS, 'a unix listener needs a socket path (options.path)');
  const backlog = options.backlog ?? DEFAULT_BACKLOG;
  const printable = `unix:${path}`;
  await removeStale(path);
  const server = createServer();
  await listenServer(server, { path, backlog }, printable);
  const listener = new ServerListener(server, printable, undefined, () => {
    // libuv unlinks the file when the handle closes; this covers platforms that do not.
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
  });
  server.on('connection', (socket: Socket) => {
    tuneSocket(socket, false);
    onConnection({ socket, peer: { transport: 'unix', address: printable }, local: printable });
  });
  return listener;
}

/** The unix domain socket transport. */
export const unixTransport: Transport = Object.freeze({ name: 'unix', dial, listen });
