"""Builds the Litestar app from already-created resources (database, services)."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.di import Provide
from litestar.exceptions import ClientException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from api.controllers.access import ApiKeyController, AuditController, TenantController
from api.controllers.devices import DeviceController
from api.controllers.groups import GroupController
from api.controllers.commands import CommandController, ObservationController
from api.controllers.health import healthz, readyz
from api.controllers.lighting import LightingController
from api.controllers.telemetry import TelemetryController
from api.middleware import authentication, request_context
from api.problems import EXCEPTION_HANDLERS
from fleet import __version__
from fleet.access.models import Principal
from fleet.access.service import ApiKeyService, TenantService
from fleet.audit.service import AuditService
from fleet.commands.service import CommandService
from fleet.db import Database
from fleet.groups.service import GroupService
from fleet.lighting.energy import EnergyService
from fleet.lighting.preview import PreviewService
from fleet.lighting.service import LightingService
from fleet.registrations.service import RegistrationService
from fleet.registry.service import DeviceService
from fleet.telemetry.service import TelemetryService
from fleet.settings import HttpSettings
from fleet.supervision import Health


def _constant(value: object) -> Provide:
    def provide() -> object:
        return value
    return Provide(provide, use_cache=True, sync_to_thread=False)


class FleetRequest(Request):
    """A request whose JSON body nested past the decoder's recursion limit is the client's error."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError:
            raise ClientException("the JSON body is nested too deeply") from None


def _principal(request: Request) -> Principal:
    return request.scope["state"]["principal"]


def create_app(db: Database, http: HttpSettings, *, extra_services: dict[str, object] | None = None,
               extra_handlers: list | None = None) -> Litestar:
    services = {
        "db": db,
        "tenant_service": TenantService(db),
        "apikey_service": ApiKeyService(db),
        "audit_service": AuditService(db),
        "device_service": DeviceService(db),
        "telemetry_service": TelemetryService(db),
        "command_service": CommandService(db),
        "registration_service": RegistrationService(db, node="api"),
        "group_service": GroupService(db),
        "lighting_service": LightingService(db),
        "preview_service": PreviewService(db),
        "energy_service": EnergyService(db),
        "health": Health(),  # `fleet serve` passes the one its listener and scheduler report to
        **(extra_services or {}),
    }
    dependencies = {name: _constant(service) for name, service in services.items()}
    dependencies["principal"] = Provide(_principal, sync_to_thread=False)
    app = Litestar(
        route_handlers=[healthz, readyz, DeviceController, TenantController, ApiKeyController,
                        AuditController, GroupController, TelemetryController, CommandController,
                        ObservationController, LightingController, *(extra_handlers or [])],
        dependencies=dependencies,
        middleware=[authentication(services["apikey_service"])],
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=FleetRequest,
        request_max_body_size=http.max_body_bytes,
        logging_config=None,
        openapi_config=OpenAPIConfig(
            title="Fleet", version=__version__,
            description="Smart street furniture of a city: streetlights, waste bins, Wi-Fi access points.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
            components=Components(security_schemes={"bearer": SecurityScheme(
                type="http", scheme="bearer", description="A Fleet API key")}),
            security=[{"bearer": []}],
        ),
        debug=False,
    )
    # Litestar runs `middleware` only once a route matched; wrapping the handler behind routing
    # gives unknown paths and wrong methods a request id and their log line too.
    app.asgi_handler = request_context(app.asgi_handler)
    return app
