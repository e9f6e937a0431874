/// <reference lib="dom" />
/**
 * Model files cached across reloads with the Cache API. {@link cachingFetch} wraps `fetch` for `urlSource`:
 * each Range response is stored under its URL + range (+ the file's ETag from the last HEAD, so that a file
 * changed on the server misses), as a 200 — the Cache API refuses 206 responses — and is answered from there
 * next time as the 206 it was. HEAD requests (file sizes) and whole-file GETs always go to the server.
 */

/** Name of the page's cache. */
export const CACHE_NAME = "lethe-model-files-v1";

/** Hits and misses of a caching fetch since it was made. */
export interface CacheCounters {
  hits: number;
  misses: number;
  hitBytes: number;
  missBytes: number;
}

/** Whether this page can cache (the Cache API exists only in secure contexts: https, localhost). */
export function cacheAvailable(): boolean {
  return typeof caches !== "undefined";
}

function headerOf(init: RequestInit | undefined, name: string): string | null {
  const h = init?.headers;
  if (!h) return null;
  return new Headers(h).get(name);
}

/** A fetch that keeps Range responses in the Cache API; `counters` is updated as it goes. */
export function cachingFetch(counters: CacheCounters): typeof fetch {
  const etags = new Map<string, string>();
  const cache = cacheAvailable() ? caches.open(CACHE_NAME) : null;
  return async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    const method = (init?.method ?? (input instanceof Request ? input.method : "GET")).toUpperCase();
    const range = headerOf(init, "range");
    if (!cache || (method !== "GET" && method !== "HEAD") || (method === "GET" && range === null)) {
      return await fetch(input, init);
    }
    if (method === "HEAD") {
      const res = await fetch(input, init);
      const tag = res.headers.get("etag");
      if (res.ok && tag) etags.set(url, tag);
      return res;
    }
    const key = new URL(url);
    key.searchParams.append("lethe-range", range!.replace(/\s+/g, ""));
    const tag = etags.get(url);
    if (tag) key.searchParams.append("lethe-etag", tag.replace(/"/g, ""));
    const c = await cache;
    const hit = await c.match(key.href);
    if (hit) {
      const body = await hit.arrayBuffer();
      counters.hits++;
      counters.hitBytes += body.byteLength;
      return new Response(body, { status: 206, headers: hit.headers });
    }
    const res = await fetch(input, init);
    if (res.status !== 206) return res;
    const body = await res.arrayBuffer();
    counters.misses++;
    counters.missBytes += body.byteLength;
    const headers = new Headers(res.headers);
    try {
      await c.put(key.href, new Response(body.slice(0), { status: 200, headers }));
    } catch (e) {
      // Quota exceeded or the like: the page still works, uncached.
      console.warn(`lethe: not cached (${(e as Error).message})`);
    }
    return new Response(body, { status: 206, statusText: res.statusText, headers });
  };
}

/** Deletes the page's cache; returns whether there was one. */
export async function clearModelCache(): Promise<boolean> {
  return cacheAvailable() ? await caches.delete(CACHE_NAME) : false;
}

/** Entries in the page's cache and the origin's storage use (the browser's estimate), for the status line. */
export async function cacheUsage(): Promise<{ entries: number; bytes: number | null }> {
  if (!cacheAvailable()) return { entries: 0, bytes: null };
  if (!(await caches.has(CACHE_NAME))) return { entries: 0, bytes: 0 };
  const keys = await (await caches.open(CACHE_NAME)).keys();
  let bytes: number | null = null;
  const est = await navigator.storage?.estimate?.();
  if (est?.usage !== undefined) bytes = est.usage;
  return { entries: keys.length, bytes };
}
