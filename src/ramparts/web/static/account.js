// The account page: register one more passkey for the signed-in user. The server keeps the
// challenge (sealed in the ticket it hands out); this script only relays JSON through the
// app's door (/app/api/...), with the session's CSRF token in a header.
"use strict";
// In a block of its own: every page script shares the page's global scope.
{

  const form = document.getElementById("passkey-form");
  const statusBox = document.getElementById("passkey-status");

  const { creationOptions, credentialJson } = window.RampartsWebAuthn;

  async function call(path, body) {
    const response = await fetch(`/app/api/${path}`, {
      method: "POST",
      headers: { "X-CSRF-Token": document.body.dataset.csrf, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.detail || answer.title || `error ${response.status}`);
    return answer;
  }

  async function addPasskey(name) {
    statusBox.textContent = "Follow your browser's prompt to create the passkey…";
    const started = await call("me/passkeys/options", {});
    const credential = await navigator.credentials.create({
      publicKey: creationOptions(started.options),
    });
    await call("me/passkeys", { ticket: started.ticket, credential: credentialJson(credential), name });
    statusBox.textContent = `Passkey “${name}” added. You can use it at your next sign-in.`;
  }

  form?.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = form.elements.name.value.trim() || "passkey";
    addPasskey(name).catch((error) => {
      statusBox.textContent = `The passkey was not added: ${error.message}`;
    });
  });
}
