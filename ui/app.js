// Camwire's page: renders the app state and calls the app's commands. It never receives a
// token, key or stored credential, only the display data that the commands return.

import { IDS } from "./ids.js";

const elements = Object.fromEntries(
  Object.entries(IDS).map(([name, id]) => [name, document.getElementById(id)]),
);
const startingText = document.getElementById("starting");
const signinForm = document.getElementById("signin-form");
const shell = document.getElementById("shell");

/** Time between two `tunnel_status` calls while the profile is shown, in milliseconds. */
const TUNNEL_POLL_INTERVAL_MS = 1000;
let tunnelPollTimer = null;
// Incremented by every start and stop, so that a call still running from an earlier polling
// round neither renders nor schedules another call.
let tunnelPollRound = 0;

/** The last state the app returned, rendered again when the settings view closes. */
let lastState = null;
/** The settings in force, as `get_settings` and `save_settings` return them. */
let currentSettings = null;
let settingsOpen = false;
/** Whether a connect or disconnect call runs. */
let tunnelBusy = false;

/** Texts of the confirmation dialog for each of its uses. */
const DIALOG_MODES = Object.freeze({
  logout: {
    title: "Log out?",
    text: "This device gives back its VPN address and forgets the saved sign-in.",
    confirm: "Log out",
  },
  serverChange: {
    title: "Log out to change the server?",
    text:
      "You are signed in to another server. Saving the new server logs you out first: this "
      + "device gives back its VPN address and forgets the saved sign-in.",
    confirm: "Log out and save",
  },
});
let dialogMode = null;
/** The element that opened the dialog, focused again when it is cancelled. */
let dialogOpener = null;
/** Settings waiting for the confirmation of a server change. */
let pendingSettings = null;

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

/** Shows `text` after a spinner in a progress element, or hides it. */
function setProgress(element, text) {
  element.replaceChildren();
  if (text) {
    const spinner = document.createElement("span");
    spinner.className = "spinner";
    spinner.setAttribute("aria-hidden", "true");
    element.append(spinner, text);
  }
  setVisible(element, Boolean(text));
}

function isSignedIn(state) {
  return state.phase === "signed_in" || state.phase === "signing_out";
}

function render(state) {
  lastState = state;
  setVisible(startingText, false);

  const signedIn = isSignedIn(state) && Boolean(state.profile);
  setVisible(elements.signinView, !settingsOpen && !signedIn);
  setVisible(elements.profileView, !settingsOpen && signedIn);

  if (signedIn) {
    renderProfile(state);
    renderTunnel(state.tunnel);
    renderTunnelControls(state);
    startTunnelPolling();
  } else {
    stopTunnelPolling();
    renderSignIn(state);
  }
}

