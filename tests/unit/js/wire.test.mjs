// The web app's wire format (webapp/js/wire.js, api.js) against docs/test-vectors/: the same
// bytes the Python app sends and the example device answers, read from the files as a firmware
// team reads them.
import assert from "node:assert/strict";
import { test } from "node:test";

import { vector } from "./vectors.mjs";
import { certificateRequest, retryAfterSeconds } from "../../../webapp/js/api.js";
import * as P from "../../../webapp/js/protocol.js";
import {
  ProtocolError,
  answerPayload,
  checkAttestation,
  chooseScheme,
  chunkSizeForMtu,
  crc32,
  csrPem,
  decodeDeviceInfo,
  decodeStatus,
  encodeAbort,
  encodeAppError,
  encodeBegin,
  encodeCommit,
  fromBase64,
  fromHex,
  pythonJson,
  splitChunks,
  toBase64,
  toHex,
  truncateUtf8,
} from "../../../webapp/js/wire.js";

const exchange = vector("gatt-exchange");
const errors = vector("gatt-errors");
const info = vector("device-info-v2");
const writes = (steps, name) =>
  steps.filter((s) => s.from === "app" && s.characteristic === name).map((s) => s.valueHex);

test("CRC-32 is zlib's (the check value, and the trace's payload)", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new TextEncoder().encode(exchange.payload)).toString(16), exchange.payloadCrc32Hex);
});

test("the relayed answer is the bytes the Python app sends (json.dumps of the API's body)", () => {
  const payload = answerPayload(exchange.api.answer);
  assert.equal(new TextDecoder().decode(payload), exchange.payload);
  assert.equal(payload.length, exchange.payloadLength);
  assert.equal(pythonJson({ a: "é\u2028", b: [1, null, true], c: {} }), '{"a": "\\u00e9\\u2028", "b": [1, null, true], "c": {}}');
});

test("BEGIN, the DATA chunks at MTU 517 and COMMIT are the trace's writes", () => {
  const payload = answerPayload(exchange.api.answer);
  const control = writes(exchange.steps, "CONTROL");
  assert.equal(toHex(encodeBegin(payload)), control[0]);
  assert.equal(toHex(encodeCommit()), control[1]);
  assert.equal(chunkSizeForMtu(exchange.mtu), exchange.chunkSize);
  assert.deepEqual(splitChunks(payload, exchange.mtu).map(toHex), writes(exchange.steps, "DATA"));
  assert.equal(toHex(encodeAbort()), "03");
});

test("chunks at the default MTU are 18 bytes after a little-endian sequence number", () => {
  const payload = answerPayload(exchange.api.answer);
  const chunks = splitChunks(payload, P.DEFAULT_MTU);
  assert.equal(chunkSizeForMtu(P.DEFAULT_MTU), 18);
  assert.equal(chunks.length, Math.ceil(payload.length / 18));
  assert.ok(chunks.every((c) => c.length <= P.DEFAULT_MTU - P.ATT_HEADER_LEN));
  assert.equal(toHex(chunks[79].slice(0, 2)), "4f00");
  assert.equal(toHex(splitChunks(new Uint8Array(5000), P.DEFAULT_MTU)[257].slice(0, 2)), "0101");
  const joined = Buffer.concat(chunks.map((c) => c.slice(2)));
  assert.equal(joined.toString("utf-8"), exchange.payload);
  assert.throws(() => chunkSizeForMtu(22), RangeError);
  assert.throws(() => encodeBegin(new Uint8Array(P.MAX_PAYLOAD_LEN + 1)), ProtocolError);
});

test("DEVICE_INFO_V2 and DEVICE_INFO decode to the vector's fields", () => {
  const v2 = decodeDeviceInfo(fromHex(info.valueHex));
  assert.equal(v2.version, info.decoded.version);
  assert.equal(v2.keyType, info.decoded.keyType);
  assert.equal(toHex(v2.publicKey), info.decoded.publicKeyHex);
  assert.equal(v2.dsn, info.decoded.dsn);
  assert.deepEqual(v2.schemes, info.decoded.schemes);
  const v1 = decodeDeviceInfo(fromHex(info.deviceInfoV1Hex));
  assert.equal(v1.schemes, null);
  assert.equal(v1.dsn, "SN-0001");
  assert.equal(chooseScheme(v1.schemes), P.FERNET_X25519);
  assert.equal(chooseScheme(v2.schemes), P.HKDF_AES_GCM);
  // refusals: a trailing byte on version 1, a bad DSN, too short
  assert.throws(() => decodeDeviceInfo(fromHex(`${info.deviceInfoV1Hex}00`)), ProtocolError);
  assert.throws(() => decodeDeviceInfo(fromHex(info.valueHex.slice(0, 20))), ProtocolError);
  const badDsn = fromHex(info.deviceInfoV1Hex);
  badDsn[35] = 0x20; // a space
  assert.throws(() => decodeDeviceInfo(badDsn), /DSN must be/);
  assert.throws(() => chooseScheme([]), ProtocolError);
});

