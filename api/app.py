"""Builds the Litestar app from already-created resources (database, services)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request
from litestar.di import Provide
from litestar.exceptions import ClientException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from api.runtime import alarm_service
from api.controllers.access import ApiKeyController, AuditController, TenantController
from api.controllers.alarms import AlarmController, GroupAlarmSettingsController
from api.controllers.devices import DeviceController
from api.controllers.events import events
from api.controllers.firmware import firmware_routes
from api.controllers.forecast import ForecastController
from api.controllers.groups import GroupController
from api.controllers.campaigns import CampaignController, MaintenanceWindowController
from api.controllers.collection import CollectionSetupController, PlanController
from api.controllers.commands import CommandController, DeviceCommandController, ObservationController
from api.controllers.crews import CrewController
from api.controllers.routes import RouteController
from api.controllers.security import DeviceSecurityController, ServerKeyController
from api.controllers.sync import sync
from api.controllers.workorders import WorkOrderController
from api.controllers.health import healthz, readyz
from api.controllers.lighting import LightingController
from api.controllers.open311 import Open311Controller, Open311Gate
from api.controllers.overview import OverviewController
from api.controllers.telemetry import TelemetryController
from api.idempotency import idempotency
from api.middleware import authentication, request_context
from api.openapi import DOCS_PATH, StructRulesPlugin, document_problems, docs_ui, rebind_options_handlers
from api.problems import EXCEPTION_HANDLERS
from api.web.assets import asset_routers
from api.web.pages import web_routes
from fleet import __version__
from fleet.access.limits import Rate, RequestLimits
from fleet.access.revocations import RevocationListener
from fleet.access.models import Principal
from fleet.access.service import ApiKeyService, SessionService, TenantService
from fleet.audit.service import AuditService
from fleet.campaigns.maintenance import MaintenanceWindowService
from fleet.campaigns.service import CampaignService
from fleet.collection.driving import RouteService
from fleet.collection.forecast_service import ForecastService
from fleet.collection.plans_service import PlanService
from fleet.collection.service import CollectionService
from fleet.commands.service import CommandService
from fleet.crews.service import CrewService
from fleet.db import Database
from fleet.events.service import EventService
from fleet.firmware.service import FirmwareService
from fleet.groups.service import GroupService
from fleet.idempotency.service import IdempotencyService
from fleet.lighting.energy import EnergyService
from fleet.lighting.preview import PreviewService
from fleet.lighting.service import LightingService
from fleet.overview.service import OverviewService
from fleet.registrations.service import RegistrationService
from fleet.registry.service import DeviceService
from fleet.reports.service import ReportService
from fleet.telemetry.service import TelemetryService
from fleet.workorders.service import WorkOrderService
from fleet.workorders.sync import SyncService
from fleet.security.service import SecurityService
from fleet.settings import FirmwareSettings, HttpSettings, SecuritySettings, WebSettings
from fleet.supervision import Health, running


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


def _request_limits(http: HttpSettings) -> RequestLimits:
    limits = http.limits
    return RequestLimits(per_address=Rate(limits.address_per_s, limits.address_burst),
                         per_key=Rate(limits.key_per_s, limits.key_burst),
                         failures_per_address=Rate(limits.auth_failures_per_s, limits.auth_failures_burst))


def _running(component: RevocationListener | EventService):
    """A lifespan that runs a node's listener (key revocations, events) as long as the app."""
    @contextlib.asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        async with running(component.run()):
            yield
    return lifespan


