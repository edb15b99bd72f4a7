"""Sockets on the ring (stream, listener and datagram objects; the receive-buffer pool).

Empty until the sockets issue lands: the anyio backend's socket methods raise
``NotImplementedError`` today.  Socket classes here will build an operation, await it through
``_core``'s ``wait_operation`` and translate the result; they hold no cancellation logic.
"""
