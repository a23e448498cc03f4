"""Moved to raftd/simrt/lincheck.py (issue 15 §4: the simulator checks its clients' history)."""
from raftd.simrt.lincheck import *  # noqa: F401,F403 - re-exports the moved module for old imports
from raftd.simrt.lincheck import (CheckResult, History, Op, check_linearizable,  # noqa: F401 - re-exported
                                  format_op)
