"""Test-suite configuration.

Under CI (``CI`` set), Hypothesis draws the same examples on every run, so a
red build always means a change in the code, never a newly drawn example; the
per-test ``max_examples`` settings still apply.  Locally, draws vary, which is
how the property tests find new bugs.
"""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
