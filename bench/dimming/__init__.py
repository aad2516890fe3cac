"""Pushing a new dimming level to ten thousand simulated streetlights, over real UDP."""
