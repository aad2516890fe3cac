"""Crews: the teams in the street that work orders are assigned to and crew keys belong to."""
