"""The web dashboard (``comfyline serve``): the line, each order live, review, export and a
new-order form, over the same library as the command line. See docs/WEB.md.

Modules: ``app`` (the Starlette app), ``pages`` (the line, an order, a new order, images and
streams), ``review_pages`` and ``export_pages``, ``stream`` (server-sent events from the
ledger), ``runner`` (orders started from the page), ``catalog`` (which orders there are),
``images`` (images by ledger index, cached thumbnails), ``forms`` (the new-order form),
``log`` (the ledger's events in words), ``security`` (token, loopback, cross-site POSTs),
``server`` (uvicorn).
"""

from comfyline.web.app import create_app
from comfyline.web.config import WebConfig
from comfyline.web.security import needs_token, new_token
from comfyline.web.server import bind, dashboard_url, serve

__all__ = ["WebConfig", "bind", "create_app", "dashboard_url", "needs_token", "new_token", "serve"]
