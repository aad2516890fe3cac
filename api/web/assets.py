"""Where the pages' files come from: Fleet's own scripts and styles, and the libraries that
installed Python packages carry (Leaflet, plotly.js). Nothing is
fetched from a CDN and nothing third-party lives in the repository."""

from __future__ import annotations

from pathlib import Path

import plotly
import xstatic.pkg.leaflet as leaflet
from litestar.datastructures import CacheControlHeader
from litestar.router import Router
from litestar.static_files import create_static_files_router

OWN = Path(__file__).parent / "static"
# Versioned paths: a new package release is a new URL, so browsers may keep these for a day
# without asking; Fleet's own files are revalidated on every load (ETag), so an upgrade shows.
VENDOR = {
    f"/vendor/leaflet/{leaflet.VERSION}": Path(leaflet.BASE_DIR),
    f"/vendor/plotly/{plotly.__version__}": Path(plotly.__file__).parent / "package_data",
}
LEAFLET = f"/vendor/leaflet/{leaflet.VERSION}"
PLOTLY_JS = f"/vendor/plotly/{plotly.__version__}/plotly.min.js"


def asset_routers() -> list[Router]:
    own = create_static_files_router("/ui", directories=[OWN], include_in_schema=False,
                                     cache_control=CacheControlHeader(no_cache=True))
    vendor = [create_static_files_router(path, directories=[directory], include_in_schema=False,
                                         cache_control=CacheControlHeader(max_age=86400))
              for path, directory in VENDOR.items()]
    return [own, *vendor]
