"""What each node does per round, as plain objects: no sockets, no clock, no files.

A protocol object is fed events (``start``, ``on_message``, ``on_tick``, each with the
time ``now`` on the caller's monotonic clock) and answers with effects: messages to send,
rows to write, log events, a checkpoint. A node process is a thin loop around one
(``comms.nodes``); tests drive them directly, through every fault path, without
processes (tests/test_protocol.py); ``comms.protocol.bus`` runs them all in one process.
"""
