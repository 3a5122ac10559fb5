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

  // Tunnel part of the profile view, refreshed every second.
  tunnelState: "tunnel-state",
  tunnelHandshake: "tunnel-handshake",
  tunnelSent: "tunnel-sent",
  tunnelReceived: "tunnel-received",
  tunnelServer: "tunnel-server",

  // Log-out confirmation dialog.
  logoutDialog: "logout-dialog",
  logoutConfirm: "logout-confirm",
  logoutCancel: "logout-cancel",
  logoutProgress: "logout-progress",
});
