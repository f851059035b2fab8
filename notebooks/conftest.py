"""When pytest executes the notebooks (nbmake), each exercise cell's stub is replaced by its
solution inside the check, so every check runs on every notebook run and a wrong solution fails
the notebook (``exercises.SOLUTIONS_ENV``). The kernels nbmake starts inherit the variable."""

import os

os.environ.setdefault("EXERCISES_SOLUTIONS", "1")
