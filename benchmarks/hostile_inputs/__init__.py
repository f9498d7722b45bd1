"""Hostile inputs per link: the frame builders and tables that tests/hostile/ draws from (through hypothesis) and
benchmarks/robustness.py fires (through a seeded ``random.Random``). Plain data and functions, no test framework,
so both sides use the same catalogue."""
