"""Statistics and rendering: pure functions from stored results to Markdown and figures."""