def create_app(db: Database, http: HttpSettings, *, extra_services: dict[str, object] | None = None,
               extra_handlers: list | None = None, firmware: FirmwareSettings | None = None,
               routing_url: str | None = None, web: WebSettings | None = None,
               security: SecuritySettings | None = None, coaps_uri: str | None = None) -> Litestar:
    # One set of buckets for /api/v1 (middleware) and /open311 (its gate): a client spends the same budget.
    limits = _request_limits(http)
    apikey_service = ApiKeyService(db)
    web = web or WebSettings()
    security = security or SecuritySettings()  # no FLEET_CREDENTIALS_KEY: storing a PSK gets 500
    services = {
        "db": db,
        "tenant_service": TenantService(db),
        "apikey_service": apikey_service,
        "audit_service": AuditService(db),
        "device_service": DeviceService(db, security=security),
        "security_service": SecurityService(db, security),
        # Where devices reach the coaps listener (api.runtime.coaps_public_uri); None: no coaps.
        "coaps_server_uri": coaps_uri,
        "telemetry_service": TelemetryService(db),
        "command_service": CommandService(db),
        "registration_service": RegistrationService(db, node="api"),
        "group_service": GroupService(db),
        "lighting_service": LightingService(db),
        "preview_service": PreviewService(db),
        "energy_service": EnergyService(db),
        "alarm_service": alarm_service(db),
        "report_service": ReportService(db),
        "open311_gate": Open311Gate(apikey_service, limits),
        "crew_service": CrewService(db),
        "workorder_service": WorkOrderService(db),
        "sync_service": SyncService(db),
        "route_service": RouteService(db),
        "event_service": EventService(db),
        "campaign_service": CampaignService(db),
        "forecast_service": ForecastService(db),
        "window_service": MaintenanceWindowService(db),
        "collection_service": CollectionService(db),
        "plan_service": PlanService(db, routing_url=routing_url),
        "overview_service": OverviewService(db),
        "firmware_service": FirmwareService(db, max_image_bytes=(firmware or FirmwareSettings()).max_image_bytes),
        "session_service": SessionService(db, apikey_service, idle_s=web.session_idle_hours * 3600),
        "request_limits": limits,
        "web_settings": web,
        "health": Health(),  # `fleet serve` passes the one its listener and scheduler report to
        **(extra_services or {}),
    }
    dependencies = {name: _constant(service) for name, service in services.items()}
    dependencies["principal"] = Provide(_principal, sync_to_thread=False)
    docs_plugin, docs_assets = docs_ui()
    app = Litestar(
        route_handlers=[healthz, readyz, DeviceController, DeviceSecurityController, ServerKeyController,
                        TenantController, ApiKeyController,
                        AuditController, GroupController, TelemetryController, CommandController,
                        ObservationController, DeviceCommandController, LightingController, AlarmController,
                        GroupAlarmSettingsController, Open311Controller, CrewController,
                        WorkOrderController, RouteController, CampaignController, MaintenanceWindowController,
                        ForecastController, CollectionSetupController, PlanController,
                        OverviewController, sync, events, docs_assets, *web_routes, *asset_routers(),
                        # The upload route's body limit is the image limit of the service in use.
                        *firmware_routes(services["firmware_service"].max_image_bytes),
                        *(extra_handlers or [])],
        dependencies=dependencies,
        middleware=[authentication(services["apikey_service"], limits, services["session_service"]),
                    idempotency(IdempotencyService(db), http.max_body_bytes)],
        lifespan=[_running(RevocationListener(db, services["apikey_service"].cache)),
                  _running(services["event_service"])],
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=FleetRequest,
        request_max_body_size=http.max_body_bytes,
        logging_config=None,
        plugins=[StructRulesPlugin()],
        openapi_config=OpenAPIConfig(
            title="Fleet", version=__version__,
            description="Smart street furniture of a city: streetlights, waste bins, Wi-Fi access points.",
            path=DOCS_PATH,
            render_plugins=[docs_plugin],
            components=Components(security_schemes={"bearer": SecurityScheme(
                type="http", scheme="bearer", description="A Fleet API key")}),
            security=[{"bearer": []}],
        ),
        debug=False,
    )
    document_problems(app)
    rebind_options_handlers(app)
    # Litestar runs `middleware` only once a route matched; wrapping the handler behind routing
    # gives unknown paths and wrong methods a request id and their log line too.
    app.asgi_handler = request_context(app.asgi_handler)
    return app
