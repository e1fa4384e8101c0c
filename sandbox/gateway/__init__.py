"""The regulatory sandbox gateway: the only door for participants (keys, limits, AML screening,
a tamper-evident audit log and the regulator's API)."""
