"""Moved to raftd/simrt/lincheck.py (issue 15 §4: the simulator checks its clients' history)."""
from raftd.simrt.lincheck import *  # noqa: F401,F403
from raftd.simrt.lincheck import (CheckResult, History, Op, check_linearizable,  # noqa: F401
                                  format_op)
