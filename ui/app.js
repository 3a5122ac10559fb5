// Camwire's page: renders the app state and calls the app's commands. It never receives a
// token, key or stored credential, only the display data that the commands return.

import { IDS } from "./ids.js";

const elements = Object.fromEntries(
  Object.entries(IDS).map(([name, id]) => [name, document.getElementById(id)]),
);
const startingText = document.getElementById("starting");
const signinForm = document.getElementById("signin-form");

/** Time between two `tunnel_status` calls while the profile is shown, in milliseconds. */
const TUNNEL_POLL_INTERVAL_MS = 1000;
let tunnelPollTimer = null;
// Incremented by every start and stop, so that a call still running from an earlier polling
// round neither renders nor schedules another call.
let tunnelPollRound = 0;

/** Calls an app command; rejects with the command's error sentence. */
async function invoke(command, args) {
  const tauri = window.__TAURI__;
  if (!tauri?.core?.invoke) {
    throw new Error("Camwire's commands are not available; open this page in the Camwire app.");
  }
  return tauri.core.invoke(command, args);
}

function setVisible(element, visible) {
  element.hidden = !visible;
}

/** Shows `text` in `element`, or hides the element when there is no text. */
function setMessage(element, text) {
  element.textContent = text ?? "";
  setVisible(element, Boolean(text));
}

function render(state) {
  setVisible(startingText, false);

  const signedIn = state.phase === "signed_in" || state.phase === "signing_out";
  setVisible(elements.signinView, !signedIn);
  setVisible(elements.profileView, signedIn);

  if (signedIn && state.profile) {
    renderProfile(state);
    renderTunnel(state.tunnel);
    startTunnelPolling();
  } else {
    stopTunnelPolling();
    renderSignIn(state);
  }
}

function renderSignIn(state) {
  if (state.serverUrl) {
    elements.serverUrl.value = state.serverUrl;
  }

  const notice = state.notice;
  setMessage(elements.signoutNotice, notice?.message);
  elements.signoutNotice.classList.toggle("warning", Boolean(notice) && notice.kind !== "confirmed");
  elements.signoutNotice.dataset.kind = notice?.kind ?? "";
}

function renderProfile(state) {
  const profile = state.profile;
  elements.profileUsername.textContent = profile.username;
  elements.profileDisplayName.textContent = profile.displayName;
  elements.profileEmail.textContent = profile.email;
  elements.profileRole.textContent = profile.role;
  elements.profileAddress.textContent = profile.address;
  elements.profileEndpoint.textContent = profile.endpoint;

  const status = state.serverStatus;
  setMessage(elements.profileStatus, status.message);
  elements.profileStatus.classList.toggle("checking", status.kind === "checking");
  elements.profileStatus.dataset.kind = status.kind;
  setVisible(elements.profileRetry, status.kind === "unreachable" || status.kind === "failing");
  elements.profileRetry.disabled = false;
}

function renderTunnel(tunnel) {
  elements.tunnelState.textContent = tunnel.stateText;
  elements.tunnelState.dataset.kind = tunnel.state;
  elements.tunnelHandshake.textContent = tunnel.handshake;
  elements.tunnelSent.textContent = tunnel.sent;
  elements.tunnelReceived.textContent = tunnel.received;
  elements.tunnelServer.textContent = tunnel.serverText;
  elements.tunnelServer.dataset.kind = tunnel.server;
  elements.tunnelServer.title = tunnel.serverDetail ?? "";
}

/** Calls `tunnel_status` every second while the profile is shown; one call at a time. */
function startTunnelPolling() {
  if (tunnelPollTimer !== null) {
    return;
  }
  tunnelPollRound += 1;
  const round = tunnelPollRound;
  tunnelPollTimer = setTimeout(() => pollTunnel(round), TUNNEL_POLL_INTERVAL_MS);
}

function stopTunnelPolling() {
  tunnelPollRound += 1;
  clearTimeout(tunnelPollTimer);
  tunnelPollTimer = null;
}

