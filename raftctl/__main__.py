"""`python -m raftctl ...`, the same as the `raftctl` command."""
from raftctl.main import main

main()
