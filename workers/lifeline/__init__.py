"""What keeps work alive when workers die: leases, rescue, retries, presence.

The periodic duties (``duties``: rescue stranded jobs, evaluations and validation runs,
relay the outbox), leases (``leases``), database writes that outlive a restart
(``db_retry``), worker presence and the check that one is listening (``worker_presence``,
``worker_check``) and a warm shutdown that hands running work back (``warm_shutdown``).
"""
