"""The file engine: a whole export decided group by group, the common path compiled.

* :mod:`.group`: one commit group, in stretches of the compiled loop and, for the rest,
  the pure step one reading at a time;
* :mod:`.kernel`: the compiled loop (numba), the ordinary filter step over arrays;
* :mod:`.state`: a user's state as the loop's arrays, and back;
* :mod:`.results`: the results of one input as columns, and the results file.

:mod:`weightstream.pipeline` drives it; ``processing.engine = "step"`` bypasses the loop.
"""
