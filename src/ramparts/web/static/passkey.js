// WebAuthn for the login pages: create a passkey (enrollment) or use one (second factor).
// The server keeps the challenge with the login flow; this script only relays JSON.
"use strict";
// In a block of its own: every page script shares the page's global scope.
{

  const button = document.getElementById("passkey");
  const errorBox = document.getElementById("passkey-error");

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

  async function run() {
    errorBox.hidden = true;
    const headers = { "X-CSRF-Token": button.dataset.csrf };
    const optionsResponse = await fetch("/login/passkey/options", { method: "POST", headers });
    if (!optionsResponse.ok) throw new Error((await optionsResponse.json()).detail);
    const options = await optionsResponse.json();
    const credential = options.user
      ? await navigator.credentials.create({ publicKey: creationOptions(options) })
      : await navigator.credentials.get({ publicKey: requestOptions(options) });
    const result = await fetch("/login/passkey", {
      method: "POST",
      headers: { ...headers, "Content-Type": "application/json" },
      body: JSON.stringify(credentialJson(credential)),
    });
    const body = await result.json();
    if (!result.ok) throw new Error(body.detail || body.title);
    location.assign(body.next);
  }

  // The second-factor page offers a passkey only to a person who has one.
  button?.addEventListener("click", () => run().catch((error) => {
    errorBox.textContent = `Passkey failed: ${error.message}`;
    errorBox.hidden = false;
  }));
}
