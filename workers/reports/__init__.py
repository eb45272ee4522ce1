"""What operators and CI read: validation reports (text, JSON, JUnit XML), the jobs page,
and benchmark records written to the database."""
