/**
 * Shared plumbing for the socket transports (tcp, tls, unix): connecting with a timeout
 * and an AbortSignal, listening, closing, and turning Node errors into SkeinErrors.
 *
 * The connect timeout is a plain `setTimeout` rather than `AbortSignal.timeout()` joined
 * with `AbortSignal.any()` (STYLE.md item 7): the two must fail differently (timeout is
 * SKEIN_ERR_CONNECT_FAILED, the caller's abort is its own reason or SKEIN_ERR_CANCELLED),
 * and a timer we own can be cleared the moment the dial settles instead of lingering.
 */
import type { Server, Socket } from 'node:net';
import { createError, ErrorCode, isSkeinError, type SkeinError } from '../errors.js';
import { formatAddress, parseTarget } from './target.js';
import type { DialOptions, Listener, ListenOptions, Target } from './transport.js';

/** @default connect timeout, milliseconds. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** Largest delay `setTimeout` honours; longer timeouts mean "no timeout". */
const MAX_TIMER_MS = 2_147_483_647;

/** Validate `connectTimeoutMs` and apply its default. */
export function resolveConnectTimeout(options: DialOptions): number {
  const ms = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  if (typeof ms !== 'number' || Number.isNaN(ms) || ms <= 0) {
    throw createError(ErrorCode.INVALID_OPTIONS, `connectTimeoutMs must be a positive number of milliseconds, got ${String(ms)}`);
  }
  return ms;
}

/** The error a dial rejects with when its signal aborts: the reason if it is a SkeinError. */
export function abortError(signal: AbortSignal, address: string): SkeinError {
  const reason: unknown = signal.reason;
  if (isSkeinError(reason)) return reason;
  return createError(ErrorCode.CANCELLED, `dial ${address} cancelled`, { cause: reason });
}

/**
 * SKEIN_ERR_CONNECT_FAILED naming the address and the OS (or TLS) reason, e.g.
 * 'connect ECONNREFUSED 127.0.0.1:1234', 'getaddrinfo ENOTFOUND nohost:80',
 * 'tls handshake with 127.0.0.1:1234 failed: self-signed certificate (SELF_SIGNED_CERT_IN_CHAIN)'.
 */
export function connectError(address: string, err: unknown): SkeinError {
  const e = err as Partial<NodeJS.ErrnoException> | undefined;
  let message: string;
  if (e && typeof e.code === 'string' && /^E[A-Z0-9]+$/.test(e.code)) {
    // An OS error (happy-eyeballs AggregateErrors carry the code but no syscall).
    message = `${typeof e.syscall === 'string' ? e.syscall : 'connect'} ${e.code} ${address}`;
  } else if (e && typeof e.message === 'string') {
    const code = typeof e.code === 'string' ? ` (${e.code})` : '';
    message = `tls handshake with ${address} failed: ${e.message}${code}`;
  } else {
    message = `connect ${address} failed: ${String(err)}`;
  }
  return createError(ErrorCode.CONNECT_FAILED, message, { cause: err });
}

