/**
 * TLS fixtures for tests (see test/fixtures/tls/README.md): a test CA, a server
 * certificate for CN=localhost (SAN DNS:localhost, IP:127.0.0.1, IP:::1), a client
 * certificate (CN=skein-test-client) for mTLS, and an unrelated CA plus a client it signed.
 *
 *   const listener = await tlsTransport.listen({ tls: serverTls({ mtls: true }) }, onConn);
 *   const conn = await tlsTransport.dial(listener.address, { tls: clientTls({ clientCert: true }) });
 *
 * Tests run compiled from dist/test/helpers/, so the folder is found relative to the repo
 * root (three levels up from here), which is also right when run from source.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { TlsOptions } from '../../src/transport/transport.js';

/** Absolute path of test/fixtures/tls/. */
export const TLS_FIXTURES_DIR: string = fixturesDir();

function fixturesDir(): string {
  const here = fileURLToPath(import.meta.url).replace(/\\/g, '/');
  // dist/test/helpers/tls.js -> ../../../ ; test/helpers/tls.ts (ts-node / type stripping) -> ../../
  const up = here.includes('/dist/test/helpers/') ? '../../../test/fixtures/tls/' : '../fixtures/tls/';
  return fileURLToPath(new URL(up, import.meta.url));
}

export interface TlsFixtures {
  /** The test CA certificate (PEM): trust this to verify `serverCert` and `clientCert`. */
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** An unrelated CA: verifying the server against it fails. */
  otherCa: string;
  /** A client certificate signed by `otherCa`: an mTLS server trusting `ca` refuses it. */
  otherClientCert: string;
  otherClientKey: string;
}

let cached: TlsFixtures | undefined;

/** The fixture PEMs (read once). */
export function tlsFixtures(): TlsFixtures {
  if (cached === undefined) {
    const read = (name: string): string => readFileSync(`${TLS_FIXTURES_DIR}${name}`, 'utf8');
    cached = Object.freeze({
      ca: read('ca.pem'),
      serverCert: read('server.pem'),
      serverKey: read('server-key.pem'),
      clientCert: read('client.pem'),
      clientKey: read('client-key.pem'),
      otherCa: read('other-ca.pem'),
      otherClientCert: read('other-client.pem'),
      otherClientKey: read('other-client-key.pem'),
    });
  }
  return cached;
}

/** Listener TLS options: the server cert; with `mtls`, require a client cert signed by the test CA. */
export function serverTls(options: { mtls?: boolean } = {}): TlsOptions {
  const f = tlsFixtures();
  return options.mtls === true ? { cert: f.serverCert, key: f.serverKey, ca: f.ca, requestCert: true } : { cert: f.serverCert, key: f.serverKey };
}

/**
 * Dialer TLS options trusting the test CA. `clientCert` presents the test client cert,
 * `untrustedClientCert` the one from the other CA, `wrongCa` trusts only the other CA.
 */
export function clientTls(options: { clientCert?: boolean; untrustedClientCert?: boolean; wrongCa?: boolean } = {}): TlsOptions {
  const f = tlsFixtures();
  const tls: TlsOptions = { ca: options.wrongCa === true ? f.otherCa : f.ca };
  if (options.clientCert === true) {
    tls.cert = f.clientCert;
    tls.key = f.clientKey;
  } else if (options.untrustedClientCert === true) {
    tls.cert = f.otherClientCert;
    tls.key = f.otherClientKey;
  }
  return tls;
}
