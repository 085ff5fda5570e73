/**
 * The discovery plugin family: one `DiscoveryPlugin` per URL scheme, looked up by the
 * scheme of a discovery URL (docs/discovery.md).
 *
 *   registerDiscovery(plugin)          // each plugin file's setup() does this
 *   resolverFor('dns://echo.local')    // → the 'dns' plugin's resolver for that URL
 *   registrarFor('multicast://')       // → INVALID_OPTIONS for read-only schemes
 *
 * Registration is explicit: importing a plugin file registers nothing; its `setup()` does,
 * and `setupDiscovery()` (src/discovery/index.ts) calls the built-in ones. Plugins that
 * live elsewhere (the embedded `skein://` registry, the etcd adapter) call
 * `registerDiscovery` from their own `setup()`.
 *
 * Host lists. Several schemes take a comma-separated list of hosts
 * (`static://a:1,b:2`, `etcd://h1:2379,h2:2379`), which WHATWG `URL` refuses (it reads
 * `1,b:2` as a port). `parseDiscoveryUrl` accepts them by percent-encoding the host list
 * into a single opaque host (`static://a%3A1%2Cb%3A2`) — the user info, path and query
 * stay where they were — and plugins read the hosts back with `discoveryHosts(url)`,
 * which also handles the ordinary single-host form. Plugins must not read `url.host`
 * directly for a host list.
 */
import { createError, ErrorCode } from '../errors.js';
import type { DiscoveryPlugin, Registrar, Resolver } from './types.js';

const plugins = new Map<string, DiscoveryPlugin>();

/** A URL scheme: a letter, then letters, digits, '+', '-', '.' (RFC 3986), lower case here. */
const SCHEME = /^[a-z][a-z0-9+.-]*$/;

export interface RegisterDiscoveryOptions {
  /**
   * Replace a different plugin already registered for the same scheme (tests, or an
   * application overriding a built-in). Registering the very same plugin object again is
   * always a no-op, so `setup()` functions may run more than once.
   * @default false
   */
  replace?: boolean;
}

/**
 * Register `plugin` for its `scheme`. Throws SKEIN_ERR_INVALID_OPTIONS for a malformed
 * scheme, or when another plugin holds the scheme and `options.replace` is not set.
 */
export function registerDiscovery(plugin: DiscoveryPlugin, options: RegisterDiscoveryOptions = {}): void {
  if (typeof plugin !== 'object' || plugin === null || typeof plugin.resolver !== 'function') {
    throw createError(ErrorCode.INVALID_OPTIONS, 'registerDiscovery(): expected a DiscoveryPlugin with a resolver() method');
  }
  const scheme = plugin.scheme;
  if (typeof scheme !== 'string' || !SCHEME.test(scheme)) {
    throw createError(ErrorCode.INVALID_OPTIONS, `registerDiscovery(): bad scheme ${JSON.stringify(scheme)} (lower case, without the colon, e.g. "static")`);
  }
  const existing = plugins.get(scheme);
  if (existing === plugin) return;
  if (existing !== undefined && options.replace !== true) {
    throw createError(ErrorCode.INVALID_OPTIONS, `registerDiscovery(): the scheme "${scheme}:" is already registered (pass { replace: true } to replace it)`);
  }
  plugins.set(scheme, plugin);
}

/** Remove the plugin for `scheme`; true if there was one. For tests and applications that swap plugins. */
export function unregisterDiscovery(scheme: string): boolean {
  return plugins.delete(scheme);
}

/** The registered schemes, sorted. */
export function discoverySchemes(): string[] {
  return [...plugins.keys()].sort();
}

function knownSchemes(): string {
  const schemes = discoverySchemes();
  return schemes.length === 0 ? 'none registered: call setupDiscovery()' : schemes.map((s) => `${s}://`).join(', ');
}

/** `s` without its user info (passwords must not reach error messages or logs). */
function redact(s: string): string {
  return s.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#]*@/, '$1***@');
}

