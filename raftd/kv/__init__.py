"""The replicated key-value state machine and its log-entry command encoding."""
from .commands import Command, Op, decode_command, encode_command
from .fsm import AppliedIndexError, KVStateMachine, Session

__all__ = ["AppliedIndexError", "Command", "KVStateMachine", "Op", "Session",
           "decode_command", "encode_command"]
