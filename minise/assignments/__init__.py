"""Course assignments: student copies with the solutions taken out, and a sandboxed autograder.

The parts, bottom to top:

- :mod:`.markers` -- the ``# BEGIN SOLUTION assignment/part`` ... ``# END SOLUTION`` markers;
- :mod:`.make` -- ``minise assignments make``: the student copy;
- :mod:`.plugin` -- the pytest plugin of a grading run (and the launcher that starts it in the sandbox);
- :mod:`.sandbox` -- bubblewrap namespaces, an unprivileged uid, resource limits;
- :mod:`.grader` -- ``minise assignments grade``: one student, the score decided in the grader's process;
- :mod:`.batch` -- ``minise assignments grade-all``: a folder of submissions into a gradebook;
- :mod:`.gradescope` -- ``minise assignments autograder``: the Gradescope package and its results.json;
- :mod:`.cli` -- the command line (:func:`add_arguments`, :func:`run`).

docs/instructors.md is the guide: the workflows, the threat model and the sandbox's requirements.
"""

from .cli import add_arguments, main, run
from .grader import DEFAULT_TIME_LIMIT, DEFAULT_TIMEOUT, format_table, grade, graded_files, write_atomically
from .make import COPIED, INSTRUCTOR_ONLY, REFERENCE_ONLY, make, project_root, strip_references
from .markers import ASSIGNMENTS, AssignmentError, Region, assignment_of, find_regions, parse_only, strip_solutions
from .sandbox import Limits, Sandbox, SandboxWarning, choose_sandbox

__all__ = ["ASSIGNMENTS", "INSTRUCTOR_ONLY", "REFERENCE_ONLY", "COPIED", "DEFAULT_TIME_LIMIT", "DEFAULT_TIMEOUT",
           "AssignmentError", "Region", "assignment_of", "find_regions", "strip_solutions", "strip_references",
           "parse_only", "project_root", "graded_files", "make", "grade", "format_table", "write_atomically",
           "Limits", "Sandbox", "SandboxWarning", "choose_sandbox", "add_arguments", "run", "main"]
