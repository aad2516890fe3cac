"""Waste collection: fill forecasts from the bins' readings, a city's collection set-up, pickup
plans solved with PyVRP, and the routes crews drive."""
