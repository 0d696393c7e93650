// The assistant panel: sends its form with fetch and swaps in the conversation the server
// rendered (escaped by Jinja: no HTML is built here). Without script the form posts as is.
"use strict";
// In a block of its own: every page script shares the page's global scope.
{

  const form = document.getElementById("assistant-form");
  const conversation = document.getElementById("assistant-conversation");

  if (form && conversation) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button[type=submit]");
      const message = form.elements.namedItem("message");
      button.disabled = true;
      conversation.setAttribute("aria-busy", "true");
      try {
        const response = await fetch(form.action, {
          method: "POST",
          body: new URLSearchParams(new FormData(form)),
          headers: {
            "X-CSRF-Token": document.body.dataset.csrf,
            "X-Assistant-Fragment": "1",
          },
          credentials: "same-origin",
          redirect: "manual",
        });
        const type = response.headers.get("content-type") || "";
        if (response.type === "opaqueredirect" || !type.startsWith("text/html")) {
          window.location.reload(); // signed out, or an error page: let the page say so
          return;
        }
        const parsed = new DOMParser().parseFromString(await response.text(), "text/html");
        conversation.replaceChildren(...parsed.body.childNodes);
        const exchange = conversation.querySelector("[data-conversation-id]");
        if (exchange) {
          form.elements.namedItem("conversation_id").value = exchange.dataset.conversationId;
        }
        if (response.ok) {
          message.value = "";
        }
      } catch {
        const failed = document.createElement("p");
        failed.className = "assistant-problem";
        failed.textContent = "The message could not be sent: check your connection and try again.";
        conversation.replaceChildren(failed);
      } finally {
        conversation.removeAttribute("aria-busy");
        button.disabled = false;
        message.focus();
      }
    });
  }
}
