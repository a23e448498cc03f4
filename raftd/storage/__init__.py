"""Durable storage for a Raft node: the write-ahead log of entries and hard state."""
from raftd.storage.wal import CorruptLogError, DurableLog

__all__ = ["CorruptLogError", "DurableLog"]
