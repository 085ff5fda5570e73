/**
 * Raw baseline server: plain node:net with length-prefixed frames (see framing.ts).
 * Echo frames are written back zero-copy, all replies to one read coalesced under
 * cork()/uncork(); stream requests are answered with frames packed into ~64 KiB writes
 * that respect backpressure ('drain').
 */
import net from 'node:net';
import { serverMain, fatal } from '../lib/child.js';
import { FrameDecoder, HEADER, STREAM_BIT } from './framing.js';

const BATCH_BYTES = 64 * 1024;

function streamTo(socket: net.Socket, id: number, count: number, size: number): void {
  const payload = Buffer.alloc(size, 7);
  const per = HEADER + size;
  const perBatch = Math.max(1, Math.floor(BATCH_BYTES / per));
  let sent = 0;
  const pump = (): void => {
    while (sent < count && !socket.destroyed) {
      const n = Math.min(perBatch, count - sent);
      const buf = Buffer.allocUnsafe(n * per);
      for (let i = 0, off = 0; i < n; i++, off += per) {
        buf.writeUInt32LE(size, off);
        buf.writeUInt32LE(id, off + 4);
        payload.copy(buf, off + HEADER);
      }
      sent += n;
      if (!socket.write(buf)) {
        socket.once('drain', pump);
        return;
      }
    }
  };
  pump();
}

let connections = 0;

serverMain(async () => {
  const server = net.createServer({ noDelay: true }, (socket) => {
    connections++;
    socket.setNoDelay(true);
    socket.on('close', () => connections--);
    socket.on('error', () => {});
    const decoder = new FrameDecoder((frame, id) => {
      if (id & STREAM_BIT) streamTo(socket, id, frame.readUInt32LE(HEADER), frame.readUInt32LE(HEADER + 4));
      else socket.write(frame);
    });
    socket.on('data', (chunk: Buffer) => {
      socket.cork();
      decoder.push(chunk);
      socket.uncork();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve);
  });
  const addr = server.address() as net.AddressInfo;
  return {
    address: `${addr.address}:${addr.port}`,
    connections: () => connections,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}).catch(fatal);
