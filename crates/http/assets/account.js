// strongroom hosted account pages: passkey ceremonies, and the pages links in mail open (their
// token is in the address's fragment, which only script can read). Everything else works without
// script.
"use strict";

function b64urlToBytes(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function bytesToB64url(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function csrf() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify(body || {}),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.detail || "The request failed. Reload the page and try again.");
    error.code = data.code;
    throw error;
  }
  return data;
}

function say(text) {
  const status = document.getElementById("passkey-status");
  if (status) status.textContent = text;
}

async function signInWithPasskey() {
  try {
    const begun = await post("/account/login/passkey/options");
    const options = begun.options.publicKey;
    options.challenge = b64urlToBytes(options.challenge);
    options.allowCredentials = (options.allowCredentials || []).map((c) => ({ ...c, id: b64urlToBytes(c.id) }));
    const credential = await navigator.credentials.get({ publicKey: options });
    const answer = {
      id: credential.id,
      rawId: bytesToB64url(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: bytesToB64url(credential.response.authenticatorData),
        clientDataJSON: bytesToB64url(credential.response.clientDataJSON),
        signature: bytesToB64url(credential.response.signature),
        userHandle: credential.response.userHandle ? bytesToB64url(credential.response.userHandle) : null,
      },
      extensions: {},
    };
    await post("/account/login/passkey/finish", { ceremony: begun.ceremony, credential: answer });
    window.location.assign("/account/security");
  } catch (err) {
    say("Signing in with a passkey did not work: " + err.message);
  }
}

// A new passkey from the server's creation options (left as they are, so a second try can use
// them again); answers what the server verifies.
async function createPasskey(publicKey) {
  const options = structuredClone(publicKey);
  options.challenge = b64urlToBytes(options.challenge);
  options.user.id = b64urlToBytes(options.user.id);
  options.excludeCredentials = (options.excludeCredentials || []).map((c) => ({ ...c, id: b64urlToBytes(c.id) }));
  const credential = await navigator.credentials.create({ publicKey: options });
  return {
    id: credential.id,
    rawId: bytesToB64url(credential.rawId),
    type: credential.type,
    response: {
      attestationObject: bytesToB64url(credential.response.attestationObject),
      clientDataJSON: bytesToB64url(credential.response.clientDataJSON),
    },
    extensions: {},
  };
}

async function addPasskey() {
  try {
    const begun = await post("/account/passkeys/options");
    const answer = await createPasskey(begun.options.publicKey);
    const label = (document.getElementById("passkey-label") || {}).value || "passkey";
    await post("/account/passkeys/finish", { ceremony: begun.ceremony, credential: answer, label });
    window.location.assign("/account/security");
  } catch (err) {
    say("Adding a passkey did not work: " + err.message);
  }
}

// A passkey-only account's address is confirmed: its first passkey, on a button press (browsers
// ask for one), then the security centre, signed in.
function firstPasskey(after, show, begun) {
  const button = document.createElement("button");
  button.id = "first-passkey";
  button.type = "button";
  button.textContent = "Create my passkey";
  after.after(button);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const credential = await createPasskey(begun.options.publicKey);
      await post("/account/verify-email/passkey", { customer: begun.customer, ceremony: begun.ceremony, credential });
      window.location.assign("/account/security");
    } catch (err) {
      show("Creating the passkey did not work: " + err.message, true);
      button.disabled = false;
    }
  });
}

// A page opened from a link: the token is after `#token=`, which browsers never send to a server.
// It is read once, dropped from the address bar (and so from the history), and posted with the
// form's fields in the body of a request that carries the page's CSRF token.
function linkForm(form) {
  const token = new URLSearchParams(window.location.hash.slice(1)).get("token") || "";
  if (window.location.hash) history.replaceState(null, "", window.location.pathname + window.location.search);
  const status = document.getElementById("link-status");
  const button = form.querySelector("button[type=submit]");
  const show = (text, error) => {
    status.textContent = text;
    status.className = error ? "error" : "";
  };
  if (!token) {
    show("This link is incomplete. Open it again from the mail, or copy the whole address, including " +
         "everything after the #.", true);
    return;
  }
  button.disabled = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { token };
    for (const field of form.querySelectorAll("input[name]")) body[field.name] = field.value;
    button.disabled = true;
    show("One moment…", false);
    try {
      const done = await post(form.getAttribute("action"), body);
      const message = document.createElement("p");
      message.id = "link-done";
      message.textContent = done.message;
      form.replaceWith(message);
      show("", false);
      if (done.next) {
        const next = document.createElement("a");
        next.id = "link-next";
        next.href = done.next;
        next.textContent = done.next_text;
        const line = document.createElement("p");
        line.appendChild(next);
        message.after(line);
      }
      if (done.passkey) firstPasskey(message, show, done.passkey);
    } catch (err) {
      show(err.message, true);
      const more = form.querySelector("details");
      if (more && err.code === "invalid_code") more.open = true;
      button.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const link = document.querySelector("form[data-link-form]");
  if (link) linkForm(link);
  const signIn = document.getElementById("passkey-login");
  if (signIn) signIn.addEventListener("click", signInWithPasskey);
  const add = document.getElementById("passkey-add");
  if (add) add.addEventListener("click", addPasskey);
});
