"""Fast paths: the same ops as ``minise.functional``, computed with fewer passes over memory.

The ops in ``minise.functional`` are written to be read: each forward and backward is the textbook
formula in plain array code. Where that costs real time in training, a module here computes the
same numbers a faster way (fewer sweeps over the data, buffers reused, work cut for the cache),
and the op hands its work to it. The textbook code stays the op's definition: every fast path is
tested equal to it in float64 (``tests/fast/``), up to the rounding of reordered sums.

How an op chooses (``minise.speed.fast_path``):

- ``MINISE_FAST=0`` in the environment, or ``with minise.speed.use_fast(False):``, runs the
  textbook code everywhere (to read it in a debugger, to compare, to time the difference);
- a fast module says which arrays it handles (``supports``); others take the textbook path. The
  modules here take NumPy arrays only and call NumPy directly (no ``get_array_module``): a GPU
  array always runs the textbook code, which is tested on the simulated device
  (``tests/test_speed.py`` checks every module's ``supports`` refuses device arrays);
- each module names, in ``SOLVES``, the assignment regions (``# BEGIN SOLUTION <tag>``) whose
  work it would do. ``minise assignments make`` leaves the module (and its tests in ``tests/fast/``)
  out of a student copy that strips any of those regions, so a copy never hands out a second
  solution and the graded tests always run the student's own code.
"""
