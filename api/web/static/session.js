// Who the page acts as: the shell embeds it (GET /api/v1/session answers the same).
export const session = JSON.parse(document.getElementById('fleet-session').textContent);

// A control is drawn only when the role may use it; the API refuses it anyway.
export function can(permission) {
  return session.permissions.includes(permission);
}
