// The onboarding protocol's byte layouts (docs/ble-protocol.md), as
// example/onboarding_ble/protocol.py writes and reads them. Pure functions: no DOM, no
// Bluetooth, so tests/unit/js/ runs them under node. Every integer is little-endian.

import {
  ATTESTATION_MAX_LEN,
  ATT_HEADER_LEN,
  ATT_MAX_VALUE_LEN,
  DEFAULT_MTU,
  DETAIL_MAX_LEN,
  DEVICE_INFO_V2_VERSION,
  DSN_PATTERN,
  DSN_RULE,
  ENCRYPTION_SCHEMES,
  ENCRYPTION_SCHEMES_BY_STRENGTH,
  FERNET_X25519,
  KEY_TYPE_CSR,
  KEY_TYPE_X25519,
  MAX_PAYLOAD_LEN,
  Opcode,
  PROTOCOL_VERSION,
  SCHEME_BITS,
  SEQ_LEN,
  Status,
  X25519_KEY_LEN,
} from "./protocol.js";

const STATUS_NAMES = Object.freeze(
  Object.fromEntries(Object.entries(Status).map(([name, code]) => [code, name])),
);

/** A value that does not follow the wire format; `status` names the error (e.g. ERR_FORMAT). */
export class ProtocolError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ProtocolError";
    this.status = status;
  }
}

export function statusName(code) {
  return STATUS_NAMES[code] ?? `0x${code.toString(16).padStart(2, "0")}`;
}

export function isError(code) {
  return code >= 0x80;
}

/** A state the app waits for after COMMIT or APP_ERROR. */
export function isFinal(code) {
  return isError(code) || code === Status.PROVISIONED;
}

export function isValidDsn(dsn) {
  return typeof dsn === "string" && DSN_PATTERN.test(dsn);
}

function bytes(value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  throw new TypeError("expected bytes");
}

const ascii = new TextDecoder("ascii");
const utf8Decoder = new TextDecoder("utf-8", { fatal: false });
const utf8Encoder = new TextEncoder();

