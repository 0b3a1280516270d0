// The onboarding flow (webapp/js/onboard.js) against a scripted Web Bluetooth device that
// serves docs/test-vectors/gatt-exchange.json's values, and a fake API: the app's writes must
// be the trace's, in order, and each failure must end with the step's code.
import assert from "node:assert/strict";
import { test } from "node:test";

import { vector } from "./vectors.mjs";
import { Api } from "../../../webapp/js/api.js";
import * as P from "../../../webapp/js/protocol.js";
import { OnboardError, onboard } from "../../../webapp/js/onboard.js";
import { fromHex, toHex } from "../../../webapp/js/wire.js";

const exchange = vector("gatt-exchange");
const info = vector("device-info-v2");
const valueOf = (name) => fromHex(exchange.steps.find((s) => s.characteristic === name).valueHex);
const dataView = (bytes) => new DataView(Uint8Array.from(bytes).buffer);

function status(code, received = 0, detail = "") {
  const d = new TextEncoder().encode(detail);
  const out = new Uint8Array(6 + d.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, code);
  view.setUint32(1, received, true);
  view.setUint8(5, d.length);
  out.set(d, 6);
  return out;
}

/**
 * A device as navigator.bluetooth.requestDevice returns it. `writes` records [name, hex];
 * options: v1 (no DEVICE_INFO_V2, no attestation), notify (false: startNotifications
 * fails), dropOnData (cut the link at the DATA write with that index, once), verdict (the
 * status after COMMIT), noService.
 */
function fakeDevice(options = {}) {
  const { v1 = false, notify = true, verdict = P.Status.PROVISIONED } = options;
  const writes = [];
  let dropOnData = options.dropOnData ?? null;
  let current = status(P.Status.IDLE);
  let received = 0;
  let dataIndex = 0;
  const listeners = [];
  const device = { writes, connects: 0 };
  const setStatus = (value) => {
    current = value;
    if (notify) for (const listener of listeners) listener({ target: { value: dataView(value) } });
  };
  const characteristic = (name, behaviour) => ({
    name,
    addEventListener: (type, listener) => listeners.push(listener),
    startNotifications: async () => {
      if (!notify) throw new DOMException("GATT operation not permitted.", "NotSupportedError");
    },
    readValue: async () => dataView(behaviour.read()),
    writeValueWithResponse: async (value) => {
      const bytes = new Uint8Array(value.buffer ?? value, value.byteOffset ?? 0, value.byteLength);
      if (!device.gatt.connected) throw new DOMException("GATT Server is disconnected.", "NetworkError");
      if (name === "DATA" && dropOnData === dataIndex) {
        dropOnData = null;
        device.gatt.connected = false; // the device drops the partial transfer
        current = status(P.Status.IDLE);
        throw new DOMException("GATT Server is disconnected.", "NetworkError");
      }
      writes.push([name, toHex(bytes)]);
      behaviour.write(bytes);
    },
  });
  const chars = {
    [P.CONTROL_UUID]: characteristic("CONTROL", {
      write: (b) => {
        if (b[0] === P.Opcode.BEGIN) {
          received = 0;
          dataIndex = 0;
          setStatus(status(P.Status.RECEIVING));
        } else if (b[0] === P.Opcode.COMMIT) {
          setStatus(status(P.Status.VERIFYING, received));
          setStatus(verdict === P.Status.PROVISIONED ? fromHex(exchange.steps.at(-1).valueHex) : status(verdict));
        } else if (b[0] === P.Opcode.APP_ERROR) {
          const code = new TextDecoder().decode(b.slice(4, 4 + b[3]));
          setStatus(status(P.Status.ERR_APP, 0, `${b[1] | (b[2] << 8)} ${code}`));
        }
      },
    }),
    [P.DATA_UUID]: characteristic("DATA", {
      write: (b) => {
        received += b.length - 2;
        dataIndex += 1;
        current = status(P.Status.RECEIVING, received);
      },
    }),
    [P.STATUS_UUID]: characteristic("STATUS", { read: () => current }),
    [P.DEVICE_INFO_UUID]: characteristic("DEVICE_INFO", { read: () => fromHex(info.deviceInfoV1Hex) }),
  };
  if (!v1) {
    chars[P.DEVICE_INFO_V2_UUID] = characteristic("DEVICE_INFO_V2", { read: () => valueOf("DEVICE_INFO_V2") });
    chars[P.DEVICE_ATTESTATION_UUID] = characteristic("DEVICE_ATTESTATION", { read: () => valueOf("DEVICE_ATTESTATION") });
    chars[P.ATTESTATION_CHALLENGE_UUID] = characteristic("ATTESTATION_CHALLENGE", { write: () => {} });
  }
  const notFound = () => new DOMException("No Characteristics matching UUID found.", "NotFoundError");
  device.gatt = {
    connected: false,
    connect: async () => {
      device.connects += 1;
      device.gatt.connected = true;
      return {
        getPrimaryService: async (uuid) => {
          if (options.noService || uuid !== P.SERVICE_UUID) throw notFound();
          return {
            getCharacteristic: async (uuid2) => {
              if (!(uuid2 in chars)) throw notFound();
              return chars[uuid2];
            },
          };
        },
      };
    },
    disconnect: () => {
      device.gatt.connected = false;
    },
  };
  return device;
}

