"""Diagnosis of the notes deployment: which layer broke, the evidence, and the fix.

`python -m diagnose` runs the checks; `python -m diagnose.drills` injects and heals the
lab's faults and writes post-mortem drafts from what a drill saw.
"""
