/** UDP helpers for the multicast tests. */
import { createSocket } from 'node:dgram';

/** A UDP port nobody on this host uses right now (bound on 127.0.0.1, then released). */
export async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => resolve());
  });
  const { port } = s.address();
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
