"""Developer and CI tools that are not part of any service and not tests (``python -m tools.NAME``)."""
