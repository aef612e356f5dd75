"""The sections of ``benchmarks/gpu_check.py``, one module per concern.

``common``: the constants, the profiles, the device helpers and one training step;
``preflight``, ``parity``, ``measure`` (kernels, epoch, layers, CPU layers, sweep) and
``first_step``: the sections' functions. ``benchmarks/gpu_check.py`` keeps the list of sections,
the command line, the report's header and ``main``. Nothing here imports NumPy on import: the
benchmark modules that need it are loaded by ``common`` at their first use, after the GPU check.
"""
