"""Guards for researcher pages: anonymous people go to login, others get 403."""

from functools import wraps

from django.contrib.auth.mixins import AccessMixin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

from webapp.accounts.roles import is_researcher


def researcher_required(view):
    """Decorator for function views (sync) that only researchers may open."""

    @wraps(view)
    def guarded(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_researcher(request.user):
            raise PermissionDenied("This page is for researchers.")
        return view(request, *args, **kwargs)

    return guarded


class ResearcherRequiredMixin(AccessMixin):
    """Mixin for class-based views that only researchers may open."""

    permission_denied_message = "This page is for researchers."

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if not is_researcher(request.user):
            raise PermissionDenied(self.permission_denied_message)
        return super().dispatch(request, *args, **kwargs)
