"""Give a freshly written folder the modes the process umask asks for.

``tempfile.mkdtemp`` makes a ``0700`` folder and safetensors writes ``0600`` files,
whatever the umask: a model saved that way cannot be read by another process user or
container sharing the artifacts volume. Saved models and checkpoints are published with
``0o666 & ~umask`` for files and ``0o777 & ~umask`` for folders, like any file the
process would create: umask ``022`` gives ``0644``/``0755``, ``027`` gives ``0640``/``0750``
(group-readable, nothing for others), ``077`` keeps them private.
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc), else by a brief swap."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> Path:
    """chmod ``folder`` and everything under it to the umask's modes; returns ``folder``."""
    mask = current_umask()
    folder = Path(folder)
    for root, dirs, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
    os.chmod(folder, 0o777 & ~mask)
    return folder
