"""Device security: per-device DTLS credentials (PSK, raw public keys) and each city's policy."""
