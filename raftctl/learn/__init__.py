"""raftctl sim: learn Raft by watching the real core (issue 18).

world.py runs real RaftNodes in virtual time; narrate.py explains each event with the paper's
section; scenarios.py plays the paper's figures and asserts their point; view.py draws a frame;
driver.py runs the live, keyboard-driven view.
"""
