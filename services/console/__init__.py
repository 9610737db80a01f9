"""The web console role: see every workflow, its history and the fleet, and act on them (``bdurable console``).

A Starlette application rendered with Jinja2 and htmx (served from the package: no CDN, no build step), its JSON
API under ``/api`` in the CLI's ``--json`` shapes, live updates as server-sent events fed by ``Client.watch``.
Like every role it talks to Redis only through the library. See docs/console.md.
"""

from bdurable.services.console.app import create_app
from bdurable.services.console.server import Console

__all__ = ["Console", "create_app"]
