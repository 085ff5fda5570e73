/**
 * Runs the transport compliance suite (test/compliance/transport.ts) against every
 * transport: tcp, tls (with and without mTLS), unix (in a temp dir) and memory.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryTransport } from '../../../src/transport/memory.js';
import { tcpTransport } from '../../../src/transport/tcp.js';
import { tlsTransport } from '../../../src/transport/tls.js';
import { unixTransport } from '../../../src/transport/unix.js';
import { transportCompliance } from '../../compliance/transport.js';
import { clientTls, serverTls } from '../../helpers/tls.js';

transportCompliance('tcp', async () => ({ transport: tcpTransport, listenOptions: { host: '127.0.0.1', port: 0 } }));

transportCompliance('tls', async () => ({
  transport: tlsTransport,
  listenOptions: { host: '127.0.0.1', port: 0, tls: serverTls() },
  dialOptions: { tls: clientTls() },
}));

transportCompliance('tls with mTLS', async () => ({
  transport: tlsTransport,
  listenOptions: { host: '127.0.0.1', port: 0, tls: serverTls({ mtls: true }) },
  dialOptions: { tls: clientTls({ clientCert: true }) },
}));

transportCompliance('unix', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'skein-unix-'));
  return {
    transport: unixTransport,
    listenOptions: { path: join(dir, 'skein.sock') },
    teardown: () => rm(dir, { recursive: true, force: true }),
  };
});

transportCompliance('memory', async () => ({ transport: memoryTransport, listenOptions: { name: `compliance-${randomUUID()}` } }));
