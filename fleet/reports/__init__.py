"""Citizens' reports (Open311 GeoReport v2): matched to the nearest device, followed through its work order."""
