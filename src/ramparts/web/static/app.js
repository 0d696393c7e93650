// The first-party web client: authorization code + PKCE (S256), tokens kept in memory only.
"use strict";

const config = document.body.dataset;
const status = document.getElementById("status");
const signIn = document.getElementById("sign-in");
const signOut = document.getElementById("sign-out");
let tokens = null;

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString() {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

async function startSignIn() {
  const verifier = randomString();
  const state = randomString();
  const challenge = base64url(await crypto.subtle.digest("SHA-256",
    new TextEncoder().encode(verifier)));
  sessionStorage.setItem("pkce", JSON.stringify({ verifier, state }));
  const params = new URLSearchParams({
    response_type: "code", client_id: config.clientId, redirect_uri: config.redirectUri,
    scope: "openid profile", state, nonce: randomString(), code_challenge: challenge,
    code_challenge_method: "S256",
  });
  location.assign(`/oauth/authorize?${params}`);
}

async function finishSignIn(query) {
  const saved = JSON.parse(sessionStorage.getItem("pkce") || "null");
  sessionStorage.removeItem("pkce");
  history.replaceState(null, "", "/");
  if (!saved || query.get("state") !== saved.state || !query.get("code")) {
    status.textContent = "Sign-in failed: the response did not match the request.";
    return;
  }
  const response = await fetch("/oauth/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code", code: query.get("code"),
      redirect_uri: config.redirectUri, client_id: config.clientId,
      code_verifier: saved.verifier,
    }),
  });
  if (!response.ok) {
    status.textContent = "Sign-in failed.";
    return;
  }
  tokens = await response.json();
  await showUser();
}

async function showUser() {
  const response = await fetch("/oauth/userinfo", {
    headers: { Authorization: `Bearer ${tokens.access_token}` },
  });
  const user = await response.json();
  status.textContent = `Signed in: ${user.roles.join(", ")} in tenant ${user.tenant} (${user.amr.join("+")}).`;
  status.dataset.user = user.sub;
  signIn.hidden = true;
  signOut.hidden = false;
}

async function doSignOut() {
  if (tokens) {
    await fetch("/oauth/revoke", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token: tokens.refresh_token, client_id: config.clientId }),
    });
  }
  tokens = null;
  status.textContent = "Signed out.";
  delete status.dataset.user;
  signIn.hidden = false;
  signOut.hidden = true;
}

// A sign-in the payment page started (it saved `next`: /pay/<payment id>) ends there: the
// answer goes on in the fragment, which reaches no server, and that page redeems the code
// with the verifier it saved.
const PAY_PAGE = /^\/pay\/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function forwardToPayment(query) {
  const saved = JSON.parse(sessionStorage.getItem("pkce") || "null");
  if (!saved || typeof saved.next !== "string" || !PAY_PAGE.test(saved.next)) return false;
  location.replace(`${saved.next}#${query}`);
  return true;
}

signIn.addEventListener("click", startSignIn);
signOut.addEventListener("click", doSignOut);
const query = new URLSearchParams(location.search);
if (location.pathname === "/app/callback" && !forwardToPayment(query)) {
  if (query.get("error")) {
    status.textContent = `Sign-in failed: ${query.get("error_description") || query.get("error")}`;
  } else {
    finishSignIn(query);
  }
}
