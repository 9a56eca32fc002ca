"""Values and pure logic at the bottom of the house: definitions, records, errors, access
rules, durations, cron timing and planning. Imports nothing above it (no processes, no
storage, no I/O beyond the clock)."""
