"""Loading a GGUF model into llama.cpp, with the weight layouts this process can run.

llama.cpp may repack weights into "extra" buffer types for the CPU's matrix units (AMX on
recent Xeons). A wheel compiled with ``GGML_NATIVE`` on a machine that has AMX enables that
path wherever its CPU lists the AMX flags, and on a virtual machine whose hypervisor does not
give the guest AMX state it dies with a general protection fault at the first token (measured
on this project's CI machines). pip caches that wheel, so the build cannot be relied on to
leave AMX out; the layouts are chosen at load time instead, off by default.

llama-cpp-python (0.3.x) has no constructor argument for it: ``Llama`` takes its model
parameters from ``llama_model_default_params()``, so that one function is wrapped for the
duration of the load, under a lock, so that no other load in this process sees the wrapper.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["load_llama"]

_loading = threading.Lock()


def load_llama(
    path: Path, *, n_ctx: int, n_threads: int, extra_buffer_types: bool = False
) -> Llama:
    """A ``Llama`` for ``path``. ``extra_buffer_types``: let llama.cpp repack weights for the
    CPU's matrix units (faster where they work; a crash where the CPU lists them but the
    machine does not provide them)."""
    import llama_cpp.llama_cpp as ctypes_bindings
    from llama_cpp import Llama

    # The module ``Llama`` calls through (``llama_cpp.llama_cpp``), looked up at call time.
    bindings: Any = ctypes_bindings
    with _loading:
        defaults = bindings.llama_model_default_params

        def model_params() -> Any:
            params = defaults()
            params.use_extra_bufts = extra_buffer_types
            return params

        bindings.llama_model_default_params = model_params
        try:
            return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)
        finally:
            bindings.llama_model_default_params = defaults
