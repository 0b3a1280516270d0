// The service worker: keeps the app shell (the files below) so the app opens and installs
// like an app. Only those files: never config.json (the stack writes it), never an API or
// Cognito answer (tokens, keys, certificates). Shell files go to the network first, so a new
// version is picked up at once; the cache answers only when the network cannot.

const CACHE = "onboarding-shell-v1";
const SHELL = [
  "./",
  "./index.html",
  "./manifest.webmanifest",
  "./css/app.css",
  "./icons/icon.svg",
  "./icons/icon-192.png",
  "./icons/icon-512.png",
  "./js/app.js",
  "./js/api.js",
  "./js/cognito.js",
  "./js/messages.js",
  "./js/onboard.js",
  "./js/protocol.js",
  "./js/wire.js",
];
const SHELL_URLS = new Set(SHELL.map((path) => new URL(path, self.registration.scope).href));

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)));
  self.skipWaiting();
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((key) => key !== CACHE).map((key) => caches.delete(key))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  url.search = "";
  if (request.method !== "GET" || !SHELL_URLS.has(url.href)) return; // the browser's own fetch
  event.respondWith(
    fetch(request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(request, copy));
        }
        return response;
      })
      .catch(() => caches.match(request).then((cached) => cached || Response.error())),
  );
});
