// The provisioning API (docs/openapi.yaml), called with the signed-in user's ID token in
// Authorization, as example/provisioning_app.py and example/fleet_commands.py call it. An
// error answer is a result too ({ok: false, status, body: {msg, code}}), never an exception;
// only an unreachable API throws (ApiUnreachable).

import { CHALLENGE_LEN, FERNET_X25519 } from "./protocol.js";
import { fromBase64, toBase64 } from "./wire.js";

export class ApiUnreachable extends Error {
  constructor() {
    super("API unreachable");
    this.name = "ApiUnreachable";
    this.code = "API_UNREACHABLE";
  }
}

const TIMEOUT_MS = 35000;

export class Api {
  /** `apiUrl` without a trailing slash; `token()` returns the current ID token. */
  constructor(apiUrl, token, fetchImpl = (...args) => fetch(...args)) {
    this.apiUrl = apiUrl.replace(/\/+$/, "");
    this.token = token;
    this.fetch = fetchImpl;
  }

  async call(method, path, body = undefined, query = undefined) {
    let url = this.apiUrl + path;
    if (query) {
      const params = new URLSearchParams(
        Object.entries(query).filter(([, value]) => value !== undefined && value !== null),
      );
      if ([...params].length) url += `?${params}`;
    }
    const headers = { Authorization: this.token() };
    const init = { method, headers, credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (typeof AbortSignal !== "undefined" && AbortSignal.timeout) {
      init.signal = AbortSignal.timeout(TIMEOUT_MS);
    }
    let response;
    try {
      response = await this.fetch(url, init);
    } catch {
      throw new ApiUnreachable();
    }
    const text = await response.text().catch(() => "");
    let parsed = {};
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      parsed = {};
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) parsed = {};
    if (!response.ok) {
      parsed.msg ??= parsed.message || response.statusText || "error";
      parsed.code ??= `HTTP_${response.status}`;
    }
    return {
      ok: response.status === 200,
      status: response.status,
      body: parsed,
      retryAfter: response.headers.get("Retry-After"),
    };
  }

  /** POST /certificate/challenge: {result, challenge (32 bytes, when result.ok)}. */
  async challenge(dsn) {
    const result = await this.call("POST", "/certificate/challenge", { DSN: dsn });
    if (!result.ok) return { result, challenge: null };
    const challenge = fromBase64(String(result.body.challenge ?? ""));
    if (!challenge || challenge.length !== CHALLENGE_LEN) {
      const error = new Error("the API's challenge is not 32 bytes of base64");
      error.code = "CHALLENGE_MALFORMED_ANSWER";
      throw error;
    }
    return { result, challenge };
  }

  /** POST /certificate with the body example/provisioning_app.py sends. */
  certificate(request) {
    return this.call("POST", "/certificate", certificateRequest(request));
  }

  listDevices(nextToken = undefined, limit = undefined) {
    return this.call("GET", "/devices", undefined, { limit, nextToken });
  }

  revoke(dsn) {
    return this.call("DELETE", `/devices/${encodeURIComponent(dsn)}/certificate`);
  }

  release(dsn) {
    return this.call("DELETE", `/devices/${encodeURIComponent(dsn)}`);
  }

  startTransfer(dsn) {
    return this.call("POST", `/devices/${encodeURIComponent(dsn)}/transfer`);
  }

  claim(dsn, code) {
    return this.call("POST", `/devices/${encodeURIComponent(dsn)}/claim`, { code });
  }
}

/**
 * The JSON body of POST /certificate, field for field as provisioning_app.request_certificate
 * builds it: CSR mode {DSN, csr}, else {DSN, publicKey, encryption unless the default}; then
 * attestation and attestationChallenge only when the device attested.
 */
export function certificateRequest({ dsn, publicKey, encryption, csr, attestation }) {
  let fields;
  if (csr) {
    fields = { DSN: dsn, csr };
  } else {
    fields = { DSN: dsn, publicKey: toBase64(publicKey) };
    if (encryption && encryption !== FERNET_X25519) fields.encryption = encryption;
  }
  if (attestation) {
    fields.attestation = toBase64(attestation.signature);
    fields.attestationChallenge = toBase64(attestation.challenge);
  }
  return fields;
}

/** Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), at least 0. */
export function retryAfterSeconds(value, now = Date.now()) {
  if (value === null || value === undefined || !String(value).trim()) return 1;
  const text = String(value).trim();
  if (/^[0-9]+$/.test(text)) return Number(text);
  const when = Date.parse(text);
  if (Number.isNaN(when)) return 1;
  return Math.max(0, (when - now) / 1000);
}
