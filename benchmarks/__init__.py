"""Benchmarks: our code against the reference implementations, same weights, same inputs, one process."""
