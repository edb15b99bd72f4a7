"""The pieces behind the anyio backend's method table (``anyio_uring.backend``).

Translation only -- anyio's classes wrapping the runtime's, anyio's exception types and
messages, the shape of anyio's test-runner protocol.  No scheduling, I/O or cancellation logic
lives here (DESIGN.md section 3).

* ``_options.py``   -- ``backend_options`` parsing, the runner they describe
* ``_tasks.py``     -- ``CancelScope``, ``TaskGroup``, ``TaskInfo``
* ``_sync.py``      -- ``Event``, ``Lock``, ``Semaphore``, ``CapacityLimiter``
* ``_fds.py``       -- waiting for raw file descriptors, ``notify_closing``
* ``_threads.py``   -- event-loop tokens, finished runs
* ``_processes.py`` -- process-pool shutdown
* ``_testing.py``   -- the pytest plugin's ``TestRunner``
"""