async function pollTunnel(round) {
  let tunnel = null;
  try {
    tunnel = await invoke("tunnel_status");
  } catch (error) {
    console.error(`tunnel_status failed: ${error}`);
  }
  if (round !== tunnelPollRound) {
    return;
  }

  if (tunnel) {
    renderTunnel(tunnel);
  }
  tunnelPollTimer = setTimeout(() => pollTunnel(round), TUNNEL_POLL_INTERVAL_MS);
}

function setSigningIn(busy) {
  for (const element of [elements.serverUrl, elements.username, elements.password, elements.signinButton]) {
    element.disabled = busy;
  }
  setVisible(elements.signinProgress, busy);
}

async function signIn(event) {
  event.preventDefault();
  if (elements.signinButton.disabled) {
    return;
  }

  setMessage(elements.signinError, null);
  setMessage(elements.signoutNotice, null);
  setSigningIn(true);
  try {
    const state = await invoke("sign_in", {
      serverUrl: elements.serverUrl.value,
      username: elements.username.value,
      password: elements.password.value,
    });
    elements.password.value = "";
    render(state);
  } catch (error) {
    setMessage(elements.signinError, String(error));
  } finally {
    setSigningIn(false);
  }
}

/** Asks the app to confirm the saved session with the server (or to retry), then renders. */
async function checkSession() {
  elements.profileRetry.disabled = true;
  invoke("check_tunnel").catch((error) => console.error(`check_tunnel failed: ${error}`));
  setMessage(elements.profileStatus, "Checking the session with the server…");
  elements.profileStatus.classList.add("checking");
  try {
    render(await invoke("check_session"));
  } catch (error) {
    setMessage(elements.profileStatus, String(error));
    elements.profileRetry.disabled = false;
  }
}

function openLogoutDialog() {
  setVisible(elements.logoutProgress, false);
  setLogoutButtonsDisabled(false);
  setVisible(elements.logoutDialog, true);
  elements.logoutCancel.focus();
}

function closeLogoutDialog() {
  setVisible(elements.logoutDialog, false);
  setLogoutButtonsDisabled(false);
  setVisible(elements.logoutProgress, false);
}

function setLogoutButtonsDisabled(disabled) {
  for (const element of [elements.logoutConfirm, elements.logoutCancel, elements.logoutButton, elements.profileRetry]) {
    element.disabled = disabled;
  }
}

async function confirmLogout() {
  if (elements.logoutConfirm.disabled) {
    return;
  }

  setLogoutButtonsDisabled(true);
  setVisible(elements.logoutProgress, true);
  let state;
  try {
    const result = await invoke("sign_out");
    state = result.state;
  } catch (error) {
    // The command itself always returns a report; this covers a failed call.
    state = await invoke("app_state");
    setMessage(elements.signinError, String(error));
  }
  closeLogoutDialog();
  render(state);
  if (!elements.signinView.hidden) {
    elements.username.focus();
  }
}

function cancelLogout() {
  if (elements.logoutCancel.disabled) {
    return;
  }
  closeLogoutDialog();
  elements.logoutButton.focus();
}

async function start() {
  for (const [name, element] of Object.entries(elements)) {
    if (!element) {
      console.error(`ids.js names #${IDS[name]}, which the page lacks`);
    }
  }

  signinForm.addEventListener("submit", signIn);
  elements.logoutButton.addEventListener("click", openLogoutDialog);
  elements.logoutCancel.addEventListener("click", cancelLogout);
  elements.logoutConfirm.addEventListener("click", confirmLogout);
  elements.profileRetry.addEventListener("click", checkSession);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !elements.logoutDialog.hidden) {
      cancelLogout();
    }
  });

  let state;
  try {
    state = await invoke("app_state");
  } catch (error) {
    setVisible(startingText, false);
    setVisible(elements.signinView, true);
    setMessage(elements.signinError, String(error));
    return;
  }
  render(state);

  const unchecked = state.serverStatus.kind === "unknown" || state.serverStatus.kind === "checking";
  if (state.phase === "signed_in" && unchecked) {
    await checkSession();
  }
}

start();
