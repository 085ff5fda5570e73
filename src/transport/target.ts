/**
 * Target strings: which transport a dial goes through, and to where.
 *
 *   host:port            TCP (TLS when the caller says so, e.g. `dial()` given `tls` options)
 *   tcp://host:port      TCP, always (explicit scheme wins over `opts.tls`)
 *   tls://host:port      TLS
 *   [::1]:port           IPv6 literals go in brackets, with or without a scheme
 *   unix:/path, unix:///path   Unix domain socket (`unix:rel/path` is a relative path)
 *   memory:NAME          in-process listener (tests)
 *
 * Ports are integers 0..65535 (0 only makes sense for listen addresses). Anything else,
 * including other schemes, paths after the port and unbracketed IPv6, is refused with
 * SKEIN_ERR_INVALID_OPTIONS rather than guessed at.
 */
import { isIPv6 } from 'node:net';
import { createError, ErrorCode } from '../errors.js';
import type { Target } from './transport.js';

/** Host names: letters, digits, '-', '_' and '.' (IPv4 literals included). */
const HOST_NAME = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;

function invalid(s: string, why: string): never {
  throw createError(ErrorCode.INVALID_OPTIONS, `invalid target ${JSON.stringify(s)}: ${why}`);
}

/** 'host:port', with IPv6 hosts in brackets: formatAddress('::1', 80) === '[::1]:80'. */
export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Parse 'host:port' / '[v6]:port' into its parts (no scheme). */
function parseHostPort(s: string, rest: string): { host: string; port: number } {
  let host: string;
  let portText: string;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0) invalid(s, "missing ']' after IPv6 address");
    host = rest.slice(1, close);
    if (!isIPv6(host)) invalid(s, `${JSON.stringify(host)} is not an IPv6 address`);
    if (rest[close + 1] !== ':') invalid(s, 'expected ":port" after "]"');
    portText = rest.slice(close + 2);
  } else {
    const colon = rest.lastIndexOf(':');
    if (colon < 0) invalid(s, 'expected host:port');
    host = rest.slice(0, colon);
    portText = rest.slice(colon + 1);
    if (host.includes(':')) invalid(s, 'IPv6 addresses must be in brackets, e.g. [::1]:4000');
    if (host === '') invalid(s, 'empty host');
    if (!HOST_NAME.test(host)) invalid(s, `bad host ${JSON.stringify(host)}`);
  }
  if (!/^\d{1,5}$/.test(portText)) invalid(s, `bad port ${JSON.stringify(portText)}`);
  const port = Number(portText);
  if (port > 65535) invalid(s, `port ${port} out of range`);
  return { host, port };
}

/**
 * Parse a target string (see the module comment). `opts.tls` turns a scheme-less
 * `host:port` into a TLS target. Throws SkeinError(SKEIN_ERR_INVALID_OPTIONS) on anything
 * malformed.
 */
export function parseTarget(s: string, opts: { tls?: boolean } = {}): Target {
  if (typeof s !== 'string' || s === '') invalid(String(s), 'empty');
  if (/\s/.test(s)) invalid(s, 'contains whitespace');

  if (s.startsWith('memory:')) {
    const name = s.slice('memory:'.length);
    if (name === '') invalid(s, 'empty memory name');
    return { transport: 'memory', address: name };
  }
  if (s.startsWith('unix:')) {
    let path = s.slice('unix:'.length);
    if (path.startsWith('//')) {
      path = path.slice(2);
      if (!path.startsWith('/')) invalid(s, 'unix:// must be followed by an absolute path (unix:///path)');
    }
    if (path === '') invalid(s, 'empty unix socket path');
    if (path.includes('\0')) invalid(s, 'NUL in unix socket path');
    return { transport: 'unix', address: path };
  }

  let transport: 'tcp' | 'tls' = opts.tls === true ? 'tls' : 'tcp';
  let rest = s;
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(s);
  if (scheme) {
    const name = scheme[1]!.toLowerCase();
    if (name !== 'tcp' && name !== 'tls') invalid(s, `unknown scheme ${JSON.stringify(name)} (expected tcp://, tls://, unix: or memory:)`);
    transport = name;
    rest = s.slice(scheme[0].length);
  }
  const { host, port } = parseHostPort(s, rest);
  return { transport, address: formatAddress(host, port), host, port };
}
