"""Tools around the pipeline stages, not stages themselves: the end-to-end runner and the gallery screenshot.

They run from a checkout (`python -m tools.end_to_end`), are not installed with the
package, and only start the stages as child processes or look at their outputs.
"""