// --- CRC-32 --------------------------------------------------------------------------------

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32/ISO-HDLC (zlib's crc32, what the device checks): transport integrity only. */
export function crc32(payload) {
  let crc = 0xffffffff;
  for (const byte of bytes(payload)) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// --- DEVICE_INFO and DEVICE_INFO_V2 --------------------------------------------------------

/** The schemes a bit mask names, weakest first; unknown bits are ignored. */
export function decodeSchemes(bits) {
  return ENCRYPTION_SCHEMES_BY_STRENGTH.filter((scheme) => bits & SCHEME_BITS[scheme]);
}

/**
 * Either characteristic's value (the version byte says which layout):
 * {version, keyType, publicKey (32 bytes), dsn, schemes (null for version 1), csrMode}.
 */
export function decodeDeviceInfo(value) {
  const v = bytes(value);
  if (v.length < 2 + X25519_KEY_LEN + 1) {
    throw new ProtocolError("ERR_FORMAT", "device info too short");
  }
  const version = v[0];
  const keyType = v[1];
  if (version < PROTOCOL_VERSION) {
    throw new ProtocolError("ERR_VERSION", `unsupported protocol version ${version}`);
  }
  const known = version >= DEVICE_INFO_V2_VERSION ? [KEY_TYPE_X25519, KEY_TYPE_CSR] : [];
  if (keyType !== KEY_TYPE_X25519 && !known.includes(keyType)) {
    throw new ProtocolError("ERR_FORMAT", `unsupported key type ${keyType}`);
  }
  const publicKey = v.slice(2, 2 + X25519_KEY_LEN);
  const dsnLength = v[2 + X25519_KEY_LEN];
  const dsnBytes = v.slice(3 + X25519_KEY_LEN, 3 + X25519_KEY_LEN + dsnLength);
  const rest = v.slice(3 + X25519_KEY_LEN + dsnLength);
  if (dsnBytes.length !== dsnLength) {
    throw new ProtocolError("ERR_FORMAT", "DSN length does not match");
  }
  let schemes = null;
  if (version === PROTOCOL_VERSION && rest.length) {
    throw new ProtocolError("ERR_FORMAT", "DSN length does not match");
  }
  if (version >= DEVICE_INFO_V2_VERSION) {
    if (!rest.length) throw new ProtocolError("ERR_FORMAT", "device info has no schemes");
    schemes = decodeSchemes(rest[0]);
  }
  if (dsnBytes.some((b) => b > 0x7f)) throw new ProtocolError("ERR_FORMAT", "DSN is not ASCII");
  const dsn = ascii.decode(dsnBytes);
  if (!isValidDsn(dsn)) throw new ProtocolError("ERR_FORMAT", `DSN must be ${DSN_RULE}`);
  return {
    version: schemes === null ? PROTOCOL_VERSION : DEVICE_INFO_V2_VERSION,
    keyType,
    publicKey,
    dsn,
    schemes,
    csrMode: keyType === KEY_TYPE_CSR,
  };
}

/** The scheme to ask the API for: the strongest both sides accept (no downgrade). */
export function chooseScheme(deviceSchemes) {
  if (deviceSchemes === null) return FERNET_X25519; // version 1: every device has it
  const common = ENCRYPTION_SCHEMES_BY_STRENGTH.filter(
    (s) => deviceSchemes.includes(s) && ENCRYPTION_SCHEMES.includes(s),
  );
  if (!common.length) {
    throw new ProtocolError("NO_COMMON_SCHEME", "no key-encryption scheme in common");
  }
  return common[common.length - 1];
}

/** DEVICE_ATTESTATION's value, refused unless it can be a DER signature (8..72 bytes). */
export function checkAttestation(value) {
  const v = bytes(value);
  if (v.length < 8 || v.length > ATTESTATION_MAX_LEN) {
    throw new ProtocolError("ERR_FORMAT", "DEVICE_ATTESTATION is not a signature");
  }
  return v;
}

// --- CONTROL -------------------------------------------------------------------------------

/** BEGIN: opcode | version u8 | total length u32 | CRC-32 u32. */
export function encodeBegin(payload) {
  const p = bytes(payload);
  if (!(p.length > 0 && p.length <= MAX_PAYLOAD_LEN)) {
    throw new ProtocolError("ERR_LENGTH", `payload must be 1-${MAX_PAYLOAD_LEN} bytes`);
  }
  const out = new Uint8Array(10);
  const view = new DataView(out.buffer);
  view.setUint8(0, Opcode.BEGIN);
  view.setUint8(1, PROTOCOL_VERSION);
  view.setUint32(2, p.length, true);
  view.setUint32(6, crc32(p), true);
  return out;
}

export function encodeCommit() {
  return Uint8Array.of(Opcode.COMMIT);
}

export function encodeAbort() {
  return Uint8Array.of(Opcode.ABORT);
}

/** The first `limit` bytes of `text` as UTF-8, never cutting a character in two. */
export function truncateUtf8(text, limit) {
  const data = utf8Encoder.encode(text);
  if (data.length <= limit) return data;
  let end = limit;
  while (end > 0 && (data[end] & 0xc0) === 0x80) end--; // data[end] continues a character
  return data.slice(0, end);
}

/** APP_ERROR: opcode | HTTP status u16 | code length u8 | code ASCII (<= 64) | message UTF-8. */
export function encodeAppError(httpStatus, code, message = "") {
  // Python's code.encode("ascii", "replace")[:64]: one "?" per character past ASCII.
  const codeBytes = Uint8Array.from(Array.from(String(code)).slice(0, 64), (c) =>
    c.codePointAt(0) < 0x80 ? c.codePointAt(0) : 0x3f,
  );
  const messageBytes = truncateUtf8(String(message), DETAIL_MAX_LEN);
  const out = new Uint8Array(4 + codeBytes.length + messageBytes.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, Opcode.APP_ERROR);
  view.setUint16(1, httpStatus, true);
  view.setUint8(3, codeBytes.length);
  out.set(codeBytes, 4);
  out.set(messageBytes, 4 + codeBytes.length);
  return out;
}

// --- DATA ----------------------------------------------------------------------------------

/** Payload bytes per DATA write for a negotiated ATT MTU. */
export function chunkSizeForMtu(mtu) {
  if (mtu < DEFAULT_MTU) throw new RangeError(`ATT MTU is at least ${DEFAULT_MTU}`);
  return Math.min(mtu - ATT_HEADER_LEN, ATT_MAX_VALUE_LEN) - SEQ_LEN;
}

/** DATA writes for `payload`: sequence number u16 | up to MTU-5 bytes of payload. */
export function splitChunks(payload, mtu) {
  const p = bytes(payload);
  const size = chunkSizeForMtu(mtu);
  const chunks = [];
  for (let seq = 0, at = 0; at < p.length; seq++, at += size) {
    const part = p.subarray(at, at + size);
    const chunk = new Uint8Array(SEQ_LEN + part.length);
    new DataView(chunk.buffer).setUint16(0, seq, true);
    chunk.set(part, SEQ_LEN);
    chunks.push(chunk);
  }
  if (chunks.length > 0xffff) {
    throw new ProtocolError("ERR_LENGTH", "too many chunks for this MTU");
  }
  return chunks;
}

// --- STATUS --------------------------------------------------------------------------------

/** STATUS: code u8 | bytes received u32 | detail length u8 | detail UTF-8. */
export function decodeStatus(value) {
  const v = bytes(value);
  if (v.length < 6) throw new ProtocolError("ERR_FORMAT", "status too short");
  const view = new DataView(v.buffer, v.byteOffset, v.byteLength);
  const code = view.getUint8(0);
  const received = view.getUint32(1, true);
  const detailLength = view.getUint8(5);
  const detail = v.slice(6);
  if (detail.length !== detailLength) {
    throw new ProtocolError("ERR_FORMAT", "status detail length does not match");
  }
  if (!(code in STATUS_NAMES)) {
    throw new ProtocolError("ERR_FORMAT", `unknown status 0x${code.toString(16)}`);
  }
  return { code, name: STATUS_NAMES[code], received, detail: utf8Decoder.decode(detail) };
}

// --- The answer relayed to the device ------------------------------------------------------

/**
 * `value` as Python's json.dumps writes it (", " and ": " separators, non-ASCII as \\uXXXX):
 * the bytes example/provisioning_app.py relays, so that both apps send the device the same
 * payload (docs/test-vectors/gatt-exchange.json's `payload`).
 */
export function pythonJson(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(", ")}]`;
  if (typeof value === "object") {
    const items = Object.entries(value).map(([k, v]) => `${pythonString(k)}: ${pythonJson(v)}`);
    return `{${items.join(", ")}}`;
  }
  if (typeof value === "string") return pythonString(value);
  return JSON.stringify(value); // numbers (the answer has integers only), true, false
}

function pythonString(text) {
  return JSON.stringify(text).replace(
    /[\u0080-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** The API's 200 body as the payload the device receives (UTF-8 of pythonJson). */
export function answerPayload(body) {
  return utf8Encoder.encode(pythonJson(body));
}

// --- Encodings -----------------------------------------------------------------------------

export function toBase64(data) {
  let text = "";
  for (const b of bytes(data)) text += String.fromCharCode(b);
  return btoa(text);
}

/** Standard base64 (padding required) to bytes; null when it is not base64. */
export function fromBase64(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4) {
    return null;
  }
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

/** A CSR's DER as PEM, as the API takes it (64-character lines, a final newline). */
export function csrPem(der) {
  const lines = toBase64(der).match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE REQUEST-----\n${lines.join("\n")}\n-----END CERTIFICATE REQUEST-----\n`;
}

export function toHex(data) {
  return Array.from(bytes(data), (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(text) {
  return Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
}

export function equalBytes(a, b) {
  const x = bytes(a);
  const y = bytes(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}
