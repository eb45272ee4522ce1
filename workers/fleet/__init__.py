"""Sharing the GPU fleet among projects: who runs next (fair share), how much a project may
hold at once (quotas), how many GPUs there are (capacity), and what each project used.

The outbox (``workers/jobs/outbox.py``) records a job and calls :func:`dispatch.dispatch`
instead of sending it: jobs wait in the database, not in the broker's first-in-first-out
queue, and a GPU slot that comes free takes the next job of the project furthest below its
share. No broker of our own: the database holds the order, Redis the messages.
"""
