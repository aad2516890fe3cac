"""CoAP measuring tools: a minimal wire codec, a raw-UDP load generator and reference servers."""
