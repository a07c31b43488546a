"""Reliability suite: peer faults, handler exceptions, threads and scale, on both event loops."""
