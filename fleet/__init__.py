"""Fleet: the domain core of a city's smart street furniture backend (no web, no CoAP)."""

__version__ = "0.1.0"
