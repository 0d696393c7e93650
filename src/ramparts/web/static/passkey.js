// WebAuthn for the login pages: create a passkey (enrollment) or use one (second factor).
// The server keeps the challenge with the login flow; this script only relays JSON.
"use strict";
// In a block of its own: every page script shares the page's global scope.
{

  const button = document.getElementById("passkey");
  const errorBox = document.getElementById("passkey-error");

  const { creationOptions, requestOptions, credentialJson } = window.RampartsWebAuthn;

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
