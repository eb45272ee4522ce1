"""Persistence: the ORM (models), engines and sessions (session), the reads and writes the
workers need (repo), value checks (values) and schema migrations (migrate)."""
