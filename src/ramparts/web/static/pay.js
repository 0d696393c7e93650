// The payer's payment page (PAY-1, SAQ A). Card details are typed into the PSP's own card
// element (Stripe.js, from the PSP's origin: the only other origin this page's CSP allows)
// and go from it to the PSP only; Ramparts is sent the PSP's payment method id.
//
// The page is signed in by the web app's session (a cookie the script cannot read): the
// script reaches the API through the app's door, /app/api/…, with the session's CSRF token.
"use strict";
// In a block of its own: every page script shares the page's global scope.
{

  const config = { ...document.body.dataset, ...document.getElementById("pay").dataset };
  const PAYMENT = config.paymentId;
  const POLL_MS = 1500;
  const POLL_FOR_MS = 120000;

  const statusLine = document.getElementById("pay-status");
  const problemLine = document.getElementById("pay-problem");
  const summary = document.getElementById("pay-summary");
  const amountCell = document.getElementById("pay-amount");
  const referenceCell = document.getElementById("pay-reference");
  const form = document.getElementById("pay-form");
  const cardBox = document.getElementById("pay-card");
  const payButton = document.getElementById("pay-submit");
  const authenticateButton = document.getElementById("pay-authenticate");

  let signedIn = true;
  let stripe = null;
  let card = null;
  let pendingSecret = null; // a client secret whose 3D Secure step the payer has not done yet

  // What the payer reads: `state` is for the eye of tests and screen readers alike.
  function show(text, state) {
    statusLine.textContent = text;
    statusLine.dataset.state = state;
    statusLine.classList.toggle("paid", state === "paid");
  }

  function fail(text) {
    problemLine.textContent = text;
    problemLine.hidden = false;
  }

  function clearProblem() {
    problemLine.textContent = "";
    problemLine.hidden = true;
  }

  function money(amount, currency) {
    const format = new Intl.NumberFormat("en", { style: "currency", currency: currency.toUpperCase() });
    const digits = format.resolvedOptions().maximumFractionDigits;
    return format.format(amount / 10 ** digits);
  }

  function inWords(seconds) {
    if (!Number.isFinite(seconds) || seconds <= 0) return "later";
    if (seconds < 90) return `in ${Math.ceil(seconds)} seconds`;
    return `in about ${Math.ceil(seconds / 60)} minutes`;
  }

  function askToSignIn(text) {
    signedIn = false;
    form.hidden = true;
    authenticateButton.hidden = true;
    show(text, "signed-out");
    const again = document.getElementById("pay-sign-in");
    again.href = `/app/login?next=${encodeURIComponent(location.pathname)}`;
    again.hidden = false;
  }

  async function api(path, options = {}) {
    const response = await fetch(`/app${path}`, {
      ...options,
      credentials: "same-origin",
      headers: { ...(options.headers || {}), "X-CSRF-Token": config.csrf },
    });
    if (response.status === 401) {
      askToSignIn("Your session has ended: sign in again to pay.");
    }
    return response;
  }

  async function problemOf(response) {
    try {
      return await response.json();
    } catch {
      return {};
    }
  }

  function loadScript(url) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = url;
      script.addEventListener("load", resolve);
      script.addEventListener("error", () => reject(new Error(url)));
      document.head.appendChild(script);
    });
  }

  async function mountCard(checkout) {
    if (stripe === null) {
      await loadScript(checkout.stripe_js);
      stripe = window.Stripe(checkout.publishable_key);
    }
    if (card === null) {
      card = stripe.elements().create("card");
      card.mount(cardBox);
      // Stripe's element is a frame with its own labels. The sandbox's draws bare inputs in
      // the page: each gets its placeholder as its accessible name.
      for (const input of cardBox.querySelectorAll("input:not([aria-label])")) {
        input.setAttribute("aria-label", `Card ${input.placeholder.replace("_", " ")}`);
      }
    }
  }

  // What a payment's status means to the payer; true when there is nothing left to wait for.
  function render(payment) {
    amountCell.textContent = money(payment.amount, payment.currency);
    referenceCell.textContent = payment.id;
    summary.hidden = false;
    payButton.textContent = `Pay ${money(payment.amount, payment.currency)}`;
    form.hidden = payment.status !== "requires_payment_method";
    authenticateButton.hidden = !(payment.status === "requires_action" && pendingSecret);
    switch (payment.status) {
      case "succeeded":
        show("Paid. Thank you: the payment provider has confirmed the payment.", "paid");
        return true;
      case "canceled":
        show("This payment was canceled: nothing will be charged.", "canceled");
        return true;
      case "requires_payment_method":
        show("Enter your card details to pay.", "ready");
        return true;
      case "requires_action":
        if (pendingSecret) {
          show("Your bank asks you to confirm this payment.", "requires-action");
          return true;
        }
        show("Waiting for the payment provider's confirmation…", "processing");
        return false;
      default: // processing, requires_confirmation: the PSP has it
        show("Waiting for the payment provider's confirmation…", "processing");
        return false;
    }
  }

  // Read the payment until it is settled (or until POLL_FOR_MS has passed). While its status
  // is still `quietWhile` (what the page already knows to be over), it is not shown.
  async function follow(quietWhile = null) {
    const until = Date.now() + POLL_FOR_MS;
    for (;;) {
      const response = await api(`/api/payments/${PAYMENT}`);
      if (!response.ok) {
        if (response.status !== 401) {
          fail((await problemOf(response)).detail || `Cannot read the payment (${response.status}).`);
        }
        return;
      }
      const payment = await response.json();
      if (payment.status !== quietWhile && render(payment)) return;
      if (Date.now() > until) {
        if (payment.status !== quietWhile) {
          show("The payment provider has not confirmed the payment yet: reload this page "
            + "later to see it.", "processing");
        }
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  // The PSP's id for the card typed into its element.
  async function paymentMethod() {
    const created = await stripe.createPaymentMethod({ type: "card", card });
    if (created && created.paymentMethod) return created.paymentMethod.id;
    if (created && created.error) {
      fail(`The payment provider refused the card details: ${created.error.message}`);
      return null;
    }
    // The sandbox's Stripe.js (localstripe) has no createPaymentMethod; the card of one of its
    // tokens is a payment method it accepts.
    const tokenized = await stripe.createToken(card);
    if (tokenized && tokenized.token) return tokenized.token.card.id;
    const message = tokenized && tokenized.error && tokenized.error.message;
    fail(`The payment provider refused the card details${message ? `: ${message}` : "."}`);
    return null;
  }

  async function authenticate() {
    const secret = pendingSecret;
    pendingSecret = null;
    authenticateButton.hidden = true;
    show("Your bank asks you to confirm this payment…", "requires-action");
    const result = (await stripe.confirmCardPayment(secret)) || {};
    const intent = result.paymentIntent;
    if (result.error || (intent && intent.status === "requires_payment_method")) {
      const reason = result.error ? `: ${result.error.message}` : ".";
      fail(`Your bank did not confirm the payment${reason} Nothing was charged.`);
      show("Waiting for the payment provider to take another card…", "auth-failed");
      // The PSP's event brings the payment back to waiting for a card; until then it still
      // says `requires_action`, which is over.
      await follow("requires_action");
      return;
    }
    await follow();
  }

  async function confirmPayment(method) {
    const response = await api(`/api/payments/${PAYMENT}/confirm`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() },
      body: JSON.stringify({ payment_method: method }),
    });
    if (response.status === 402) {
      fail("Your card was declined: nothing was charged. Try another card.");
      return null;
    }
    if (response.status === 429) {
      const wait = Number(response.headers.get("Retry-After"));
      fail(`Too many payment attempts: try again ${inWords(wait)}.`);
      return null;
    }
    if (!response.ok) {
      if (response.status !== 401) {
        const problem = await problemOf(response);
        fail(problem.detail || `The payment could not be confirmed (${response.status}).`);
      }
      return null;
    }
    return response.json();
  }

  async function pay(event) {
    event.preventDefault();
    clearProblem();
    payButton.disabled = true;
    try {
      show("Sending your card details to the payment provider…", "sending");
      let method = null;
      try {
        method = await paymentMethod();
      } catch {
        fail("Enter the card's number, expiry date and security code.");
      }
      if (method === null) {
        show("Enter your card details to pay.", "ready");
        return;
      }
      show("Confirming the payment…", "confirming");
      const payment = await confirmPayment(method);
      if (payment === null) {
        if (signedIn) show("Enter your card details to pay.", "ready");
        return;
      }
      if (payment.status === "requires_action" && payment.client_secret) {
        pendingSecret = payment.client_secret;
        render(payment);
        await authenticate();
        return;
      }
      if (payment.status === "requires_payment_method") {
        fail("Your card was declined: nothing was charged. Try another card.");
      }
      if (!render(payment)) await follow();
    } finally {
      payButton.disabled = false;
    }
  }

  async function start() {
    show("Loading the payment…", "loading");
    const response = await api(`/api/payments/${PAYMENT}/checkout`);
    if (!response.ok) {
      if (response.status === 401) return;
      const problem = await problemOf(response);
      show("This payment cannot be paid here.", "unavailable");
      fail(problem.detail || `The payment could not be read (${response.status}).`);
      return;
    }
    const checkout = await response.json();
    if (checkout.payment.status === "requires_action" && checkout.client_secret) {
      pendingSecret = checkout.client_secret;
    }
    try {
      await mountCard(checkout);
    } catch {
      show("This payment cannot be paid here.", "unavailable");
      fail("The payment provider's page could not be loaded: try again later.");
      return;
    }
    if (!render(checkout.payment)) await follow();
  }

  form.addEventListener("submit", pay);
  authenticateButton.addEventListener("click", authenticate);

  start();
}
