// The page: screens, forms and buttons. The logic lives in the pure modules (wire.js,
// onboard.js, api.js, cognito.js, messages.js); this file only wires them to the DOM.
// Nothing here is logged: no token, password, code or answer ever reaches the console.

import { SERVICE_UUID } from "./protocol.js";
import { isValidDsn } from "./wire.js";
import { Api, ApiUnreachable } from "./api.js";
import { CognitoError, setNewPassword, signIn } from "./cognito.js";
import { AppCode, signInMessage, whatToDo } from "./messages.js";
import { OnboardError, onboard } from "./onboard.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "onboarding.session"; // sessionStorage only: gone with the tab
const SCREENS = ["sign-in", "new-password", "onboard", "devices"];

const state = {
  config: null,
  session: null, // {idToken, expiresAt}
  challenge: null, // NEW_PASSWORD_REQUIRED: {session, username}
  nextToken: null,
  busy: false,
};

// --- Session -------------------------------------------------------------------------------

function loadSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (saved && saved.idToken && saved.expiresAt > Date.now()) return saved;
  } catch {
    // unreadable: sign in again
  }
  sessionStorage.removeItem(SESSION_KEY);
  return null;
}

function saveSession(session) {
  state.session = session;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

function signOut(message = "") {
  state.session = null;
  state.challenge = null;
  sessionStorage.removeItem(SESSION_KEY);
  $("password").value = "";
  show("sign-in");
  $("sign-in-error").textContent = message;
}

const api = () => new Api(state.config.apiUrl, () => (state.session ? state.session.idToken : ""));

// --- Screens -------------------------------------------------------------------------------

function show(name) {
  for (const screen of SCREENS) $(`screen-${screen}`).hidden = screen !== name;
  const signedIn = name === "onboard" || name === "devices";
  $("nav").hidden = !signedIn;
  for (const [id, screen] of [["nav-onboard", "onboard"], ["nav-devices", "devices"]]) {
    if (screen === name) $(id).setAttribute("aria-current", "page");
    else $(id).removeAttribute("aria-current");
  }
  const title = document.querySelector(`#screen-${name} h1`);
  document.title = `${title.textContent} · Device onboarding`;
  title.focus();
}

function alertWith(element, code, sentence, detail = "") {
  element.replaceChildren();
  const first = document.createElement("p");
  const codeSpan = document.createElement("span");
  codeSpan.className = "code";
  codeSpan.textContent = code;
  first.append("Failed: ", codeSpan);
  if (detail) first.append(` (${detail})`);
  const second = document.createElement("p");
  second.textContent = sentence;
  element.append(first, second);
}

// --- Sign in -------------------------------------------------------------------------------

async function onSignIn(event) {
  event.preventDefault();
  const email = $("email").value.trim();
  const password = $("password").value;
  const error = $("sign-in-error");
  if (!email || !password) {
    error.textContent = "Enter your email and password.";
    return;
  }
  error.textContent = "";
  $("sign-in").disabled = true;
  try {
    const outcome = await signIn(state.config, email, password);
    $("password").value = "";
    afterSignIn(outcome);
  } catch (e) {
    error.textContent = signInMessage(e instanceof CognitoError ? e.type : "");
  } finally {
    $("sign-in").disabled = false;
  }
}

async function onSetPassword(event) {
  event.preventDefault();
  const password = $("new-password").value;
  const error = $("new-password-error");
  if (!password) {
    error.textContent = "Enter a new password.";
    return;
  }
  error.textContent = "";
  $("set-password").disabled = true;
  try {
    const outcome = await setNewPassword(state.config, state.challenge, password);
    $("new-password").value = "";
    afterSignIn(outcome);
  } catch (e) {
    const type = e instanceof CognitoError ? e.type : "";
    if (type === "NotAuthorizedException") {
      // The challenge's session expired (3 minutes): start again.
      signOut("That took too long. Sign in again.");
      return;
    }
    error.textContent = signInMessage(type);
  } finally {
    $("set-password").disabled = false;
  }
}

function afterSignIn(outcome) {
  if (outcome.challenge === "NEW_PASSWORD_REQUIRED") {
    state.challenge = outcome;
    $("new-password-username").value = outcome.username; // for password managers
    $("new-password-error").textContent = "";
    show("new-password");
    return;
  }
  state.challenge = null;
  saveSession(outcome);
  resetOnboard();
  show("onboard");
}

/** An API answer of 401: the token expired or was refused; back to sign-in. */
function expired(result) {
  if (result.status !== 401) return false;
  signOut(whatToDo("UNAUTHORIZED", 401));
  return true;
}

// --- Onboard -------------------------------------------------------------------------------

function resetOnboard() {
  $("onboard-working").hidden = true;
  $("onboard-success").hidden = true;
  $("onboard-error").replaceChildren();
  $("onboard-status").textContent = "";
  $("try-again").hidden = true;
  $("find-device").hidden = false;
  $("find-device").disabled = false;
}

function formatExpiry(notAfter) {
  const when = new Date(notAfter);
  if (!notAfter || Number.isNaN(when.getTime())) return notAfter || "unknown";
  const day = when.toISOString().slice(0, 10);
  return `${when.toLocaleDateString(undefined, { dateStyle: "long", timeZone: "UTC" })} (${day})`;
}

async function chooseDevice() {
  if (!navigator.bluetooth || !navigator.bluetooth.requestDevice) {
    throw new OnboardError(AppCode.BLUETOOTH_UNAVAILABLE);
  }
  try {
    return await navigator.bluetooth.requestDevice({
      filters: [{ services: [SERVICE_UUID] }],
      optionalServices: [SERVICE_UUID],
    });
  } catch (error) {
    if (error && error.name === "NotFoundError") throw new OnboardError(AppCode.CHOOSER_CANCELLED);
    if (error && (error.name === "SecurityError" || error.name === "NotAllowedError")) {
      throw new OnboardError(AppCode.BLUETOOTH_UNAVAILABLE);
    }
    throw new OnboardError(AppCode.BLUETOOTH_UNAVAILABLE, String(error && error.message));
  }
}

async function onFindDevice() {
  if (state.busy) return;
  state.busy = true;
  resetOnboard();
  $("find-device").disabled = true;
  const status = $("onboard-status");
  const bar = $("onboard-progress");
  try {
    status.textContent = "Choose your device in the list…";
    const device = await chooseDevice();
    bar.value = 0;
    $("onboard-working").hidden = false;
    const result = await onboard(device, api(), {
      step: (text) => {
        status.textContent = text;
      },
      progress: (sent, total) => {
        bar.max = total;
        bar.value = sent;
      },
    });
    $("onboard-working").hidden = true;
    status.textContent = "Done.";
    $("result-dsn").textContent = result.dsn;
    $("result-thing").textContent = result.thingName;
    $("result-expiry").textContent = formatExpiry(result.notAfter);
    $("onboard-success").hidden = false;
    $("find-device").hidden = true;
    $("try-again").textContent = "Onboard another device";
    $("try-again").hidden = false;
    $("onboard-success-title").focus();
  } catch (error) {
    $("onboard-working").hidden = true;
    const code = error instanceof OnboardError ? error.code : AppCode.BLE_DISCONNECTED;
    const httpStatus = error instanceof OnboardError ? error.httpStatus : 0;
    if (code === "UNAUTHORIZED" || httpStatus === 401) {
      signOut(whatToDo("UNAUTHORIZED", 401));
      return;
    }
    status.textContent = "Stopped.";
    const detail = httpStatus ? `${httpStatus}` : "";
    alertWith($("onboard-error"), code, whatToDo(code, httpStatus), detail);
    if (httpStatus && error.message && error.message !== code) {
      const msg = document.createElement("p");
      msg.textContent = `The service said: ${error.message}`;
      $("onboard-error").append(msg);
    }
    $("find-device").hidden = true;
    $("try-again").textContent = "Try again";
    $("try-again").hidden = false;
    $("try-again").focus();
  } finally {
    state.busy = false;
  }
}

function onTryAgain() {
  resetOnboard();
  $("find-device").focus();
}

// --- My devices ----------------------------------------------------------------------------

function devicesMessage(text) {
  $("devices-error").replaceChildren();
  $("devices-status").textContent = text;
}

function devicesError(doing, result) {
  if (expired(result)) return;
  $("devices-status").textContent = "";
  const code = String(result.body.code || `HTTP_${result.status}`);
  alertWith($("devices-error"), code, `${doing}. ${whatToDo(code, result.status)}`);
}

function unreachable() {
  $("devices-status").textContent = "";
  alertWith($("devices-error"), AppCode.API_UNREACHABLE, whatToDo(AppCode.API_UNREACHABLE));
}

function button(label, name, handler) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.setAttribute("aria-label", name);
  b.addEventListener("click", handler);
  return b;
}

