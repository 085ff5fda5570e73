/**
 * Transports: how bytes get between two processes. A transport dials and listens and
 * hands the session layer a plain `Duplex` byte stream (a net.Socket, a tls.TLSSocket or
 * an in-memory duplex). The session uses `cork()`/`uncork()` on it to coalesce writes.
 *
 * Addresses (see `parseTarget`):
 *   host:port, tcp://host:port       TCP
 *   tls://host:port                  TLS (also: host:port with `tls` options given)
 *   unix:/path/to.sock, unix:///path Unix domain socket
 *   memory:NAME                      in-process pair (tests)
 */
import type { Duplex } from 'node:stream';

export interface AbortOptions {
  signal?: AbortSignal;
}

/** TLS settings shared by dialers and listeners. Files are read by the caller (CLI). */
export interface TlsOptions {
  /** PEM CA bundle to trust (client) or to verify client certificates with (server, mTLS). */
  ca?: string | Buffer | Array<string | Buffer>;
  /** PEM certificate chain. Required on the server side. */
  cert?: string | Buffer;
  /** PEM private key. Required on the server side. */
  key?: string | Buffer;
  /** Server: ask for and verify a client certificate (mTLS). @default false */
  requestCert?: boolean;
  /** Client: the name to verify the server certificate against. @default the target host */
  servername?: string;
  /** Client: verify the server certificate. @default true */
  rejectUnauthorized?: boolean;
}

export interface DialOptions extends AbortOptions {
  /** Give up connecting after this many milliseconds (SKEIN_ERR_CONNECT_FAILED). @default 10000 */
  connectTimeoutMs?: number;
  /** TLS options; required for tls:// targets (an empty object means "system CAs"). */
  tls?: TlsOptions;
}

export interface ListenOptions {
  /** TCP/TLS host to bind. @default '127.0.0.1' */
  host?: string;
  /** TCP/TLS port; 0 picks a free one. @default 0 */
  port?: number;
  /** Unix socket path (unix transport). */
  path?: string;
  /** In-memory listener name (memory transport). */
  name?: string;
  /** TLS options; makes a TCP listener a TLS listener. */
  tls?: TlsOptions;
  /** Listen backlog. @default 511 */
  backlog?: number;
}

/** Who is on the other end of a connection. */
export interface PeerInfo {
  /** 'tcp' | 'tls' | 'unix' | 'memory' */
  transport: string;
  /** Printable address: 'host:port', 'unix:/path' or 'memory:NAME'. */
  address: string;
  /** TLS: the verified peer certificate's subject CN, when a client certificate was presented. */
  tlsPeerName?: string;
}

/** A connection handed to the session: a byte stream and who it goes to. */
export interface Connection {
  socket: Duplex;
  peer: PeerInfo;
  /** This side's address, same format as `peer.address`. */
  local: string;
}

export interface Listener {
  /** Address actually bound, e.g. '127.0.0.1:40123', 'unix:/tmp/x.sock', 'memory:a'. */
  readonly address: string;
  /** TCP/TLS: the bound port. */
  readonly port?: number;
  /** Stop accepting new connections; resolves when the listener is closed. Existing connections are untouched. */
  close(): Promise<void>;
}

export interface Transport {
  /** 'tcp' | 'tls' | 'unix' | 'memory' */
  readonly name: string;
  /**
   * Open a connection. Rejects with SkeinError(SKEIN_ERR_CONNECT_FAILED) on refusal,
   * timeout, or TLS failure; with the signal's reason (CANCELLED) when aborted.
   */
  dial(address: string, options?: DialOptions): Promise<Connection>;
  /**
   * Start listening; `onConnection` is called for every accepted connection (after the TLS
   * handshake for TLS), never synchronously within `listen`.
   */
  listen(options: ListenOptions, onConnection: (conn: Connection) => void): Promise<Listener>;
}

/** A parsed target. */
export interface Target {
  transport: 'tcp' | 'tls' | 'unix' | 'memory';
  /** For tcp/tls: 'host:port'; unix: the path; memory: the name. */
  address: string;
  host?: string;
  port?: number;
}
