"""The fleet dashboard: one HTML page, one script and one style sheet, served by the API.

The files sit beside this module and are read with `importlib.resources`, so
they travel wherever the package does: the wheel, the Lambda bundle
(`v2c aws build` copies `v2c/handlers` whole) and a checkout alike. There is
no build step and nothing is fetched from a CDN: what the tests drove is
what a browser gets. `v2c.handlers.api.routes.dashboard` serves them.
"""

from v2c.handlers.dashboard.assets import ASSETS, PAGE, Asset, asset, page

__all__ = ["ASSETS", "PAGE", "Asset", "asset", "page"]
