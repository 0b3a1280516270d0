// Onboarding one device over Web Bluetooth: what example/provisioning_app.py's `provision`
// and example/onboarding_ble/gatt.py's OnboardingServiceProxy do, on the same wire
// (docs/ble-protocol.md). No DOM: it takes a BluetoothDevice (or anything with its shape, as
// the node tests pass) and an Api, and reports progress through callbacks.

import {
  ATTESTATION_CHALLENGE_UUID,
  CONTROL_UUID,
  CSR_MAX_LEN,
  DATA_UUID,
  DEFAULT_MTU,
  DEVICE_ATTESTATION_UUID,
  DEVICE_CSR_UUID,
  DEVICE_INFO_UUID,
  DEVICE_INFO_V2_UUID,
  SERVICE_UUID,
  STATUS_UUID,
  Status,
} from "./protocol.js";
import {
  ProtocolError,
  answerPayload,
  checkAttestation,
  chooseScheme,
  csrPem,
  decodeDeviceInfo,
  decodeStatus,
  encodeAbort,
  encodeAppError,
  encodeBegin,
  encodeCommit,
  equalBytes,
  isError,
  isFinal,
  splitChunks,
} from "./wire.js";
import { retryAfterSeconds } from "./api.js";
import { AppCode } from "./messages.js";

/** A failed step: `code` is the API's code, the device's status name or an AppCode. */
export class OnboardError extends Error {
  constructor(code, message = "", httpStatus = 0) {
    super(message || code);
    this.name = "OnboardError";
    this.code = code;
    this.httpStatus = httpStatus;
  }
}

class MissingService extends Error {}

/** A connect or a GATT operation the Bluetooth stack never answered (bounded()). */
export class GattTimeout extends Error {
  constructor(message) {
    super(message);
    this.name = "GattTimeout";
  }
}

/**
 * `promise`, or a GattTimeout after `ms`: a phone's Bluetooth stack (or the emulation) can leave
 * a call unsettled for ever, and the page must not wait for ever with it.
 */
