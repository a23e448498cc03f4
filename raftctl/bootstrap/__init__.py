"""`raftctl bootstrap`: a pure plan (plan.py) carried out over SSH by executors (steps.py,
health.py, apply.py); the commands themselves are in raftctl/commands/bootstrap.py."""
