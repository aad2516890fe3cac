"""Device groups: named sets of devices, static members or a saved filter, for dimming and rollouts."""