export function bounded(promise, ms, what) {
  let timer;
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new GattTimeout(`${what}: no answer in ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// As provisioning_app.py: 3 reconnects on a cut link, 0.5 s apart; 10 s for the verdict; a 429
// retried 3 times after Retry-After, each wait at most 30 s and 60 s in all.
export const DEFAULTS = Object.freeze({
  // Web Bluetooth does not tell the page the negotiated ATT MTU, and the device refuses values
  // longer than MTU-3 (no long writes), so the app assumes the minimum every link has.
  mtu: DEFAULT_MTU,
  retries: 3,
  retryDelayMs: 500,
  statusTimeoutMs: 10000,
  pollIntervalMs: 500,
  rateLimitRetries: 3,
  rateLimitMaxWaitMs: 30000,
  rateLimitBudgetMs: 60000,
  // A connect (the radio link, the MTU exchange, discovery) and each GATT operation: one that
  // takes longer ends the onboarding with BLE_DISCONNECTED ("Try again").
  connectTimeoutMs: 30000,
  gattTimeoutMs: 20000,
});

const defaultSleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One connection to a device's onboarding service (OnboardingServiceProxy's part). */
export class Link {
  static async open(device, timeouts = DEFAULTS) {
    const ms = timeouts.gattTimeoutMs;
    const server = await bounded(device.gatt.connect(), timeouts.connectTimeoutMs, "connect");
    let service;
    try {
      service = await bounded(server.getPrimaryService(SERVICE_UUID), ms, "getPrimaryService");
    } catch (error) {
      if (error && error.name === "NotFoundError") throw new MissingService("no service");
      throw error;
    }
    const required = async (uuid) => {
      try {
        return await bounded(service.getCharacteristic(uuid), ms, "getCharacteristic");
      } catch (error) {
        if (error && error.name === "NotFoundError") throw new MissingService("incomplete");
        throw error;
      }
    };
    const optional = async (uuid) => {
      try {
        return await bounded(service.getCharacteristic(uuid), ms, "getCharacteristic");
      } catch (error) {
        if (error && error.name === "NotFoundError") return null;
        throw error;
      }
    };
    const link = new Link(device, ms);
    link.control = await required(CONTROL_UUID);
    link.data = await required(DATA_UUID);
    link.status = await required(STATUS_UUID);
    link.deviceInfoV2 = await optional(DEVICE_INFO_V2_UUID);
    link.deviceInfo = link.deviceInfoV2 ? null : await optional(DEVICE_INFO_UUID);
    if (!link.deviceInfo && !link.deviceInfoV2) throw new MissingService("no DEVICE_INFO");
    link.deviceCsr = await optional(DEVICE_CSR_UUID);
    link.deviceAttestation = await optional(DEVICE_ATTESTATION_UUID);
    link.attestationChallenge = link.deviceAttestation
      ? await optional(ATTESTATION_CHALLENGE_UUID)
      : null;
    await link.subscribe();
    return link;
  }

  constructor(device, gattTimeoutMs = DEFAULTS.gattTimeoutMs) {
    this.device = device;
    this.gattTimeoutMs = gattTimeoutMs;
    this.reports = [];
    this.waiter = null;
    this.notifying = false;
  }

  async subscribe() {
    this.status.addEventListener("characteristicvaluechanged", (event) => {
      try {
        this.reports.push(decodeStatus(event.target.value));
      } catch {
        return; // an undecodable notification: the next read says more
      }
      if (this.waiter) this.waiter();
    });
    try {
      await this.bounded(this.status.startNotifications(), "startNotifications");
      this.notifying = true;
    } catch {
      this.notifying = false; // the app reads STATUS instead
    }
  }

  bounded(promise, what) {
    return bounded(promise, this.gattTimeoutMs, what);
  }

  read(characteristic) {
    return this.bounded(characteristic.readValue(), "readValue");
  }

  write(characteristic, value) {
    return this.bounded(write(characteristic, value), "writeValue");
  }

  get attests() {
    return Boolean(this.deviceAttestation && this.attestationChallenge);
  }

  async deviceInfoValue() {
    const characteristic = this.deviceInfoV2 || this.deviceInfo;
    return decodeDeviceInfo(await this.read(characteristic));
  }

  /** A CSR-mode device's CSR (DER), checked against the digest DEVICE_INFO_V2 gave. */
  async csr(info) {
    if (!this.deviceCsr) throw new ProtocolError("ERR_FORMAT", "CSR mode but no DEVICE_CSR");
    const view = await this.read(this.deviceCsr);
    const der = new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", der));
    if (der.length > CSR_MAX_LEN || !equalBytes(digest, info.publicKey)) {
      throw new ProtocolError("ERR_FORMAT", "DEVICE_CSR does not match DEVICE_INFO_V2");
    }
    return der;
  }

  /** Write the API's challenge, read the device's signature over it. */
  async attestation(challenge) {
    await this.write(this.attestationChallenge, challenge);
    return checkAttestation(await this.attestationValue());
  }

  async attestationValue() {
    const view = await this.read(this.deviceAttestation);
    return new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
  }

  async readStatus() {
    return decodeStatus(await this.read(this.status));
  }

  writeControl(value) {
    return this.write(this.control, value);
  }

  /** BEGIN, the DATA chunks, COMMIT; `progress(sent, total)` after each chunk. */
  async send(payload, mtu, progress) {
    this.reports = [];
    await this.writeControl(encodeBegin(payload));
    const chunks = splitChunks(payload, mtu);
    let sent = 0;
    progress(0, payload.length);
    for (const chunk of chunks) {
      await this.write(this.data, chunk);
      sent += chunk.length - 2;
      progress(sent, payload.length);
    }
    await this.writeControl(encodeCommit());
  }

  /**
   * The first PROVISIONED or error the device reports: notified, or read when no
   * notification came within the poll interval (notifications may be unavailable or silent);
   * at the deadline, whatever STATUS says.
   */
  async finalStatus(timeoutMs, pollIntervalMs, sleep = defaultSleep) {
    const deadline = Date.now() + timeoutMs;
    if (!this.reports.some((report) => isFinal(report.code))) {
      // The verdict is there as soon as COMMIT is answered, and the device leaves the radio
      // soon after giving it: without a notification, read it at once, then poll.
      const first = await this.readStatus();
      if (isFinal(first.code)) return first;
    }
    for (;;) {
      const notified = this.reports.find((report) => isFinal(report.code));
      if (notified) return notified;
      const remaining = deadline - Date.now();
      if (remaining <= 0) return this.readStatus();
      await new Promise((resolve) => {
        this.waiter = resolve;
        sleep(Math.min(pollIntervalMs, remaining)).then(resolve);
      });
      this.waiter = null;
      if (!this.reports.some((report) => isFinal(report.code))) {
        const read = await this.readStatus();
        if (isFinal(read.code)) return read;
      }
    }
  }

  disconnect() {
    try {
      if (this.device.gatt.connected) this.device.gatt.disconnect();
    } catch {
      // already gone
    }
  }
}

function write(characteristic, value) {
  return characteristic.writeValueWithResponse
    ? characteristic.writeValueWithResponse(value)
    : characteristic.writeValue(value);
}

/**
 * Onboard `device`: read it, ask the API, relay the answer, wait for the verdict; reconnect and
 * resend on a cut link (without asking the API again unless the device's key changed).
 * Resolves {dsn, thingName, notAfter}; rejects with an OnboardError.
 *
 * `on.step(text)`: what is happening; `on.progress(sent, total)`: bytes sent to the device.
 */
export async function onboard(device, api, on = {}, options = {}) {
  const opts = { ...DEFAULTS, ...options };
  const sleep = opts.sleep || defaultSleep;
  const step = on.step || (() => {});
  const progress = on.progress || (() => {});
  let answer = null;
  let answerBody = null;
  let answeredKey = null;
  let lastError = null;
  for (let attempt = 1; attempt <= opts.retries + 1; attempt++) {
    let link = null;
    try {
      step(attempt === 1 ? "Connecting to the device…" : "Reconnecting to the device…");
      try {
        link = await Link.open(device, opts);
      } catch (error) {
        if (error instanceof MissingService) {
          throw new OnboardError(AppCode.NOT_AN_ONBOARDING_DEVICE);
        }
        throw error;
      }
      step("Reading the device…");
      const info = await link.deviceInfoValue();
      if (answer === null || !equalBytes(answeredKey, info.publicKey)) {
        // First attempt, or the device restarted (a new key): ask the API (again).
        let csr = null;
        let encryption = null;
        if (info.csrMode) csr = csrPem(await link.csr(info));
        else encryption = chooseScheme(info.schemes);
        step("Asking the service for a certificate…");
        const result = await requestWithRetries(api, link, info, { csr, encryption }, opts, sleep);
        if (!result.ok) {
          await refuse(link, result, opts, sleep);
          throw new OnboardError(
            String(result.body.code || `HTTP_${result.status}`),
            String(result.body.msg || ""),
            result.status,
          );
        }
        answerBody = result.body;
        answer = answerPayload(result.body);
        answeredKey = info.publicKey;
      }
      step("Sending to the device…");
      try {
        await link.send(answer, opts.mtu, progress);
      } catch (error) {
        await deviceVerdictOr(link, error);
      }
      step("Waiting for the device…");
      const report = await link.finalStatus(opts.statusTimeoutMs, opts.pollIntervalMs, sleep);
      link.disconnect();
      if (report.code === Status.PROVISIONED) {
        return {
          dsn: info.dsn,
          thingName: report.detail || String(answerBody.thingName || ""),
          notAfter: String(answerBody.notAfter || ""),
        };
      }
      throw new OnboardError(isError(report.code) ? report.name : AppCode.DEVICE_SILENT, report.detail);
    } catch (error) {
      if (link) link.disconnect();
      if (error instanceof OnboardError) throw error;
      if (error instanceof GattTimeout) {
        // a stack that hangs once hangs again: no retry; the page is told at once
        try {
          device.gatt.disconnect();
        } catch {
          // already gone
        }
        throw new OnboardError(AppCode.BLE_DISCONNECTED, error.message);
      }
      if (error instanceof ProtocolError) throw new OnboardError(error.status, error.message);
      if (error && error.code === "API_UNREACHABLE") throw new OnboardError(AppCode.API_UNREACHABLE);
      if (error && error.code === "CHALLENGE_MALFORMED_ANSWER") {
        throw new OnboardError(AppCode.CHALLENGE_MALFORMED_ANSWER);
      }
      if (!isLinkError(error)) throw new OnboardError(AppCode.APP_FAILURE, String(error));
      lastError = error; // the link: reconnect and resend
      if (attempt <= opts.retries) await sleep(opts.retryDelayMs);
    }
  }
  throw new OnboardError(AppCode.BLE_DISCONNECTED, lastError ? String(lastError.message) : "");
}

/** Web Bluetooth reports a lost or failing link as a DOMException (NetworkError, ...). */
function isLinkError(error) {
  return (
    (typeof DOMException !== "undefined" && error instanceof DOMException) ||
    (error !== null && typeof error === "object" && error.name === "NetworkError")
  );
}

/**
 * A write failed during the transfer. If the link is up and STATUS holds an error, that is the
 * device's verdict (it refused the write); otherwise drop the transfer (ABORT, when the link
 * is up) and let the caller reconnect and resend from BEGIN.
 */
async function deviceVerdictOr(link, error) {
  if (link.device.gatt.connected) {
    let report = null;
    try {
      report = await link.readStatus();
    } catch {
      report = null;
    }
    if (report && isError(report.code)) throw new OnboardError(report.name, report.detail);
    try {
      await link.writeControl(encodeAbort());
    } catch {
      // the link is failing: the device drops the transfer when it goes
    }
  }
  throw error;
}

/** APP_ERROR with the API's status, code and message, then the device's ERR_APP (best effort). */
async function refuse(link, result, opts, sleep) {
  try {
    await link.writeControl(
      encodeAppError(result.status, String(result.body.code || ""), String(result.body.msg || "")),
    );
    await link.finalStatus(opts.statusTimeoutMs, opts.pollIntervalMs, sleep);
  } catch {
    // the refusal is shown whatever the device heard
  }
}

/** POST /certificate (after a challenge and the device's signature, if it attests), 429 retried. */
async function requestWithRetries(api, link, info, { csr, encryption }, opts, sleep) {
  let waitedMs = 0;
  for (let attempt = 1; ; attempt++) {
    let result;
    let attestation = null;
    if (link.attests) {
      const challenged = await api.challenge(info.dsn);
      result = challenged.result;
      if (challenged.result.ok) {
        const signature = await link.attestation(challenged.challenge);
        attestation = { challenge: challenged.challenge, signature };
      }
    }
    if (!link.attests || attestation) {
      result = await api.certificate({
        dsn: info.dsn,
        publicKey: info.publicKey,
        encryption,
        csr,
        attestation,
      });
    }
    if (result.status !== 429) return result;
    const waitMs = Math.min(retryAfterSeconds(result.retryAfter) * 1000, opts.rateLimitMaxWaitMs);
    if (attempt > opts.rateLimitRetries || waitedMs + waitMs > opts.rateLimitBudgetMs) {
      return result;
    }
    await sleep(waitMs);
    waitedMs += waitMs;
  }
}