/** The API: a challenge and the trace's answer, or the given refusal. Records the calls. */
function fakeApi(refusal = null) {
  const calls = [];
  const fetchImpl = async (url, init) => {
    const path = new URL(url).pathname.replace(/^\/test/, "");
    calls.push({ path, method: init.method, body: init.body ? JSON.parse(init.body) : null, auth: init.headers.Authorization });
    let status = 200;
    let body;
    if (path === "/certificate/challenge") body = { challenge: "oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr8=", expiresAt: "2026-01-01T00:05:00Z" };
    else if (refusal) [status, body] = refusal;
    else body = exchange.api.answer;
    return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
  };
  return { api: new Api("http://127.0.0.1:1/test/", () => "ID-TOKEN", fetchImpl), calls };
}

const fast = { sleep: () => new Promise((resolve) => setImmediate(resolve)), mtu: exchange.mtu };
const traceWrites = exchange.steps.filter((s) => s.from === "app").map((s) => [s.characteristic, s.valueHex]);

test("onboarding writes the trace's bytes, in order, and reports the thing and expiry", async () => {
  const device = fakeDevice();
  const { api, calls } = fakeApi();
  const sent = [];
  const result = await onboard(device, api, { progress: (s, t) => sent.push([s, t]) }, fast);
  assert.deepEqual(device.writes, traceWrites);
  assert.deepEqual(result, { dsn: "SN-0001", thingName: "device_SN-0001", notAfter: exchange.api.answer.notAfter });
  assert.deepEqual(calls.map((c) => c.path), ["/certificate/challenge", "/certificate"]);
  assert.deepEqual(calls[0].body, exchange.api.challengeRequest);
  assert.deepEqual(calls[1].body, exchange.api.certificateRequest);
  assert.ok(calls.every((c) => c.auth === "ID-TOKEN"));
  assert.deepEqual(sent.at(-1), [exchange.payloadLength, exchange.payloadLength]);
  assert.equal(device.gatt.connected, false);
});

test("without notifications the app reads STATUS until the verdict", async () => {
  const device = fakeDevice({ notify: false });
  const result = await onboard(device, fakeApi().api, {}, fast);
  assert.equal(result.thingName, "device_SN-0001");
});

test("a version-1 device: DEVICE_INFO, the default scheme, no attestation", async () => {
  const device = fakeDevice({ v1: true });
  const { api, calls } = fakeApi();
  await onboard(device, api, {}, fast);
  assert.deepEqual(calls.map((c) => c.path), ["/certificate"]);
  assert.deepEqual(calls[0].body, { DSN: "SN-0001", publicKey: exchange.api.certificateRequest.publicKey });
  assert.equal(device.writes[0][0], "CONTROL");
});

test("the default MTU: 18-byte chunks, every one written in sequence", async () => {
  const device = fakeDevice();
  await onboard(device, fakeApi().api, {}, { ...fast, mtu: P.DEFAULT_MTU });
  const data = device.writes.filter(([name]) => name === "DATA");
  assert.equal(data.length, Math.ceil(exchange.payloadLength / 18));
  data.forEach(([, hex], seq) => assert.equal(parseInt(hex.slice(2, 4) + hex.slice(0, 2), 16), seq));
});

