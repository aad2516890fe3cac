"""The device registry: streetlights, waste bins and access points, their groups, import and export."""
