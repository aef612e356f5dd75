"""Benchmarks of lenet_np against PyTorch: ``python -m benchmarks.run`` (CPU), ``benchmarks/gpu_check.py`` (GPU)."""
