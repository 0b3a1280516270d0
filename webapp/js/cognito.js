// Sign-in with the Cognito user pool by fetch: USER_PASSWORD_AUTH (the public client has no
// secret), and the NEW_PASSWORD_REQUIRED challenge an administrator-created user meets first.
// The same flow as example/provisioning_app.py's `login`; moto checks the password on it, so
// a wrong password fails offline as in AWS. Tokens are returned, never logged.

const TARGET = "AWSCognitoIdentityProviderService.";

/** A refusal from Cognito: `type` is its exception name (NotAuthorizedException, ...). */
export class CognitoError extends Error {
  constructor(type, message) {
    super(message);
    this.name = "CognitoError";
    this.type = type;
  }
}

/** Cognito's endpoint: config.cognitoEndpoint (the offline stack) or the region's. */
export function cognitoUrl(config) {
  const base = config.cognitoEndpoint || `https://cognito-idp.${config.region}.amazonaws.com`;
  return base.endsWith("/") ? base : `${base}/`;
}

async function call(config, action, body, fetchImpl = fetch) {
  let response;
  try {
    response = await fetchImpl(cognitoUrl(config), {
      method: "POST",
      headers: {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": TARGET + action,
      },
      body: JSON.stringify(body),
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new CognitoError("NetworkError", "Cognito unreachable");
  }
  let parsed = {};
  try {
    parsed = await response.json();
  } catch {
    parsed = {};
  }
  if (!response.ok) {
    // "__type" may carry a namespace: "com.amazonaws...#NotAuthorizedException".
    const type = String(parsed.__type || parsed.code || `HTTP_${response.status}`).split("#").pop();
    throw new CognitoError(type, `Cognito answered ${type}`);
  }
  return parsed;
}

/**
 * {idToken, expiresAt (ms)} when signed in, or {challenge: "NEW_PASSWORD_REQUIRED", session,
 * username} when the user must set a password first. CognitoError otherwise.
 */
function outcome(result, username) {
  const auth = result.AuthenticationResult;
  if (auth && auth.IdToken) {
    const seconds = Number(auth.ExpiresIn) || 3600;
    return { idToken: auth.IdToken, expiresAt: Date.now() + seconds * 1000 };
  }
  if (result.ChallengeName === "NEW_PASSWORD_REQUIRED") {
    const params = result.ChallengeParameters || {};
    return {
      challenge: "NEW_PASSWORD_REQUIRED",
      session: result.Session,
      username: params.USER_ID_FOR_SRP || username,
    };
  }
  throw new CognitoError(
    result.ChallengeName || "UnknownChallenge",
    `sign-in needs challenge ${result.ChallengeName || "unknown"}`,
  );
}

export async function signIn(config, username, password, fetchImpl = fetch) {
  const result = await call(
    config,
    "InitiateAuth",
    {
      AuthFlow: "USER_PASSWORD_AUTH",
      ClientId: config.clientId,
      AuthParameters: { USERNAME: username, PASSWORD: password },
    },
    fetchImpl,
  );
  return outcome(result, username);
}

export async function setNewPassword(config, challenge, newPassword, fetchImpl = fetch) {
  const result = await call(
    config,
    "RespondToAuthChallenge",
    {
      ChallengeName: "NEW_PASSWORD_REQUIRED",
      ClientId: config.clientId,
      Session: challenge.session,
      ChallengeResponses: { USERNAME: challenge.username, NEW_PASSWORD: newPassword },
    },
    fetchImpl,
  );
  return outcome(result, challenge.username);
}