function cell(text, label, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  td.dataset.label = label;
  if (className) td.className = className;
  return td;
}

function deviceRow(device) {
  const dsn = String(device.DSN || "");
  const tr = document.createElement("tr");
  const dsnCell = document.createElement("th");
  dsnCell.scope = "row";
  dsnCell.className = "dsn";
  dsnCell.textContent = dsn;
  let status = String(device.status || "");
  if (device.transferPending) status += " (transfer pending)";
  const actions = document.createElement("td");
  const box = document.createElement("div");
  box.className = "row-actions";
  box.append(
    button("Revoke", `Revoke ${dsn}`, () => act("revoke", dsn)),
    button("Release", `Release ${dsn}`, () => act("release", dsn)),
    button("Transfer", `Transfer ${dsn}`, () => act("transfer", dsn)),
  );
  actions.append(box);
  tr.append(dsnCell, cell(status, "Status"), cell(formatDay(device.notAfter), "Expires"), actions);
  return tr;
}

function formatDay(value) {
  return typeof value === "string" && value ? value.slice(0, 10) : "";
}

async function loadDevices(more = false) {
  if (!more) {
    state.nextToken = null;
    $("devices-body").replaceChildren();
  }
  devicesMessage("Loading your devices…");
  $("load-more").disabled = true;
  try {
    const result = await api().listDevices(more ? state.nextToken : undefined);
    if (!result.ok) {
      devicesError("Your devices could not be listed", result);
      return;
    }
    const devices = Array.isArray(result.body.devices) ? result.body.devices : [];
    const rows = devices.map(deviceRow);
    $("devices-body").append(...rows);
    state.nextToken = result.body.nextToken || null;
    const hadFocus = document.activeElement === $("load-more");
    $("load-more").hidden = !state.nextToken;
    if (more && hadFocus && !state.nextToken && rows.length) {
      rows[0].querySelector("button").focus(); // the button that had focus is gone
    }
    const count = $("devices-body").children.length;
    $("devices-empty").hidden = count > 0;
    devicesMessage(count === 1 ? "1 device." : `${count} devices.`);
  } catch (error) {
    if (error instanceof ApiUnreachable) unreachable();
    else throw error;
  } finally {
    $("load-more").disabled = false;
  }
}

