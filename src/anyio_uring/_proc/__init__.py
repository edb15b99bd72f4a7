"""Processes and the things that come with them: subprocesses (``_process.py``), pipes on the
ring (``_pipes.py``), signals (``_signals.py``) and name resolution in threads (``_dns.py``)."""
