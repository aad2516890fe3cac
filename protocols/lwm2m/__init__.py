"""LwM2M over CoAP: payload codecs for the content formats devices speak."""
