"""Serving embeddings: from a request to vectors, fast and cached.

The embed service (``embed_service``), micro-batching of concurrent requests
(``embed_batching``), the embedding cache (``embedding_cache``), batch files
(``batch_tasks``, whose tasks Celery includes), the per-worker model cache
(``model_cache``) and the names a model is asked for by (``model_names``).
"""
