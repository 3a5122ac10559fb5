// Element ids of the page. WebDriver tests select elements by these ids, so a change here
// must be made in index.html, README.md and the tests too.

export const IDS = Object.freeze({
  // Views; the hidden one carries the `hidden` attribute.
  signinView: "signin-view",
  profileView: "profile-view",

  // Sign-in view.
  serverUrl: "server-url",
  username: "username",
  password: "password",
  signinButton: "signin-button",
  signinError: "signin-error",
  signinProgress: "signin-progress",
  signoutNotice: "signout-notice",

  // Profile view.
  profileUsername: "profile-username",
  profileDisplayName: "profile-display-name",
  profileEmail: "profile-email",
  profileRole: "profile-role",
  profileAddress: "profile-address",
  profileEndpoint: "profile-endpoint",
  profileStatus: "profile-status",
  profileRetry: "profile-retry",
  logoutButton: "logout-button",

  // Tunnel controls of the profile view; the tray menu calls the same commands.
  connectButton: "connect-button",
  disconnectButton: "disconnect-button",
  tunnelProgress: "tunnel-progress",
  tunnelError: "tunnel-error",

  // Tunnel part of the profile view, refreshed every second.
  tunnelState: "tunnel-state",
  tunnelHandshake: "tunnel-handshake",
  tunnelSent: "tunnel-sent",
  tunnelReceived: "tunnel-received",
  tunnelServer: "tunnel-server",

  // Settings view.
  settingsButton: "settings-button",
  settingsView: "settings-view",
  settingsForm: "settings-form",
  settingsServerUrl: "settings-server-url",
  settingsAllowInsecure: "settings-allow-insecure",
  settingsLogLevel: "settings-log-level",
  settingsStartAtLogin: "settings-start-at-login",
  settingsTheme: "settings-theme",
  settingsSave: "settings-save",
  settingsCancel: "settings-cancel",
  settingsError: "settings-error",
  settingsNotice: "settings-notice",
  settingsExportLogs: "settings-export-logs",
  settingsLogFolder: "settings-log-folder",

  // Confirmation dialog: log out, or log out to change the server.
  logoutDialog: "logout-dialog",
  logoutConfirm: "logout-confirm",
  logoutCancel: "logout-cancel",
  logoutProgress: "logout-progress",
  logoutDialogTitle: "logout-dialog-title",
  logoutDialogText: "logout-dialog-text",
});