test("every STATUS value of the trace and the error cases decodes; PROVISIONED names the thing", () => {
  const values = [];
  for (const steps of [exchange.steps, ...errors.cases.map((c) => c.steps)]) {
    for (const s of steps) {
      if (s.statusReadHex) values.push(s.statusReadHex);
      if (s.operation === "notify") values.push(s.valueHex);
    }
  }
  assert.ok(values.length > 20);
  for (const hex of values) {
    const report = decodeStatus(fromHex(hex));
    assert.equal(report.code, parseInt(hex.slice(0, 2), 16));
  }
  const last = exchange.steps[exchange.steps.length - 1];
  const provisioned = decodeStatus(fromHex(last.valueHex));
  assert.equal(provisioned.name, "PROVISIONED");
  assert.equal(provisioned.detail, exchange.provisioned.thingName);
  assert.throws(() => decodeStatus(fromHex("0300000000")), ProtocolError);
  assert.throws(() => decodeStatus(fromHex("7f0000000000")), ProtocolError);
});

test("APP_ERROR is the error case's write, byte for byte", () => {
  const appErrorCase = errors.cases.find((c) => c.case.includes("APP_ERROR"));
  const hex = writes(appErrorCase.steps, "CONTROL").find((h) => h.startsWith("04"));
  const bytes = fromHex(hex);
  const status = bytes[1] | (bytes[2] << 8);
  const code = new TextDecoder().decode(bytes.slice(4, 4 + bytes[3]));
  const message = new TextDecoder().decode(bytes.slice(4 + bytes[3]));
  assert.equal(toHex(encodeAppError(status, code, message)), hex);
  // the message is cut to 100 bytes without splitting a character; the code to 64
  const long = encodeAppError(403, "X".repeat(70), "é".repeat(60));
  assert.equal(long[3], 64);
  assert.equal(long.length, 4 + 64 + 100);
  assert.equal(truncateUtf8("aé", 2).length, 1);
});

test("POST /certificate's body is the trace's certificateRequest", () => {
  const device = decodeDeviceInfo(fromHex(exchange.steps[0].valueHex));
  const challenge = fromHex(exchange.steps[1].valueHex);
  const signature = checkAttestation(fromHex(exchange.steps[2].valueHex));
  const body = certificateRequest({
    dsn: device.dsn,
    publicKey: device.publicKey,
    encryption: chooseScheme(device.schemes),
    attestation: { challenge, signature },
  });
  assert.equal(JSON.stringify(body), JSON.stringify(exchange.api.certificateRequest));
  // the default scheme is not sent (an older API knows no other); CSR mode sends no key
  assert.deepEqual(Object.keys(certificateRequest({ dsn: "A", publicKey: device.publicKey, encryption: P.FERNET_X25519 })), ["DSN", "publicKey"]);
  assert.deepEqual(certificateRequest({ dsn: "A", csr: "PEM" }), { DSN: "A", csr: "PEM" });
  assert.throws(() => checkAttestation(new Uint8Array(7)), ProtocolError);
  assert.throws(() => checkAttestation(new Uint8Array(73)), ProtocolError);
});

test("base64, PEM and Retry-After", () => {
  assert.equal(toBase64(fromBase64("oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr8=")), "oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr8=");
  assert.equal(fromBase64("not base64!"), null);
  assert.equal(fromBase64("abc"), null);
  const pem = csrPem(new Uint8Array(100));
  assert.match(pem, /^-----BEGIN CERTIFICATE REQUEST-----\n(?:[A-Za-z0-9+/]{64}\n)+[A-Za-z0-9+/=]+\n-----END CERTIFICATE REQUEST-----\n$/);
  assert.equal(retryAfterSeconds("7"), 7);
  assert.equal(retryAfterSeconds(null), 1);
  assert.equal(retryAfterSeconds("Thu, 01 Jan 2026 00:00:10 GMT", Date.parse("2026-01-01T00:00:00Z")), 10);
});
