"""Neutral helpers every package may use: atomic writes, hashing, optional dependencies, machine facts."""