test("an API refusal goes to the device as APP_ERROR and ends with the API's code", async () => {
  const device = fakeDevice();
  const { api } = fakeApi([403, { msg: "Not in the allowlist.", code: "DEVICE_NOT_ALLOWED" }]);
  await assert.rejects(onboard(device, api, {}, fast), (error) => {
    assert.ok(error instanceof OnboardError);
    assert.equal(error.code, "DEVICE_NOT_ALLOWED");
    assert.equal(error.httpStatus, 403);
    return true;
  });
  const appError = device.writes.find(([name, hex]) => name === "CONTROL" && hex.startsWith("04"));
  assert.equal(appError[1].slice(0, 8), "04930112"); // APP_ERROR, 403 LE, code length 18
  assert.ok(!device.writes.some(([name]) => name === "DATA"));
});

test("a link lost during DATA: reconnect and resend from BEGIN, without asking the API again", async () => {
  const device = fakeDevice({ dropOnData: 1 });
  const { api, calls } = fakeApi();
  const steps = [];
  const result = await onboard(device, api, { step: (s) => steps.push(s) }, fast);
  assert.equal(result.thingName, "device_SN-0001");
  assert.equal(device.connects, 2);
  assert.equal(calls.filter((c) => c.path === "/certificate").length, 1);
  const begins = device.writes.filter(([name, hex]) => name === "CONTROL" && hex.startsWith("01"));
  assert.equal(begins.length, 2);
  assert.ok(steps.includes("Reconnecting to the device…"));
});

test("a link that keeps dropping ends with BLE_DISCONNECTED", async () => {
  const device = fakeDevice();
  device.gatt.connect = async () => {
    throw new DOMException("Connection failed for unknown reason.", "NetworkError");
  };
  await assert.rejects(onboard(device, fakeApi().api, {}, fast), { code: "BLE_DISCONNECTED" });
});

test("the device's verdict is the code: ERR_DECRYPT", async () => {
  const device = fakeDevice({ verdict: P.Status.ERR_DECRYPT });
  await assert.rejects(onboard(device, fakeApi().api, {}, fast), { code: "ERR_DECRYPT" });
});

test("a device without the onboarding service", async () => {
  const device = fakeDevice({ noService: true });
  await assert.rejects(onboard(device, fakeApi().api, {}, fast), { code: "NOT_AN_ONBOARDING_DEVICE" });
});

test("a fault of the app's own is not taken for a lost link", async () => {
  const device = fakeDevice();
  const api = { challenge: async () => { throw new TypeError("boom"); } };
  await assert.rejects(onboard(device, api, {}, fast), { code: "APP_FAILURE" });
  assert.equal(device.connects, 1);
});

test("a connect the stack never answers ends with BLE_DISCONNECTED, without retrying", async () => {
  const device = fakeDevice();
  device.gatt.connect = () => {
    device.connects += 1;
    return new Promise(() => {}); // a phone's stack (or the emulation) that hangs
  };
  const steps = [];
  const waits = { ...fast, connectTimeoutMs: 20, gattTimeoutMs: 20 };
  await assert.rejects(onboard(device, fakeApi().api, { step: (s) => steps.push(s) }, waits), {
    code: "BLE_DISCONNECTED",
  });
  assert.equal(device.connects, 1);
  assert.deepEqual(steps, ["Connecting to the device…"]);
});

test("a read the stack never answers ends with BLE_DISCONNECTED and drops the link", async () => {
  const device = fakeDevice();
  const connect = device.gatt.connect;
  device.gatt.connect = async () => {
    const server = await connect();
    const service = await server.getPrimaryService(P.SERVICE_UUID);
    const deviceInfo = await service.getCharacteristic(P.DEVICE_INFO_V2_UUID);
    deviceInfo.readValue = () => new Promise(() => {});
    return server;
  };
  const waits = { ...fast, connectTimeoutMs: 20, gattTimeoutMs: 20 };
  await assert.rejects(onboard(device, fakeApi().api, {}, waits), { code: "BLE_DISCONNECTED" });
  assert.equal(device.gatt.connected, false);
});
