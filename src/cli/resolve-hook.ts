/**
 * ESM resolve hook for `skein serve`, registered with `module.register()` before the
 * user's service modules are imported.
 *
 * A service module says `import { service } from 'skein'`. When it lives in a project that
 * has skein in its node_modules, or inside this package, normal resolution finds it and
 * this hook changes nothing. When it lives elsewhere (a temp dir, a scratch file, a
 * global install of the CLI), normal resolution fails; the hook then maps the bare
 * specifiers `skein` and `skein/internal` to the entry points of the package this CLI
 * belongs to, so the module and the server share one copy of skein.
 *
 * This file runs on Node's hooks thread: it imports nothing.
 */
import type { InitializeHook, ResolveHook } from 'node:module';

/** Data passed from `register()`: specifier → file URL of this package's entry point. */
export interface ResolveHookData {
  map: Record<string, string>;
}

let map: Record<string, string> = {};

export const initialize: InitializeHook<ResolveHookData> = (data) => {
  map = { ...data.map };
};

export const resolve: ResolveHook = async (specifier, context, nextResolve) => {
  const fallback = Object.hasOwn(map, specifier) ? map[specifier] : undefined;
  if (fallback === undefined) return nextResolve(specifier, context);
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'ERR_PACKAGE_PATH_NOT_EXPORTED') throw err;
    return { url: fallback, shortCircuit: true };
  }
};