/** After the table is redrawn, focus stays on the button that was pressed (or the heading). */
function refocus(label) {
  const again = [...$("devices-body").querySelectorAll("button")].find(
    (b) => b.getAttribute("aria-label") === label,
  );
  (again || $("devices-title")).focus();
}

/** What ends a device's access is asked once more: a slip of the thumb must not cut it off. */
const CONFIRM = {
  revoke: (dsn) => `Revoke ${dsn}? Its certificate stops working at once, and the device is cut off until it is onboarded again.`,
  release: (dsn) => `Release ${dsn}? It stops being yours and its certificate is revoked.`,
};

async function act(action, dsn) {
  if (CONFIRM[action] && !window.confirm(CONFIRM[action](dsn))) return;
  const client = api();
  devicesMessage("Working…");
  try {
    if (action === "revoke") {
      const result = await client.revoke(dsn);
      if (!result.ok) return devicesError(`${dsn} could not be revoked`, result);
      await loadDevices();
      refocus(`Revoke ${dsn}`);
      devicesMessage(`${dsn}'s certificate is revoked: the device is cut off until it is onboarded again.`);
    } else if (action === "release") {
      const result = await client.release(dsn);
      if (!result.ok) return devicesError(`${dsn} could not be released`, result);
      await loadDevices();
      refocus(`Release ${dsn}`);
      devicesMessage(`${dsn} is released: it is no longer yours, and its certificate is revoked.`);
    } else if (action === "transfer") {
      const result = await client.startTransfer(dsn);
      if (!result.ok) return devicesError(`The transfer of ${dsn} could not start`, result);
      const code = String(result.body.transferCode || "");
      const until = result.body.expiresAt ? ` It works once, until ${result.body.expiresAt}.` : "";
      devicesMessage(`Transfer code for ${dsn}: ${code}. Give it to the new owner.${until}`);
    }
  } catch (error) {
    if (error instanceof ApiUnreachable) unreachable();
    else throw error;
  }
  return undefined;
}