function renderSignIn(state) {
  const serverUrl = currentSettings?.settings.serverUrl ?? state.serverUrl;
  if (serverUrl) {
    elements.serverUrl.value = serverUrl;
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
  if (!tunnelBusy) {
    setProgress(elements.tunnelProgress, tunnel.state === "connecting" ? "Connecting…" : null);
  }
}

/** Shows *Connect* after a disconnect and *Disconnect* otherwise. */
function renderTunnelControls(state) {
  const focused = document.activeElement;
  setVisible(elements.connectButton, state.disconnected);
  setVisible(elements.disconnectButton, !state.disconnected);
  elements.profileView.dataset.disconnected = String(state.disconnected);

  // Keep the keyboard focus on the tunnel button that replaced the one just pressed.
  if (focused === elements.connectButton || focused === elements.disconnectButton) {
    (state.disconnected ? elements.connectButton : elements.disconnectButton).focus();
  }
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

/** Reads the state again and renders it, such as after a tray menu action. */
async function refresh() {
  try {
    render(await invoke("app_state"));
  } catch (error) {
    console.error(`app_state failed: ${error}`);
  }
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
    if (currentSettings && state.serverUrl) {
      currentSettings.settings.serverUrl = state.serverUrl;
    }
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

/** Runs `connect` or `disconnect`, the commands behind the tray's items of the same names. */
async function changeTunnel(command) {
  if (tunnelBusy) {
    return;
  }

  tunnelBusy = true;
  elements.connectButton.disabled = true;
  elements.disconnectButton.disabled = true;
  setMessage(elements.tunnelError, null);
  setProgress(elements.tunnelProgress, command === "connect" ? "Connecting…" : "Disconnecting…");
  try {
    render(await invoke(command));
  } catch (error) {
    setMessage(elements.tunnelError, String(error));
  } finally {
    tunnelBusy = false;
    elements.connectButton.disabled = false;
    elements.disconnectButton.disabled = false;
    setProgress(elements.tunnelProgress, null);
    if (lastState) {
      renderTunnel(lastState.tunnel);
    }
  }
}

// Confirmation dialog.

/** Returns the dialog's buttons that can take the focus, in tab order. */
function dialogFocusables() {
  return [...elements.logoutDialog.querySelectorAll("button")].filter((button) => !button.disabled);
}

function openDialog(mode, opener) {
  dialogMode = mode;
  dialogOpener = opener;
  const texts = DIALOG_MODES[mode];
  elements.logoutDialogTitle.textContent = texts.title;
  elements.logoutDialogText.textContent = texts.text;
  elements.logoutConfirm.textContent = texts.confirm;

  setVisible(elements.logoutProgress, false);
  setDialogBusy(false);
  shell.inert = true;
  setVisible(elements.logoutDialog, true);
  elements.logoutCancel.focus();
}

function closeDialog() {
  setVisible(elements.logoutDialog, false);
  shell.inert = false;
  setDialogBusy(false);
  setVisible(elements.logoutProgress, false);
  dialogMode = null;
  pendingSettings = null;
}

function setDialogBusy(busy) {
  for (const element of [elements.logoutConfirm, elements.logoutCancel, elements.logoutButton, elements.profileRetry]) {
    element.disabled = busy;
  }
}

function cancelDialog() {
  if (elements.logoutCancel.disabled) {
    return;
  }
  const opener = dialogOpener;
  closeDialog();
  opener?.focus();
}

async function confirmDialog() {
  if (elements.logoutConfirm.disabled) {
    return;
  }

  setDialogBusy(true);
  setVisible(elements.logoutProgress, true);
  if (dialogMode === "serverChange") {
    await saveSettings(pendingSettings, true);
  } else {
    await logOut();
  }
}

async function logOut() {
  let state;
  try {
    const result = await invoke("sign_out");
    state = result.state;
  } catch (error) {
    // The command itself always returns a report; this covers a failed call.
    state = await invoke("app_state");
    setMessage(elements.signinError, String(error));
  }
  closeDialog();
  render(state);
  if (!elements.signinView.hidden) {
    elements.username.focus();
  }
}

function openLogoutDialog() {
  if (!lastState || !isSignedIn(lastState) || !elements.logoutDialog.hidden) {
    return;
  }
  if (settingsOpen) {
    closeSettings();
  }
  openDialog("logout", elements.logoutButton);
}

/** Keeps Tab and Shift+Tab inside the open dialog. */
function trapFocus(event) {
  const focusables = dialogFocusables();
  if (focusables.length === 0) {
    event.preventDefault();
    return;
  }
  const first = focusables[0];
  const last = focusables[focusables.length - 1];
  const inside = elements.logoutDialog.contains(document.activeElement);

  if (event.shiftKey && (document.activeElement === first || !inside)) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && (document.activeElement === last || !inside)) {
    event.preventDefault();
    first.focus();
  }
}

// Settings view.

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme ?? "system";
}

function fillSettingsForm(view) {
  const settings = view.settings;
  elements.settingsServerUrl.value = settings.serverUrl ?? "";
  elements.settingsAllowInsecure.checked = settings.allowInsecure;
  elements.settingsLogLevel.value = settings.logLevel;
  elements.settingsStartAtLogin.checked = settings.startAtLogin;
  elements.settingsTheme.value = settings.theme;
  const folder = view.logDirectory ? `Log files are in ${view.logDirectory}` : null;
  setMessage(elements.settingsLogFolder, folder);
}

function readSettingsForm() {
  return {
    serverUrl: elements.settingsServerUrl.value,
    allowInsecure: elements.settingsAllowInsecure.checked,
    logLevel: elements.settingsLogLevel.value,
    startAtLogin: elements.settingsStartAtLogin.checked,
    theme: elements.settingsTheme.value,
  };
}

function setSettingsBusy(busy) {
  for (const element of elements.settingsForm.elements) {
    element.disabled = busy;
  }
}

async function openSettings() {
  if (settingsOpen) {
    return;
  }
  setMessage(elements.settingsError, null);
  setMessage(elements.settingsNotice, null);
  try {
    currentSettings = await invoke("get_settings");
  } catch (error) {
    setMessage(elements.settingsError, String(error));
  }
  if (currentSettings) {
    fillSettingsForm(currentSettings);
  }

  settingsOpen = true;
  elements.settingsButton.setAttribute("aria-expanded", "true");
  setVisible(startingText, false);
  setVisible(elements.signinView, false);
  setVisible(elements.profileView, false);
  setVisible(elements.settingsView, true);
  elements.settingsServerUrl.focus();
}

function closeSettings() {
  settingsOpen = false;
  elements.settingsButton.setAttribute("aria-expanded", "false");
  setVisible(elements.settingsView, false);
  if (lastState) {
    render(lastState);
  } else {
    setVisible(startingText, true);
  }
  elements.settingsButton.focus();
}

/**
 * Saves `settings`; with `confirmLogout` the app logs out first when the server changes.
 * Opens the confirmation dialog when the app requires a log-out first.
 */
async function saveSettings(settings, confirmLogout) {
  setMessage(elements.settingsError, null);
  setSettingsBusy(true);
  try {
    const result = await invoke("save_settings", { settings, confirmLogout });
    if (result.status === "logout_required") {
      pendingSettings = settings;
      openDialog("serverChange", elements.settingsSave);
      return;
    }

    currentSettings = result.settings;
    applyTheme(currentSettings.settings.theme);
    closeDialog();
    lastState = result.state;
    closeSettings();
  } catch (error) {
    closeDialog();
    setMessage(elements.settingsError, String(error));
    elements.settingsServerUrl.focus();
  } finally {
    setSettingsBusy(false);
  }
}

function submitSettings(event) {
  event.preventDefault();
  if (elements.settingsSave.disabled) {
    return;
  }
  saveSettings(readSettingsForm(), false);
}

async function exportLogs() {
  setMessage(elements.settingsError, null);
  setMessage(elements.settingsNotice, null);
  elements.settingsExportLogs.disabled = true;
  try {
    const message = await invoke("export_logs");
    setMessage(elements.settingsNotice, message);
  } catch (error) {
    setMessage(elements.settingsError, String(error));
  } finally {
    elements.settingsExportLogs.disabled = false;
  }
}

function onKeyDown(event) {
  const dialogOpen = !elements.logoutDialog.hidden;
  if (dialogOpen && event.key === "Escape") {
    event.preventDefault();
    cancelDialog();
  } else if (dialogOpen && event.key === "Tab") {
    trapFocus(event);
  } else if (settingsOpen && event.key === "Escape") {
    event.preventDefault();
    closeSettings();
  }
}

/** Handles a request that the app sends from outside the page, such as from the tray. */
function onAppRequest(event) {
  if (event.detail === "refresh") {
    refresh();
  } else if (event.detail === "confirm-logout") {
    openLogoutDialog();
  }
}

async function start() {
  for (const [name, element] of Object.entries(elements)) {
    if (!element) {
      console.error(`ids.js names #${IDS[name]}, which the page lacks`);
    }
  }

  signinForm.addEventListener("submit", signIn);
  elements.logoutButton.addEventListener("click", openLogoutDialog);
  elements.logoutCancel.addEventListener("click", cancelDialog);
  elements.logoutConfirm.addEventListener("click", confirmDialog);
  elements.profileRetry.addEventListener("click", checkSession);
  elements.connectButton.addEventListener("click", () => changeTunnel("connect"));
  elements.disconnectButton.addEventListener("click", () => changeTunnel("disconnect"));
  elements.settingsButton.addEventListener("click", () => (settingsOpen ? closeSettings() : openSettings()));
  elements.settingsForm.addEventListener("submit", submitSettings);
  elements.settingsCancel.addEventListener("click", closeSettings);
  elements.settingsExportLogs.addEventListener("click", exportLogs);
  document.addEventListener("keydown", onKeyDown);
  document.addEventListener("camwire:request", onAppRequest);

  try {
    currentSettings = await invoke("get_settings");
    applyTheme(currentSettings.settings.theme);
  } catch (error) {
    console.error(`get_settings failed: ${error}`);
  }

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
