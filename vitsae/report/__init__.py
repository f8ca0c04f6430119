"""The static HTML feature browser (opens from file://, no server) and the pictures it shows."""

from vitsae.report.browser import BrowserConfig, write_browser

__all__ = ["BrowserConfig", "write_browser"]