export interface ConnectSpec<S extends Socket> {
  /** Printable address for messages ('127.0.0.1:80', 'unix:/x.sock'). */
  address: string;
  /** Creates and starts connecting the socket (called synchronously, at most once). */
  create: () => S;
  /** The event that means "ready": 'connect' (tcp, unix) or 'secureConnect' (tls). */
  readyEvent: 'connect' | 'secureConnect';
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

/**
 * Connect a socket, honouring the timeout and the signal. Every listener and the timer
 * are removed as soon as the attempt settles; on failure the socket is destroyed.
 * Abort and timeout listeners are registered synchronously, so an abort right after the
 * call is always seen.
 */
export function connectSocket<S extends Socket>(spec: ConnectSpec<S>): Promise<S> {
  return new Promise<S>((resolve, reject) => {
    const { signal, address, readyEvent } = spec;
    if (signal?.aborted) {
      reject(abortError(signal, address));
      return;
    }
    let socket: S;
    try {
      socket = spec.create();
    } catch (err) {
      reject(connectError(address, err));
      return;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      socket.off(readyEvent, onReady);
      socket.off('error', onError);
      socket.off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
    };
    const fail = (err: SkeinError): void => {
      done();
      // The socket is dead; a late 'error' from a half-torn-down TLS socket must not crash.
      socket.on('error', ignore);
      socket.destroy();
      reject(err);
    };
    function onReady(): void {
      done();
      resolve(socket);
    }
    function onError(err: Error): void {
      fail(connectError(address, err));
    }
    function onClose(): void {
      fail(createError(ErrorCode.CONNECT_FAILED, `connect ${address} failed: connection closed before it was established`));
    }
    function onAbort(): void {
      fail(abortError(signal!, address));
    }
    socket.once(readyEvent, onReady);
    socket.on('error', onError);
    socket.once('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (spec.timeoutMs <= MAX_TIMER_MS) {
      timer = setTimeout(() => {
        timer = undefined;
        fail(createError(ErrorCode.CONNECT_FAILED, `connect ${address} failed: timed out after ${spec.timeoutMs}ms`));
      }, spec.timeoutMs);
    }
  });
}

function ignore(): void {}

/** Socket options every skein socket gets: no Nagle delay, no TCP keep-alive (skein pings). */
export function tuneSocket(socket: Socket, tcp: boolean): void {
  if (tcp) socket.setNoDelay(true);
  socket.setKeepAlive(false);
}

/** The error `listen` rejects with, e.g. 'listen EADDRINUSE 127.0.0.1:4000'. */
export function listenError(address: string, err: unknown): SkeinError {
  const e = err as Partial<NodeJS.ErrnoException> | undefined;
  const reason = e && typeof e.code === 'string' ? e.code : e && typeof e.message === 'string' ? e.message : String(err);
  // There is no dedicated listen code: an address that cannot be bound is bad configuration.
  return createError(ErrorCode.INVALID_OPTIONS, `listen ${reason} ${address}`, { cause: err, status: 'UNAVAILABLE' });
}

/** Start a server listening; resolves once bound. Removes its own listeners when settled. */
export function listenServer(server: Server, args: { host?: string; port?: number; path?: string; backlog: number }, address: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      reject(listenError(address, err));
    };
    server.once('listening', onListening);
    server.once('error', onError);
    server.listen(args);
  });
}

/**
 * A `Listener` over a net/tls `Server`. `close()` closes the listening handle at once (new
 * connections are refused from then on) and resolves without waiting for existing
 * connections, which are left alone. Idempotent.
 */
export class ServerListener implements Listener {
  readonly address: string;
  readonly port: number | undefined;
  #server: Server;
  #closing: Promise<void> | undefined;
  #afterClose: (() => void) | undefined;

  constructor(server: Server, address: string, port: number | undefined, afterClose?: () => void) {
    this.#server = server;
    this.address = address;
    this.port = port;
    this.#afterClose = afterClose;
    // Accept errors (EMFILE...) surface as server 'error' events after listen: never crash on them.
    server.on('error', ignore);
  }

  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      // Closes the handle synchronously; the server's own 'close' waits for every
      // connection to end, which is exactly what we must not wait for.
      this.#server.close();
      this.#afterClose?.();
      setImmediate(resolve);
    });
    return this.#closing;
  }
}

/** @default listen host */
export const DEFAULT_LISTEN_HOST = '127.0.0.1';
/** @default listen backlog */
export const DEFAULT_BACKLOG = 511;

/** Parse a tcp/tls dial address: 'host:port', 'tcp://host:port', and 'tls://host:port' for the tls transport. */
export function parseInetTarget(address: string, transport: 'tcp' | 'tls'): Target & { host: string; port: number } {
  const target = parseTarget(address);
  if (target.transport !== 'tcp' && target.transport !== transport) {
    throw createError(ErrorCode.INVALID_OPTIONS, `the ${transport} transport cannot dial ${JSON.stringify(address)}`);
  }
  return target as Target & { host: string; port: number };
}

/** 'host:port' of a socket's remote end, or undefined once it is gone. */
export function remoteAddress(socket: Socket): string | undefined {
  return socket.remoteAddress !== undefined && socket.remotePort !== undefined ? formatAddress(socket.remoteAddress, socket.remotePort) : undefined;
}

/** 'host:port' of a socket's local end, or undefined once it is gone. */
export function localAddress(socket: Socket): string | undefined {
  return socket.localAddress !== undefined && socket.localPort !== undefined ? formatAddress(socket.localAddress, socket.localPort) : undefined;
}

/** Validate the common listen options and return host/port/backlog with defaults applied. */
export function resolveInetListen(options: ListenOptions): { host: string; port: number; backlog: number } {
  const host = options.host ?? DEFAULT_LISTEN_HOST;
  const port = options.port ?? 0;
  const backlog = options.backlog ?? DEFAULT_BACKLOG;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw createError(ErrorCode.INVALID_OPTIONS, `listen port must be an integer 0..65535, got ${String(port)}`);
  if (!Number.isInteger(backlog) || backlog < 0) throw createError(ErrorCode.INVALID_OPTIONS, `listen backlog must be a non-negative integer, got ${String(backlog)}`);
  return { host, port, backlog };
}

