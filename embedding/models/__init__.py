"""What a model is and how it is loaded, before anything runs on it.

Specs (the registered profiles and the spec read from a folder), hub and local-folder
resolution, safetensors-only weight loading, the sentence-transformers folder layout, task
LoRA adapters, pooling, and the file modes of what we write. Imports ``core`` only, of ours.
"""
