"""Devices online: LwM2M registrations, their lifetimes, and the online/offline status they drive."""
