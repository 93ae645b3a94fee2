// The console's access token and its HTTP calls to the gateway.
//
// The token (one of `[api] tokens`, or the console token the gateway logs at start) lives in
// sessionStorage under "switchboard.token": it lasts as long as the tab. Every call sends it as
// `Authorization: Bearer <token>`; a 401 anywhere calls the handler given to onUnauthorized()
// (the page shows the login form again) and rejects with Unauthorized.

/** sessionStorage key of the token (the contract's name). */
export const TOKEN_KEY = "switchboard.token";

/** The request was refused for its token (HTTP 401). */
export class Unauthorized extends Error {
  constructor() {
    super("That token was refused.");
    this.name = "Unauthorized";
  }
}

/** Any other failed call: HTTP status, the API's error code and message. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfterS = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    /** Seconds to wait (429's Retry-After), or null. */
    this.retryAfterS = retryAfterS;
  }
}

let unauthorizedHandler = () => {};

/** Sets what happens on a 401 (called once per refusal). */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

/** The stored token, or null. */
export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** Stores the token for this tab. */
export function setToken(token) {
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Storage disabled: the token then lasts until the page is reloaded.
  }
  memoryToken = token;
}

/** Forgets the token. */
export function clearToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Nothing stored.
  }
  memoryToken = null;
}

let memoryToken = null;

/** The token to send: sessionStorage's, or the in-memory one when storage is off. */
export function token() {
  return getToken() ?? memoryToken;
}

/** Headers that authenticate a request. */
export function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

/** Tells the page the token was refused. */
export function refused() {
  unauthorizedHandler();
}

/**
 * Calls the gateway and returns the parsed JSON body.
 * @param {string} path e.g. "/calls?limit=20"
 * @param {{method?: string, body?: unknown, signal?: AbortSignal}} [options] body is sent as JSON.
 * @throws {Unauthorized} on 401, {ApiError} on any other non-2xx or a network failure.
 */
export async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...authHeaders() };
  let body;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(path, {
      method: options.method || "GET",
      headers,
      body,
      signal: options.signal,
      cache: "no-store",
    });
  } catch (error) {
    if (error && error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", "The gateway cannot be reached.");
  }
  if (response.status === 401) {
    refused();
    throw new Unauthorized();
  }
  let json = null;
  const text = await response.text();
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (!response.ok) {
    const retry = Number(response.headers.get("Retry-After"));
    const message =
      (json && typeof json.error === "string" && json.error) ||
      `${response.status} ${response.statusText || "error"}`;
    throw new ApiError(
      response.status,
      (json && json.code) || "http_error",
      message,
      Number.isFinite(retry) && retry > 0 ? retry : null,
    );
  }
  return json;
}