async function onClaim(event) {
  event.preventDefault();
  const code = $("claim-code").value.trim();
  const dsn = $("claim-dsn").value.trim();
  if (!code || !isValidDsn(dsn)) {
    $("devices-status").textContent = "";
    alertWith(
      $("devices-error"),
      code ? "DSN_INVALID" : "CODE_MISSING",
      code ? "Enter the device's DSN: letters, digits, - and _." : "Enter the transfer code.",
    );
    return;
  }
  $("claim").disabled = true;
  devicesMessage("Claiming…");
  try {
    const result = await api().claim(dsn, code);
    if (!result.ok) {
      devicesError(`${dsn} could not be claimed`, result);
      return;
    }
    $("claim-code").value = "";
    $("claim-dsn").value = "";
    await loadDevices();
    devicesMessage(`${dsn} is yours now. Onboard it over Bluetooth to bring it online.`);
  } catch (error) {
    if (error instanceof ApiUnreachable) unreachable();
    else throw error;
  } finally {
    $("claim").disabled = false;
  }
}

// --- Start ---------------------------------------------------------------------------------

async function loadConfig() {
  const response = await fetch("./config.json", { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
  const config = await response.json();
  for (const key of ["apiUrl", "region", "clientId"]) {
    if (typeof config[key] !== "string" || !config[key]) throw new Error(`config.json: no ${key}`);
  }
  return config;
}

async function start() {
  $("sign-in-form").addEventListener("submit", onSignIn);
  $("new-password-form").addEventListener("submit", onSetPassword);
  $("find-device").addEventListener("click", onFindDevice);
  $("try-again").addEventListener("click", onTryAgain);
  $("nav-onboard").addEventListener("click", () => {
    if (!state.busy) resetOnboard();
    show("onboard");
  });
  $("nav-devices").addEventListener("click", () => {
    show("devices");
    loadDevices();
  });
  $("load-more").addEventListener("click", () => loadDevices(true));
  $("claim-form").addEventListener("submit", onClaim);
  $("sign-out").addEventListener("click", () => signOut("You are signed out."));
  try {
    state.config = await loadConfig();
  } catch {
    $("loading").textContent =
      "This app is not configured (config.json is missing or incomplete). Ask whoever hosts it.";
    return;
  }
  $("loading").hidden = true;
  state.session = loadSession();
  if (state.session) {
    resetOnboard();
    show("onboard");
  } else {
    show("sign-in");
  }
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("./sw.js").catch(() => {
      // not installable here (e.g. a non-secure origin): the page works the same
    });
  }
}

start();
