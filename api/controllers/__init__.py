"""Route handlers, one module per resource; each handler parses, calls a service, renders."""
