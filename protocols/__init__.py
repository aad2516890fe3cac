"""Wire adapters: each protocol parses, calls a fleet service, and renders the answer."""
