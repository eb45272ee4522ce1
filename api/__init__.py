"""The HTTP service: an OpenAI-compatible API over the workers and the database.

Layering: ``api`` imports ``workers``, ``db`` and ``core.config``/``embedding.models.specs``;
nothing imports ``api`` (except ``embedctl serve``, lazily). The API process never loads a
model: embeddings are ``embedding.embed`` tasks, training is a fine-tune job.
"""
