// Offline support. The page shell (listed in manifest.json) is cached at install and served network-first, so an
// online visit always gets the current page; the runtime and the models are stored by the page itself as it
// downloads them (engine.js, with progress) and served cache-first: their URLs carry a version or a content hash.
// Every response gets COOP/COEP, which makes the page cross-origin isolated (wasm threads) even on a static host that
// cannot set headers. Requests to any other origin are not handled here (the page makes none). Responses are cached
// under their URL without its query string: the page and its files are the same whatever a link appends
// (?utm_source=...), and keyed by the whole URL the cache grew by one copy of the page per distinct link.

const CACHE_NAME = "skin-demo-on-device-v1"; // engine.js uses the same name
const IMMUTABLE = /\/(vendor|models)\//;
// The server's responses vary on Origin (its CORS layer), which module-script requests send and cache.addAll's do
// not: match on the URL alone, as everything cached here is the same for every request.
const MATCH = { ignoreVary: true };

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const response = await fetch("manifest.json", { cache: "no-cache" });
      const manifest = await response.clone().json();
      const cache = await caches.open(CACHE_NAME);
      await cache.put("manifest.json", response);
      await cache.addAll(manifest.shell);
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) if (name !== CACHE_NAME) await caches.delete(name);
      await self.clients.claim();
    })(),
  );
});

function cacheKey(request) {
  const url = new URL(request.url);
  url.search = "";
  url.hash = "";
  return url.href;
}

function isolated(response) {
  if (!response || response.type === "opaque" || response.status === 0) return response;
  const headers = new Headers(response.headers);
  headers.set("Cross-Origin-Opener-Policy", "same-origin");
  headers.set("Cross-Origin-Embedder-Policy", "require-corp");
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

async function cacheFirst(request) {
  const cache = await caches.open(CACHE_NAME);
  const hit = await cache.match(cacheKey(request), MATCH);
  if (hit) return hit;
  const response = await fetch(request);
  if (response.ok) await cache.put(cacheKey(request), response.clone());
  return response;
}

async function networkFirst(request) {
  const cache = await caches.open(CACHE_NAME);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(cacheKey(request), response.clone());
    return response;
  } catch (error) {
    const hit = await cache.match(cacheKey(request), MATCH);
    if (hit) return hit;
    throw error;
  }
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (!url.pathname.startsWith(new URL(self.registration.scope).pathname)) return;
  const respond = IMMUTABLE.test(url.pathname) ? cacheFirst(event.request) : networkFirst(event.request);
  event.respondWith(respond.then(isolated));
});
