/**
 * TCP transport: `net` sockets with Nagle off and TCP keep-alive off (skein has its own
 * pings). Listening with `tls` options hands over to the TLS transport.
 */
import { connect, createServer, type Socket } from 'node:net';
import { connectSocket, listenServer, localAddress, parseInetTarget, remoteAddress, resolveConnectTimeout, resolveInetListen, ServerListener, tuneSocket } from './connect.js';
import { formatAddress } from './target.js';
import { tlsTransport } from './tls.js';
import type { Connection, DialOptions, Listener, ListenOptions, Transport } from './transport.js';

async function dial(address: string, options: DialOptions = {}): Promise<Connection> {
  const target = parseInetTarget(address, 'tcp');
  const socket = await connectSocket({
    address: target.address,
    create: () => connect({ host: target.host, port: target.port }),
    readyEvent: 'connect',
    timeoutMs: resolveConnectTimeout(options),
    signal: options.signal,
  });
  tuneSocket(socket, true);
  return {
    socket,
    peer: { transport: 'tcp', address: remoteAddress(socket) ?? target.address },
    local: localAddress(socket) ?? '',
  };
}

async function listen(options: ListenOptions, onConnection: (conn: Connection) => void): Promise<Listener> {
  if (options.tls !== undefined) return tlsTransport.listen(options, onConnection);
  const { host, port, backlog } = resolveInetListen(options);
  const server = createServer({ noDelay: true, keepAlive: false });
  await listenServer(server, { host, port, backlog }, formatAddress(host, port));
  const bound = server.address();
  const boundPort = typeof bound === 'object' && bound !== null ? bound.port : port;
  const listener = new ServerListener(server, formatAddress(typeof bound === 'object' && bound !== null ? bound.address : host, boundPort), boundPort);
  server.on('connection', (socket: Socket) => {
    const peer = remoteAddress(socket);
    // A connection reset before we saw it has no address any more; nothing to hand over.
    if (peer === undefined) {
      socket.destroy();
      return;
    }
    tuneSocket(socket, true);
    onConnection({ socket, peer: { transport: 'tcp', address: peer }, local: localAddress(socket) ?? listener.address });
  });
  return listener;
}

/** The TCP transport ('host:port', 'tcp://host:port'). */
export const tcpTransport: Transport = Object.freeze({ name: 'tcp', dial, listen });
