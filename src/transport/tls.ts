/**
 * TLS transport: node:tls over TCP, TLS 1.2 at least.
 *
 * Client: verifies the server certificate against `tls.ca` (or the system CAs) and the
 * target host (or `tls.servername`) unless `rejectUnauthorized: false`; a client
 * certificate is presented when `cert`/`key` are given. The dial resolves only after the
 * handshake, and the connect timeout covers TCP connect and handshake together.
 *
 * Server: `onConnection` is called only after the handshake has completed
 * ('secureConnection'). A client that fails the handshake (plaintext, wrong version, no
 * or untrusted client certificate under mTLS) is destroyed and never handed over; the
 * listener keeps serving. A handshake already under way when the listener closes still
 * completes and is handed over (that connection existed before the close). With
 * `requestCert` the verified client certificate's subject CN
 * is given as `peer.tlsPeerName`. (The dialer's connection likewise carries the verified
 * server certificate's CN.)
 *
 * Note for mTLS under TLS 1.3: the client finishes its handshake before the server has
 * checked the client certificate, so a refused client sees its dial succeed and then the
 * socket fail with an alert, rather than a failed dial.
 */
import type { Socket } from 'node:net';
import { connect, createServer, type ConnectionOptions, type PeerCertificate, type TLSSocket } from 'node:tls';
import { createError, ErrorCode } from '../errors.js';
import { connectSocket, listenServer, localAddress, parseInetTarget, remoteAddress, resolveConnectTimeout, resolveInetListen, ServerListener, tuneSocket } from './connect.js';
import { formatAddress } from './target.js';
import type { Connection, DialOptions, Listener, ListenOptions, PeerInfo, TlsOptions, Transport } from './transport.js';

/** Oldest protocol version either side accepts. */
export const TLS_MIN_VERSION = 'TLSv1.2';

/** Subject CN of a verified peer certificate, if any. */
function verifiedPeerName(socket: TLSSocket): string | undefined {
  if (!socket.authorized) return undefined;
  const cert: PeerCertificate | undefined = socket.getPeerCertificate();
  const cn: unknown = cert?.subject?.CN;
  if (typeof cn === 'string' && cn !== '') return cn;
  if (Array.isArray(cn) && typeof cn[0] === 'string') return cn[0];
  return undefined;
}

function peerInfo(address: string, socket: TLSSocket): PeerInfo {
  const peer: PeerInfo = { transport: 'tls', address };
  const name = verifiedPeerName(socket);
  if (name !== undefined) peer.tlsPeerName = name;
  return peer;
}

async function dial(address: string, options: DialOptions = {}): Promise<Connection> {
  const target = parseInetTarget(address, 'tls');
  const tls: TlsOptions = options.tls ?? {};
  const connectOptions: ConnectionOptions = {
    host: target.host,
    port: target.port,
    minVersion: TLS_MIN_VERSION,
    rejectUnauthorized: tls.rejectUnauthorized ?? true,
  };
  if (tls.ca !== undefined) connectOptions.ca = tls.ca;
  if (tls.cert !== undefined) connectOptions.cert = tls.cert;
  if (tls.key !== undefined) connectOptions.key = tls.key;
  if (tls.servername !== undefined) connectOptions.servername = tls.servername;
  const socket = await connectSocket({
    address: target.address,
    create: () => connect(connectOptions),
    readyEvent: 'secureConnect',
    timeoutMs: resolveConnectTimeout(options),
    signal: options.signal,
  });
  tuneSocket(socket, true);
  return {
    socket,
    peer: peerInfo(remoteAddress(socket) ?? target.address, socket),
    local: localAddress(socket) ?? '',
  };
}

async function listen(options: ListenOptions, onConnection: (conn: Connection) => void): Promise<Listener> {
  const tls = options.tls;
  if (tls?.cert === undefined || tls.key === undefined) {
    throw createError(ErrorCode.INVALID_OPTIONS, 'a TLS listener needs tls.cert and tls.key');
  }
  const { host, port, backlog } = resolveInetListen(options);
  const requestCert = tls.requestCert === true;
  let server;
  try {
    server = createServer({
      cert: tls.cert,
      key: tls.key,
      ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
      requestCert,
      // mTLS means "verify": only an explicit `rejectUnauthorized: false` lets unverified clients in.
      rejectUnauthorized: requestCert && tls.rejectUnauthorized !== false,
      minVersion: TLS_MIN_VERSION,
      noDelay: true,
      keepAlive: false,
    });
  } catch (err) {
    throw createError(ErrorCode.INVALID_OPTIONS, `bad TLS listener options: ${(err as Error).message}`, { cause: err });
  }
  await listenServer(server, { host, port, backlog }, formatAddress(host, port));
  const bound = server.address();
  const boundHost = typeof bound === 'object' && bound !== null ? bound.address : host;
  const boundPort = typeof bound === 'object' && bound !== null ? bound.port : port;
  const listener = new ServerListener(server, formatAddress(boundHost, boundPort), boundPort);
  // Raw TCP sockets, before the handshake.
  server.on('connection', (raw: Socket) => tuneSocket(raw, true));
  // A failed handshake (plaintext client, bad certificate...): drop that socket only.
  server.on('tlsClientError', (_err: Error, socket: TLSSocket) => socket.destroy());
  server.on('secureConnection', (socket: TLSSocket) => {
    // A handshake that was under way when the listener closed still completes: that
    // connection existed already, and its dialer may well have been told it is up.
    const peer = remoteAddress(socket);
    if (peer === undefined) {
      socket.destroy();
      return;
    }
    onConnection({ socket, peer: peerInfo(peer, socket), local: localAddress(socket) ?? listener.address });
  });
  return listener;
}

/** The TLS transport ('tls://host:port', or 'host:port' with `tls` options). */
export const tlsTransport: Transport = Object.freeze({ name: 'tls', dial, listen });
