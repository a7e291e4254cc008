"""Helpers shared by the pages. A sub-package, so Streamlit never lists these files as pages."""
