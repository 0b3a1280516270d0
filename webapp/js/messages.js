// What to tell the person holding the phone when a step fails: a plain sentence of what to do,
// by the failing step's code (the API's `code`, the device's status name, or one of the app's
// own codes below). Pure: no DOM, tested under node.

// The app's own codes (steps that are neither the API's nor the device's).
export const AppCode = Object.freeze({
  BLUETOOTH_UNAVAILABLE: "BLUETOOTH_UNAVAILABLE",
  CHOOSER_CANCELLED: "CHOOSER_CANCELLED",
  BLE_DISCONNECTED: "BLE_DISCONNECTED",
  NOT_AN_ONBOARDING_DEVICE: "NOT_AN_ONBOARDING_DEVICE",
  NO_COMMON_SCHEME: "NO_COMMON_SCHEME",
  DEVICE_SILENT: "DEVICE_SILENT",
  API_UNREACHABLE: "API_UNREACHABLE",
  CHALLENGE_MALFORMED_ANSWER: "CHALLENGE_MALFORMED_ANSWER",
  APP_FAILURE: "APP_FAILURE",
});

const DEVICE = {
  ERR_CHECKSUM: "The transfer was damaged on the way. Try again.",
  ERR_SEQUENCE: "The transfer arrived out of order. Try again.",
  ERR_LENGTH: "The transfer arrived incomplete. Try again.",
  ERR_FORMAT:
    "The device and this app do not understand each other. Update the app or the device's firmware.",
  ERR_DECRYPT:
    "The device could not open its key (it may have restarted). Try again to ask for a new certificate.",
  ERR_KEY_MISMATCH:
    "The certificate did not match its key: the answer was altered. Do not retry; report it.",
  ERR_UNTRUSTED_CA:
    "The device does not trust this service's certificate. Check you are signed in to the right service, and report it.",
  ERR_CERT_EXPIRED:
    "The device found the certificate out of date. Check the device's clock, then try again.",
  ERR_DSN_MISMATCH:
    "The certificate names another device. Do not retry; report it.",
  ERR_STORAGE: "The device could not store its credentials. The device may need repair.",
  ERR_APP: "The service refused the request; see above.",
  ERR_BUSY:
    "Another phone is onboarding this device. Wait a minute, then try again.",
  ERR_VERSION: "This device needs a newer app. Update the app.",
  ERR_STATE:
    "The device is not waiting for a certificate (it may already be onboarded). Restart the device if it should be.",
  IDLE: "The device did not finish. Try again.",
  RECEIVING: "The device did not finish. Try again.",
  VERIFYING: "The device did not give its verdict in time. Try again.",
};

const APP = {
  BLUETOOTH_UNAVAILABLE:
    "This browser cannot use Bluetooth. Use Chrome or Edge on Android or a computer (Safari on iPhone has no Web Bluetooth).",
  CHOOSER_CANCELLED: "No device was chosen. Try again and pick your device in the list.",
  BLE_DISCONNECTED:
    "The Bluetooth link to the device was lost. Move closer to the device, then try again.",
  NOT_AN_ONBOARDING_DEVICE:
    "The device you picked does not offer onboarding. Pick another device, or restart it if it is already onboarded.",
  NO_COMMON_SCHEME:
    "The device asks for a key protection this app does not know. Update the app.",
  DEVICE_SILENT: "The device did not give its verdict in time. Try again.",
  API_UNREACHABLE: "The service cannot be reached. Check your connection, then try again.",
  CHALLENGE_MALFORMED_ANSWER:
    "The service answered with something this app does not understand. Update the app, then try again.",
  APP_FAILURE: "Something went wrong in this app. Try again; if it keeps failing, report it.",
};

const API = {
  UNAUTHORIZED: "Your sign-in has expired. Sign in again.",
  DEVICE_OWNED:
    "This device belongs to someone else. Ask its owner to release it or to give you a transfer code.",
  NOT_OWNER: "Only the device's owner can do this.",
  NOT_IN_ALLOWLIST: "This device is not registered with the service. Ask your administrator.",
  DEVICE_NOT_ALLOWED: "This device is not registered with the service. Ask your administrator.",
  DEVICE_BLOCKED: "This device has been blocked. Ask your administrator.",
  ATTESTATION_REQUIRED:
    "The service only accepts devices that prove where they come from, and this one does not. Ask your administrator.",
  ATTESTATION_INVALID:
    "The device could not prove where it comes from. Ask your administrator.",
  ATTESTATION_REPLAYED:
    "This device's key was already certified. Restart the device, then try again.",
  CHALLENGE_EXPIRED: "The request took too long. Try again.",
  CHALLENGE_USED: "Try again.",
  CHALLENGE_INVALID: "Try again.",
  REQUEST_IN_FLIGHT: "The service is still working on this device. Wait a moment, then try again.",
  THROTTLED: "The service is busy. Wait a minute, then try again.",
  NOT_A_MEMBER: "Your account may not onboard devices. Ask your administrator.",
  ACCESS_DENIED: "Your account may not do this. Ask your administrator.",
  TRANSFER_CODE_INVALID: "Check the transfer code and the DSN, then try again.",
  CODE_INVALID: "Check the transfer code and the DSN, then try again.",
  TRANSFER_NOT_FOUND: "This device is not being handed over. Ask its owner for a new transfer code.",
  ALREADY_OWNER: "You already own this device.",
  DEVICE_NOT_FOUND: "There is no such device. Check the DSN.",
};

/** A plain sentence of what to do after a failure with `code` (HTTP `status` when the API's). */
export function whatToDo(code, status = 0) {
  if (code in APP) return APP[code];
  if (code in DEVICE) return DEVICE[code];
  if (code in API) return API[code];
  if (/_(FAILED|TIMEOUT)$/.test(code) || status >= 500) {
    return "The service had a problem; nothing was changed. Try again in a moment.";
  }
  if (status === 429) return API.THROTTLED;
  if (status === 401) return API.UNAUTHORIZED;
  if (status === 403) return "Your account may not do this. Ask your administrator.";
  if (status === 400) return "The request was refused. Update the app, then try again.";
  return "Try again. If it keeps failing, restart the device.";
}

/** Sign-in failures: never says whether the user exists. */
export function signInMessage(cognitoType) {
  switch (cognitoType) {
    case "NotAuthorizedException":
    case "UserNotFoundException":
      return "Wrong email or password.";
    case "PasswordResetRequiredException":
      return "Your password must be reset. Ask your administrator.";
    case "UserNotConfirmedException":
      return "Your account is not confirmed yet. Ask your administrator.";
    case "InvalidPasswordException":
      return "The new password does not meet the password rules: use a longer one with upper and lower case letters, digits and symbols.";
    case "TooManyRequestsException":
    case "LimitExceededException":
      return "Too many attempts. Wait a minute, then try again.";
    case "NetworkError":
      return "The sign-in service cannot be reached. Check your connection, then try again.";
    default:
      return "Sign-in failed. Try again.";
  }
}
