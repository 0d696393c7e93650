// WebAuthn's binary fields to and from the JSON the server speaks (base64url), for the sign-in
// pages (passkey.js) and the account page (account.js). The one global it defines:
// `RampartsWebAuthn`.
"use strict";

window.RampartsWebAuthn = (() => {
  const toBytes = (text) => Uint8Array.from(
    atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const toText = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

  function creationOptions(options) {
    return {
      ...options,
      challenge: toBytes(options.challenge),
      user: { ...options.user, id: toBytes(options.user.id) },
      excludeCredentials: (options.excludeCredentials || [])
        .map((c) => ({ ...c, id: toBytes(c.id) })),
    };
  }

  function requestOptions(options) {
    return {
      ...options,
      challenge: toBytes(options.challenge),
      allowCredentials: (options.allowCredentials || [])
        .map((c) => ({ ...c, id: toBytes(c.id) })),
    };
  }

  function credentialJson(credential) {
    const r = credential.response;
    const response = r.attestationObject
      ? { clientDataJSON: toText(r.clientDataJSON), attestationObject: toText(r.attestationObject) }
      : { clientDataJSON: toText(r.clientDataJSON), authenticatorData: toText(r.authenticatorData),
          signature: toText(r.signature),
          userHandle: r.userHandle ? toText(r.userHandle) : null };
    return { id: credential.id, rawId: toText(credential.rawId), type: credential.type, response };
  }

  return Object.freeze({ creationOptions, requestOptions, credentialJson });
})();
