"""Guards for pages of one role: anonymous people go to login, others get 403."""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.mixins import AccessMixin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

from webapp.accounts.roles import is_rater, is_researcher


def role_required(has_role: Callable, message: str):
    """A decorator for function views (sync) that only people `has_role` may open."""

    def decorator(view):
        @wraps(view)
        def guarded(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user):
                raise PermissionDenied(message)
            return view(request, *args, **kwargs)

        return guarded

    return decorator


researcher_required = role_required(is_researcher, "This page is for researchers.")
rater_required = role_required(is_rater, "This page is for raters.")


class ResearcherRequiredMixin(AccessMixin):
    """Mixin for class-based views that only researchers may open."""

    permission_denied_message = "This page is for researchers."

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if not is_researcher(request.user):
            raise PermissionDenied(self.permission_denied_message)
        return super().dispatch(request, *args, **kwargs)
