// strongroom hosted account pages: passkey ceremonies. Everything else works without script.
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
  if (!response.ok) throw new Error(data.detail || "The request failed.");
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

async function addPasskey() {
  try {
    const begun = await post("/account/passkeys/options");
    const options = begun.options.publicKey;
    options.challenge = b64urlToBytes(options.challenge);
    options.user.id = b64urlToBytes(options.user.id);
    options.excludeCredentials = (options.excludeCredentials || []).map((c) => ({ ...c, id: b64urlToBytes(c.id) }));
    const credential = await navigator.credentials.create({ publicKey: options });
    const answer = {
      id: credential.id,
      rawId: bytesToB64url(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: bytesToB64url(credential.response.attestationObject),
        clientDataJSON: bytesToB64url(credential.response.clientDataJSON),
      },
      extensions: {},
    };
    const label = (document.getElementById("passkey-label") || {}).value || "passkey";
    await post("/account/passkeys/finish", { ceremony: begun.ceremony, credential: answer, label });
    window.location.assign("/account/security");
  } catch (err) {
    say("Adding a passkey did not work: " + err.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const signIn = document.getElementById("passkey-login");
  if (signIn) signIn.addEventListener("click", signInWithPasskey);
  const add = document.getElementById("passkey-add");
  if (add) add.addEventListener("click", addPasskey);
});
