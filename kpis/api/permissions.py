"""Who may read the API."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.permissions import BasePermission
from rest_framework.request import Request


class ReadAccess(BasePermission):
    """Authenticated users, or everyone when ``KPI_API_PUBLIC`` is on."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if settings.KPI_API_PUBLIC:
            return True
        return bool(request.user and request.user.is_authenticated)