function invalidUrl(input: string, why: string): never {
  throw createError(ErrorCode.INVALID_OPTIONS, `invalid discovery URL ${JSON.stringify(redact(input))}: ${why} (known schemes: ${knownSchemes()})`);
}

/**
 * Parse a discovery URL into a `URL`, accepting comma-separated host lists (see the module
 * comment). A `URL` given in is returned as a copy. The scheme is lower-cased. Throws
 * SKEIN_ERR_INVALID_OPTIONS for anything that is not `scheme:...`; whether the scheme is
 * registered is checked by `discoveryFor`.
 */
export function parseDiscoveryUrl(url: string | URL): URL {
  if (url instanceof URL) return new URL(url.href);
  if (typeof url !== 'string') invalidUrl(String(url), 'expected a string or URL');
  const input = url.trim();
  if (input === '') invalidUrl(input, 'empty');
  if (/\s/.test(input)) invalidUrl(input, 'contains whitespace');
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:/.test(input)) invalidUrl(input, 'expected scheme://..., e.g. static://127.0.0.1:7700');
  try {
    return new URL(input);
  } catch {
    // fall through: maybe a host list
  }
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/s.exec(input);
  if (m !== null) {
    const [, scheme, authority, rest] = m as unknown as [string, string, string, string];
    const at = authority.lastIndexOf('@');
    const userinfo = at >= 0 ? authority.slice(0, at + 1) : '';
    const hosts = authority.slice(at + 1);
    if (hosts.includes(',')) {
      if (hosts.split(',').some((h) => h === '')) invalidUrl(input, 'empty entry in the host list');
      try {
        return new URL(`${scheme}://${userinfo}${encodeURIComponent(hosts)}${rest}`);
      } catch {
        // reported below
      }
    }
  }
  return invalidUrl(input, 'not a URL');
}

/**
 * The hosts of a discovery URL as written ('host', 'host:port', '[v6]:port'), in order:
 * one for `skein://h:1`, several for `static://a:1,b:2` (once through `parseDiscoveryUrl`),
 * none for `multicast://`. Not validated: each plugin checks what it needs.
 */
export function discoveryHosts(url: URL): string[] {
  let raw: string;
  try {
    raw = decodeURIComponent(url.host);
  } catch {
    raw = url.host;
  }
  if (raw === '') return [];
  return raw.split(',');
}

/** The plugin for the URL's scheme; SKEIN_ERR_INVALID_OPTIONS (naming the known schemes) if none. */
export function discoveryFor(url: string | URL): DiscoveryPlugin {
  const parsed = parseDiscoveryUrl(url);
  const scheme = parsed.protocol.slice(0, -1);
  const plugin = plugins.get(scheme);
  if (plugin === undefined) invalidUrl(typeof url === 'string' ? url : url.href, `unknown scheme "${scheme}:"`);
  return plugin;
}

/** A new resolver for `url` (the caller closes it). */
export function resolverFor(url: string | URL): Resolver {
  const parsed = parseDiscoveryUrl(url);
  return discoveryFor(parsed).resolver(parsed);
}

/** A new registrar for `url` (the caller closes it); SKEIN_ERR_INVALID_OPTIONS for read-only schemes (static, dns). */
export function registrarFor(url: string | URL): Registrar {
  const parsed = parseDiscoveryUrl(url);
  const plugin = discoveryFor(parsed);
  if (typeof plugin.registrar !== 'function') {
    const writable = discoverySchemes().filter((s) => typeof plugins.get(s)?.registrar === 'function');
    throw createError(
      ErrorCode.INVALID_OPTIONS,
      `"${plugin.scheme}:" discovery is read-only: instances cannot register there (schemes with a registrar: ${writable.length === 0 ? 'none registered' : writable.map((s) => `${s}://`).join(', ')})`,
    );
  }
  return plugin.registrar(parsed);
}
