import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isSkeinError } from '../../../src/errors.js';
import * as transport from '../../../src/transport/index.js';
import type { Connection } from '../../../src/transport/transport.js';
import { readBytes, waitFor } from '../../helpers/wait.js';

function ignore(): void {}

describe('transport index', () => {
  it('getTransport - finds each transport by name', () => {
    assert.equal(transport.getTransport('tcp'), transport.tcpTransport);
    assert.equal(transport.getTransport('tls'), transport.tlsTransport);
    assert.equal(transport.getTransport('unix'), transport.unixTransport);
    assert.equal(transport.getTransport('memory'), transport.memoryTransport);
    for (const t of [transport.tcpTransport, transport.tlsTransport, transport.unixTransport, transport.memoryTransport]) {
      assert.equal(transport.getTransport(t.name), t);
    }
  });

  it('getTransport - an unknown name fails with SKEIN_ERR_INVALID_OPTIONS', () => {
    assert.throws(() => transport.getTransport('carrier-pigeon'), (err: unknown) => isSkeinError(err) && err.code === ErrorCode.INVALID_OPTIONS);
  });

  it('dial - picks the transport from the target', async () => {
    const accepted: Connection[] = [];
    const mem = await transport.memoryTransport.listen({ name: `index-${process.pid}` }, (c) => accepted.push(c));
    const tcp = await transport.tcpTransport.listen({}, (c) => {
      c.socket.on('error', ignore);
      c.socket.pipe(c.socket);
    });
    try {
      const m = await transport.dial(mem.address);
      assert.equal(m.peer.transport, 'memory');
      await waitFor(() => accepted.length === 1, { what: 'the memory connection' });
      for (const target of [tcp.address, `tcp://${tcp.address}`]) {
        const c = await transport.dial(target);
        c.socket.on('error', ignore);
        assert.equal(c.peer.transport, 'tcp');
        const reply = readBytes(c.socket, 1);
        c.socket.write('!');
        assert.equal((await reply).toString(), '!');
        c.socket.destroy();
      }
      m.socket.destroy();
    } finally {
      await mem.close();
      await tcp.close();
    }
  });

  it('dial - a malformed target fails with SKEIN_ERR_INVALID_OPTIONS', async () => {
    await assert.rejects(transport.dial('ftp://x:1'), (err: unknown) => isSkeinError(err) && err.code === ErrorCode.INVALID_OPTIONS);
  });
});
