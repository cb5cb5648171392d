"""The web dashboard: an HTML shell, its static assets, and the read-only views it polls.

Everything the browser loads is served from :mod:`lrtune.server.dashboard`'s ``static`` folder (no CDN, no build
step). See :mod:`lrtune.server.dashboard.routes` and ``docs/dashboard.md``.
"""

from lrtune.server.dashboard.routes import STATIC_DIR, install

__all__ = ["STATIC_DIR", "install"]
