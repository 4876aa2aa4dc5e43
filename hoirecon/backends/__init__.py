"""Backends for the paper's own networks (100DOH, PointRend, STCN, FrankMocap, DiffHOI prior), each loading
user-supplied weights."""
