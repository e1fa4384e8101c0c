"""The bank's routers, one per API, in the order the OpenAPI document lists them."""

from services.openbanking.routers import ais, authorisation, cbpii, pis

ROUTERS = [authorisation.router, ais.router, pis.router, cbpii.router]
