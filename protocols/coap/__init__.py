"""CoAP plumbing under the LwM2M server: transport tuning and the CoAP error mapper."""
