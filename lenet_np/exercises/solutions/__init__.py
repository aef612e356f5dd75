"""The exercises' layers, solved: the source of both files that ``python -m lenet_np.exercises``
writes. ``new`` writes each file with the code between ``# BEGIN SOLUTION`` and ``# END SOLUTION``
replaced by ``raise NotImplementedError``; ``solutions`` writes it without the two marker lines.

These modules use NumPy only and import nothing from lenet_np: a student's copy stands alone.
"""
