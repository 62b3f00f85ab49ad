"""Process-level plumbing: device choice, seeding, atomic writes, safe checkpoints, resume."""
